"""Every parser of strangers' bytes, fuzzed from real seeds with a fixed seed and budget:
any input ends in a result or in our own one-line error, within the time and memory
bounds of fuzz/targets.py (run_case). A failure prints the shrunk input; it becomes a
regression in test_fuzz_regressions.py.

Budget: FUZZ_EXAMPLES cases per parser (environment CONFIGDRIVE_FUZZ_EXAMPLES raises it
for a longer run; CONFIGDRIVE_FUZZ_SHRINK=1 lets hypothesis shrink a failure, which takes
minutes on megabyte seeds); the figures reached are printed at the end of the run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fuzz_tally
import mutations as m

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import seeds as seedmod  # noqa: E402
from targets import FuzzBug, run_case  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("CONFIGDRIVE_FUZZ_EXAMPLES", "2500"))
PHASES = [Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("CONFIGDRIVE_FUZZ_SHRINK") else [])

fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
    phases=PHASES, suppress_health_check=list(HealthCheck), print_blob=True)


def check(parser: str, data: bytes) -> None:
    """Run one case; a failing input is saved to a file named in the failure."""
    try:
        outcome = run_case(parser, data)
    except FuzzBug as bug:
        fuzz_tally.count_case(parser, "bug")
        saved = Path(tempfile.gettempdir()) / f"configdrive-fuzz-{parser}-{hashlib.sha256(data).hexdigest()[:16]}"
        saved.write_bytes(data)
        raise FuzzBug(f"{bug} (input saved as {saved})") from bug
    fuzz_tally.count_case(parser, outcome)


# Seeds are built once, at import, by the tools we did not write (fuzz/seeds.py);
# hypothesis needs them to define the strategies.
with tempfile.TemporaryDirectory() as _work:
    SEEDS = seedmod.build(Path(_work))


def test_every_target_has_seeds():
    """The seeds are valid: each one passes its own parser (no mutation at all)."""
    for name, found in SEEDS.items():
        assert found, f"no seeds for {name}"
        for data in found:
            assert run_case(name, data) in ("ok", "refused")


@pytest.mark.parametrize("name", ["iso", "vfat", "drive", "disk", "pack"])
def test_every_drive_seed_a_real_tool_made_parses_ok(name):
    """A drive xorriso, mkfs.vfat + mcopy or sgdisk made is a drive: refusing one would
    mean the reader's checks are wrong, not the input."""
    for index, data in enumerate(SEEDS[name]):
        assert run_case(name, data) == "ok", f"{name} seed {index} refused"


def tool_tree(name: str, data: bytes, work: Path) -> dict[str, bytes] | None:
    """What xorriso -extract (ISO) or mcopy -s (FAT) reads from an image; None when the
    tool refuses it."""
    image, out = work / "image", work / "out"
    image.write_bytes(data)
    if name == "iso":
        cmd = ["xorriso", "-abort_on", "FAILURE", "-indev", image, "-osirrox", "on", "-extract", "/", out]
    else:
        out.mkdir()
        cmd = ["mcopy", "-s", "-n", "-m", "-i", image, "::*", out]
    if subprocess.run([str(c) for c in cmd], capture_output=True).returncode != 0:
        return None
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def our_tree(name: str, data: bytes) -> dict[str, bytes] | None:
    from configdrive.formats import fatreader, isoreader
    from configdrive.errors import ConfigDriveError
    try:
        return (isoreader if name == "iso" else fatreader).read(io.BytesIO(data), source="fuzz")
    except ConfigDriveError:
        return None


@pytest.mark.parametrize("name", ["iso", "vfat"])
def test_drive_seeds_round_trip_with_the_tools(name, tmp_path):
    """What we read from each seed is what xorriso -extract / mcopy read (for the plain
    ISO 9660 seed the names are the primary tree's, which xorriso maps the same way)."""
    for index, data in enumerate(SEEDS[name]):
        work = tmp_path / str(index)
        work.mkdir()
        theirs = tool_tree(name, data, work)
        assert theirs is not None, f"the tool refuses {name} seed {index}"
        ours = our_tree(name, data)
        if name == "iso" and data[16 * 2048 + 1:16 * 2048 + 6] == b"CD001" and not _has_rr_or_joliet(data):
            ours = {k.lower(): v for k, v in ours.items()}
            theirs = {k.lower(): v for k, v in theirs.items()}
        assert ours == theirs, f"{name} seed {index}"


