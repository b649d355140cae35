"""Address management: pure functions over ipaddress objects, no I/O.

Rules: never the network address, never the IPv4 broadcast address, never a gateway;
auto allocation takes the lowest free host address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from kleenenet.errors import Conflict, InvalidInput

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

# Smallest subnets that still hold a gateway and one container.
MAX_PREFIX = {4: 30, 6: 126}


def parse_subnet(text: str, version: int) -> IPNetwork | None:
    """'' means no subnet of that family."""
    if text == "":
        return None
    option = "--subnet" if version == 4 else "--subnet6"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"invalid {option} {text!r}: expected an IPv{version} CIDR such as "
                           + ("10.2.3.0/24" if version == 4 else "fd00:2:3::/64")) from None
    if net.version != version:
        raise InvalidInput(f"invalid {option} {text!r}: not an IPv{version} subnet")
    if "/" not in text:
        raise InvalidInput(f"invalid {option} {text!r}: give a prefix length, e.g. {net.network_address}/24")
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise InvalidInput(f"invalid {option} {text!r}: host bits are set (did you mean {net}?)")
    if net.prefixlen > MAX_PREFIX[version]:
        raise InvalidInput(
            f"invalid {option} {text!r}: too small, use a prefix of /{MAX_PREFIX[version]} or shorter"
        )
    return net


def parse_address(text: str, option: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"invalid {option} {text!r}: not an IP address") from None


def _unusable(subnet: IPNetwork) -> set[IPAddress]:
    reserved = {subnet.network_address}
    if subnet.version == 4:
        reserved.add(subnet.broadcast_address)
    return reserved


def check_host_address(addr: IPAddress, subnet: IPNetwork, option: str) -> IPAddress:
    if addr.version != subnet.version or addr not in subnet:
        raise InvalidInput(f"invalid {option} {addr}: not in subnet {subnet}")
    if addr in _unusable(subnet):
        what = "network" if addr == subnet.network_address else "broadcast"
        raise InvalidInput(f"invalid {option} {addr}: it is the {what} address of {subnet}")
    return addr


def resolve_gateway(text: str, subnet: IPNetwork | None, option: str) -> IPAddress | None:
    """'' = no gateway, '<auto>' = first host address, else an address inside the subnet."""
    if text == "":
        return None
    if subnet is None:
        raise InvalidInput(f"invalid {option} {text!r}: the network has no subnet of that family")
    if text == "<auto>":
        return first_host(subnet)
    return check_host_address(parse_address(text, option), subnet, option)


def first_host(subnet: IPNetwork) -> IPAddress:
    return subnet.network_address + 1


def allocate(subnet: IPNetwork, used: Collection[IPAddress]) -> IPAddress:
    """The lowest host address of the subnet not in `used` (which includes the gateway)."""
    taken = {int(a) for a in used}
    start = int(subnet.network_address) + 1
    end = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    candidate = start
    # Addresses are handed out lowest first, so the used set is mostly a prefix of the range:
    # walking past it is O(len(used)).
    while candidate in taken:
        candidate += 1
    if candidate > end:
        raise Conflict(f"subnet {subnet} is exhausted: all {end - start + 1} host addresses are in use")
    return type(subnet.network_address)(candidate)  # ip_address(int) would guess the family


def claim(addr_text: str, subnet: IPNetwork | None, used: Collection[IPAddress], option: str) -> IPAddress:
    """A static address: it must lie in the subnet and be free."""
    if subnet is None:
        raise InvalidInput(f"invalid {option} {addr_text!r}: the network has no subnet of that family")
    addr = check_host_address(parse_address(addr_text, option), subnet, option)
    if addr in used:
        raise Conflict(f"address {addr} is already in use on subnet {subnet}")
    return addr


def find_overlap(subnet: IPNetwork, existing: Iterable[tuple[str, IPNetwork]]) -> str | None:
    """The description of the first existing (label, network) that overlaps `subnet`."""
    for label, other in existing:
        if other.version == subnet.version and subnet.overlaps(other):
            return f"{label} ({other})"
    return None
