"""The README's Python example runs as written, and the drive it makes is one that
blkid and cloud-init accept."""

import os
import re

from conftest import ROOT, cloud_init_read, configdrive, out


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    snippet = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(snippet, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "LABEL=\"config-2\"" in out("blkid", "-p", tmp_path / "drive.iso")
    configdrive("extract", tmp_path / "drive.iso", tmp_path / "x")
    result = cloud_init_read(tmp_path / "x")
    assert result["metadata"]["instance-id"] == "83679162-1378-4288-a2d4-70e13ec132aa"
    assert result["userdata"] == b"#cloud-config\nruncmd: [[touch, /ran]]\n"


def test_readme_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```") + 1: lines.index("```", lines.index("```") + 1)]
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
