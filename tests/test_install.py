"""What `make demo` and `make test` install, as scripts/install.sh lists it (--list
changes nothing): the demo gets the package and what it needs, nothing a test needs."""

from __future__ import annotations

import shutil

import pytest

from conftest import ROOT, run

GUEST_AND_TEST_TOOLS = {"qemu-system-x86", "ovmf", "grub-efi-amd64-bin", "debootstrap", "cloud-init",
                        "qemu-utils", "genisoimage", "xorriso"}


def install_list(level: str) -> dict[str, str]:
    """{what: the list} from the lines ``install.sh LEVEL: WHAT: LIST`` it prints."""
    proc = run("bash", ROOT / "scripts/install.sh", level, "--list")
    lines = proc.stderr.decode().splitlines()
    assert proc.stdout == b"" and len(lines) == 3, lines
    return {line.split(": ")[1]: line.split(": ", 2)[2] for line in lines}


def test_the_demo_installs_the_package_and_nothing_tests_need():
    core = install_list("core")
    assert core["Debian packages"].split() == ["python3", "python3-venv"]
    assert core[".venv"] == "pip install '.'"       # no [test] extras
    assert core["peers"] == "none"


def test_the_tests_install_the_tools_the_guests_and_the_peers():
    test = install_list("test")
    debs = test["Debian packages"].split()
    assert GUEST_AND_TEST_TOOLS <= set(debs) and debs[:2] == ["python3", "python3-venv"]
    assert test[".venv"] == "pip install '.[test]'"
    assert all(peer in test["peers"] for peer in ("nova", "openstacksdk", "glean", "ironic-python-agent"))


def test_make_demo_runs_the_core_install_only():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    demo = run("make", "-n", "-C", ROOT, "demo").stdout.decode()
    assert "scripts/install.sh core" in demo
    assert "install.sh test" not in demo and "peers.sh" not in demo
    assert "scripts/install.sh test" in run("make", "-n", "-C", ROOT, "test").stdout.decode()


def test_an_unknown_level_is_refused_before_anything_is_installed():
    proc = run("bash", ROOT / "scripts/install.sh", "everything", check=False)
    assert proc.returncode == 2 and b"usage:" in proc.stderr
