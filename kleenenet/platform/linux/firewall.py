"""nftables: kleenenet's two tables, `inet kleenenet` and `bridge kleenenet`, changed only by
atomic batches.

The tables are a pure function of the state (networks and the running endpoints), rendered from
templates/linux/ruleset.nft.j2. Network changes replace both tables in one batch; attaching a
container only adds elements to hash sets (no verdict map: the kernel validates a whole table
when one of those changes), so its cost does not grow with the number of containers.

Every packet a container sends is checked against the addresses it owns:
- in `bridge kleenenet`, each bridge port is bound to its endpoint's MAC and addresses (Ethernet
  source, ARP sender, IPv4/IPv6 source, neighbour discovery targets);
- in `inet kleenenet`, what enters IP from a network (its bridge, or a loopback network's port)
  must carry a source of that network (that port's own address on loopback networks), and a
  kleenenet source arriving from anywhere else is dropped. Masquerading by source therefore
  only ever applies to packets that came in through the network's own interfaces.

A custom network is the LAN's (an existing bridge or NIC of the host, not kleenenet's): its
subnet is in none of the maps and sets above, so nothing here drops, routes or masquerades the
LAN's own traffic, the host's included. Its containers' ports on a LAN bridge are still bound to
their MACs and addresses: a container spoofs no one on the LAN either.

Published ports (ports.forwards says where each leads) are elements of data maps and sets, never
rules or verdict-map elements, so one more port costs the same whatever the number published:
- published4/6: interface . protocol . host port -> container address . port, the DNAT of what
  arrives from outside for one of the host's own addresses;
- published_local4/6: protocol . host port -> the same, for the host's own connections and the
  containers' (hairpin) to the host's addresses (loopback addresses aside);
- published_targets4/6: container address . protocol . port, the destinations forward accepts
  for connections DNAT led there (not from internal networks), before the networks' verdicts.
Ports that keep their number (-p 8080, -p 9000-18999) are intervals instead, in the same three
kinds of maps and sets with `_ranges` after `published`, `published_local` and `published_target`
(the DNAT keeps the port): a range of 10 000 ports is one element, not 10 000.
Attaching or detaching a container changes exactly its own elements (forwards_batch).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
from dataclasses import dataclass, field
from functools import cache

from kleenenet.errors import HostError
from kleenenet.model import Endpoint, Network
from kleenenet.platform import digest
from kleenenet.ports import Forward

TABLES = ("inet kleenenet", "bridge kleenenet")
# address map -> (address family attribute, prefix of the per-network chain it jumps to)
MAPS = {"from4": ("subnet", "from"), "from6": ("subnet6", "from"), "to4": ("subnet", "to"), "to6": ("subnet6", "to")}


def link_local(mac: str) -> str:
    """The EUI-64 link-local address of a MAC (what the kernel gives an interface with it)."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


@dataclass
class Port:
    """A container's port on the host: its interface, network, MAC and addresses."""

    ifname: str
    net: Network
    mac: str
    ip: str = ""
    ip6: str = ""

    @property
    def addresses6(self) -> list[str]:
        # a container on an IPv6 network also owns its link-local address (neighbour discovery)
        return [self.ip6, link_local(self.mac)] if self.ip6 else []


def port_of(ifname: str, net: Network, ep: Endpoint, mac: str) -> Port:
    return Port(ifname, net, mac, ep.ip_address or "", ep.ip_address6 or "")


@dataclass
class FirewallState:
    networks: list[Network]
    ports: list[Port] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)


def _q(ifname: str) -> str:
    return f'"{ifname}"'


def port_elements(p: Port) -> dict[tuple[str, str], list[str]]:
    """(table, set) -> the elements one port adds."""
    name = _q(p.ifname)
    # Where its packets enter IP: a loopback network's port always; a bridge port only when
    # br_netfilter passes bridged traffic through IP's hooks with the port as input interface.
    els = {("inet kleenenet", "interfaces"): [name],
           ("inet kleenenet", "port_sources4"): [f"{name} . {p.ip}"] if p.ip else [],
           ("inet kleenenet", "port_sources6"): [f"{name} . {p.ip6}"] if p.ip6 else []}
    if p.net.type == "loopback":  # routed: checked where its packets enter IP
        return els
    els.update({  # bridged: checked as it enters the bridge
        ("bridge kleenenet", "ports"): [name],
        ("bridge kleenenet", "port_macs"): [f"{name} . {p.mac}"],
        ("bridge kleenenet", "port_addrs4"): [f"{name} . {p.ip}"] if p.ip else [],
        ("bridge kleenenet", "port_addrs6"): [f"{name} . {a}" for a in p.addresses6],
        ("bridge kleenenet", "nd_targets"): [f"{name} . 0x{int(ipaddress.IPv6Address(a)):032x}"
                                             for a in p.addresses6],
    })
    return els


