"""The README as a newcomer uses it: the two commands come first, every command and option
it names exists (in that command's --help), the pages it points to exist, and its Python
example runs and makes a drive that blkid and cloud-init accept."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cloud_init_read, configdrive, out, run

README = (ROOT / "README.md").read_text()
OPTION = re.compile(r"(?<![\w/-])(--[a-z][a-z0-9-]*)")


def test_readme_python_example_runs(tmp_path):
    snippet = re.search(r"## Python API\n\n```python\n(.*?)```", README, re.S).group(1)
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
    """Nothing comes between the title and the two commands: a block of exactly two."""
    lines = README.splitlines()
    assert lines[0] == "# configdrive"
    first = next(i for i, line in enumerate(lines[1:], 1) if line.strip())
    assert lines[first] == "```"
    end = lines.index("```", first + 1)
    assert [line.split("#")[0].strip() for line in lines[first + 1:end]] == ["make demo", "make test"]


def test_readme_is_a_front_page():
    assert len(README.splitlines()) < 200


def command_lines() -> list[str]:
    """Every command line the README shows for `configdrive` or `configdrive-mkisofs`: in
    code blocks (a synopsis's continuation lines joined to it, comments cut) and in inline
    code."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].rstrip()
            if re.match(r"\s*(configdrive|configdrive-mkisofs) ", line):
                found.append(line.strip())
            elif found and line.startswith("        ") and line.strip()[:1] in ("[", "-"):
                found[-1] += " " + line.strip()
    found += re.findall(r"`((?:configdrive|configdrive-mkisofs) [^`]*)`", README)
    return found


def help_text(*command: str) -> str:
    exe = Path(sys.executable).with_name("configdrive")
    return run(exe, *command, "--help").stdout.decode()


def test_every_command_and_option_the_readme_names_is_in_its_help():
    checked = 0
    commands = {}
    for line in command_lines():
        words = line.split()
        if words[0] != "configdrive":
            continue
        sub = words[1] if not words[1].startswith("-") else None
        if sub is not None and sub not in commands:
            # the command exists: the top-level help lists it and it has a help of its own
            assert re.search(rf"^\s+{sub}\s", help_text(), re.M), f"README names `configdrive {sub}`"
            commands[sub] = help_text(sub)
        text = commands[sub] if sub else help_text()
        for option in OPTION.findall(line):
            assert re.search(rf"(?<![\w-]){re.escape(option)}\b", text), \
                f"README: `{line}`: {option} is not in `configdrive {sub or ''} --help`"
            checked += 1
    assert {"build", "inspect", "extract", "validate", "pack", "unpack", "deploy", "inject"} <= set(commands)
    assert checked > 40


def test_every_option_the_readme_names_in_prose_exists():
    """An option named outside a command line (`--json`, `--debug`) is some command's."""
    helps = help_text() + "".join(help_text(sub) for sub in
                                  ("build", "inspect", "extract", "validate", "pack", "unpack", "deploy", "inject",
                                   "boot"))
    for option in set(OPTION.findall(README)) - {"--list"}:    # --list: scripts/install.sh's
        assert re.search(rf"(?<![\w-]){re.escape(option)}\b", helps), f"README names {option}"
    # --list is install.sh's, which prints its lists with it
    run("bash", ROOT / "scripts/install.sh", "core", "--list")


def test_the_readme_mkisofs_command_line_builds_an_image(tmp_path):
    """configdrive-mkisofs has no --help (genisoimage's options only): its synopsis, as
    written, must be a command line it accepts."""
    [synopsis] = [line for line in command_lines() if line.startswith("configdrive-mkisofs -o")]
    argv = shlex.split(synopsis.replace("[", "").replace("]", ""))
    source = tmp_path / "src"
    (source / "openstack/latest").mkdir(parents=True)
    (source / "openstack/latest/meta_data.json").write_text("{}")
    values = {"PATH": str(tmp_path / "out.iso"), "S": "OpenStack Nova", "LABEL": "config-2",
              "DIR": str(source)}
    argv = [values.get(word, word) for word in argv]
    exe = Path(sys.executable).with_name("configdrive-mkisofs")
    proc = subprocess.run([str(exe), *argv[1:]], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "out.iso").stat().st_size > 0


def test_make_targets_scripts_and_pages_the_readme_names_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make ([a-z-]+)`", README)) | {"demo", "test"}:
        assert re.search(rf"^{target}:", makefile, re.M), f"README names `make {target}`"
    for path in set(re.findall(r"\b((?:scripts|docs)/[\w./-]+\.(?:sh|md))", README)):
        assert (ROOT / path).is_file(), f"README names {path}"


@pytest.mark.parametrize("page", ["ironic", "nova-and-openstacksdk", "testing", "performance", "guest-boots",
                                  "ARCHITECTURE", "THREATS"])
def test_the_readme_points_to_each_page_for_its_reader(page):
    assert f"](docs/{page}.md)" in README and (ROOT / "docs" / f"{page}.md").is_file()


def test_links_between_the_pages_resolve():
    for page in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to {target}"


def test_the_quick_start_builds_and_inspects_as_written(tmp_path):
    """The command-line quick start's build and inspect lines, run as written (deploy
    needs a disk: its options are checked against --help above)."""
    block = re.search(r"A bare-metal disk from the command line:\n\n```sh\n(.*?)```", README, re.S).group(1)
    lines = [line.split(" #")[0].strip() for line in block.splitlines()]
    build = next(line for line in lines if line.startswith("configdrive build"))
    inspect = next(line for line in lines if line == "configdrive inspect drive.iso")
    (tmp_path / ".ssh").mkdir()
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example"
    (tmp_path / ".ssh/id_ed25519.pub").write_text(key + "\n")
    (tmp_path / "user-data.yaml").write_text("#cloud-config\nruncmd: [[touch, /ran]]\n")
    exe = str(Path(sys.executable).with_name("configdrive"))
    for line in (build, inspect):
        # as a shell would expand ~, with tmp_path as the home directory
        argv = [str(tmp_path) + w[1:] if w.startswith("~/") else w for w in shlex.split(line)]
        proc = subprocess.run([exe, *argv[1:]], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, (line, proc.stderr)
    assert "hostname:  node-7" in proc.stdout and "ops@example" in proc.stdout