def _has_rr_or_joliet(data: bytes) -> bool:
    return b"%/@" in data[17 * 2048:24 * 2048] or b"%/E" in data[17 * 2048:24 * 2048] or b"RRIP" in data


@settings(max_examples=int(os.environ.get("CONFIGDRIVE_FUZZ_ROUND_TRIPS", "60")), derandomize=True,
          database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["iso", "vfat"]).flatmap(
    lambda name: st.tuples(st.just(name), m.mutated([s for s in SEEDS[name]], ISO_HOT if name == "iso" else FAT_HOT))))
def test_accepted_mutants_read_as_the_tools_read_them(case):
    """A mutated drive we accept must hold what the tools we did not write find in it:
    accepting a drive and reading something else from it is the failure a crash counter
    cannot see. (Drives the tool refuses, or reads with complaints, are not compared.)"""
    name, blob = case
    data = bytes(blob)
    ours = our_tree(name, data)
    if ours is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        theirs = tool_tree(name, data, Path(tmp))
    if theirs is None:
        return
    assert ours == theirs


QCOW2_HOT = [(0, 1024)]
ISO_HOT = [(32768, 38912)]
FAT_HOT = [(0, 64 * 1024)]


@fuzz_settings
@given(m.mutated(SEEDS["qcow2"], QCOW2_HOT) | m.field_mutated(SEEDS["qcow2"], m.qcow2_fields))
def test_qcow2(data):
    check("qcow2", data)


@fuzz_settings
@given(m.mutated(SEEDS["gpt"], [(512, 1024), (1024, 2048), (4096, 8192)], fix=m.fix_gpt_crcs)
       | m.field_mutated(SEEDS["gpt"], m.gpt_fields, fix=m.fix_gpt_crcs))
def test_gpt(data):
    check("gpt", data)


@fuzz_settings
@given(m.mutated(SEEDS["mbr"], [(440, 512), (16384, 17408)]) | m.field_mutated(SEEDS["mbr"], m.mbr_fields))
def test_mbr(data):
    check("mbr", data)


@fuzz_settings
@given(m.mutated(SEEDS["tables"], [(440, 2048), (4096, 8192)], fix=m.fix_gpt_crcs)
       | m.field_mutated(SEEDS["tables"][:3], m.gpt_fields, fix=m.fix_gpt_crcs)
       | m.field_mutated(SEEDS["tables"][2:4], m.mbr_fields))
def test_partition_tables_and_config_partition(data):
    check("tables", data)


@fuzz_settings
@given(m.mutated(SEEDS["probe"], ISO_HOT + FAT_HOT))
def test_probe(data):
    check("probe", data)


@fuzz_settings
@given(m.mutated(SEEDS["iso"], ISO_HOT) | m.field_mutated(SEEDS["iso"], m.iso_fields))
def test_iso_reader(data):
    check("iso", data)


@fuzz_settings
@given(m.mutated(SEEDS["vfat"], FAT_HOT) | m.field_mutated(SEEDS["vfat"], m.fat_fields))
def test_vfat_reader(data):
    check("vfat", data)


@fuzz_settings
@given(m.mutated(SEEDS["drive"], ISO_HOT + FAT_HOT + [(512, 2048), (20480, 24576)], fix=m.fix_gpt_crcs))
def test_drive_reader(data):
    check("drive", data)


@fuzz_settings
@given(m.mutated(SEEDS["disk"], [(512, 2048), (20480, 24576), (20480 + 32768, 20480 + 38912)],
                 fix=m.fix_gpt_crcs))
def test_disk_reader(data):
    check("disk", data)


@settings(fuzz_settings, max_examples=max(FUZZ_EXAMPLES // 10, 50))
@given(m.mutated(SEEDS["pack"]))
def test_pack_round_trip(data):
    check("pack", data)


@fuzz_settings
@given(m.mutated(SEEDS["unpack"]))
def test_unpack(data):
    check("unpack", data)


@fuzz_settings
@given(m.json_edited(SEEDS["json"]) | m.mutated(SEEDS["json"])
       | m.json_values.map(lambda v: m.Blob(json.dumps(v).encode())))
def test_json_inputs(data):
    check("json", data)


@fuzz_settings
@given(m.mutated(SEEDS["compress"]))
def test_decompressors(data):
    check("compress", data)


@fuzz_settings
@given(m.mutated(SEEDS["image"], QCOW2_HOT))
def test_deploy_image_reader(data):
    check("image", data)
