"""network_data.json -> Debian's ``/etc/network/interfaces`` (ifupdown), for guests
that configure their network from that file alone.

Like nova's template, interfaces are named in order - eth0, eth1 ... for physical links,
bond0 ... for bonds, ``PARENT.VID`` for VLANs - because network_data names links by
Neutron port, not by the name the guest's kernel will give them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..errors import ConfigDriveError

_DHCP_METHODS = {
    "ipv4_dhcp": ("inet", "dhcp", []),
    "ipv6_dhcp": ("inet6", "dhcp", []),
    "ipv6_dhcpv6-stateful": ("inet6", "dhcp", []),
    "ipv6_slaac": ("inet6", "auto", []),
    "ipv6_dhcpv6-stateless": ("inet6", "auto", ["dhcp 1"]),
}


def interface_names(links: list[dict[str, Any]]) -> dict[str, str]:
    """Link id -> guest interface name."""
    names: dict[str, str] = {}
    phys = bonds = 0
    for link in links:
        kind = link.get("type")
        if kind == "bond":
            names[link["id"]] = f"bond{bonds}"
            bonds += 1
        elif kind != "vlan":
            names[link["id"]] = f"eth{phys}"
            phys += 1
    for link in links:
        if link.get("type") == "vlan":
            parent = names.get(link.get("vlan_link"), str(link.get("vlan_link")))
            names[link["id"]] = f"{parent}.{link.get('vlan_id')}"
    return names


def render(network_data: dict[str, Any]) -> str:
    """The interfaces file; ConfigDriveError names what in network_data was unusable."""
    try:
        return _render(network_data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigDriveError(f"network_data: cannot render etc/network/interfaces ({exc!s})") from exc


def _render(network_data: dict[str, Any]) -> str:
    links = list(network_data.get("links") or [])
    networks = list(network_data.get("networks") or [])
    names = interface_names(links)
    global_dns = _dns(network_data.get("services"))
    masters = {slave: names[link["id"]] for link in links if link.get("type") == "bond"
               for slave in link.get("bond_links") or []}

    out = ["# Written by configdrive inject from network_data.json",
           "auto lo", "iface lo inet loopback"]
    for link in links:
        name = names[link["id"]]
        nets = [n for n in networks if n.get("link") == link["id"]]
        extra = _link_options(link, names, masters)
        stanza = [f"# link {link['id']}" + (f" ({link['ethernet_mac_address']})"
                                             if link.get("ethernet_mac_address") else ""),
                  f"auto {name}"]
        if not nets:
            stanza.append(f"iface {name} inet manual")
            stanza += [f"    {o}" for o in extra]
        for i, net in enumerate(nets):
            # A second network on one link becomes an alias (eth0:1), as cloud-init's own
            # renderer writes it: its parser refuses a repeated "iface eth0" stanza.
            alias = name if i == 0 else f"{name}:{i}"
            if i:
                stanza.append(f"auto {alias}")
            stanza += _network_stanza(alias, net, global_dns)
            if i == 0:
                stanza += [f"    {o}" for o in extra]
        out += ["", *stanza]
    return "\n".join(out) + "\n"


def _link_options(link: dict[str, Any], names: dict[str, str], masters: dict[str, str]) -> list[str]:
    opts = []
    if link.get("mtu"):
        opts.append(f"mtu {link['mtu']}")
    if link["id"] in masters:
        opts.append(f"bond-master {masters[link['id']]}")
    if link.get("type") == "bond":
        slaves = " ".join(names.get(s, s) for s in link.get("bond_links") or [])
        opts.append(f"bond-slaves {slaves or 'none'}")
        if link.get("bond_mode"):
            opts.append(f"bond-mode {link['bond_mode']}")
        if link.get("bond_miimon"):
            opts.append(f"bond-miimon {link['bond_miimon']}")
    if link.get("type") == "vlan":
        opts.append(f"vlan-raw-device {names.get(link.get('vlan_link'), link.get('vlan_link'))}")
    return opts


def _network_stanza(name: str, net: dict[str, Any], global_dns: list[str]) -> list[str]:
    kind = net.get("type", "")
    if kind in _DHCP_METHODS:
        family, method, opts = _DHCP_METHODS[kind]
        return [f"iface {name} {family} {method}", *(f"    {o}" for o in opts)]
    family = "inet6" if kind == "ipv6" else "inet"
    iface = ipaddress.ip_interface((net["ip_address"], _prefixlen(net.get("netmask"), kind)))
    lines = [f"iface {name} {family} static"]
    if family == "inet":
        lines += [f"    address {iface.ip}", f"    netmask {iface.netmask}"]
    else:
        lines.append(f"    address {iface.ip}/{iface.network.prefixlen}")
    for route in net.get("routes") or []:
        dest = ipaddress.ip_network((route["network"], _prefixlen(route.get("netmask"), kind)), strict=False)
        if dest.prefixlen == 0:
            lines.append(f"    gateway {route['gateway']}")
        else:
            lines.append(f"    post-up ip route add {dest} via {route['gateway']} || true")
            lines.append(f"    pre-down ip route del {dest} via {route['gateway']} || true")
    dns = _dns(net.get("services")) or global_dns
    if dns:
        lines.append(f"    dns-nameservers {' '.join(dns)}")
    return lines


def _prefixlen(mask: Any, kind: str) -> int:
    """network_data gives masks as dotted or colon notation, sometimes as a length;
    ipaddress accepts a mask only for IPv4, so count the bits ourselves."""
    if mask in (None, ""):
        return 64 if kind == "ipv6" else 32
    if isinstance(mask, int) or str(mask).isdigit():
        return int(mask)
    bits = int(ipaddress.ip_address(str(mask)))
    width = 128 if ":" in str(mask) else 32
    length = bin(bits).count("1")
    if bits != ((1 << width) - 1) ^ ((1 << (width - length)) - 1):
        raise ValueError(f"netmask {mask} is not contiguous")
    return length


def _dns(services: Any) -> list[str]:
    return [s["address"] for s in services or [] if s.get("type") == "dns" and s.get("address")]
