"""cloud-init NoCloud seeds from the same :class:`Content` a config drive is built from.

A NoCloud seed is a flat filesystem labelled ``cidata`` holding ``meta-data`` (YAML:
instance-id, local-hostname, public-keys), ``user-data``, and optionally ``vendor-data``
and ``network-config`` -- what cloud-localds makes, and what cloud-init's
DataSourceNoCloud reads (sources/DataSourceNoCloud.py: ``required=["user-data",
"meta-data"]``, ``optional=["vendor-data", "network-config"]``). The filesystem writers
are the config drive's own (ISO 9660 with Joliet and Rock Ridge, or vfat).

``network-config`` is the user's file passed through (version 1 or 2), or, when only
network_data.json is given, network config **version 2** converted from it: v2 matches
each physical link by MAC address, so the seed needs no guess at the guest's interface
names (cloud-init's own v1 converter, helpers/openstack.py convert_net_json, asks the
running host for them with get_interfaces_by_mac).

PyYAML is imported only where a seed is written or read.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any, Mapping

from .content import Content
from ..documents.docscan import check_yaml
from ..errors import ConfigDriveError
from ..documents.jsondoc import MAX_INTEGER_DIGITS

LABEL = "cidata"
# --format name -> the filesystem the seed is written as
FORMATS = {"nocloud": "iso", "nocloud-vfat": "vfat"}
META_DATA, USER_DATA, VENDOR_DATA, NETWORK_CONFIG = "meta-data", "user-data", "vendor-data", "network-config"
SEED_FILES = (META_DATA, USER_DATA, VENDOR_DATA, NETWORK_CONFIG)
NETWORK_CONFIG_VERSIONS = (1, 2)


def is_seed(tree: Mapping[str, bytes]) -> bool:
    """Whether a drive's tree is a NoCloud seed (meta-data at its root) rather than a
    config drive (openstack/<version>/...)."""
    return META_DATA in tree and not any(p.startswith("openstack/") for p in tree)


# -- writing ---------------------------------------------------------------------------

def seed_tree(content: Content) -> dict[str, bytes]:
    """The seed's files. user-data is always written (empty when none is given): cloud-init
    refuses a seed without it."""
    tree = {META_DATA: _yaml(meta_data(content)), USER_DATA: content.user_data or b""}
    vendor = vendor_data(content)
    if vendor is not None:
        tree[VENDOR_DATA] = vendor
    if content.network_config is not None:
        parse_network_config(content.network_config, "network-config")   # refuse before writing
        tree[NETWORK_CONFIG] = content.network_config
    elif content.network_data:
        tree[NETWORK_CONFIG] = _yaml(network_config_v2(content.network_data))
    return tree


def meta_data(content: Content) -> dict[str, Any]:
    """meta-data as NoCloud reads it: ``instance-id`` (the OpenStack uuid),
    ``local-hostname``, and ``public-keys`` as a list (sources/__init__.py
    normalize_pubkey_data takes a list as it is)."""
    doc: dict[str, Any] = {"instance-id": content.uuid}
    if content.hostname:
        doc["local-hostname"] = content.hostname
    keys = [key for _name, key in content.ssh_keys()]
    if keys:
        doc["public-keys"] = keys
    if content.meta_data.get("availability_zone"):
        doc["availability-zone"] = content.meta_data["availability_zone"]
    return doc


def vendor_data(content: Content) -> bytes | None:
    """vendor-data is cloud-config itself; OpenStack's vendor_data.json carries it under
    its ``cloud-init`` key (cloud-init's ConfigDrive reads it from there:
    sources/helpers/openstack.py convert_vendordata), so that is what is written."""
    for doc in (content.vendor_data, content.vendor_data2):
        if isinstance(doc, dict) and isinstance(doc.get("cloud-init"), str):
            return doc["cloud-init"].encode()
    return None


def network_config_v2(network_data: Mapping[str, Any]) -> dict[str, Any]:
    """network_data.json as network config version 2 (the ``network:`` body).

    Physical links are ``ethernets`` keyed by their id and matched by MAC; bonds are named
    bond0, bond1, ... and VLANs ``LINK.VLAN_ID``, as cloud-init's own converter names them."""
    links = [link for link in network_data.get("links") or [] if isinstance(link, dict)]
    names: dict[str, str] = {}
    sections: dict[str, dict[str, Any]] = {"ethernets": {}, "bonds": {}, "vlans": {}}
    devices: dict[str, dict[str, Any]] = {}
    bonds = 0
    for link in links:     # names first: a VLAN or bond may name a link listed after it
        if link.get("type") == "bond":
            names[link["id"]] = f"bond{bonds}"
            bonds += 1
        elif link.get("type") != "vlan":
            names[link["id"]] = str(link.get("name") or link["id"])
    for link in links:
        if link.get("type") == "vlan":
            names[link["id"]] = f"{names.get(link.get('vlan_link'), link.get('vlan_link'))}.{link.get('vlan_id')}"
    for link in links:
        name, kind = names[link["id"]], link.get("type")
        device: dict[str, Any] = {}
        if kind == "bond":
            device["interfaces"] = [names.get(member, member) for member in link.get("bond_links") or []]
            device["parameters"] = _bond_parameters(link)
            if link.get("ethernet_mac_address"):
                device["macaddress"] = str(link["ethernet_mac_address"]).lower()
            section = "bonds"
        elif kind == "vlan":
            device["id"] = link.get("vlan_id")
            device["link"] = names.get(link.get("vlan_link"), link.get("vlan_link"))
            if link.get("vlan_mac_address"):
                device["macaddress"] = str(link["vlan_mac_address"]).lower()
            section = "vlans"
        else:
            if link.get("ethernet_mac_address"):
                device["match"] = {"macaddress": str(link["ethernet_mac_address"]).lower()}
            section = "ethernets"
        if isinstance(link.get("mtu"), int):
            device["mtu"] = link["mtu"]
        sections[section][name] = device
        devices[link["id"]] = device

    global_dns = _dns(network_data.get("services"))
    for net in network_data.get("networks") or []:
        if isinstance(net, dict) and net.get("link") in devices:
            _add_network(devices[net["link"]], net, global_dns)
    return {"version": 2, **{k: v for k, v in sections.items() if v}}


