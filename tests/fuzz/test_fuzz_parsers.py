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
import json
import os
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

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
