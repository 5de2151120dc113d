"""Cloud-init's verdict on a boot, read after the guest stopped: from its serial console
and from its root filesystem, an ext2/3/4 read with debugfs (e2fsprogs), never mounted.

What is read: status.json and result.json (/var/lib/cloud/data, where cloud-init keeps
them; /run/cloud-init only links to them), instance-data.json (cloud-init writes it to
/run/cloud-init, a tmpfs that power-off clears: read when the image keeps /run on disk,
else named as unread), the hostname, every user's authorized_keys, the network
configuration cloud-init rendered (ifupdown, netplan, NetworkManager, networkd,
sysconfig), /var/log/cloud-init.log. Whatever cannot be read is named in ``unread`` with
the reason: nothing is skipped without a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from partition.errors import PartitionError
from partition.tables import read_table
from partition.tools import run, which

from ..errors import ConfigDriveError

EXT_MAGIC_OFFSET = 1024 + 56     # s_magic in the superblock
EXT_MAGIC = b"\x53\xef"
# Where cloud-init's renderers write (cloudinit/net/{eni,netplan,networkmanager,networkd,sysconfig}.py).
NETWORK_FILES = ("/etc/network/interfaces.d/50-cloud-init", "/etc/network/interfaces.d/50-cloud-init.cfg",
                 "/etc/netplan/50-cloud-init.yaml")
NETWORK_DIRS = ("/etc/NetworkManager/system-connections", "/etc/systemd/network",
                "/etc/sysconfig/network-scripts", "/etc/network/interfaces.d")
MAX_FILE = 16 << 20   # a file read from the guest: its disk is a stranger's
# Each home and rendered network file is one debugfs run: the guest's disk decides how many
# names a directory holds, so at most this many of each are read, the rest named unread.
MAX_NAMES = 64
SAFE_NAME = re.compile(r"[\w.@+-]{1,255}")


@dataclass
class Verdict:
    """What cloud-init did on one boot. ``datasource`` is cloud-init's own description
    (``DataSourceConfigDrive [net,ver=2][source=/dev/sr0]``), ``source`` the device in it;
    ``errors`` gathers result.json's and every stage's in status.json; ``keys`` maps each
    authorized_keys path to its key lines, ``network`` each rendered file to its text;
    ``unread`` names what could not be read and why."""

    console_log: Path
    seconds: float
    accel: str
    stopped: str
    how: str
    cloud_init_version: str | None = None
    datasource: str | None = None
    source: str | None = None
    status: dict | None = None
    result: dict | None = None
    errors: list[str] = field(default_factory=list)
    instance_data: dict | None = None
    hostname: str | None = None
    keys: dict[str, list[str]] = field(default_factory=dict)
    network: dict[str, str] = field(default_factory=dict)
    cloud_init_log: Path | None = None
    disk: Path | None = None
    root_offset: int | None = None
    unread: dict[str, str] = field(default_factory=dict)

    @property
    def console(self) -> str:
        return self.console_log.read_bytes().decode(errors="replace").replace("\r", "")

    def read_file(self, path: str) -> str | None:
        """A file from the guest's root filesystem after the boot (debugfs), None when it
        does not exist; ConfigDriveError when the root filesystem could not be read."""
        if self.disk is None or self.root_offset is None:
            raise ConfigDriveError(f"{path}: the guest's root filesystem was not read "
                                   f"({self.unread.get('root filesystem', 'no disk')})")
        return debugfs_cat(self.disk, self.root_offset, path)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Verdict":
        """A verdict back from :meth:`to_json` (``configdrive boot --json``)."""
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        for key in ("console_log", "cloud_init_log", "disk"):
            if fields.get(key) is not None:
                fields[key] = Path(fields[key])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("console_log", "cloud_init_log", "disk"):
            doc[key] = str(doc[key]) if doc[key] is not None else None
        return doc


def debugfs_cat(image: Path, offset: int, path: str) -> str | None:
    """``path`` from the ext2/3/4 filesystem at byte ``offset`` of the raw ``image``, read
    with debugfs, or None when there is no such file."""
    out = _debugfs(image, offset, f"cat {path}")
    return None if out is None else out.decode(errors="replace")


def debugfs_ls(image: Path, offset: int, path: str) -> list[str] | None:
    """The names in directory ``path`` (debugfs ``ls -p``), None when there is none."""
    out = _debugfs(image, offset, f"ls -p {path}")
    if out is None:
        return None
    # ls -p: /inode/mode/uid/gid/name/size/ per entry
    names = [fields[5] for line in out.decode(errors="replace").splitlines()
             if len(fields := line.split("/")) >= 7]
    # Names from a stranger's disk go back into a debugfs request: plain ones only.
    return [n for n in names if n not in (".", "..") and SAFE_NAME.fullmatch(n)]


def _debugfs(image: Path, offset: int, request: str) -> bytes | None:
    exe = which("debugfs")
    if exe is None:
        raise ConfigDriveError("debugfs is not installed (Debian package e2fsprogs)")
    # read-only (no -w); what it prints is a stranger's file: capped
    proc = run(exe, ["-R", request, f"{image}?offset={offset}"], max_stdout=MAX_FILE)
    if len(proc.stdout) > MAX_FILE:
        raise ConfigDriveError(f"{request!r} on {image}: more than {MAX_FILE} bytes, not read")
    # stderr: the version banner, then any complaint (no such file, bad superblock).
    complaints = [line for line in proc.stderr.decode(errors="replace").splitlines()
                  if line.strip() and not line.startswith("debugfs 1.")]
    if any("File not found by ext2_lookup" in line for line in complaints):
        return None
    if proc.returncode != 0 or complaints:
        raise ConfigDriveError(f"debugfs {request!r} on {image} at byte {offset}: "
                               + (complaints[-1] if complaints else f"exited {proc.returncode}"))
    return proc.stdout


def find_root(disk: Path, sector_size: int | None) -> tuple[int | None, str]:
    """The byte offset of the guest's root filesystem on the raw ``disk``: the ext
    filesystem holding /etc/os-release (the whole disk, or a partition); None and the
    reason when there is none that debugfs can read."""
    size = disk.stat().st_size
    candidates = [0]
    with open(disk, "rb") as fp:
        try:
            table = read_table(fp, size, sector_size, source=str(disk))
        except PartitionError as exc:   # a table we cannot read: say so below
            table, why_table = None, str(exc)
        else:
            why_table = "no partition table"
        if table is not None:
            candidates = [p.start for p in table.partitions]
        ext = []
        for offset in candidates:
            fp.seek(offset + EXT_MAGIC_OFFSET)
            if fp.read(2) == EXT_MAGIC:
                ext.append(offset)
    for offset in ext:
        try:
            etc = debugfs_ls(disk, offset, "/etc") or []
        except ConfigDriveError:
            continue
        if "os-release" in etc:
            return offset, ""
    if not ext:
        where = (f"{len(candidates)} partitions" if table is not None else why_table)
        return None, (f"no ext2/3/4 filesystem on the disk ({where}); only ext2/3/4 is read "
                      "(debugfs), so nothing was read from the guest's disk")
    return None, (f"no ext2/3/4 filesystem on the disk has /etc/os-release (ext at bytes "
                  f"{', '.join(map(str, ext))})")


def replay_journal(disk: Path, offset: int) -> str | None:
    """Replay ext4's journal on our copy of the disk (after a guest stopped hard, what it
    wrote last may be only there): e2fsck -E journal_only. None, or why it failed."""
    exe = which("e2fsck")
    if exe is None:
        return "e2fsck is not installed (Debian package e2fsprogs)"
    proc = run(exe, ["-y", "-E", "journal_only", f"{disk}?offset={offset}"])
    if proc.returncode not in (0, 1, 2):
        return f"e2fsck -E journal_only exited {proc.returncode}"
    return None


def read_guest(verdict: Verdict, disk: Path, sector_size: int | None, journal: bool) -> None:
    """Fill ``verdict`` from the raw ``disk`` the guest left; a read that fails half-way
    is named in ``unread`` with debugfs's complaint."""
    try:
        _read_guest(verdict, disk, sector_size, journal)
    except ConfigDriveError as exc:
        verdict.unread["root filesystem"] = f"read only in part: {exc}"


