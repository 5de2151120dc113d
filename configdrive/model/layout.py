"""Content -> the config-drive-v2 file tree, as nova (all versions) or openstacksdk and
ironic (``versions`` named) write it.

The tree is a plain ``{path: bytes}`` mapping with relative POSIX paths
(``openstack/latest/meta_data.json``), in a stable order. By default it is nova's: every
OpenStack version directory, each holding every file its version allows. With ``versions``
named it is openstacksdk's (``openstack.baremetal.configdrive.build``, which ironic's
conductor calls): every file the content has goes into every listed directory, whatever
the directory's date. Both matter for the same reason: cloud-init reads the NEWEST dated
directory it knows and ignores ``latest`` when one exists; glean reads only ``latest``. A
``2012-08-10,latest`` drive gated by date would hide network_data.json from cloud-init.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Iterable

from .content import Content, InjectedFile
from ..errors import ConfigDriveError

# Oldest first (nova api/metadata/base.py). Each name is also the directory name.
OPENSTACK_VERSIONS = (
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
    "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04",
)
# nova writes only these EC2 versions by default (config_drive_skip_versions).
EC2_VERSIONS = ("2009-04-04",)
LATEST = "latest"

# The first version whose directory carries each file or meta_data key.
VENDOR_DATA_SINCE = "2013-10-17"
NETWORK_DATA_SINCE = "2015-10-15"
VENDOR_DATA2_SINCE = "2016-10-06"
META_KEY_SINCE = {
    "random_seed": "2013-04-04",
    "project_id": "2015-10-15",
    "devices": "2016-06-30",
    "dedicated_cpus": "2020-10-14",
}
# Keys of a devices[] entry, and device types, that later versions brought.
DEVICE_KEY_SINCE = {"vlan": "2017-02-22", "vf_trusted": "2018-08-27"}
DEVICE_TYPE_SINCE = {"share": "2025-04-04"}

RANDOM_SEED_BYTES = 512


def allows(version: str, since: str) -> bool:
    """Whether directory ``version`` may carry a thing that arrived in ``since``."""
    return version == LATEST or version >= since  # ISO dates compare as strings


def parse_versions(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """The OpenStack directories to write: all by default, else the named ones (a comma
    list like ``2012-08-10,latest``), validated and in canonical order."""
    if spec is None:
        return OPENSTACK_VERSIONS + (LATEST,)
    names = [v.strip() for v in (spec.split(",") if isinstance(spec, str) else spec) if v.strip()]
    known = OPENSTACK_VERSIONS + (LATEST,)
    for name in names:
        if name not in known:
            raise ConfigDriveError(f"--versions: unknown OpenStack version {name!r} (known: {', '.join(known)})")
    if not names:
        raise ConfigDriveError("--versions: names no version")
    return tuple(v for v in known if v in names)


def build_tree(content: Content, versions: str | Iterable[str] | None = None,
               ec2: bool = True) -> dict[str, bytes]:
    """The whole drive as ``{relative path: bytes}``."""
    chosen = parse_versions(versions)
    tree: dict[str, bytes] = {}
    meta_data, content_files = _with_injected_files(content)
    # Version directories mostly hold the same bytes: one object for each distinct file,
    # so that a large document costs its size once, not once per directory.
    distinct: dict[bytes, bytes] = {}

    for version in chosen:
        base = f"openstack/{version}/"
        if versions is None:   # nova: what each version allows
            meta = _meta_data_for(meta_data, version)
            documents = {name: doc or {} for name, doc, since in _documents(content) if allows(version, since)}
        else:                  # openstacksdk: everything the content has, everywhere
            meta = dict(meta_data)
            documents = {name: doc for name, doc, _ in _documents(content) if doc is not None}
        if content.random_seed and (versions is not None or allows(version, META_KEY_SINCE["random_seed"])):
            # nova draws a fresh seed for every directory; only when asked, so that builds
            # stay reproducible by default.
            meta["random_seed"] = base64.b64encode(os.urandom(RANDOM_SEED_BYTES)).decode()
        data = json_bytes(meta)
        tree[base + "meta_data.json"] = distinct.setdefault(data, data)
        if content.user_data is not None:
            tree[base + "user_data"] = content.user_data
        for name, doc in documents.items():
            data = json_bytes(doc)
            tree[base + name] = distinct.setdefault(data, data)
    tree.update(content_files)

    if ec2:
        ec2_meta = json_bytes(ec2_meta_data(meta_data, content.network_data, content.ec2))
        for version in EC2_VERSIONS + (LATEST,):
            tree[f"ec2/{version}/meta-data.json"] = ec2_meta
            if content.user_data is not None:
                tree[f"ec2/{version}/user-data"] = content.user_data
    return tree


def _with_injected_files(content: Content) -> tuple[dict[str, Any], dict[str, bytes]]:
    """meta_data with a ``files`` entry per injected file, and the content/NNNN bytes.
    One copy of each file, referenced from every version (content_path is relative to
    ``openstack/``)."""
    return add_injected_files(content.meta_data, content.files)


def add_injected_files(meta_data: dict[str, Any], files: Iterable[InjectedFile],
                       taken: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A copy of ``meta_data`` with a ``files`` entry per injected file, and the bytes of
    each as ``openstack/content/NNNN``, numbered past the content paths its entries and
    ``taken`` (tree paths, e.g. of a drive being re-mastered) already use."""
    meta_data = dict(meta_data)
    files = list(files)
    if not files:
        return meta_data, {}
    entries = list(meta_data.get("files") or [])
    used = {e.get("content_path") for e in entries if isinstance(e, dict)}
    used.update("/" + path.removeprefix("openstack/") for path in taken)
    blobs: dict[str, bytes] = {}
    index = 0
    for injected in files:
        while f"/content/{index:04d}" in used:
            index += 1
        content_path = f"/content/{index:04d}"
        used.add(content_path)
        entries.append({"path": injected.path, "content_path": content_path})
        blobs["openstack" + content_path] = injected.data
    meta_data["files"] = entries
    return meta_data, blobs


