"""Where a container's published ports lead: one forwarding per host port, protocol and address
family, to the container's address on the first of its networks, in name order, that reaches out
(not internal) and has an address of that family — name order, so that the choice does not depend
on the order the container was wired in (reconcile rewires in any order). Pure: both platforms
render their rules from it."""

from __future__ import annotations

from dataclasses import dataclass

from kleenenet.model import Container, Endpoint, Network


@dataclass(frozen=True, order=True)
class Forward:
    """host_port/protocol arriving on `interface` (IPv4 or IPv6) goes to address:container_port."""

    family: int  # 4 or 6
    protocol: str
    host_port: int
    interface: str
    address: str
    container_port: int
    network_id: str


def by_network_name(net: Network, ep: Endpoint, family: int):
    return net.name


def in_given_order(wired: list[tuple[Network, Endpoint]]):
    """A rank: the first endpoint of `wired` first."""
    order = {ep.id: k for k, (_, ep) in enumerate(wired)}
    return lambda net, ep, family: order[ep.id]


def target(wired: list[tuple[Network, Endpoint]], family: int, rank=by_network_name) -> tuple[Network, Endpoint] | None:
    """The network and endpoint a published port of this address family leads to: the first by
    `rank(net, ep, family)` that reaches out (by default, the first network by name)."""
    attr = "ip_address" if family == 4 else "ip_address6"
    return min(((net, ep) for net, ep in wired if not net.internal and getattr(ep, attr)),
               key=lambda pair: rank(*pair, family), default=None)


def forwards(c: Container, wired: list[tuple[Network, Endpoint]], rank=by_network_name) -> list[Forward]:
    """The forwardings of container `c` whose endpoints `wired` are up. A port without interfaces
    arrives on the chosen network's NAT interface (none: not published for that family)."""
    out = []
    for family, attr in ((4, "ip_address"), (6, "ip_address6")):
        if (chosen := target(wired, family, rank)) is None:
            continue
        net, ep = chosen
        for pp in c.public_ports:
            for interface in pp.interfaces or ([net.nat] if net.nat else []):
                for host_port, container_port in pp.pairs():
                    out.append(Forward(family, pp.protocol, host_port, interface, getattr(ep, attr),
                                       container_port, net.id))
    return out