# network_data.json bond keys -> netplan bond parameters (cloud-init NET_CONFIG_TO_V2)
_BOND_PARAMETERS = {"bond_mode": "mode", "bond_miimon": "mii-monitor-interval",
                    "bond_xmit_hash_policy": "transmit-hash-policy"}


def _bond_parameters(link: Mapping[str, Any]) -> dict[str, Any]:
    return {v2: link[key] for key, v2 in _BOND_PARAMETERS.items() if link.get(key) is not None}


def _add_network(device: dict[str, Any], net: Mapping[str, Any], global_dns: list[str]) -> None:
    kind = net.get("type")
    if kind == "ipv4_dhcp":
        device["dhcp4"] = True
    elif kind in ("ipv6_dhcp", "ipv6_dhcpv6-stateful", "ipv6_dhcpv6-stateless"):
        device["dhcp6"] = True
    elif kind == "ipv6_slaac":
        device["accept-ra"] = True
    elif kind in ("ipv4", "ipv6") and net.get("ip_address"):
        device.setdefault("addresses", []).append(_cidr(net["ip_address"], net.get("netmask")))
        for route in net.get("routes") or []:
            if isinstance(route, dict) and route.get("gateway"):
                device.setdefault("routes", []).append(
                    {"to": _cidr(route.get("network", "0.0.0.0"), route.get("netmask")), "via": route["gateway"]})
    dns = _dns(net.get("services")) + global_dns
    if dns and kind in ("ipv4", "ipv6"):
        servers = device.setdefault("nameservers", {}).setdefault("addresses", [])
        servers.extend(a for a in dns if a not in servers)


def _dns(services: Any) -> list[str]:
    return [str(s["address"]) for s in services or []
            if isinstance(s, dict) and s.get("type") == "dns" and s.get("address")]


def _cidr(address: str, netmask: Any) -> str:
    """``ADDRESS/PREFIX`` from network_data's address and netmask (dotted IPv4, an IPv6
    mask like ffff:ffff:ffff:ffff::, or already a prefix length)."""
    address = str(address)
    if "/" in address or netmask in (None, ""):
        return str(ipaddress.ip_interface(address))
    mask = str(netmask)
    if ":" in mask:
        mask = str(bin(int(ipaddress.IPv6Address(mask))).count("1"))
    return str(ipaddress.ip_interface(f"{address}/{mask}"))


def _yaml(doc: Any) -> bytes:
    import yaml
    # no line width: an SSH key folded over two lines is valid YAML but hard to grep
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, width=float("inf")).encode()


# -- reading ---------------------------------------------------------------------------