def _read_guest(verdict: Verdict, disk: Path, sector_size: int | None, journal: bool) -> None:
    offset, why = find_root(disk, sector_size)
    if offset is None:
        verdict.unread["root filesystem"] = why
        return
    if journal and (failed := replay_journal(disk, offset)):
        verdict.unread["journal"] = failed
    verdict.disk, verdict.root_offset = disk, offset

    def json_file(path: str, what: str, text: str | None) -> dict | None:
        if text is None:
            verdict.unread[what] = f"{path} does not exist"
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            verdict.unread[what] = f"{path}: not JSON ({exc})"
            return None

    status, result = "/var/lib/cloud/data/status.json", "/var/lib/cloud/data/result.json"
    verdict.status = json_file(status, "status.json", debugfs_cat(disk, offset, status))
    verdict.result = json_file(result, "result.json", debugfs_cat(disk, offset, result))
    for where in ("/run/cloud-init/instance-data.json", "/var/lib/cloud/data/instance-data.json"):
        if (text := debugfs_cat(disk, offset, where)) is not None:
            verdict.instance_data = json_file(where, "instance-data.json", text)
            break
    else:
        verdict.unread["instance-data.json"] = (
            "cloud-init writes it to /run/cloud-init, a tmpfs the power-off cleared")
    v1 = (verdict.result or {}).get("v1", {})
    verdict.errors = [str(e) for e in v1.get("errors", [])]
    for stage, info in ((verdict.status or {}).get("v1", {})).items():
        if isinstance(info, dict):
            # result.json repeats the stages' errors without their stage: each once
            verdict.errors += [f"{stage}: {e}" for e in info.get("errors", []) or []
                               if str(e) not in verdict.errors]
    if v1.get("datasource"):
        verdict.datasource = v1["datasource"]
    hostname = debugfs_cat(disk, offset, "/etc/hostname")
    verdict.hostname = hostname.strip() if hostname is not None else None
    def listed(directory: str, names: list[str]) -> list[str]:
        if len(names) > MAX_NAMES:
            verdict.unread[directory] = (f"{len(names)} entries; the first {MAX_NAMES} read "
                                         "(each is a debugfs run)")
        return names[:MAX_NAMES]

    homes = ["/root"] + [f"/home/{name}" for name in
                         listed("/home", debugfs_ls(disk, offset, "/home") or [])]
    for home in homes:
        keys = debugfs_cat(disk, offset, f"{home}/.ssh/authorized_keys")
        if keys is not None:
            verdict.keys[f"{home}/.ssh/authorized_keys"] = [
                line for line in keys.splitlines() if line.strip() and not line.startswith("#")]
    for path in NETWORK_FILES:
        text = debugfs_cat(disk, offset, path)
        if text is not None:
            verdict.network[path] = text
    for directory in NETWORK_DIRS:
        names = [n for n in debugfs_ls(disk, offset, directory) or [] if "cloud-init" in n]
        for name in listed(directory, names):
            path = f"{directory}/{name}"
            if path not in verdict.network:
                text = debugfs_cat(disk, offset, path)
                if text is not None:
                    verdict.network[path] = text
    log = debugfs_cat(disk, offset, "/var/log/cloud-init.log")
    if log is not None:
        verdict.cloud_init_log = verdict.console_log.with_name("cloud-init.log")
        verdict.cloud_init_log.write_text(log)


