"""Consumer lints: what each known reader of a config drive would misread or crash on.

A drive can be valid OpenStack metadata and still go wrong in one consumer: each lint
names the consumer, the file and the field, and cites the consumer's code that does it.
They are warnings (``validate`` prints them, ``build --strict`` and ``validate --strict``
refuse them). The consumers, as read in their source:

- glean 1.25 (glean/cmd.py): reads only ``openstack/latest/``; sets the hostname from
  meta_data ``name``; merges every network into its link's dict in order.
- cloud-init 22.x-25.x (sources/helpers/openstack.py): takes the hostname from meta_data
  ``hostname``; reads the newest dated directory it knows (drivecheck.py checks that).
- Afterburn (src/providers/openstack/configdrive.rs): mounts /dev/disk/by-label/config-2
  as iso9660 only; reads ``openstack/latest/meta_data.json`` and instance id, type and
  IPv4 addresses from ``ec2/latest/meta-data.json``.
- ironic-python-agent (ironic_python_agent/partition_utils.py): refuses a drive larger
  than MAX_CONFIG_DRIVE_SIZE_MB = 64.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

from .jsondoc import parsed_or_none

GLEAN, CLOUD_INIT, AFTERBURN, IPA = "glean", "cloud-init", "Afterburn", "ironic-python-agent"
IPA_MAX_DRIVE_BYTES = 64 << 20         # partition_utils.MAX_CONFIG_DRIVE_SIZE_MB
AFTERBURN_LABEL, AFTERBURN_FS = "config-2", "iso9660"
EC2_LATEST_META = "ec2/latest/meta-data.json"


class Lint(NamedTuple):
    """``file`` is the drive path, or for content about to be built the document's name."""

    file: str
    pointer: str
    consumer: str
    message: str

    def text(self) -> str:
        return f"{self.consumer}: {self.message}"


# -- documents --------------------------------------------------------------------------

def network_data_lints(doc: Any, file: str = "network_data") -> Iterator[Lint]:
    """glean merges each network into its link's dict in list order
    (cmd.py get_config_drive_interfaces: ``link.update(network)``), so a network without
    a ``routes`` key takes the routes of the network before it on the same link; an IPv6
    network then gets IPv4 routes and write_debian_interfaces dies in
    utils.ipv6_netmask_length with ``SyntaxError: Bad Netmask`` (or writes an IPv4
    gateway into the inet6 stanza). nova always writes ``"routes": []``."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("networks"), list):
        return
    routes_on_link: dict[Any, int] = {}
    for index, net in enumerate(doc["networks"]):
        if not isinstance(net, Mapping):
            continue
        link = net.get("link")
        if "routes" not in net and link in routes_on_link:
            yield Lint(file, f"/networks/{index}/routes", GLEAN,
                       f"missing: glean gives this network the routes of /networks/{routes_on_link[link]} "
                       f"(same link {json.dumps(link)}) and crashes with 'Bad Netmask' on an IPv6 network; "
                       "write \"routes\": []")
        if net.get("routes"):
            routes_on_link[link] = index


def meta_data_lints(doc: Any, file: str = "meta_data") -> Iterator[Lint]:
    """glean sets the hostname from ``name`` (cmd.py set_hostname_from_config_drive);
    cloud-init from ``hostname`` (helpers/openstack.py KEY_COPIES local-hostname <-
    hostname). The same guest gets another name depending on which one runs."""
    if not isinstance(doc, Mapping):
        return
    name, hostname = doc.get("name"), doc.get("hostname")
    if isinstance(name, str) and isinstance(hostname, str) and name not in (hostname, hostname.split(".")[0]):
        yield Lint(file, "/name", GLEAN, f"glean names the host {json.dumps(name)} (from name), cloud-init "
                   f"{json.dumps(hostname)} (from hostname); make name the hostname or its first label")
    elif isinstance(name, str) and hostname is None:
        yield Lint(file, "/hostname", CLOUD_INIT, "missing: cloud-init sets no hostname (glean uses name)")
    elif isinstance(hostname, str) and name is None:
        yield Lint(file, "/name", GLEAN, "missing: glean sets no hostname (cloud-init uses hostname)")


def ec2_lints(doc: Any | None, file: str = EC2_LATEST_META) -> Iterator[Lint]:
    """Afterburn's OPENSTACK_INSTANCE_ID comes only from ec2/latest/meta-data.json
    ``instance-id`` (configdrive.rs attributes())."""
    if doc is None:
        yield Lint(file, "", AFTERBURN, "missing: Afterburn sets no OPENSTACK_INSTANCE_ID, INSTANCE_TYPE or "
                   "IPV4 attributes (build without --no-ec2)")
    elif isinstance(doc, Mapping) and not doc.get("instance-id"):
        yield Lint(file, "/instance-id", AFTERBURN, "missing: Afterburn sets no OPENSTACK_INSTANCE_ID")


# -- content about to be built, and whole drives ---------------------------------------

def document_lints(kind: str, data: bytes) -> list[Lint]:
    """The lints of one document given alone (``validate meta_data.json``)."""
    lints = {"meta_data": meta_data_lints, "network_data": network_data_lints}.get(kind)
    return list(lints(parsed_or_none(data), kind)) if lints else []


def content_lints(content, ec2: bool = True) -> list[Lint]:
    """The lints a build of ``content`` would carry (every file goes into latest/)."""
    lints = [*meta_data_lints(content.meta_data), *network_data_lints(content.network_data)]
    if not ec2:
        lints += ec2_lints(None)
    return lints


def drive_lints(drive) -> list[Lint]:
    """The lints of a drive that was read (a config drive, not a NoCloud seed)."""
    tree = drive.tree
    latest = "openstack/latest/"
    lints = [*meta_data_lints(parsed_or_none(tree.get(latest + "meta_data.json")), latest + "meta_data.json"),
             *network_data_lints(parsed_or_none(tree.get(latest + "network_data.json")), latest + "network_data.json")]
    if EC2_LATEST_META in tree:
        lints += ec2_lints(parsed_or_none(tree[EC2_LATEST_META]) or {})
    else:
        lints += ec2_lints(None)
    if drive.format == "vfat":
        lints.append(Lint("", "", AFTERBURN, f"a vfat drive: Afterburn mounts the drive as {AFTERBURN_FS} only"))
    if drive.label and drive.label != AFTERBURN_LABEL:
        lints.append(Lint("", "", AFTERBURN, f"volume label {drive.label!r}: Afterburn opens "
                          f"/dev/disk/by-label/{AFTERBURN_LABEL} only"))
    size = _image_bytes(drive)
    if size is not None and size > IPA_MAX_DRIVE_BYTES:
        lints.append(Lint("", "", IPA, f"{size} bytes: ironic-python-agent refuses a config drive over "
                          f"{IPA_MAX_DRIVE_BYTES >> 20} MiB"))
    return lints


def _image_bytes(drive) -> int | None:
    """The size of a drive image file (a drive inside a disk is already placed)."""
    if drive.format not in ("iso9660", "vfat") or drive.partition is not None:
        return None
    path = Path(drive.source)
    return path.stat().st_size if path.is_file() else None

