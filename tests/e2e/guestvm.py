"""The end-to-end guest: build it once (cached), boot it under QEMU, read what it did.

The guest comes from scripts/e2e-guest.sh (Debian bookworm with cloud-init that looks only
for a config drive and powers off when its final stage is done). A boot's evidence is
twofold: ``E2E key=value`` lines the guest prints on its serial console, and files read
back from its root filesystem with debugfs after it powered off.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = ROOT / "scripts" / "e2e-guest.sh"
CACHE = Path(os.environ.get("E2E_CACHE", ROOT / "tests" / ".cache"))
# What scripts/e2e-guest.sh leaves in its output directory.
GUEST_FILES = ("vmlinuz", "initrd.img", "root.ext4", "disk-config.qcow2", "disk-plain.qcow2")
# The NIC's MAC: network_data.json links name it, and cloud-init matches on it.
GUEST_MAC = "52:54:00:12:34:56"
# A boot to poweroff takes about a minute under TCG on 2 cores; this only bounds a hang.
BOOT_TIMEOUT = int(os.environ.get("E2E_BOOT_TIMEOUT", 480))
KERNEL_CMDLINE = ("root=LABEL=e2e-root rw console=ttyS0 net.ifnames=0 panic=1 quiet "
                  "systemd.show_status=error")


@dataclass(frozen=True)
class Guest:
    """The built guest's files (never modified: boots work on copies)."""

    dir: Path

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def root_fs(self) -> Path:
        """The root filesystem alone, a raw ext4 image (boots as a whole disk)."""
        return self.dir / "root.ext4"

    @property
    def disk_with_config_partition(self) -> Path:
        """GPT qcow2: root partition and an empty partition named config-v2."""
        return self.dir / "disk-config.qcow2"

    @property
    def disk_without_config_partition(self) -> Path:
        """GPT qcow2: the root partition only."""
        return self.dir / "disk-plain.qcow2"


def guest_cache_dir() -> Path:
    """Keyed by the build script's hash: change the script and the guest is rebuilt."""
    digest = hashlib.sha256(GUEST_SCRIPT.read_bytes()).hexdigest()[:16]
    return CACHE / f"e2e-guest-{digest}"


def build_guest() -> Guest:
    """The cached guest, building it first when the cache has none (about 10 minutes)."""
    final = guest_cache_dir()
    if all((final / f).exists() for f in GUEST_FILES):
        return Guest(final)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    proc = subprocess.run(["bash", str(GUEST_SCRIPT), str(partial)], stdout=sys.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"{GUEST_SCRIPT} failed (exit {proc.returncode}); its output is above")
    print(f"e2e: guest built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return Guest(final)


@dataclass
class Boot:
    """One finished boot: the serial console and what the guest reported on it."""

    console: str
    seconds: float
    reports: dict[str, list[str]] = field(default_factory=dict)

    def one(self, key: str) -> str:
        values = self.reports.get(key, [])
        assert len(values) == 1, f"guest reported {key!r} {len(values)} times: {values}\n{self.tail()}"
        return values[0]

    def all(self, key: str) -> list[str]:
        return self.reports.get(key, [])

    def console_lines(self) -> list[str]:
        return [line.strip() for line in self.console.splitlines()]

    def tail(self, lines: int = 60) -> str:
        return "--- serial console (last lines) ---\n" + "\n".join(self.console.splitlines()[-lines:])


REPORT_LINE = re.compile(r"^E2E ([\w-]+)(?:=(.*))?$")


def parse_reports(console: str) -> dict[str, list[str]]:
    reports: dict[str, list[str]] = {}
    for line in console.splitlines():
        m = REPORT_LINE.match(line.strip())
        if m:
            reports.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return reports


def boot(guest: Guest, root_disk: Path, log: Path, *, extra: list[str] = ()) -> Boot:
    """Boot the guest's kernel with ``root_disk`` as the first virtio disk and ``extra``
    QEMU arguments (the config drive), wait for it to power off, return its console.

    TCG only: this machine has no usable hardware acceleration. ``-no-reboot`` turns the
    guest's poweroff (or a panic, with panic=1) into QEMU exiting."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 is not installed (scripts/install.sh installs it)"
    fmt = "qcow2" if _is_qcow2(root_disk) else "raw"
    cmd = [
        qemu, "-nodefaults", "-display", "none", "-no-reboot",
        "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
        "-kernel", guest.kernel, "-initrd", guest.initrd, "-append", KERNEL_CMDLINE,
        "-serial", f"file:{log}",
        "-drive", f"file={root_disk},format={fmt},if=virtio",
        "-netdev", "user,id=net0", "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC}",
        *extra,
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        console = log.read_text(errors="replace") if log.exists() else ""
        raise AssertionError(f"guest did not power off within {BOOT_TIMEOUT} s\n"
                             + Boot(console, BOOT_TIMEOUT).tail()) from None
    seconds = time.monotonic() - started
    console = log.read_text(errors="replace").replace("\r", "")
    result = Boot(console, seconds, parse_reports(console))
    assert proc.returncode == 0, (f"qemu exited {proc.returncode}: "
                                  f"{proc.stderr.decode(errors='replace')}\n{result.tail()}")
    assert "report-done" in result.reports, ("the guest powered off without its report "
                                             "(cloud-init's final stage did not run)\n" + result.tail())
    print(f"e2e: {log.stem} booted to poweroff in {seconds:.0f} s", file=sys.stderr)
    return result


def _is_qcow2(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"QFI\xfb"


def read_guest_file(image: Path, path: str, offset: int = 0) -> str | None:
    """A file from the guest's ext4 root at byte ``offset`` of a raw image, read with
    debugfs (e2fsprogs), or None when the file does not exist."""
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", f"{image}?offset={offset}"],
                          capture_output=True)
    # stderr: debugfs's version banner, then any complaint (bad superblock, no such file).
    complaints = [line for line in proc.stderr.decode(errors="replace").splitlines()
                  if line.strip() and not line.startswith("debugfs 1.")]
    if any("File not found by ext2_lookup" in line for line in complaints):
        return None
    assert proc.returncode == 0 and not complaints, f"debugfs on {image}@{offset}: {complaints}"
    return proc.stdout.decode(errors="replace")