SOURCE = re.compile(r"\[(?:source|seed)=([^\]]+)\]")


def source_of(datasource: str | None) -> str | None:
    """The device in cloud-init's description of its datasource (ConfigDrive says
    ``[source=/dev/sr0]``, NoCloud ``[seed=/dev/sr0]``)."""
    m = SOURCE.search(datasource or "")
    return m.group(1) if m else None


def refusal(verdict: Verdict, wanted: str) -> str | None:
    """Why cloud-init did not take the drive (``wanted``: DataSourceConfigDrive or
    DataSourceNoCloud), from its log: None when it did."""
    if verdict.datasource and verdict.datasource.startswith(wanted):
        return None
    short = wanted.removeprefix("DataSource")
    reasons = []
    log = verdict.cloud_init_log.read_text(errors="replace") if verdict.cloud_init_log else ""
    lines = log.splitlines()
    for n, line in enumerate(lines):
        if (short in line or "config drive" in line.lower()) and re.search(
                r"WARNING|ERROR|[Ff]ailed|[Rr]efus|[Nn]ot |[Ii]nvalid|[Bb]roken", line):
            reason = line.split(" - ", 1)[-1].strip()
            # util.logexc follows the line with a traceback: its last line is the cause
            for later in lines[n + 1:n + 40]:
                if re.match(r"^\d{4}-\d\d-\d\d ", later):
                    break
                if cause := re.match(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Metadata|Readable)): (.*)", later):
                    reason += f" ({cause.group(1)}: {cause.group(2).strip()})"
                    break
            reasons.append(reason)
    caused = [r for r in reasons if r.endswith(")")]
    why = (caused or reasons)[-1] if reasons else (
        "its log says nothing of the drive" if log else f"no cloud-init.log was read ({verdict.unread})")
    return (f"cloud-init did not take the drive: it chose {verdict.datasource or 'no datasource'}, "
            f"not {wanted}; its log: {why} (console {verdict.console_log}"
            + (f", log {verdict.cloud_init_log})" if verdict.cloud_init_log else ")"))
