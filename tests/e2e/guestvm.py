"""The end-to-end guest: build it once (cached), boot it under QEMU, read what it did.

The guest comes from scripts/e2e-guest.sh (Debian bookworm or trixie with cloud-init that
looks only for a config drive and powers off when its final stage is done);
scripts/e2e-guest-uefi.sh makes whole-disk UEFI images of it, and scripts/e2e-guest-glean.sh
its glean variant (glean from PyPI, no cloud-init). A boot's evidence is
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
# What the guest is made from: the build script and the chroot plumbing it sources.
GUEST_SCRIPTS = (GUEST_SCRIPT, ROOT / "scripts" / "e2e-chroot.sh")
UEFI_SCRIPT = ROOT / "scripts" / "e2e-guest-uefi.sh"
GLEAN_SCRIPT = ROOT / "scripts" / "e2e-guest-glean.sh"
CACHE = Path(os.environ.get("E2E_CACHE", ROOT / "tests" / ".cache"))
# What scripts/e2e-guest.sh leaves in its output directory.
GUEST_FILES = ("vmlinuz", "initrd.img", "root.ext4", "disk-config.qcow2", "disk-plain.qcow2")
# What scripts/e2e-guest-uefi.sh leaves in its output directory.
UEFI_FILES = ("uefi-config.qcow2", "uefi-plain.qcow2")
# What scripts/e2e-guest-glean.sh leaves in its output directory.
GLEAN_FILES = ("vmlinuz", "initrd.img", "disk-config.qcow2")
# Debian's ovmf package: the firmware code (read-only) and the template of its variable
# store (each boot gets a writable copy, as a machine has its own NVRAM).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# The NIC's MAC: network_data.json links name it, and cloud-init matches on it.
GUEST_MAC = "52:54:00:12:34:56"
# A boot to poweroff takes about a minute under TCG on 2 cores; this only bounds a hang.
BOOT_TIMEOUT = int(os.environ.get("E2E_BOOT_TIMEOUT", 480))
KERNEL_CMDLINE = ("root=LABEL=e2e-root rw console=ttyS0 net.ifnames=0 panic=1 quiet "
                  "systemd.show_status=error")
# Each boot's whole serial console, kept past the test's temporary directory (which other
# pytest runs on this machine prune) so that a failed boot can be read afterwards.
KEPT_LOGS = CACHE / "e2e-logs"
# What the run built and what each boot proved, printed at the end (tests/conftest.py).
BUILDS: list[str] = []
PROVEN: list["Boot"] = []


@dataclass(frozen=True)
class Guest:
    """The built guest's files (never modified: boots work on copies); ``suite`` is its
    Debian release, ``consumer`` what reads the config drive at boot (cloud-init or glean;
    the glean guest has only its kernel, initramfs and disk-config.qcow2)."""

    dir: Path
    suite: str
    consumer: str = "cloud-init"

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


@dataclass(frozen=True)
class UefiDisks:
    """Whole-disk UEFI images of a guest for one logical sector size (never modified)."""

    dir: Path
    sector_size: int

    @property
    def with_config_partition(self) -> Path:
        """GPT qcow2: EFI system partition, root, an empty partition named config-v2."""
        return self.dir / "uefi-config.qcow2"

    @property
    def without_config_partition(self) -> Path:
        """GPT qcow2: EFI system partition and root only."""
        return self.dir / "uefi-plain.qcow2"


def _digest(*scripts: Path) -> str:
    """The cache key: change a build script and what it builds is rebuilt."""
    h = hashlib.sha256()
    for script in scripts:
        h.update(script.read_bytes())
    return h.hexdigest()[:16]


# Stands for the output directory in a build command.
OUTPUT = object()


def _cached(final: Path, files: tuple[str, ...], command: list, what: str) -> Path:
    """``final`` when it holds ``files``; otherwise run ``command`` (OUTPUT standing for a
    fresh output directory) and move its output there once it succeeded: a failed or
    interrupted build leaves no cache."""
    if all((final / f).exists() for f in files):
        return final
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    script = command[0]
    proc = subprocess.run(["bash", *[str(partial if arg is OUTPUT else arg) for arg in command]],
                          stdout=sys.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed (exit {proc.returncode}); its output is above")
    seconds = time.monotonic() - started
    BUILDS.append(f"{what} built in {seconds:.0f} s")
    print(f"e2e: {what} built in {seconds:.0f} s", file=sys.stderr)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def build_guest(suite: str = "bookworm") -> Guest:
    """The cached guest, building it first when the cache has none (a few minutes)."""
    final = CACHE / f"e2e-guest-{suite}-{_digest(*GUEST_SCRIPTS)}"
    return Guest(_cached(final, GUEST_FILES, [GUEST_SCRIPT, OUTPUT, suite], f"{suite} guest"), suite)


def build_glean_guest(guest: Guest) -> Guest:
    """The cached glean variant of ``guest`` (about a minute: pip install from PyPI)."""
    final = CACHE / f"e2e-glean-{guest.suite}-{_digest(*GUEST_SCRIPTS, GLEAN_SCRIPT)}"
    return Guest(_cached(final, GLEAN_FILES, [GLEAN_SCRIPT, guest.dir, OUTPUT],
                         f"{guest.suite} glean guest"), guest.suite, "glean")


def build_uefi_disks(guest: Guest, sector_size: int) -> UefiDisks:
    """The guest's cached whole-disk UEFI images for ``sector_size`` (well under a minute)."""
    final = CACHE / f"e2e-uefi-{guest.suite}-{sector_size}-{_digest(*GUEST_SCRIPTS, UEFI_SCRIPT)}"
    return UefiDisks(_cached(final, UEFI_FILES, [UEFI_SCRIPT, guest.dir, OUTPUT, sector_size],
                             f"{guest.suite} UEFI disks ({sector_size}-byte sectors)"), sector_size)


