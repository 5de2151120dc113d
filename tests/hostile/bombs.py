"""Metadata documents that cost their maker a few bytes and a parser (or what walks its
result) minutes and gigabytes, each within the 64 MiB input cap; and large documents a
real deployment writes, which must still pass. Shared by the hostile cases
(test_metadata.py, test_seed_yaml.py, test_remaster.py) and the property tests
(tests/fuzz/test_docscan.py)."""

from __future__ import annotations

import json

UUID = "83679162-1378-4288-a2d4-70e13ec132aa"
MiB = 1 << 20


def _fill(head: bytes, item: bytes, tail: bytes, size: int, sep: bytes = b", ") -> bytes:
    count = max(1, (size - len(head) - len(tail)) // (len(item) + len(sep)))
    return head + sep.join([item] * count) + tail


def json_bombs(size: int = 4 * MiB) -> dict[str, bytes]:
    """JSON objects (meta_data, network_data and vendor_data all take an object) of about
    ``size`` bytes, each a different way of making parse results large or deep."""
    head = b'{"uuid": "%s", "x": ' % UUID.encode()
    return {
        "wide-empty-objects": _fill(head + b"[", b"{}", b"]}", size),       # the case
        "wide-empty-arrays": _fill(head + b"[", b"[]", b"]}", size),
        "wide-numbers": _fill(head + b"[", b"0", b"]}", size, b","),
        "many-keys": head + b"{" + b", ".join(b'"k%08d": 0' % i for i in range(size // 16)) + b"}}",
        "deep-arrays": head + b"[" * (size // 2) + b"]" * (size // 2) + b"}",
        "deep-objects": head + b'{"a": ' * (size // 7) + b"0" + b"}" * (size // 7) + b"}",
        "deep-then-wide": head + b"[" * 60 + _fill(b"[", b"{}", b"]", size) + b"]" * 60 + b"}",
    }


def yaml_bombs(size: int = 4 * MiB) -> dict[str, bytes]:
    """YAML documents (network-config, a seed's meta-data) of at most about ``size``
    bytes, each a different way of keeping PyYAML or what walks its result busy."""
    depth = 2000
    return {
        "flow-open": b"[" * 40_000,                                           # the case
        "flow-deep": b"version: 2\nx: " + b"[" * (size // 2) + b"]" * (size // 2) + b"\n",
        "flow-mappings-deep": b"version: 2\nx: " + b"{a: " * (size // 5) + b"b" + b"}" * (size // 5) + b"\n",
        "flow-long": _fill(b"version: 2\nx: [", b"a", b"]\n", size),
        "flow-empty-maps": _fill(b"version: 2\nx: [", b"{}", b"]\n", size),
        "flow-empty-pairs": _fill(b"version: 2\nx: [", b":", b"]\n", size),     # each {null: null}
        "empty-documents": b"version: 2\n" + b"---\n" * (size // 4),
        "block-mappings-deep": b"version: 2\n" + b"".join(b" " * i + b"a:\n" for i in range(depth)),
        "block-sequences-deep": b"version: 2\nx:\n" + b"".join(b" " * (i + 1) + b"-\n" for i in range(depth)),
        "compact-sequences-deep": b"version: 2\nx: \n" + b"- " * (size // 2) + b"x\n",
        "block-many-keys": b"version: 2\n" + b"".join(b"k%08d: v\n" % i for i in range(size // 13)),
        "block-long-sequence": b"version: 2\nx:\n" + b"- a\n" * (size // 4),
        # the same nesting with line breaks only YAML knows (PyYAML breaks lines there too)
        "line-separators-deep": b"version: 2\n" + b"".join(b" " * i + b"a:\xe2\x80\xa8" for i in range(depth)),
        "carriage-returns-deep": b"version: 2\r" + b"".join(b" " * i + b"a:\r" for i in range(depth)),
        # a quote that is more of a plain scalar for PyYAML, hiding the nesting after it
        # from a scan that took it for a quoted scalar
        "quote-in-plain-block": b"version: 2\na: b\n  \"\nc: " + b"[" * 40_000 + b"]" * 40_000 + b"\nd: \"\n",
        "quote-in-plain-flow": b"version: 2\nx: [a\n  \", b, " + b"[" * 40_000 + b"]" * 40_000 + b", \"c\"]\n",
        "alias-laughs": b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
            b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((c, c) + (c - 1,) * 9)
            for c in range(ord("b"), ord("j"))) + b"version: 2\n",
    }


def large_network_data(links: int = 1000) -> dict:
    """network_data.json for a host with ``links`` ports, one network each with a route
    and DNS: far beyond a real server's, about 40 values per port."""
    return {
        "links": [{"id": f"tap{i}", "type": "phy", "vif_id": f"{i:08x}-0000-4000-8000-000000000000",
                   "ethernet_mac_address": f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                   "mtu": 1500} for i in range(links)],
        "networks": [{"id": f"network{i}", "link": f"tap{i}", "type": "ipv4",
                      "ip_address": f"10.{i >> 8 & 255}.{i & 255}.2", "netmask": "255.255.255.0",
                      "network_id": f"{i:08x}-1111-4000-8000-000000000000",
                      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                  "gateway": f"10.{i >> 8 & 255}.{i & 255}.1"}],
                      "services": [{"type": "dns", "address": "10.0.0.53"}]} for i in range(links)],
        "services": [{"type": "dns", "address": "10.0.0.53"}],
    }


def large_network_config(interfaces: int = 1000) -> bytes:
    """A network config version 2 (YAML) for ``interfaces`` ports, addresses, routes, DNS."""
    lines = ["network:", "  version: 2", "  ethernets:"]
    for i in range(interfaces):
        lines += [f"    eth{i}:", "      match:", f"        macaddress: 'fa:16:3e:00:{i >> 8:02x}:{i & 255:02x}'",
                  f"      addresses: [10.{i >> 8}.{i & 255}.2/24]", "      routes:",
                  f"        - {{to: default, via: 10.{i >> 8}.{i & 255}.1}}  # via the port's gateway",
                  "      nameservers: {addresses: [10.0.0.53]}"]
    return ("\n".join(lines) + "\n").encode()


def large_user_data(size: int = MiB) -> bytes:
    """A shell script of ``size`` bytes, brackets and colons included (never parsed)."""
    line = b"echo '[{\"step\": %d}]' >> /var/log/provision.log  # [[[ {{{ : - - -\n"
    return b"#!/bin/sh\n" + b"".join(line % i for i in range(size // len(line)))


def large_meta_data(keys: int = 500) -> dict:
    """meta_data.json with ``keys`` SSH keys and as many meta entries."""
    return {"uuid": UUID, "hostname": "node-7", "name": "node-7",
            "public_keys": {f"key{i}": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i:032d} key{i}" for i in range(keys)},
            "meta": {f"role{i}": f"value {i}" for i in range(keys)}}


def json_text(doc) -> bytes:
    return json.dumps(doc).encode()
