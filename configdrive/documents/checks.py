"""The checks a JSON Schema cannot say: ids that must exist, address families, well-formed
MACs and uuids, injected file paths, user data sizes.

Each check takes a document that may also have failed its schema, so it skips values of
the wrong type (the schema already reported those) instead of tripping over them. It
returns :class:`Finding` s with pointers relative to the document; the caller names the
file.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from typing import Any, Iterator, NamedTuple

from ..files.drivefiles import MAX_DRIVE_BYTES
from ..errors import one_line

# Link types nova writes (network/model.py VIF types it passes through, plus phy, bond and
# vlan), and the extra ones cloud-init knows (helpers/openstack.py KNOWN_PHYSICAL_TYPES).
# Others are not wrong, but cloud-init only guesses that they are physical.
KNOWN_LINK_TYPES = frozenset({
    "phy", "bond", "vlan",
    "bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif",
    "ethernet", "bgpovs", "cascading",
})
# Our schema accepts the underscored forms (hand-written files use them); cloud-init's
# converter matches only nova's hyphenated spelling and passes these through unknown.
CLOUD_INIT_SPELLING = {
    "ipv6_dhcpv6_stateful": "ipv6_dhcpv6-stateful",
    "ipv6_dhcpv6_stateless": "ipv6_dhcpv6-stateless",
}
# nova's API takes user data base64-encoded, at most this many characters.
NOVA_USER_DATA_BASE64_LIMIT = 65535
# nova's personality files: path at most 255 characters (api/openstack/compute/schemas).
MAX_INJECTED_PATH = 255

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


class Finding(NamedTuple):
    pointer: str
    message: str
    severity: str = "error"


def pointer(*parts: Any) -> str:
    """A JSON pointer (RFC 6901) from path parts. Characters that are not printable in a
    key are shown escaped: a key is a stranger's text, and a message must stay one line."""
    return one_line("".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts))


def non_finite_findings(doc: Any) -> list[Finding]:
    """NaN and infinities in a document built in Python (files refuse them when parsed):
    json.dumps would write them as NaN and Infinity, which are not JSON, and cloud-init's
    reader rejects the drive."""
    found = []
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            found.append(Finding(pointer(*where), f"{node!r} is not a JSON number"))
        elif isinstance(node, dict):
            stack.extend((child, (*where, key)) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, (*where, i)) for i, child in enumerate(node))
    return found


# -- meta_data ------------------------------------------------------------------------

def meta_data_findings(doc: Any) -> list[Finding]:
    if not isinstance(doc, dict):
        return []
    found: list[Finding] = []
    uuid = doc.get("uuid")
    if isinstance(uuid, str) and not _UUID.fullmatch(uuid):
        found.append(Finding("/uuid", f"{uuid!r} is not a uuid (like 83679162-1378-4288-a2d4-70e13ec132aa)"))
    seed = doc.get("random_seed")
    if isinstance(seed, str):
        found.extend(_random_seed_findings(seed))
    files = doc.get("files")
    if isinstance(files, list):
        for i, entry in enumerate(files):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                found.extend(Finding(pointer("files", i, "path"), msg)
                             for msg in injected_path_problems(entry["path"]))
    return found


def _random_seed_findings(seed: str) -> list[Finding]:
    # cloud-init decodes with base64.b64decode (not strict): it fails only on bad padding
    # and silently drops characters outside the alphabet.
    # A non-ASCII string raises ValueError (binascii.Error's base) in both, cloud-init's too.
    try:
        base64.b64decode(seed, validate=True)
        return []
    except ValueError:
        pass
    try:
        base64.b64decode(seed)
    except ValueError as exc:
        return [Finding("/random_seed", f"not base64 ({exc}); cloud-init rejects the drive")]
    return [Finding("/random_seed", "has characters outside base64, which cloud-init skips", "warning")]


def injected_path_problems(path: str) -> list[str]:
    """What is wrong with a guest path an injected file would be written to."""
    problems = []
    if not path.startswith("/"):
        problems.append(f"{path!r} is not an absolute path")
    if ".." in path.split("/"):
        problems.append(f"{path!r} contains '..'")
    if "\0" in path:
        problems.append("contains a NUL character")
    if len(path) > MAX_INJECTED_PATH:
        problems.append(f"is {len(path)} characters long (at most {MAX_INJECTED_PATH})")
    return problems


