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


def elements(state: FirewallState) -> dict[tuple[str, str], list[str]]:
    """Every element of every set and map of both tables."""
    out: dict[tuple[str, str], list[str]] = {}
    for n in state.networks:
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
    for attr, set_ in (("subnet", "subnets4"), ("subnet6", "subnets6")):
        out[("inet kleenenet", set_)] = [getattr(n, attr) for n in state.networks if getattr(n, attr)]
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
        networks=sorted(state.networks, key=lambda n: n.name), elements=els, digest=rules)


def rules_digest(state: FirewallState) -> str:
    """The digest of the tables' rules, their elements aside (kept in a rule comment)."""
    return digest(_render(state, {}, ""))


def render(state: FirewallState) -> str:
    return _render(state, elements(state), rules_digest(state))


def _batch(verb: str, els: dict[tuple[str, str], list[str]]) -> str:
    return "".join(f"{verb} element {table} {set_} {{ {', '.join(items)} }}\n"
                   for (table, set_), items in els.items() if items)


def add_port(p: Port) -> str:
    return _batch("add", port_elements(p))


def delete_port(p: Port) -> str:
    return _batch("delete", port_elements(p))


# what is loaded

def _canonical(value) -> str:
    """An element of `nft -j` output written the way the template writes it (names unquoted)."""
    if isinstance(value, list):  # a map element: [key, verdict]
        key, verdict = value
        (kind, arg), = verdict.items()
        return f"{_canonical(key)} : {kind} {arg['target']}"
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_canonical(v) for v in value["concat"])
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "elem" in value:
            return _canonical(value["elem"]["val"])
        raise ValueError(f"unexpected nft element {value}")
    if isinstance(value, int):
        return f"0x{value:032x}"
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
                els[(table, body["name"])] = sorted(_canonical(e) for e in body["elem"])
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