@dataclass
class Boot:
    """One finished boot: the serial console and what the guest reported on it."""

    name: str
    how: str
    console: str
    seconds: float
    log: Path
    reports: dict[str, list[str]] = field(default_factory=dict)
    facts: list[str] = field(default_factory=list)

    def one(self, key: str) -> str:
        values = self.reports.get(key, [])
        assert len(values) == 1, f"guest reported {key!r} {len(values)} times: {values}\n{self.tail()}"
        return values[0]

    def all(self, key: str) -> list[str]:
        return self.reports.get(key, [])

    def console_lines(self) -> list[str]:
        return [line.strip() for line in self.console.splitlines()]

    def tail(self, lines: int = 60) -> str:
        return (f"--- serial console (last lines; all of it in {self.log}) ---\n"
                + "\n".join(self.console.splitlines()[-lines:]))

    def proved(self, *facts: str) -> None:
        """Record, for the run's summary, what this boot showed (call after the asserts)."""
        if not any(booted is self for booted in PROVEN):
            PROVEN.append(self)
        self.facts.extend(facts)

    def summary(self) -> str:
        # The cloud-init guest prints "/usr/bin/cloud-init 22.4.2", the glean guest "1.25.1".
        consumer = "glean" if "glean-version" in self.reports else "cloud-init"
        version = " ".join(self.reports.get(f"{consumer}-version", ["?"])).split()[-1]
        return (f"{self.name} ({self.how}, {consumer} {version}) {self.seconds:.0f} s: "
                + ", ".join(self.facts))


REPORT_LINE = re.compile(r"^E2E ([\w-]+)(?:=(.*))?$")


def parse_reports(console: str) -> dict[str, list[str]]:
    reports: dict[str, list[str]] = {}
    for line in console.splitlines():
        m = REPORT_LINE.match(line.strip())
        if m:
            reports.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return reports


def boot(guest: Guest, root_disk: Path, log: Path, *, extra: list[str] = (), uefi: bool = False,
         sector_size: int = 512) -> Boot:
    """Boot the guest with ``root_disk`` as the first virtio disk and ``extra`` QEMU
    arguments (the config drive), wait for it to power off, return its console.

    Direct kernel boot (the guest's kernel and initramfs handed to QEMU) unless ``uefi``:
    then OVMF boots the disk alone, through its EFI system partition, as a bare-metal
    node's firmware does. ``sector_size`` is the disk's logical and physical sector size
    as the guest (and the firmware) sees it: 4096 makes it a 4Kn disk.

    TCG only: this machine has no usable hardware acceleration. ``-no-reboot`` turns the
    guest's poweroff (or a panic, with panic=1) into QEMU exiting."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 is not installed (scripts/install.sh installs it)"
    fmt = "qcow2" if _is_qcow2(root_disk) else "raw"
    if uefi:
        assert OVMF_CODE.exists(), f"{OVMF_CODE} is missing (scripts/install.sh installs ovmf)"
        nvram = log.with_suffix(".OVMF_VARS.fd")
        shutil.copyfile(OVMF_VARS, nvram)
        firmware = ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,file={nvram}"]
    else:
        firmware = ["-kernel", guest.kernel, "-initrd", guest.initrd, "-append", KERNEL_CMDLINE]
    cmd = [
        qemu, "-nodefaults", "-display", "none", "-no-reboot",
        "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024", *firmware,
        "-serial", f"file:{log}",
        "-drive", f"file={root_disk},format={fmt},if=none,id=root",
        "-device", (f"virtio-blk-pci,drive=root,logical_block_size={sector_size},"
                    f"physical_block_size={sector_size}"),
        "-netdev", "user,id=net0", "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC}",
        *extra,
    ]
    name = log.stem.removeprefix("console-")
    how = f"{guest.suite}, {'OVMF' if uefi else 'direct kernel'}, {sector_size}-byte sectors"
    kept = KEPT_LOGS / f"{name}.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        proc = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        console = log.read_text(errors="replace") if log.exists() else ""
        kept.write_text(console)
        raise AssertionError(f"guest did not power off within {BOOT_TIMEOUT} s\n"
                             + Boot(name, how, console, BOOT_TIMEOUT, kept).tail()) from None
    seconds = time.monotonic() - started
    console = log.read_text(errors="replace").replace("\r", "")
    kept.write_text(console)
    result = Boot(name, how, console, seconds, kept, parse_reports(console))
    assert proc.returncode == 0, (f"qemu exited {proc.returncode}: "
                                  f"{proc.stderr.decode(errors='replace')}\n{result.tail()}")
    assert "report-done" in result.reports, ("the guest powered off without its report "
                                             f"({guest.consumer} did not finish)\n" + result.tail())
    print(f"e2e: {name} ({how}) booted to poweroff in {seconds:.0f} s", file=sys.stderr)
    return result


def report(write_line) -> None:
    """The run's builds and boots, for the terminal summary."""
    for line in BUILDS:
        write_line(f"e2e: {line}")
    for booted in PROVEN:
        write_line(f"e2e: {booted.summary()}")


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
