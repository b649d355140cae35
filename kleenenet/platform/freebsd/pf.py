"""pf: each network's rules live in its own anchor, kleenenet/<network name>, rendered from
templates/pf/network.conf.j2. The anchor text is a pure function of the networks and the
network's members, so loading it again is always safe. Members are a pf table: connecting a
container is `pfctl -T add`, not a ruleset load — except on a network with icc off, where each
ipnet jail needs its own rule to reach its own address. One rule carries a label with a digest
of the anchor without the table's members: reconcile compares it with what pf has loaded.

A container's published ports on a network are an anchor of their own below the network's,
kleenenet/<network>/ports/<container id> (templates/pf/ports.conf.j2), which the network's anchor
evaluates with `rdr-anchor "ports/*"` and `anchor "ports/*"`: publishing is one small load and
unpublishing one flush, whatever else is published, and reloading a network's anchor leaves them
alone. Their rules carry a label too: reconcile compares it, and `pfctl -k label` kills the
states they created."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from kleenenet.model import Network
from kleenenet.platform import digest
from kleenenet.ports import Forward

ANCHOR_ROOT = "kleenenet"
PORTS = "ports"  # the published ports' anchors, below each network's


def anchor(net: Network) -> str:
    return f"{ANCHOR_ROOT}/{net.name}"


def ports_anchor(net: Network, container_id: str) -> str:
    return f"{anchor(net)}/{PORTS}/{container_id}"


def is_ports_anchor(path: str) -> bool:
    return f"/{PORTS}/" in path


def flush(path: str) -> list[list[str]]:
    """The pfctl commands that empty anchor `path`. `-F all` also clears the anchor's tables and
    fails on an anchor that has none: FreeBSD 15.0's pfctl clears its rules and nat, then exits 1
    ("Operation not supported by device"). A network's anchor has its table; a container's
    ports have none, so their filter and translation rules are flushed one kind at a time."""
    if is_ports_anchor(path):
        return [["pfctl", "-a", path, "-F", "rules"], ["pfctl", "-a", path, "-F", "nat"]]
    return [["pfctl", "-a", path, "-F", "all"]]


def table(net: Network) -> str:
    return f"kn_{net.id}"  # pf table names have at most 31 characters


def port_tag(net: Network) -> str:
    """The tag of packets the network's published ports redirected (PF_TAG_NAME_SIZE is 64)."""
    return f"kp_{net.id}"


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


def _labelled(template: str, **values) -> str:
    """The template rendered with a label that is the digest of its text without one."""
    template = _templates().get_template(template)
    rules = digest(template.render(**values, label=""))
    return template.render(**values, label=f"{ANCHOR_ROOT}:{rules}")


def render(net: Network, networks: list[Network], members: list[str]) -> str:
    """The anchor of `net`, given all networks and the addresses of its running containers."""
    # in name order: the same networks give the same text (and label), however they were listed.
    # A custom network's subnet is a LAN, which is no more kleenenet's than the rest of the world.
    others = [s for n in sorted(networks, key=lambda n: n.name) if n.id != net.id and n.type != "custom"
              for s in (n.subnet, n.subnet6) if s]
    values = dict(net=net, table=table(net), others=others, ports=PORTS,
                  self_members=members if needs_reload_per_member(net) else [])
    rules = digest(_templates().get_template("network.conf.j2").render(**values, table_members=[], label=""))
    return _templates().get_template("network.conf.j2").render(**values, table_members=members,
                                                               label=f"{ANCHOR_ROOT}:{rules}")


@dataclass(frozen=True)
class PortRange:
    """Consecutive forwards of one protocol, family, interface and address, in pf's syntax."""

    family: int
    protocol: str
    interface: str
    address: str
    host: str  # "8080" or "9000:9001"
    target: str  # the rdr's: "80" or "8000:*" (pf.conf(5): port 2000:2999 -> ... port 4000:*)
    container: str  # the pass rule's: "80" or "8000:8001"

    @property
    def inet(self) -> str:
        return "inet" if self.family == 4 else "inet6"


def port_ranges(forwards: list[Forward]) -> list[PortRange]:
    """Forwards (one per port) joined into ranges where host and container ports both run on."""
    runs: list[list[Forward]] = []
    for f in sorted(forwards, key=lambda f: (f.family, f.protocol, f.interface, f.address, f.host_port)):
        last = runs[-1][-1] if runs else None
        if (last and (f.family, f.protocol, f.interface, f.address) == (last.family, last.protocol, last.interface,
                                                                      last.address)
                and f.host_port == last.host_port + 1 and f.container_port == last.container_port + 1):
            runs[-1].append(f)
        else:
            runs.append([f])
    ranges = []
    for run in runs:
        first, end = run[0], run[-1]
        single = first is end
        ranges.append(PortRange(
            first.family, first.protocol, first.interface, first.address,
            host=str(first.host_port) if single else f"{first.host_port}:{end.host_port}",
            target=str(first.container_port) if single else f"{first.container_port}:*",
            container=str(first.container_port) if single else f"{first.container_port}:{end.container_port}"))
    return ranges


def render_ports(net: Network, container: str, container_id: str, forwards: list[Forward], local: bool) -> str:
    """The anchor of a container's published ports on `net`. `local`: its addresses are the
    host's own (an ipnet jail), so the host's own connections can be redirected to it on lo0."""
    return _labelled("ports.conf.j2", net=net, container=container, container_id=container_id,
                     ranges=port_ranges(forwards), tag=port_tag(net), local=local)


_LABEL = re.compile(rf'label "({ANCHOR_ROOT}:[0-9a-f]+)"')


def label(text: str) -> str:
    """The label of a rendered anchor."""
    return _LABEL.search(text)[1]


KILL_BY_NAT_RELEASE = 1500000  # `pfctl -k nat -k ADDR` appeared in FreeBSD 15.0 (pfctl(8))


def kill_states(address: str, release: int) -> list[list[str]]:
    """The pfctl commands that kill the states from and to an address (pfctl(8) -k: a second
    -k names the destination, and a prefix length of 0 is a wildcard). They match a state's
    addresses as they are on the wire: a connection the address made out through NAT has the
    host's address there, and from FreeBSD 15.0 `-k nat -k ADDR` kills it by its address before
    NAT (before 15.0 such a state lives until it expires). A published port's state (its
    destination before rdr) is killed by its rule's label instead."""
    anywhere = "::/0" if ":" in address else "0.0.0.0/0"
    kills = [["pfctl", "-k", address], ["pfctl", "-k", anywhere, "-k", address]]
    if release >= KILL_BY_NAT_RELEASE:
        kills.append(["pfctl", "-k", "nat", "-k", address])
    return kills


def kill_label(text: str) -> list[str]:
    """The pfctl command that kills the states the rules of a rendered anchor created."""
    return ["pfctl", "-k", "label", "-k", label(text)]
