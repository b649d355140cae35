"""pf: each network's rules live in its own anchor, kleenenet/<network name>, rendered from
templates/pf/network.conf.j2. The anchor text is a pure function of the networks and the
network's members, so loading it again is always safe. Members are a pf table: connecting a
container is `pfctl -T add`, not a ruleset load — except on a network with icc off, where each
ipnet jail needs its own rule to reach its own address. One rule carries a label with a digest
of the anchor without the table's members: reconcile compares it with what pf has loaded."""

from __future__ import annotations

import re
from functools import cache

from kleenenet.model import Network
from kleenenet.platform import digest

ANCHOR_ROOT = "kleenenet"


def anchor(net: Network) -> str:
    return f"{ANCHOR_ROOT}/{net.name}"


def table(net: Network) -> str:
    return f"kn_{net.id}"  # pf table names have at most 31 characters


def needs_reload_per_member(net: Network) -> bool:
    """icc off: `block from <t> to <t>` would also drop an ipnet jail's traffic to its own
    address (over the loopback network's interface, or over lo0 for an alias on a bridge: the
    loopback route netinet/in.c adds for an address on a non-loopback interface), so each
    member gets a rule of its own. (Every member: a vnet member's never matches, as its traffic
    to itself stays in its jail, but an anchor is rendered from endpoints, not drivers.)"""
    return not net.icc


@cache
def _templates():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("kleenenet", "templates/pf"),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(net: Network, networks: list[Network], members: list[str]) -> str:
    """The anchor of `net`, given all networks and the addresses of its running containers."""
    # in name order: the same networks give the same text (and label), however they were listed
    others = [s for n in sorted(networks, key=lambda n: n.name) if n.id != net.id for s in (n.subnet, n.subnet6) if s]
    template = _templates().get_template("network.conf.j2")
    values = dict(net=net, table=table(net), others=others,
                  self_members=members if needs_reload_per_member(net) else [])
    rules = digest(template.render(**values, table_members=[], label=""))
    return template.render(**values, table_members=members, label=f"{ANCHOR_ROOT}:{rules}")


_LABEL = re.compile(rf'label "({ANCHOR_ROOT}:[0-9a-f]+)"')


def label(text: str) -> str:
    """The label of a rendered anchor."""
    return _LABEL.search(text)[1]
