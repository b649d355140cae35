"""pf: each network's rules live in its own anchor, kleenenet/<network name>, rendered from
templates/pf/network.conf.j2. The anchor text is a pure function of the networks and the
network's members, so loading it again is always safe (reconcile does just that). Members are a
pf table: connecting a container is `pfctl -T add`, not a ruleset load — except on a loopback
network with icc off, where each jail needs its own rule to reach its own address."""

from __future__ import annotations

from functools import cache

from kleenenet.model import Network

ANCHOR_ROOT = "kleenenet"


def anchor(net: Network) -> str:
    return f"{ANCHOR_ROOT}/{net.name}"


def table(net: Network) -> str:
    return f"kn_{net.id}"  # pf table names have at most 31 characters


def needs_reload_per_member(net: Network) -> bool:
    return net.type == "loopback" and not net.icc


@cache
def _templates():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("kleenenet", "templates/pf"),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(net: Network, networks: list[Network], members: list[str]) -> str:
    """The anchor of `net`, given all networks and the addresses of its running containers."""
    others = [s for n in networks if n.id != net.id for s in (n.subnet, n.subnet6) if s]
    return _templates().get_template("network.conf.j2").render(
        net=net, table=table(net), members=members, others=others,
        self_members=members if needs_reload_per_member(net) else [],
    )