def _documents(content: Content) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(file name, document or None, first version that carries it), in nova's order."""
    return [("vendor_data.json", content.vendor_data, VENDOR_DATA_SINCE),
            ("network_data.json", content.network_data, NETWORK_DATA_SINCE),
            ("vendor_data2.json", content.vendor_data2, VENDOR_DATA2_SINCE)]


def _meta_data_for(meta_data: dict[str, Any], version: str) -> dict[str, Any]:
    """meta_data.json as directory ``version`` carries it: keys a later version brought
    are left out, as nova leaves them out."""
    doc = {k: v for k, v in meta_data.items()
           if k not in META_KEY_SINCE or allows(version, META_KEY_SINCE[k])}
    if "devices" in doc and isinstance(doc["devices"], list):
        doc["devices"] = [_device_for(d, version) for d in doc["devices"]
                          if not (isinstance(d, dict) and d.get("type") in DEVICE_TYPE_SINCE
                                  and not allows(version, DEVICE_TYPE_SINCE[d["type"]]))]
    return doc


def _device_for(device: Any, version: str) -> Any:
    if not isinstance(device, dict):
        return device
    return {k: v for k, v in device.items()
            if k not in DEVICE_KEY_SINCE or allows(version, DEVICE_KEY_SINCE[k])}


# What nova writes into ec2/<version>/meta-data.json (api/metadata/base.py
# get_ec2_metadata); an ec2 section of the input may give any of them.
EC2_KEYS = (
    "ami-id", "ami-launch-index", "ami-manifest-path", "instance-id", "hostname", "local-ipv4",
    "reservation-id", "security-groups", "public-keys", "local-hostname", "public-hostname",
    "public-ipv4", "instance-type", "block-device-mapping", "kernel-id", "ramdisk-id",
    "placement", "instance-action",
)


def ec2_meta_data(meta_data: dict[str, Any], network_data: dict[str, Any] | None,
                  section: dict[str, Any] | None = None) -> dict[str, Any]:
    """ec2 meta-data.json: nova's EC2 view of the instance, derived from the OpenStack
    metadata where it has a source there, then the input's ec2 section (which wins: nova's
    EC2 ids, flavor name, floating IP and security groups exist only outside the drive).
    Keys with no source are left out rather than invented (Afterburn reads instance-id,
    instance-type and public-ipv4 and would take an invented one for the truth)."""
    hostname = meta_data.get("hostname") or meta_data.get("name") or ""
    doc: dict[str, Any] = {
        "instance-id": meta_data.get("uuid", ""),
        "ami-launch-index": meta_data.get("launch_index", 0),
    }
    if hostname:
        doc.update({"hostname": hostname, "local-hostname": hostname, "public-hostname": hostname})
    if meta_data.get("availability_zone"):
        doc["placement"] = {"availability-zone": meta_data["availability_zone"]}
    keys = list((meta_data.get("public_keys") or {}).items())
    if keys:
        name, key = keys[0]
        doc["public-keys"] = {"0": {"_name": f"0={name}", "openssh-key": key}}
    ipv4 = _first_static_ipv4(network_data)
    if ipv4:
        doc["local-ipv4"] = ipv4
    doc.update(section or {})
    return doc


def _first_static_ipv4(network_data: dict[str, Any] | None) -> str | None:
    for net in (network_data or {}).get("networks") or []:
        if isinstance(net, dict) and net.get("type") == "ipv4" and net.get("ip_address"):
            return str(net["ip_address"])
    return None


def json_bytes(obj: Any) -> bytes:
    """A document as nova writes it (json.dumps, default separators)."""
    return json.dumps(obj).encode()
