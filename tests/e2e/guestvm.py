"""The end-to-end guests: built once and cached, never modified (boots work on overlays).

The guest comes from scripts/e2e-guest.sh (Debian bookworm or trixie with cloud-init that
looks only for a config drive and powers off when its final stage is done);
scripts/e2e-guest-uefi.sh makes whole-disk UEFI images of it, and scripts/e2e-guest-glean.sh
its glean variant (glean from PyPI, no cloud-init). Booting them is the public API's job
(``configdrive boot`` and the ``booted_guest`` fixture, configdrive/engines/boot.py): the tests in
test_boot.py boot through it, so what users get is what these boots prove.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
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
# How the guests boot by QEMU's direct kernel boot: root by label, the serial console
# (where cloud-init's lines and the guests' "E2E key=value" reports appear).
KERNEL_CMDLINE = ("root=LABEL=e2e-root rw console=ttyS0 net.ifnames=0 panic=1 quiet "
                  "systemd.show_status=error")
# What the run built, printed at the end (tests/conftest.py).
BUILDS: list[str] = []


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


def report(write_line) -> None:
    """The run's builds, for the terminal summary."""
    for line in BUILDS:
        write_line(f"e2e: {line}")
