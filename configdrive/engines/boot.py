"""The boot job: a user's cloud image booted under QEMU with a config drive presented as
production presents it, returning cloud-init's verdict.

    verdict = boot("debian-12-genericcloud-amd64.qcow2", content, attach="cdrom")

The image is never modified: the guest runs on a copy-on-write overlay (``qemu-img
create -b IMAGE -F FORMAT``) in ``workdir``, or, for ``attach="config-partition"``, on a
scratch disk file that our own deploy path (configdrive.deploy) writes the image onto,
the drive into its config partition, as ironic does on bare metal. The drive: nova's
CD-ROM (``cdrom``, ISO 9660) or disk (``disk``, vfat), a NoCloud seed (``nocloud``),
the config partition, or ``none`` (the image carries what it reads). How the run ends
(cloud-init's final message on the console, then power-off, the power button, or a hard
stop) is configdrive.engines.qemu's; how the verdict is read, configdrive.engines.verdict's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from partition.tools import failure, run

from ..errors import ConfigDriveError
from ..model.content import Content
from .qemu import QEMU_IMG_PACKAGE, QEMU_PACKAGE, Machine, need_tool, run_guest
from .verdict import Verdict, read_guest, refusal, source_of

ATTACH = ("cdrom", "disk", "config-partition", "nocloud", "none")
# The drive format each attachment builds when none is asked for.
DEFAULT_FORMAT = {"cdrom": "iso", "disk": "vfat", "nocloud": "nocloud", "config-partition": None}
# The datasource cloud-init must choose for each attachment (else: the drive was refused).
WANTED = {"cdrom": "DataSourceConfigDrive", "disk": "DataSourceConfigDrive",
          "config-partition": "DataSourceConfigDrive", "nocloud": "DataSourceNoCloud"}
# Room after the image on a config-partition scratch disk: a 64 MiB config partition,
# alignment and the backup GPT.
SCRATCH_ROOM = 128 << 20
DEFAULT_TIMEOUT = 600


class DriveRefused(ConfigDriveError):
    """cloud-init booted but chose another datasource than the drive; ``verdict`` is
    what it did."""

    def __init__(self, message: str, verdict: Verdict):
        super().__init__(message)
        self.verdict = verdict


def boot(image: str | os.PathLike, drive: Content | str | os.PathLike | None = None, *,
         attach: str = "cdrom", workdir: str | os.PathLike | None = None, uefi: bool = False,
         sector_size: int = 512, timeout: float = DEFAULT_TIMEOUT, kernel: str | os.PathLike | None = None,
         initrd: str | os.PathLike | None = None, append: str | None = None,
         wait: str = "cloud-init", accel: str = "auto", memory_mib: int = 1024,
         **drive_options: Any) -> Verdict:
    """Boot ``image`` (qcow2 or raw) with ``drive`` (Content to build, or a ready drive
    image) presented as ``attach`` says, wait for cloud-init (``wait="poweroff"``: only
    for the guest to power off by itself) and return the verdict. ``workdir`` (default: a
    new temporary directory, kept) holds the overlay, the console log and what was read
    back. ``kernel``/``initrd``/``append``: QEMU's direct kernel boot (the image is then
    the root disk alone, e.g. a bare ext4); ``uefi``: OVMF; ``sector_size`` 4096: a 4Kn
    root disk (and a vfat drive with 4096-byte sectors). ``drive_options``: format, label,
    size, versions, ec2, validate, as for build.

    Raises ConfigDriveError in one line: no QEMU, no boot within ``timeout`` (the console's
    last lines), cloud-init never starting; DriveRefused when cloud-init did not take the
    drive (its reason from its log)."""
    if attach not in ATTACH:
        raise ConfigDriveError(f"attach {attach!r}: one of {', '.join(ATTACH)}")
    if sector_size not in (512, 4096):
        raise ConfigDriveError(f"sector size {sector_size}: 512 or 4096")
    if wait not in ("cloud-init", "poweroff"):
        raise ConfigDriveError(f"wait {wait!r}: cloud-init or poweroff")
    if attach == "none" and drive is not None:
        raise ConfigDriveError("attach none boots the image as it is: no drive can be given")
    if attach != "none" and drive is None:
        raise ConfigDriveError(f"attach {attach}: give the drive (its content or a ready image)")
    image = Path(image)
    if not image.is_file():
        raise ConfigDriveError(f"{image}: no such image file")
    for given in (kernel, initrd):
        if given is not None and not Path(given).is_file():
            raise ConfigDriveError(f"{given}: no such file")
    qemu_img = need_tool("qemu-img", QEMU_IMG_PACKAGE)
    need_tool("qemu-system-x86_64", QEMU_PACKAGE)
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="configdrive-boot-"))
    work.mkdir(parents=True, exist_ok=True)
    fmt = image_format(image)

    if attach == "config-partition":
        root, root_format = _deployed(image, drive, work, sector_size, drive_options), "raw"
        drive_args: list[str] = []
    else:
        root, root_format = work / "overlay.qcow2", "qcow2"
        root.unlink(missing_ok=True)
        _tool(qemu_img, ["create", "-q", "-f", "qcow2", "-b", str(image.resolve()), "-F", fmt, str(root)])
        drive_args = [] if attach == "none" else _drive_args(attach, drive, work, sector_size, drive_options)

    machine = Machine(root_disk=root, root_format=root_format, workdir=work, sector_size=sector_size,
                      uefi=uefi, kernel=Path(kernel) if kernel else None,
                      initrd=Path(initrd) if initrd else None, append=append, drive_args=drive_args,
                      memory_mib=memory_mib, accel=accel)
    verdict = run_guest(machine, timeout, wait)
    verdict.how = (f"{'OVMF' if uefi else 'direct kernel' if kernel else 'BIOS'}, {sector_size}-byte sectors, "
                   f"drive {attach}, {verdict.accel}")

    # The guest's disk as raw bytes for debugfs: the overlay converted (its backing image
    # read through it), or the scratch disk itself.
    if root_format == "qcow2":
        disk = work / "disk-after-boot.raw"
        disk.unlink(missing_ok=True)
        _tool(qemu_img, ["convert", "-q", "-f", "qcow2", "-O", "raw", str(root), str(disk)])
    else:
        disk = root
    read_guest(verdict, disk, sector_size, journal=verdict.stopped == "quit")
    verdict.source = source_of(verdict.datasource)
    (work / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=2) + "\n")
    if wait == "cloud-init" and attach in WANTED:
        why = refusal(verdict, WANTED[attach])
        if why:
            raise DriveRefused(why, verdict)
    return verdict


def image_format(path: Path) -> str:
    """qcow2 by its magic, else raw (what QEMU would take it for; no other format is
    accepted, so a VMDK or VHD is refused here rather than misread)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    for magic, name in ((b"KDMV", "vmdk"), (b"conectix", "vpc"), (b"vhdxfile", "vhdx")):
        if head.startswith(magic):
            raise ConfigDriveError(f"{path}: a {name} image; boot takes qcow2 or raw "
                                   f"(qemu-img convert -O qcow2 it first)")
    return "raw"