def forward_elements(forwards: list[Forward]) -> dict[tuple[str, str], list[str]]:
    """(table, map or set) -> the elements that publish `forwards`; a key already there keeps
    its first value (one host port/protocol has one owner: the service sees to it). Ports that
    keep their number are grouped into runs of consecutive ports, one interval element each."""
    out: dict[tuple[str, str], dict[str, str | None]] = {}

    def put(name: str, key: str, value: str | None = None) -> None:
        out.setdefault(("inet kleenenet", name), {}).setdefault(key, value)

    same_port: dict[tuple[int, str, str, str], list[int]] = {}
    for f in forwards:
        if f.host_port == f.container_port:
            same_port.setdefault((f.family, f.protocol, f.interface, f.address), []).append(f.host_port)
            continue
        to = f"{f.address} . {f.container_port}"
        put(f"published{f.family}", f"{_q(f.interface)} . {f.protocol} . {f.host_port}", to)
        put(f"published_local{f.family}", f"{f.protocol} . {f.host_port}", to)
        put(f"published_targets{f.family}", f"{f.address} . {f.protocol} . {f.container_port}")
    for (family, protocol, interface, address), numbers in sorted(same_port.items()):
        for span in spans(numbers):
            put(f"published_ranges{family}", f"{_q(interface)} . {protocol} . {span}", address)
            put(f"published_local_ranges{family}", f"{protocol} . {span}", address)
            put(f"published_target_ranges{family}", f"{address} . {protocol} . {span}")
    return {k: [key if value is None else f"{key} : {value}" for key, value in els.items()] for k, els in out.items()}


def spans(numbers: list[int]) -> list[str]:
    """Consecutive numbers as runs, the way nft and conntrack write them: [1, 2, 3, 7] -> ["1-3", "7"]."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [str(first) if first == last else f"{first}-{last}" for first, last in runs]


def own_networks(networks: list[Network]) -> list[Network]:
    """The networks whose traffic kleenenet filters, routes and masquerades: not the LAN's."""
    return [n for n in networks if n.type != "custom"]


def elements(state: FirewallState) -> dict[tuple[str, str], list[str]]:
    """Every element of every set and map of both tables."""
    out: dict[tuple[str, str], list[str]] = {}
    networks = own_networks(state.networks)
    for n in networks:
        for m, (attr, chain) in MAPS.items():
            if getattr(n, attr):
                out.setdefault(("inet kleenenet", m), []).append(f"{getattr(n, attr)} : jump {chain}_{n.id}")
        if n.type == "loopback":
            continue  # its ports are its interfaces
        out.setdefault(("inet kleenenet", "interfaces"), []).append(_q(n.interface))
        for attr, set_ in (("subnet", "network_sources4"), ("subnet6", "network_sources6")):
            if getattr(n, attr):
                out.setdefault(("inet kleenenet", set_), []).append(f"{_q(n.interface)} . {getattr(n, attr)}")
    for p in state.ports:
        for key, els in port_elements(p).items():
            out.setdefault(key, []).extend(els)
    out.update(forward_elements(state.forwards))
    for attr, set_ in (("subnet", "subnets4"), ("subnet6", "subnets6")):
        out[("inet kleenenet", set_)] = [getattr(n, attr) for n in networks if getattr(n, attr)]
    return {k: sorted(v) for k, v in out.items() if v}


