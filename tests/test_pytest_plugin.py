"""The pytest plugin (configdrive/engines/pytest_plugin.py), as a user meets it: installed through
the pytest11 entry point, loaded by a pytest run that knows nothing of this checkout,
running the complete test file docs/testing.md shows; and cheap to load for everyone else."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from conftest import ROOT

pytest_plugins = ["pytester"]

FIXTURES = ("config_drive", "config_drive_tree", "config_disk", "broken_config_drive")
BROKEN = ("label_uppercase", "versions_oldest_and_latest", "network_data_mtu_null",
          "meta_data_uuid_missing", "label_duplicate")


def fixtures_page_test_source() -> str:
    """The complete test file of docs/testing.md, the page for datasource test authors."""
    text = (ROOT / "docs/testing.md").read_text()
    return re.search(r"A complete test file .*?\n\n```python\n(.*?)```", text, re.S).group(1)


def test_the_testing_page_file_uses_every_fixture_and_passes(pytester):
    source = fixtures_page_test_source()
    for name in FIXTURES + BROKEN:
        assert re.search(rf"\b{name}\b", source), f"docs/testing.md's test file does not use {name}"
    pytester.makepyfile(test_datasource=source)
    # A separate process: the plugin must come from the installed package's entry point.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*plugins:*configdrive*"])


def test_fixtures_are_listed_by_pytest(pytester):
    result = pytester.runpytest_subprocess("--fixtures")
    for name in FIXTURES:
        result.stdout.fnmatch_lines([f"{name}*"])


def test_a_drive_the_fixture_built_is_what_consumers_read(pytester, tmp_path):
    """The fixtures hand out drives that tools we did not write read back: blkid for the
    broken label, sgdisk for the disk, xorriso for the tree's ISO twin."""
    pytester.makepyfile(test_probe=textwrap.dedent(f"""
        import subprocess
        def test_write(config_drive, config_disk, broken_config_drive):
            open({str(tmp_path / 'paths')!r}, 'w').write('\\n'.join(map(str, [
                config_drive(hostname='h1', format='nocloud-vfat'),
                config_disk(hostname='h2'),
                broken_config_drive.label_duplicate(hostname='h3'),
                broken_config_drive.label_uppercase(hostname='h4', format='vfat'),
            ])))
        """))
    pytester.runpytest_subprocess("--basetemp", str(tmp_path / "base")).assert_outcomes(passed=1)
    seed, disk, duplicate, upper = (tmp_path / "paths").read_text().split("\n")
    blkid = lambda *a: subprocess.run(["blkid", "-p", "-o", "export", *a], capture_output=True,
                                      text=True).stdout.splitlines()
    assert "LABEL=cidata" in blkid(seed) and "TYPE=vfat" in blkid(seed)
    assert "LABEL=CONFIG-2" in blkid(upper)
    sgdisk = subprocess.run(["sgdisk", "-v", "-p", disk], capture_output=True, text=True, check=True).stdout
    assert "No problems found" in sgdisk
    # both partitions of the duplicate-label disk carry a config-2 filesystem
    table = subprocess.run(["sfdisk", "--json", duplicate], capture_output=True, text=True, check=True).stdout
    import json
    parts = json.loads(table)["partitiontable"]["partitions"]
    assert len(parts) == 2
    for part in parts:
        probe = blkid("-O", str(part["start"] * 512), duplicate)
        assert "LABEL=config-2" in probe


def test_loading_the_plugin_imports_no_drive_code():
    """pytest loads the plugin in every run of every user: it may cost them pytest only."""
    code = textwrap.dedent("""
        import sys, importlib.metadata as md
        before = set(sys.modules)
        (ep,) = [e for e in md.entry_points(group="pytest11") if e.name == "configdrive"]
        assert ep.value == "configdrive.engines.pytest_plugin", ep.value
        ep.load()
        print(" ".join(sorted(set(sys.modules) - before)))
    """)
    subprocess.run([sys.executable, "-c", "import pytest"], check=True)
    loaded = subprocess.run([sys.executable, "-c", "import pytest\n" + code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(loaded) <= {"configdrive", "configdrive.engines", "configdrive.engines.pytest_plugin"}, loaded


def test_booted_guest_skips_without_an_image(pytester, monkeypatch):
    """No image from the test and none from the environment: skipped, saying how to give one."""
    monkeypatch.delenv("CONFIGDRIVE_BOOT_IMAGE", raising=False)
    pytester.makepyfile(test_boot=textwrap.dedent("""
        def test_boot(booted_guest):
            booted_guest(hostname="node-7")
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no cloud image to boot: pass one to booted_guest(image) "
                                 "or set CONFIGDRIVE_BOOT_IMAGE*"])
