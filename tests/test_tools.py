"""The one runner for system tools (partition/tools.py) and the one way a failure reads:
the command, its exit status and the last line the tool wrote to stderr."""

from __future__ import annotations

import pytest

from configdrive.errors import ConfigDriveError
from configdrive.inject.tools import ToolError, run_tool
from partition import tools


def test_a_failure_names_the_command_its_status_and_its_last_complaint():
    script = "echo first complaint >&2; echo last complaint >&2; exit 3"
    with pytest.raises(ToolError) as caught:
        run_tool("sh", "-c", script)
    assert str(caught.value) == f"sh -c {script}: exited 3 (last complaint)"
    assert isinstance(caught.value, ConfigDriveError)


def test_a_missing_tool_is_one_line():
    with pytest.raises(ToolError, match=r"^no-such-tool-here: not installed$"):
        run_tool("no-such-tool-here")


def test_output_beyond_the_cap_stops_the_tool():
    """What a tool prints may be a stranger's file of any size: the runner keeps at most
    one byte over the cap and ends the tool instead of reading on."""
    proc = tools.run(tools.which("sh"), ["-c", "yes"], max_stdout=1000)
    assert len(proc.stdout) == 1001 and proc.returncode != 0


def test_sbin_is_searched_when_path_lacks_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert tools.which("losetup") in ("/usr/sbin/losetup", "/sbin/losetup")