def load_yaml(data: bytes, source: str) -> Any:
    """A seed file's YAML document, refused in one line naming the file and line."""
    import yaml
    try:
        text = data.decode("utf-8-sig")
        # Before PyYAML sees it: its scanner is quadratic in the depth of flow collections,
        # and everything after it walks what it builds.
        check_yaml(data, source)
        # No aliases: nine nested lists of nine aliases each are a billion strings to
        # anything that walks the document ("billion laughs", CVE-2003-1564 in XML), and
        # no seed needs them.
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise ConfigDriveError(f"{source}: line {mark.line + 1} column {mark.column + 1}: "
                                       "YAML alias refused (a seed needs none)")
        return yaml.load(text, Loader=_seed_loader())
    except UnicodeDecodeError as exc:
        raise ConfigDriveError(f"{source}: byte {exc.start}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise ConfigDriveError(f"{source}: {where}invalid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        # SafeLoader's constructors raise these for values its resolver took for a type
        # (2001-13-01 as a date, "!!int abc", !!bool maybe); cloud-init fails on them too.
        raise ConfigDriveError(f"{source}: invalid YAML value ({type(exc).__name__}: {exc})") from exc


# An integer scalar longer than this is refused. The digits bound is JSON's
# (jsondoc.MAX_INTEGER_DIGITS); YAML 1.1's base-60 form (1:0:0:...) costs PyYAML a
# multiplication of an ever larger integer per part, quadratic in the scalar's bytes.
MAX_INTEGER_CHARS = 2 * MAX_INTEGER_DIGITS


@functools.cache
def _seed_loader():
    """PyYAML's SafeLoader (what cloud-init reads with), integers bounded in length."""
    import yaml

    def bounded_int(loader, node):
        if len(node.value) > MAX_INTEGER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {len(node.value)} characters (at most "
                f"{MAX_INTEGER_CHARS})", node.start_mark)
        return loader.construct_yaml_int(node)

    class SeedLoader(yaml.SafeLoader):
        pass
    SeedLoader.add_constructor("tag:yaml.org,2002:int", bounded_int)
    return SeedLoader


def parse_network_config(data: bytes, source: str) -> dict[str, Any]:
    """A network-config file, refused in one line unless cloud-init would take it."""
    doc = load_yaml(data, source)
    problem = network_config_problem(doc)
    if problem is not None:
        pointer, message = problem
        raise ConfigDriveError(f"{source}: {pointer + ': ' if pointer else ''}{message}")
    return doc


def network_config_problem(doc: Any) -> tuple[str, str] | None:
    """(JSON pointer, message) when a parsed network-config is not what cloud-init takes:
    a mapping with ``version`` 1 or 2, possibly under a top-level ``network:`` key."""
    pointer = "/version"
    if isinstance(doc, dict) and isinstance(doc.get("network"), dict):
        doc, pointer = doc["network"], "/network/version"
    if not isinstance(doc, dict):
        return "", "network config must be a mapping"
    if doc.get("version") not in NETWORK_CONFIG_VERSIONS:
        return pointer, f"must be 1 or 2, not {json.dumps(doc.get('version'), default=str)}"
    return None


def seed_problems(tree: Mapping[str, bytes], label: str) -> list[tuple[str, str, str, str]]:
    """(file, JSON pointer, message, severity) for what cloud-init's NoCloud would refuse
    or misread in a seed."""
    found = []
    if label and label.lower() != LABEL:
        found.append(("", "", f"volume label {label!r}: cloud-init's NoCloud looks only for {LABEL} "
                      "(either case)", "error"))
    if USER_DATA not in tree:
        found.append((USER_DATA, "", "missing: cloud-init's NoCloud requires user-data (it may be empty)", "error"))
    try:
        meta = load_yaml(tree[META_DATA], META_DATA)
        if not isinstance(meta, dict):
            found.append((META_DATA, "", "must be a YAML mapping", "error"))
        elif not meta.get("instance-id"):
            # cloud-init falls back to the instance-id "nocloud": every such guest looks
            # like the same instance and per-instance modules run once, ever.
            found.append((META_DATA, "/instance-id", "missing: cloud-init uses \"nocloud\" for every guest",
                          "warning"))
    except ConfigDriveError as exc:
        found.append((META_DATA, "", str(exc).removeprefix(f"{META_DATA}: "), "error"))
    if NETWORK_CONFIG in tree:
        try:
            problem = network_config_problem(load_yaml(tree[NETWORK_CONFIG], NETWORK_CONFIG))
        except ConfigDriveError as exc:
            problem = "", str(exc).removeprefix(f"{NETWORK_CONFIG}: ")
        if problem is not None:
            found.append((NETWORK_CONFIG, *problem, "error"))
    return found


def summary_fields(tree: Mapping[str, bytes]) -> dict[str, Any]:
    """What ``inspect`` shows of a seed, in the keys a config drive's summary uses."""
    try:
        meta = load_yaml(tree[META_DATA], META_DATA)
    except ConfigDriveError:
        meta = None
    meta = meta if isinstance(meta, dict) else {}
    network = tree.get(NETWORK_CONFIG)
    return {
        "datasource": "nocloud",
        "uuid": meta.get("instance-id"),
        "hostname": meta.get("local-hostname"),
        "name": None,
        "public_keys": _key_names(meta.get("public-keys")),
        "network_config_bytes": len(network) if network is not None else None,
        "user_data_bytes": len(tree[USER_DATA]) if USER_DATA in tree else None,
    }


def _key_names(keys: Any) -> list[str]:
    """Each key's comment (or its position): public-keys may be a string of lines, a list,
    or a mapping of name to key(s), as cloud-init's normalize_pubkey_data accepts."""
    if isinstance(keys, dict):
        return sorted(str(name) for name in keys)
    if isinstance(keys, str):
        keys = keys.splitlines()
    if not isinstance(keys, list):
        return []
    return sorted(str(k).split()[2] if len(str(k).split()) > 2 else str(i) for i, k in enumerate(keys) if k)