def content_ref_findings(doc: Any, present: set[str] | frozenset[str]) -> list[Finding]:
    """files[].content_path and network_config.content_path must name a file under
    openstack/ (``present`` holds such paths, like ``content/0000``); cloud-init rejects
    the whole drive when one cannot be read."""
    if not isinstance(doc, dict):
        return []
    refs = []
    if isinstance(doc.get("files"), list):
        refs += [(pointer("files", i, "content_path"), e.get("content_path"))
                 for i, e in enumerate(doc["files"]) if isinstance(e, dict)]
    if isinstance(doc.get("network_config"), dict):
        refs.append(("/network_config/content_path", doc["network_config"].get("content_path")))
    return [Finding(ptr, f"{ref!r} climbs out of the drive's openstack/ ('..')" if ".." in ref.split("/") else
                    f"{ref!r}: no such file on the drive (looked for openstack/{ref.strip('/')})")
            for ptr, ref in refs
            if isinstance(ref, str) and ref.strip("/") and ref.strip("/") not in present]


# -- network_data ---------------------------------------------------------------------

def network_data_findings(doc: Any) -> list[Finding]:
    if not isinstance(doc, dict):
        return []
    found: list[Finding] = []
    if doc:
        for key in ("links", "networks", "services"):
            if key not in doc:
                found.append(Finding(pointer(key), "missing; nova always writes links, networks and services "
                                     "together (an empty list says none)", "warning"))
    links = [(i, l) for i, l in enumerate(_list(doc, "links")) if isinstance(l, dict)]
    link_ids: dict[str, int] = {}
    for i, link in links:
        lid = link.get("id")
        if isinstance(lid, str):
            if lid in link_ids:
                found.append(Finding(pointer("links", i, "id"),
                                     f"duplicate link id {lid!r} (also /links/{link_ids[lid]}/id)"))
            else:
                link_ids[lid] = i
    for i, link in links:
        found.extend(_link_findings(i, link, link_ids))
    for i, net in enumerate(_list(doc, "networks")):
        if isinstance(net, dict):
            # without a links list (already reported), every reference would look dangling
            found.extend(_network_findings(i, net, link_ids if isinstance(doc.get("links"), list) else None))
    for i, service in enumerate(_list(doc, "services")):
        if isinstance(service, dict) and isinstance(service.get("address"), str):
            msg = _address_problem(service["address"], None)
            if msg:
                found.append(Finding(pointer("services", i, "address"), msg))
    return found


def _link_findings(i: int, link: dict, link_ids: dict[str, int]) -> Iterator[Finding]:
    for key in ("ethernet_mac_address", "vlan_mac_address"):
        mac = link.get(key)
        if isinstance(mac, str) and not _MAC.fullmatch(mac):
            yield Finding(pointer("links", i, key),
                          f"{mac!r} is not a MAC address (six colon-separated hex pairs, like fa:16:3e:9c:bf:3d)")
    ltype = link.get("type")
    if isinstance(ltype, str) and ltype not in KNOWN_LINK_TYPES:
        yield Finding(pointer("links", i, "type"),
                      f"unknown link type {ltype!r}; cloud-init treats it as a physical link", "warning")
    target = link.get("vlan_link")
    if ltype == "vlan" and isinstance(target, str) and target not in link_ids:
        yield Finding(pointer("links", i, "vlan_link"), f"names no link: no link has id {target!r}")
    members = link.get("bond_links")
    if ltype == "bond" and isinstance(members, list):
        for j, member in enumerate(members):
            if isinstance(member, str) and member not in link_ids:
                yield Finding(pointer("links", i, "bond_links", j), f"names no link: no link has id {member!r}")


