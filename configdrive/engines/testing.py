"""Drives for datasource tests: content from keyword arguments, drive images, extracted
trees, whole GPT disks, and the broken drives real producers emit.

The pytest fixtures (configdrive/engines/pytest_plugin.py) are thin wrappers over
:class:`DriveMaker`; it works without pytest too. Every broken drive is named after the
field it breaks and says in its docstring which producer writes it and which consumer
trips on it.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..model.content import Content, InjectedFile, add_ssh_key
from ..drives.builder import build, default_label, drive_tree, write_image
from ..drives.extract import extract
from ..errors import ConfigDriveError

# A whole test disk: room for an OS image's partitions and a 64 MiB config partition.
DEFAULT_DISK_BYTES = 128 << 20
# What a bare drive test wants when it gives no network: one DHCP link.
DEFAULT_NETWORK = {
    "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": 1500}],
    "networks": [{"id": "net0", "link": "tap0", "type": "ipv4_dhcp", "network_id": "n0"}],
    "services": [],
}


def content_from_kwargs(*, meta_data: Mapping[str, Any] | None = None, user_data: str | bytes | None = None,
                        network_data: Mapping[str, Any] | None = None,
                        vendor_data: Mapping[str, Any] | None = None,
                        vendor_data2: Mapping[str, Any] | None = None,
                        network_config: str | bytes | Mapping[str, Any] | None = None,
                        files: Mapping[str, str | bytes] | None = None,
                        uuid: str | None = None, hostname: str | None = None, name: str | None = None,
                        ssh_keys: Iterable[str] = (), admin_pass: str | None = None,
                        random_seed: bool = False) -> Content:
    """The keywords a test passes (``user_data`` as text or bytes, ``files`` as
    {guest path: data}, ``ssh_keys`` as OpenSSH key lines) as :class:`Content`, with the
    defaults nova fills in (a uuid derived from the content, name from hostname)."""
    content = Content(
        meta_data=copy.deepcopy(dict(meta_data or {})),
        user_data=user_data.encode() if isinstance(user_data, str) else user_data,
        network_data=copy.deepcopy(dict(network_data)) if network_data is not None else None,
        vendor_data=copy.deepcopy(dict(vendor_data)) if vendor_data is not None else None,
        vendor_data2=copy.deepcopy(dict(vendor_data2)) if vendor_data2 is not None else None,
        network_config=_network_config_bytes(network_config),
        files=[InjectedFile(path, data.encode() if isinstance(data, str) else data)
               for path, data in (files or {}).items()],
        random_seed=random_seed,
    )
    content.apply_shortcuts(uuid=uuid, name=name, hostname=hostname, admin_pass=admin_pass)
    for line in ssh_keys:
        parts = line.split()
        add_ssh_key(content.meta_data, parts[2] if len(parts) > 2 else "key", line)
    content.fill_defaults()
    return content


def _network_config_bytes(value: str | bytes | Mapping[str, Any] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()   # JSON is YAML


class DriveMaker:
    """Makes drives, trees and disks under ``directory``, each under a name of its own."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._serial = itertools.count(1)

    def _path(self, stem: str, suffix: str = "") -> Path:
        return self.directory / f"{stem}-{next(self._serial)}{suffix}"

    # -- good drives ------------------------------------------------------------------

    def drive(self, *, format: str = "iso", versions: str | list[str] | None = None, label: str | None = None,
              ec2: bool = True, size: int | None = None, validate: bool = True, **content: Any) -> Path:
        """A drive image (config drive or NoCloud seed, by ``format``)."""
        out = self._path("nocloud" if format.startswith("nocloud") else "config-drive",
                         ".img" if format.endswith("vfat") else ".iso")
        build(content_from_kwargs(**content), out, format=format, label=label, size=size,
              versions=versions, ec2=ec2, validate=validate)
        return out

    def tree(self, *, format: str = "iso", versions: str | list[str] | None = None, ec2: bool = True,
             validate: bool = True, **content: Any) -> Path:
        """The same files as an extracted directory (what cloud-init's unit tests give
        ``read_config_drive``, or a NoCloud seed directory)."""
        built = content_from_kwargs(**content)
        if validate:   # as build() does
            from ..drives.buildcheck import check_content
            check_content(built, versions=versions, ec2=ec2)
        dest = self._path("config-drive-tree")
        dest.mkdir()
        extract(drive_tree(built, format, versions=versions, ec2=ec2)[0], dest)
        return dest

    def disk(self, *, image: str | Path | None = None, disk_size: int = DEFAULT_DISK_BYTES,
             format: str | None = None, label: str | None = None, versions: str | list[str] | None = None,
             ec2: bool = True, **content: Any) -> Path:
        """A whole GPT disk image with the drive in its config partition, as ``deploy``
        leaves a bare-metal disk: ``image`` (a raw disk image, copied; never changed) is
        grown to ``disk_size`` when smaller, or an empty GPT disk is made."""
        from ..deploy.placement import place_config_drive
        out = self._path("disk", ".img")
        if image is not None:
            shutil.copyfile(image, out)
        else:
            _empty_gpt_disk(out, disk_size)
        with open(out, "r+b") as fp:
            if fp.seek(0, 2) < disk_size:
                fp.truncate(disk_size)
        place_config_drive(str(out), content_from_kwargs(**content), format=format, label=label,
                           versions=versions, ec2=ec2)
        return out

    # -- broken drives, each named after the field it breaks ----------------------------

    def label_uppercase(self, **kwargs: Any) -> Path:
        """Label ``CONFIG-2``: what ironic-python-agent writes when it rebuilds a drive as
        vfat, and what mkfs.vfat makes of a lowercase label. cloud-init accepts both cases;
        a reader that compares labels exactly does not."""
        return self.drive(label="CONFIG-2", validate=False, **kwargs)

    def versions_oldest_and_latest(self, **kwargs: Any) -> Path:
        """Only openstack/2012-08-10 and latest (openstacksdk's and ironic's default):
        cloud-init reads 2012-08-10, which carries no network_data.json or vendor data."""
        return self.drive(versions="2012-08-10,latest", validate=False, **kwargs)

    def network_data_mtu_null(self, **kwargs: Any) -> Path:
        """``"mtu": null`` on every link, as nova writes when neutron reports no MTU."""
        content = dict(kwargs)
        network = copy.deepcopy(dict(content.pop("network_data", None) or DEFAULT_NETWORK))
        for link in network.get("links") or []:
            link["mtu"] = None
        return self.drive(network_data=network, validate=False, **content)

    def meta_data_uuid_missing(self, *, format: str = "iso", label: str | None = None,
                               versions: str | list[str] | None = None, ec2: bool = True,
                               **content: Any) -> Path:
        """meta_data.json without ``uuid`` in every version directory (hand-rolled drives):
        cloud-init refuses such a drive (DataSourceConfigDrive: "No instance id")."""
        if format.startswith("nocloud"):
            raise ConfigDriveError("meta_data_uuid_missing: a NoCloud seed has no meta_data.json")
        tree, fs = drive_tree(content_from_kwargs(**content), format, versions=versions, ec2=ec2)
        for path in [p for p in tree if p.endswith("/meta_data.json")]:
            doc = json.loads(tree[path])
            doc.pop("uuid", None)
            tree[path] = json.dumps(doc).encode()
        out = self._path("config-drive", ".img" if fs == "vfat" else ".iso")
        with open(out, "wb") as fp:
            write_image(tree, fp, format=fs, label=label or default_label(format))
        return out

    def label_duplicate(self, *, disk_size: int = DEFAULT_DISK_BYTES, format: str = "iso",
                        **content: Any) -> Path:
        """A GPT disk with two partitions whose filesystems are both labelled config-2 (a
        redeploy that left the old config partition): ironic-python-agent refuses the
        disk, cloud-init takes whichever blkid lists first."""
        from partition.tables import add_partition, read_table
        image = self.drive(format=format, **content).read_bytes()
        out = self._path("disk", ".img")
        _empty_gpt_disk(out, disk_size)
        part_bytes = -(-len(image) // (1 << 20)) << 20
        with open(out, "r+b") as fp:
            table = read_table(fp, disk_size, source=str(out))
            for start in (1 << 20, (1 << 20) + part_bytes):
                part = add_partition(fp, table, start, part_bytes)
                fp.seek(part.start)
                fp.write(image)
        return out


def _empty_gpt_disk(path: Path, size: int) -> None:
    from partition.tables.gpt import write_empty_gpt
    with open(path, "w+b") as fp:
        fp.truncate(size)
        write_empty_gpt(fp, size)


# Keywords of booted_guest that are content (content_from_kwargs's), the rest go to boot().
_CONTENT_KEYWORDS = ("meta_data", "user_data", "network_data", "vendor_data", "vendor_data2",
                     "network_config", "files", "uuid", "hostname", "name", "ssh_keys",
                     "admin_pass", "random_seed")


class GuestBooter:
    """Boots a cloud image with a drive (configdrive.engines.boot), each boot in a directory of
    its own under ``directory``; what the ``booted_guest`` fixture calls."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._serial = itertools.count(1)

    def __call__(self, image: str | Path, *, drive: str | Path | None = None, attach: str = "cdrom",
                 **options: Any):
        """Boot ``image`` with ``drive`` (a ready image) or the drive built from the content
        keywords, attached as ``attach``; the other keywords as for configdrive.engines.boot.boot.
        Returns its :class:`configdrive.Verdict`."""
        from .boot import boot
        content = {k: options.pop(k) for k in _CONTENT_KEYWORDS if k in options}
        if drive is not None and content:
            raise ConfigDriveError(f"booted_guest: drive= is a ready drive; content keywords "
                                   f"({', '.join(sorted(content))}) cannot be used with it")
        if drive is None and attach != "none":
            drive = content_from_kwargs(**content)
        workdir = self.directory / f"boot-{next(self._serial)}"
        return boot(image, drive, attach=attach, workdir=workdir, **options)
