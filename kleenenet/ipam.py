"""Address management: pure functions over ipaddress objects, no I/O.

Rules: never the network address, never the IPv4 broadcast address, never a gateway.
Automatic addresses are handed out in a ring, as CNI's host-local does: the next free address
after the last one handed out, wrapping around at the end of the subnet. A freed address thus
stays unused for as long as possible (no stale ARP or conntrack entries pointing at a new
container), and finding the next one costs a few lookups however full the subnet is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from kleenenet.errors import Conflict, InvalidInput

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

# Smallest subnets that still hold a gateway and one container.
MAX_PREFIX = {4: 30, 6: 126}

# Ranges no container address may come from: the kernel treats them specially, and link-local is
# where kleenenet's own next hops live (169.254.1.1, fe80::1).
UNUSABLE = [(ipaddress.ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "this network"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
    ("::/127", "unspecified and loopback"), ("::ffff:0:0/96", "IPv4-mapped"), ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)]


def parse_subnet(text: str, version: int) -> IPNetwork | None:
    """'' means no subnet of that family."""
    if text == "":
        return None
    option = "--subnet" if version == 4 else "--subnet6"
    if "%" in text:  # ipaddress takes an IPv6 zone (fd00::%eth0/64); a subnet has none
        raise InvalidInput(f"invalid {option} {text!r}: a subnet has no %zone")
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
    for bad, why in UNUSABLE:
        if net.version == bad.version and net.overlaps(bad):
            raise InvalidInput(f"invalid {option} {text!r}: overlaps {bad} ({why}), which containers cannot use")
    return net


def parse_address(text: str, option: str) -> IPAddress:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"invalid {option} {text!r}: not an IP address") from None
    if getattr(addr, "scope_id", None) is not None:  # fd00::5%eth0 is not fd00::5 to the store
        raise InvalidInput(f"invalid {option} {text!r}: give the address without a %zone")
    return addr


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
    """'' = no gateway, '<auto>' = first host address (none without a subnet of that family, as
    klee asks for both families), else an address inside the subnet."""
    if text == "" or (text == "<auto>" and subnet is None):
        return None
    if subnet is None:
        raise InvalidInput(f"invalid {option} {text!r}: the network has no subnet of that family")
    if text == "<auto>":
        return first_host(subnet)
    return check_host_address(parse_address(text, option), subnet, option)


def first_host(subnet: IPNetwork) -> IPAddress:
    return subnet.network_address + 1


def parse_range(text: str, subnet: IPNetwork | None, option: str) -> IPNetwork | None:
    """`--ip-range`: a CIDR inside the subnet, where automatic addresses come from ('' = none)."""
    if text == "":
        return None
    if subnet is None:
        raise InvalidInput(f"invalid {option} {text!r}: the network has no subnet of that family")
    try:
        pool = ipaddress.ip_network(text)
    except ValueError:
        raise InvalidInput(f"invalid {option} {text!r}: expected a CIDR inside {subnet}, "
                           "without host bits, e.g. " + str(next(subnet.subnets(1), subnet))) from None
    if pool.version != subnet.version or not pool.subnet_of(subnet) or "/" not in text:
        raise InvalidInput(f"invalid {option} {text!r}: not a range inside subnet {subnet}")
    if _hosts(subnet, pool) is None:
        raise InvalidInput(f"invalid {option} {text!r}: holds no host address of {subnet}")
    return pool


def _hosts(subnet: IPNetwork, pool: IPNetwork | None) -> tuple[int, int] | None:
    """The first and last host address of `subnet` inside `pool`, as integers (None: no host)."""
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    if pool is not None:
        first, last = max(first, int(pool.network_address)), min(last, int(pool.broadcast_address))
    return (first, last) if first <= last else None


def next_free(subnet: IPNetwork, after: IPAddress | None, is_taken: Callable[[IPAddress], bool],
              count_in_use: Callable[[], int], pool: IPNetwork | None = None) -> IPAddress:
    """The first host address after `after` (wrapping around) for which is_taken() is false,
    inside `pool` when given. count_in_use() counts the taken host addresses (gateway included)
    of the pool: asked only when the first candidate is taken, it refuses a full pool at once
    instead of trying every address."""
    first, last = _hosts(subnet, pool)
    capacity = last - first + 1
    start = int(after) + 1 - first if after is not None and first <= int(after) < last else 0
    for i in range(capacity):
        candidate = type(subnet.network_address)(first + (start + i) % capacity)  # ip_address(int) guesses the family
        if not is_taken(candidate):
            return candidate
        if i == 0 and count_in_use() >= capacity:
            break
    raise Conflict(f"{'range ' + str(pool) if pool else 'subnet ' + str(subnet)} is exhausted: "
                   f"all {capacity} host addresses are in use")


def claim(addr_text: str, subnet: IPNetwork | None, is_taken: Callable[[IPAddress], bool],
          option: str) -> IPAddress:
    """A static address: it must lie in the subnet and be free."""
    if subnet is None:
        raise InvalidInput(f"invalid {option} {addr_text!r}: the network has no subnet of that family")
    addr = check_host_address(parse_address(addr_text, option), subnet, option)
    if is_taken(addr):
        raise Conflict(f"address {addr} is already in use on subnet {subnet}")
    return addr


def find_overlap(subnet: IPNetwork, existing: Iterable[tuple[str, IPNetwork]]) -> str | None:
    """The description of the first existing (label, network) that overlaps `subnet`."""
    for label, other in existing:
        if other.version == subnet.version and subnet.overlaps(other):
            return f"{label} ({other})"
    return None


def unique_local64(taken: Iterable[tuple[str, IPNetwork]]) -> IPv6Network:
    """A /64 of a random unique local prefix (RFC 4193: fd00::/8 and a random 40-bit global ID),
    clear of `taken`."""
    import os

    taken = list(taken)
    for _ in range(16):
        subnet = IPv6Network((int.from_bytes(b"\xfd" + os.urandom(5) + bytes(10), "big"), 64))
        if find_overlap(subnet, taken) is None:
            return subnet
    raise Conflict("no free unique local IPv6 /64 found: give --subnet6 explicitly")