def _network_findings(i: int, net: dict, link_ids: dict[str, int] | None) -> Iterator[Finding]:
    here = ("networks", i)
    link = net.get("link")
    if link_ids is not None and isinstance(link, str) and link not in link_ids:
        yield Finding(pointer(*here, "link"), f"names no link: no link has id {link!r}")
    ntype = net.get("type")
    if isinstance(ntype, str) and ntype in CLOUD_INIT_SPELLING:   # a dict or list is unhashable
        yield Finding(pointer(*here, "type"), f"cloud-init recognises only the spelling "
                      f"{CLOUD_INIT_SPELLING[ntype]!r} (nova's); it will not configure this network", "warning")
    if not isinstance(ntype, str) or not ntype.startswith(("ipv4", "ipv6")):
        return      # an unknown type (already reported) implies no address family
    family = 4 if ntype.startswith("ipv4") else 6
    checks = [(pointer(*here, "ip_address"), net.get("ip_address"), _interface_problem),
              (pointer(*here, "netmask"), net.get("netmask"), _netmask_problem)]
    for j, route in enumerate(net.get("routes") if isinstance(net.get("routes"), list) else []):
        if isinstance(route, dict):
            checks += [(pointer(*here, "routes", j, "network"), route.get("network"), _address_problem),
                       (pointer(*here, "routes", j, "netmask"), route.get("netmask"), _netmask_problem),
                       (pointer(*here, "routes", j, "gateway"), route.get("gateway"), _address_problem)]
    for j, service in enumerate(net.get("services") if isinstance(net.get("services"), list) else []):
        if isinstance(service, dict):
            checks.append((pointer(*here, "services", j, "address"), service.get("address"), _address_problem))
    for ptr, value, check in checks:
        if isinstance(value, str):
            msg = check(value, family)
            if msg:
                yield Finding(ptr, msg)


def _address_problem(value: str, family: int | None, parse=ipaddress.ip_address) -> str | None:
    """An address of ``family`` (4, 6, or None for either)."""
    try:
        addr = parse(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    if family and addr.version != family:
        return f"{value!r} is an IPv{addr.version} address in an IPv{family} network"
    return None


def _interface_problem(value: str, family: int) -> str | None:
    """An address, optionally with /prefix (cloud-init accepts both)."""
    return _address_problem(value, family, ipaddress.ip_interface)


def _netmask_problem(value: str, family: int) -> str | None:
    """A mask in address form (255.255.255.0, ffff:ffff::) or a prefix length."""
    bits = 32 if family == 4 else 128
    if value.isascii() and value.isdigit():   # "²".isdigit() is true, int() refuses it
        return None if int(value) <= bits else f"{value!r} is not a prefix length (0 to {bits})"
    try:
        mask = ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not a netmask"
    if mask.version != family:
        return f"{value!r} is an IPv{mask.version} netmask in an IPv{family} network"
    n = int(mask)
    inverted = (~n) & ((1 << bits) - 1)
    if inverted & (inverted + 1):   # the ones of a mask must be contiguous from the top
        return f"{value!r} is not a netmask (its one bits are not contiguous)"
    return None


def _list(doc: dict, key: str) -> list:
    value = doc.get(key)
    return value if isinstance(value, list) else []


# -- user data ------------------------------------------------------------------------

def user_data_findings(size: int, copies: int = 1, other_bytes: int = 0) -> list[Finding]:
    """user data of ``size`` bytes, written ``copies`` times on a drive that also holds
    ``other_bytes`` of other files."""
    found = []
    encoded = 4 * ((size + 2) // 3)
    if encoded > NOVA_USER_DATA_BASE64_LIMIT:
        found.append(Finding("", f"{size} bytes: more than nova's API accepts ({NOVA_USER_DATA_BASE64_LIMIT} "
                             f"characters of base64, {NOVA_USER_DATA_BASE64_LIMIT // 4 * 3} bytes)", "warning"))
    total = size * copies + other_bytes
    if total > MAX_DRIVE_BYTES:
        times = f", written {copies} times (each version directory and ec2 holds a copy)" if copies > 1 else ""
        found.append(Finding("", f"{size} bytes{times}: the drive would need at least {total} bytes, more than "
                             f"a config drive holds ({MAX_DRIVE_BYTES} bytes)"))
    return found
