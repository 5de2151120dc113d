"""Coverage-guided fuzzing of one target of fuzz/targets.py with atheris (libFuzzer).

    .venv/bin/pip install atheris          # not a test dependency
    python fuzz/atheris_qcow2.py -max_total_time=600 -rss_limit_mb=1024 -timeout=10 CORPUS_DIR

A crash is any outcome other than a result or our own one-line error (see targets.py);
libFuzzer saves the input as crash-<sha1>. Without a corpus directory the seeds of
fuzz/seeds.py are used (written to fuzz/corpus/<target>/ first).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def main(target: str) -> None:
    import atheris

    import importlib
    with atheris.instrument_imports():
        # The targets import these lazily: import them here so that they are instrumented.
        for name in ("partition.images.qcow2", "partition.tables.gpt", "partition.tables.mbr",
                     "partition.tables", "partition.tables.probe", "partition.tables.config_partition",
                     "partition.images.compress", "partition.images.image", "configdrive.formats.iso",
                     "configdrive.formats.vfat", "configdrive.drives.drive", "configdrive.drives.disk",
                     "configdrive.formats.pack", "configdrive.model.content",
                     "configdrive.documents.checks", "configdrive.documents.validate",
                     "configdrive.model.layout"):
            importlib.import_module(name)
    import targets

    def one_input(data: bytes) -> None:
        targets.run_case(target, data, measure_memory=False)   # libFuzzer bounds RSS and time

    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = HERE / "corpus" / target
        if not corpus.exists():
            import seeds
            with tempfile.TemporaryDirectory() as work:
                found = seeds.build(Path(work))[target]
            corpus.mkdir(parents=True)
            for i, seed in enumerate(found):
                (corpus / f"seed-{i}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup(args, one_input)
    atheris.Fuzz()