def _drive_args(attach: str, drive, work: Path, sector_size: int, options: dict) -> list[str]:
    """The drive (built into ``work`` from Content, or the ready image given) as QEMU
    arguments: an IDE CD-ROM as nova attaches a config drive on x86, or a virtio disk."""
    if isinstance(drive, Content):
        from ..drives.builder import build
        fmt = options.get("format") or DEFAULT_FORMAT[attach]
        if attach == "nocloud" and not fmt.startswith("nocloud"):
            raise ConfigDriveError(f"attach nocloud: format {fmt} is not a NoCloud seed (nocloud or nocloud-vfat)")
        if attach != "nocloud" and fmt.startswith("nocloud"):
            raise ConfigDriveError(f"attach {attach}: format {fmt} is a NoCloud seed (use attach nocloud)")
        path = work / ("drive.img" if fmt.endswith("vfat") else "drive.iso")
        vfat_sectors = sector_size if fmt.endswith("vfat") and sector_size != 512 else None
        build(drive, path, format=fmt, sector_size=vfat_sectors,
              **{k: v for k, v in options.items() if k != "format" and v is not None})
    else:
        path = Path(drive)
        if not path.is_file():
            raise ConfigDriveError(f"{path}: no such drive image")
        fmt = "vfat" if _is_fat(path) else "iso"
    if attach == "cdrom" or (attach == "nocloud" and not fmt.endswith("vfat")):
        return ["-drive", f"file={path},format=raw,if=ide,media=cdrom,readonly=on"]
    return ["-drive", f"file={path},format=raw,if=none,id=configdrive,readonly=on",
            "-device", (f"virtio-blk-pci,drive=configdrive,logical_block_size={sector_size},"
                        f"physical_block_size={sector_size}")]


def _is_fat(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    return len(head) == 512 and head[510:512] == b"\x55\xaa" and (b"FAT" in head[54:62] or b"FAT32" in head[82:90])


def _deployed(image: Path, drive, work: Path, sector_size: int, options: dict) -> Path:
    """A scratch disk file, the image's virtual size plus room for a config partition,
    that configdrive.deploy writes the image onto and the drive into."""
    from partition.writing.device import open_target
    from ..deploy import deploy
    info = json.loads(_tool(need_tool("qemu-img", QEMU_IMG_PACKAGE),
                            ["info", "--output=json", str(image)]))
    scratch = work / "disk.raw"
    scratch.unlink(missing_ok=True)
    with open(scratch, "wb") as f:
        f.truncate(int(info["virtual-size"]) + SCRATCH_ROOM)
    if not isinstance(drive, Content):
        drive = str(drive)
    with open_target(scratch, sector_size=sector_size) as target:
        deploy(target, str(image), drive=drive, **{k: v for k, v in options.items() if v is not None})
    return scratch


def _tool(exe: str, args: list[str]) -> str:
    proc = run(exe, args)
    if proc.returncode != 0:
        raise ConfigDriveError(failure([os.path.basename(exe), *args], proc))
    return proc.stdout.decode(errors="replace")


def remove_disks(verdict: Verdict) -> None:
    """Free the space the boot's disks take (overlay, raw copy, scratch disk) once the
    verdict is all that is wanted; the console and cloud-init's log stay."""
    work = verdict.console_log.parent
    for name in ("overlay.qcow2", "disk-after-boot.raw", "disk.raw", "OVMF_VARS.fd"):
        (work / name).unlink(missing_ok=True)
    verdict.disk = None
