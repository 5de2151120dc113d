"""Run every side-by-side benchmark in one go (what `make bench` calls)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["build_drives.py", "stream_images.py", "ipa_write_image.py"]

if __name__ == "__main__":
    failed = 0
    for name in BENCHES:
        if (HERE / name).exists():
            print(f"\n# {name}", flush=True)
            failed |= subprocess.run([sys.executable, str(HERE / name)], cwd=HERE).returncode
    sys.exit(failed)