@cache
def _templates():
    import jinja2  # only network changes render the table; attaching a container does not

    return jinja2.Environment(
        loader=jinja2.PackageLoader("kleenenet", "templates/linux"),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def _render(state: FirewallState, els: dict, rules: str) -> str:
    return _templates().get_template("ruleset.nft.j2").render(  # in name order: one text per state
        tables=bool(state.networks), networks=sorted(own_networks(state.networks), key=lambda n: n.name),
        elements=els, digest=rules)


def rules_digest(state: FirewallState) -> str:
    """The digest of the tables' rules, their elements aside (kept in a rule comment)."""
    return digest(_render(state, {}, ""))


def render(state: FirewallState) -> str:
    return _render(state, elements(state), rules_digest(state))


def _batch(verb: str, els: dict[tuple[str, str], list[str]]) -> str:
    if verb == "delete":  # a map's element goes by its key
        els = {k: [e.partition(" : ")[0] for e in items] for k, items in els.items()}
    return "".join(f"{verb} element {table} {set_} {{ {', '.join(items)} }}\n"
                   for (table, set_), items in els.items() if items)


def add_port(p: Port) -> str:
    return _batch("add", port_elements(p))


def delete_port(p: Port) -> str:
    return _batch("delete", port_elements(p))


def forwards_batch(before: list[Forward], after: list[Forward]) -> str:
    """What changes one container's published elements from `before` to `after` (a map
    element whose value changes is deleted, then added)."""
    old, new = forward_elements(before), forward_elements(after)
    gone = {k: sorted(set(els) - set(new.get(k, ()))) for k, els in old.items()}
    came = {k: sorted(set(els) - set(old.get(k, ()))) for k, els in new.items()}
    return _batch("delete", gone) + _batch("add", came)


# what is loaded

def _canonical(value, wide: bool) -> str:
    """An element of `nft -j` output written the way the template writes it (names unquoted;
    integers are ports, or 128-bit addresses in a `wide` set)."""
    if isinstance(value, list):  # a map element: [key, verdict or data]
        key, data = value
        if isinstance(data, dict) and data.keys() & {"jump", "goto"}:
            (kind, arg), = data.items()
            return f"{_canonical(key, wide)} : {kind} {arg['target']}"
        return f"{_canonical(key, wide)} : {_canonical(data, wide)}"
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_canonical(v, wide) for v in value["concat"])
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:  # a port range in an interval set
            return "-".join(_canonical(v, wide) for v in value["range"])
        if "elem" in value:
            return _canonical(value["elem"]["val"], wide)
        raise ValueError(f"unexpected nft element {value}")
    if isinstance(value, int):
        return f"0x{value:032x}" if wide else str(value)
    return value


def loaded(nft: Nft) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """The rule comments (digests) and the elements of kleenenet's tables as loaded."""
    comments, els = [], {}
    for table in TABLES:
        try:
            listing = nft.list_json(table)
        except HostError:
            continue  # no such table
        for obj in listing:
            (kind, body), = obj.items()
            if kind in ("set", "map") and body.get("elem"):
                wide = body["name"] == "nd_targets"  # addresses as integers
                els[(table, body["name"])] = sorted(_canonical(e, wide) for e in body["elem"])
            elif kind == "rule" and "comment" in body:
                comments.append(body["comment"])
    return comments, els


def in_effect(nft: Nft, state: FirewallState) -> bool:
    """Whether the loaded tables are exactly what `state` renders."""
    if not state.networks:
        return all(not nft.exists(t) for t in TABLES)
    comments, els = loaded(nft)
    want = f"kleenenet {rules_digest(state)}"
    unquoted = {k: sorted(e.replace('"', "") for e in v) for k, v in elements(state).items()}
    return comments == [want] * len(TABLES) and els == unquoted


class Nft:
    """libnftables in-process: one batch = one transaction, no fork/exec per change."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            raise HostError("libnftables.so.1 not found: install nftables (Debian: apt install nftables)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    NFT_CTX_OUTPUT_JSON = 1 << 4

    def run(self, batch: str) -> str:
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, batch.encode())
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode().strip()
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
        if rc != 0:
            first = err.splitlines()[0] if err else "failed"
            raise HostError(f"nft: {first}")
        return out

    def list_json(self, table: str) -> list[dict]:
        """`nft -j list table TABLE`: its objects (HostError when it does not exist)."""
        flags = self.lib.nft_ctx_output_get_flags(self.ctx)
        self.lib.nft_ctx_output_set_flags(self.ctx, flags | self.NFT_CTX_OUTPUT_JSON)
        try:
            return json.loads(self.run(f"list table {table}"))["nftables"]
        finally:
            self.lib.nft_ctx_output_set_flags(self.ctx, flags)

    def exists(self, table: str) -> bool:
        try:
            self.run(f"list table {table}")
            return True
        except HostError:
            return False
