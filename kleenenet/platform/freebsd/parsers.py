"""Readers for the text and libxo JSON that FreeBSD's network tools print.

Pure functions: each takes a command's output as a string and returns plain data. Nothing here
runs a command, so everything can be tested on any OS against samples of real output
(tests/freebsd/samples/). Lines a parser does not know are skipped, so new fields in a later
FreeBSD do not break it; output it cannot make sense of raises ValueError with one line saying
what was wrong, never a KeyError or IndexError from deep inside.

  parse_ifconfig           `ifconfig -a` / `ifconfig NAME`
  addresses                an interface of it, reduced to its addresses but link-local ones
  parse_routes             `netstat -rn --libxo json`
  default_route_interface  the same, reduced to the default route's interface
  parse_jls                `jls --libxo json [-v]`
  parse_anchors            `pfctl -s Anchors [-v]`
  is_missing_anchor        its error when the parent anchor does not exist
  parse_entries            `pfctl -a ANCHOR -s rules|nat|Tables`, one entry a line
  parse_anchor_references  `pfctl -s rules` / `pfctl -s nat`
  pf_enabled               `pfctl -s info`
  skipped_interfaces       `pfctl -s Interfaces -v`
  parse_rule_labels        `pfctl -a ANCHOR -s rules`, reduced to the rules' labels
  parse_table_show         `pfctl -a ANCHOR -t TABLE -T show`
  parse_sockstat           `sockstat [-46] [-l] [-P PROTOCOLS] [-p PORTS]`, Internet sockets
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# pfctl writes these to stderr when the kernel has no ALTQ; harmless if a caller merged stderr.
_PFCTL_NOTICES = ("No ALTQ support in kernel", "ALTQ related functions disabled")


# --- ifconfig ------------------------------------------------------------------------------------


@dataclass
class Interface:
    name: str
    flags: set[str] = field(default_factory=set)
    mtu: int | None = None
    ether: str | None = None
    description: str | None = None
    groups: list[str] = field(default_factory=list)
    inet: list[ipaddress.IPv4Interface] = field(default_factory=list)
    inet6: list[ipaddress.IPv6Interface] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    nd6: set[str] = field(default_factory=set)  # "nd6 options=23<PERFORMNUD,ACCEPT_RTADV,...>"
    # IPv6 addresses still in duplicate address detection ("... prefixlen 128 tentative"), and
    # those it found in use elsewhere ("duplicated"): neither can be bound yet
    tentative: set[ipaddress.IPv6Address] = field(default_factory=set)
    duplicated: set[ipaddress.IPv6Address] = field(default_factory=set)

    @property
    def up(self) -> bool:
        return "UP" in self.flags


# "bridge0: flags=1008843<UP,BROADCAST,...> metric 0 mtu 1500". The <...> part is absent when no
# flag is set ("pflog0: flags=0 metric 0 mtu 33152"). Names may contain '.', '_' and even ':'.
_HEADER = re.compile(r"(?P<name>\S+): flags=[0-9a-fA-F]+(?:<(?P<flags>[^>]*)>)?(?P<rest>.*)")
_MTU = re.compile(r"\bmtu (\d+)\b")
_FLAG_NAMES = re.compile(r"<([^>]*)>")


def parse_ifconfig(text: str) -> dict[str, Interface]:
    """Interfaces by name, in the order ifconfig printed them."""
    interfaces: dict[str, Interface] = {}
    current: Interface | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not line[0].isspace():
            # Only interface headers start at column 0; anything else is not ifconfig output
            # (a shell prompt, an error message) and must not be mistaken for "no interfaces".
            match = _HEADER.fullmatch(line.rstrip())
            if not match:
                raise ValueError(
                    f"ifconfig line {number}: expected an interface header, got {line.strip()!r}")
            name = match["name"]
            if name in interfaces:
                raise ValueError(f"ifconfig line {number}: interface {name!r} appears twice")
            mtu = _MTU.search(match["rest"])
            current = Interface(
                name=name,
                flags={f for f in (match["flags"] or "").split(",") if f},
                mtu=int(mtu[1]) if mtu else None,
            )
            interfaces[name] = current
            continue
        if current is None:
            raise ValueError(f"ifconfig line {number}: {line.strip()!r} comes before any interface header")
        _parse_attribute(current, line.strip(), number)
    return interfaces


def _parse_attribute(iface: Interface, line: str, number: int) -> None:
    """One indented line of an interface block; lines we have no use for are skipped."""
    key, _, rest = line.partition(" ")
    words = rest.split()
    try:
        if key == "inet":
            iface.inet.append(_inet(words))
        elif key == "inet6":
            iface.inet6.append(_inet6(words))
            if "tentative" in words:
                iface.tentative.add(iface.inet6[-1].ip)
            if "duplicated" in words:
                iface.duplicated.add(iface.inet6[-1].ip)
        elif key == "ether":
            iface.ether = words[0].lower()
        elif key == "description:":
            iface.description = rest.strip()
        elif key == "groups:":
            iface.groups.extend(words)
        elif key == "nd6" and rest.startswith("options="):
            names = _FLAG_NAMES.search(rest)  # "options=1<PERFORMNUD>"; "options=0" has none
            iface.nd6 = {f for f in names[1].split(",") if f} if names else set()
        elif key == "member:":
            # "member: epair0a flags=143<LEARNING,...>"; the "ifmaxaddr 0 port N ..." line that
            # follows it matches no key here and is skipped.
            iface.members.append(words[0])
    except (IndexError, ValueError) as e:
        raise ValueError(f"ifconfig line {number}: cannot parse {line!r} of {iface.name}: {e}") from None


def _inet(words: list[str]) -> ipaddress.IPv4Interface:
    # "10.0.0.1 netmask 0xffffff00 broadcast 10.0.0.255", "10.8.0.1 --> 10.8.0.2 netmask ..."
    # (point-to-point), or "10.0.0.1/24 ..." when ifconfig is run with -f inet:cidr.
    if "/" in words[0]:
        return ipaddress.IPv4Interface(words[0])
    if "netmask" not in words:
        raise ValueError("no netmask")
    mask = words[words.index("netmask") + 1]
    if mask.startswith("0x"):  # FreeBSD prints the mask in hex
        mask = str(ipaddress.IPv4Address(int(mask, 16)))
    return ipaddress.IPv4Interface(f"{words[0]}/{mask}")


def _inet6(words: list[str]) -> ipaddress.IPv6Interface:
    # "fe80::1%lo0 prefixlen 64 scopeid 0x2"; the %zone only repeats the interface, so drop it.
    address, _, length = words[0].partition("/")  # "-f inet6:cidr" form: fe80::1%lo0/64
    address = address.split("%")[0]
    if not length:
        if "prefixlen" not in words:
            raise ValueError("no prefixlen")
        length = words[words.index("prefixlen") + 1]
    return ipaddress.IPv6Interface(f"{address}/{length}")


def addresses(iface: Interface) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The interface's IPv4 and IPv6 addresses with their prefixes, in ifconfig's order, without
    IPv6 link-local ones (fe80::/10: each link has its own, they say nothing of a LAN)."""
    return [*iface.inet, *(a for a in iface.inet6 if not a.is_link_local)]


# --- netstat -rn --libxo json ------------------------------------------------------------------


def _load_json(json_text: str, what: str) -> dict:
    try:
        document = json.loads(json_text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} output is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{what} output is not a JSON object")
    return document


def _as_list(value) -> list:
    # libxo writes a list with one element as that element on some versions; accept both.
    return value if isinstance(value, list) else [value]


def _route_network(destination: str, family: str) -> IPNetwork | None:
    """The destination as a network, or None when it is not an IP destination."""
    if destination == "default":
        return ipaddress.ip_network("::/0" if family == "Internet6" else "0.0.0.0/0")
    address, slash, length = destination.partition("/")
    address = address.split("%")[0]  # "fe80::%lo0/64": the scope names the interface
    try:
        # A destination without /len is a host route; strict=False keeps a route whose
        # destination has host bits set instead of rejecting the whole table.
        return ipaddress.ip_network(f"{address}/{length}" if slash else address, strict=False)
    except ValueError:
        return None


def parse_routes(json_text: str) -> list[tuple[str, IPNetwork, str]]:
    """(interface-name, destination, flags) for every IPv4 and IPv6 route, in netstat's order.

    Entries whose destination is not an IP network are skipped; a route without an interface
    name gets "".
    """
    document = _load_json(json_text, "netstat")
    try:
        families = document["statistics"]["route-information"]["route-table"]["rt-family"]
    except (KeyError, TypeError):
        raise ValueError("netstat output has no statistics/route-information/route-table/rt-family") from None
    routes = []
    for family in _as_list(families):
        if not isinstance(family, dict):
            raise ValueError(f"netstat rt-family entry is not an object: {family!r}")
        name = family.get("address-family")
        if name not in ("Internet", "Internet6"):
            continue  # netstat -rn prints only these two; anything else is no IP route
        for entry in _as_list(family.get("rt-entry", [])):
            if not isinstance(entry, dict) or not isinstance(entry.get("destination"), str):
                raise ValueError(f"netstat {name} rt-entry without a destination: {entry!r}")
            network = _route_network(entry["destination"], name)
            if network is None:
                continue
            routes.append((str(entry.get("interface-name", "")), network, str(entry.get("flags", ""))))
    return routes


def default_route_interface(json_text: str, version: int = 4) -> str | None:
    """The interface of the first IPv4 (or IPv6) default route, None if there is none."""
    if version not in (4, 6):
        raise ValueError(f"IP version must be 4 or 6, not {version!r}")
    for interface, network, _flags in parse_routes(json_text):
        if network.version == version and network.prefixlen == 0:
            return interface or None
    return None


# --- jls --libxo json ----------------------------------------------------------------------------


@dataclass
class Jail:
    jid: int
    name: str
    path: str
    hostname: str
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)


def _addresses(entry: dict, *keys: str) -> list[str]:
    # -v prints lists "ipv4_addrs"/"ipv6_addrs"; the default format prints one "ipv4" string,
    # empty for a jail without one; `jls ... ip4.addr` prints a list named after the parameter.
    for key in keys:
        if key in entry:
            value = entry[key]
            return [str(a) for a in _as_list(value) if a]
    return []


def parse_jls(json_text: str) -> list[Jail]:
    """The running jails. Without -v, jls prints no name: it is then ""."""
    document = _load_json(json_text, "jls")
    try:
        entries = document["jail-information"].get("jail", [])
    except (KeyError, AttributeError):
        raise ValueError("jls output has no jail-information object") from None
    jails = []
    for entry in _as_list(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"jls jail entry is not an object: {entry!r}")
        try:
            # jid is a number in the default and -v formats, a string when asked for by name.
            jid = int(entry["jid"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"jls jail entry without a numeric jid: {entry!r}") from None
        jails.append(Jail(
            jid=jid,
            name=str(entry.get("name", "")),
            path=str(entry.get("path", "")),
            hostname=str(entry.get("hostname", entry.get("host.hostname", ""))),
            ipv4=_addresses(entry, "ipv4_addrs", "ipv4", "ip4.addr"),
            ipv6=_addresses(entry, "ipv6_addrs", "ip6.addr"),
        ))
    return jails


# --- pfctl ---------------------------------------------------------------------------------------


def _pfctl_lines(text: str, what: str):
    """(number, line) of pfctl output, without blank lines and the ALTQ notices.

    A "pfctl: ..." line is pfctl reporting an error (no /dev/pf, permission denied); reading it
    as an empty list would hide that, so it raises.
    """
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped in _PFCTL_NOTICES:
            continue
        if stripped.startswith("pfctl:"):
            raise ValueError(f"pfctl {what} line {number} is an error: {stripped!r}")
        yield number, line


def parse_anchors(text: str) -> list[str]:
    """Anchor paths from `pfctl -s Anchors` (top level) or `-v` (nested ones too)."""
    anchors = []
    for number, line in _pfctl_lines(text, "-s Anchors"):
        path = line.strip()  # pfctl indents each path by two spaces
        if len(path.split()) != 1:
            raise ValueError(f"pfctl -s Anchors line {number} is not an anchor path: {path!r}")
        anchors.append(path)
    return anchors


def parse_entries(text: str, what: str) -> list[str]:
    """The lines of `pfctl -a ANCHOR -s rules|nat|Tables`: one rule or table name each."""
    return [line.strip() for _number, line in _pfctl_lines(text, what)]


_MISSING_ANCHOR = "Anchor does not exist."


def is_missing_anchor(message: str) -> bool:
    """Whether a pfctl error says the anchor named does not exist: `pfctl -a PARENT -s Anchors`
    exits 1 with "pfctl: Anchor does not exist." when no anchor below PARENT is loaded and no
    rule calls one (FreeBSD 15.0)."""
    return message.rstrip().endswith(_MISSING_ANCHOR)


# 'anchor "kleenenet/*" all', 'nat-anchor "x" all {', '@3 rdr-anchor "y" on em0 all' (-v adds @N)
_ANCHOR_CALL = re.compile(
    r'(?:@\d+\s+)?(?P<kind>anchor|nat-anchor|rdr-anchor|binat-anchor)(?:\s+(?P<rest>.*))?')
_QUOTED = re.compile(r'"(?P<path>[^"]*)"')


def parse_anchor_references(text: str) -> list[tuple[str, str]]:
    """(kind, path) of the anchor calls in the main ruleset, in order.

    With `-a '*'` pfctl also prints each anchor's contents in a { } block; references inside
    such a block carry a path relative to it, so only the top level is returned. Anonymous
    anchors (printed as a bare `anchor`) have no path and are skipped.
    """
    references = []
    depth = 0
    for number, line in _pfctl_lines(text, "rules"):
        stripped = line.strip()
        if stripped == "}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"pfctl rules line {number}: '}}' without an open anchor block")
            continue
        opens = stripped.endswith("{")
        match = _ANCHOR_CALL.fullmatch(stripped)
        if match and depth == 0:
            rest = match["rest"] or ""
            quoted = _QUOTED.match(rest)
            if quoted:
                references.append((match["kind"], quoted["path"]))
            elif rest.startswith('"'):
                raise ValueError(f"pfctl rules line {number}: unterminated anchor name in {stripped!r}")
        depth += opens
    if depth:
        raise ValueError("pfctl rules output ends inside an anchor block (missing '}')")
    return references


_STATUS = re.compile(r"Status: (?P<state>Enabled|Disabled)\b")


def pf_enabled(text: str) -> bool:
    """Whether `pfctl -s info` says "Status: Enabled ..." (True) or "Status: Disabled" (False)."""
    for number, line in _pfctl_lines(text, "-s info"):
        if line.startswith("Status:"):
            match = _STATUS.match(line)
            if not match:
                raise ValueError(f"pfctl -s info line {number}: unknown status {line.strip()!r}")
            return match["state"] == "Enabled"
    raise ValueError("pfctl -s info output has no 'Status:' line")


def skipped_interfaces(text: str) -> set[str]:
    """Interfaces (and interface groups) pf skips, from `pfctl -s Interfaces -v`.

    Each interface is on its own line at column 0, followed by " (skip)" when `set skip on`
    covers it; -vv adds indented counters, which are ignored.
    """
    skipped = set()
    for number, line in _pfctl_lines(text, "-s Interfaces"):
        if line[0].isspace():
            continue  # -vv statistics ("\tCleared: ...", "\tIn4/Pass: [ ... ]")
        words = line.split()
        if len(words) == 2 and words[1] == "(skip)":
            skipped.add(words[0])
        elif len(words) != 1:
            raise ValueError(f"pfctl -s Interfaces line {number} is not 'NAME [(skip)]': {line.strip()!r}")
    return skipped


# 'block return quick from <kn_x> to (self) label "kleenenet:0123abcd"'; print_rule() in
# sbin/pfctl/pfctl_parser.c prints each of a rule's labels as ` label "%s"`.
_LABEL = re.compile(r' label "(?P<label>[^"]*)"')


def parse_rule_labels(text: str) -> list[str]:
    """The labels of the filter rules `pfctl -a ANCHOR -s rules` prints, in order."""
    return [m["label"] for _number, line in _pfctl_lines(text, "-s rules") for m in _LABEL.finditer(line)]


def parse_table_show(text: str) -> list[str]:
    """The addresses of a table, one per line as print_addrx() in sbin/pfctl/pfctl_table.c prints
    them ("   10.2.3.1", "   10.9.0.0/24"; a negated entry starts with "!")."""
    addresses = []
    for number, line in _pfctl_lines(text, "-T show"):
        entry = line.strip()
        try:
            ipaddress.ip_network(entry.lstrip("!"), strict=False)
        except ValueError:
            raise ValueError(f"pfctl -T show line {number} is not an address: {entry!r}") from None
        addresses.append(entry)
    return addresses


# --- sockstat ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Socket:
    protocol: str  # "tcp", "udp", "sctp" (without the 4/6/46 sockstat appends)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: the wildcard, "*"
    port: int  # 0 for "*"


# PROTO is the protocol name with 4, 6 or 46 for the families (display() in
# usr.bin/sockstat/sockstat.c); UNIX sockets show stream, dgram or seqpac and are skipped.
_SOCK_PROTO = re.compile(r"(?P<name>tcp|udp|sctp|toe|div)(?:4|6|46)")


def _sock_address(text: str, number: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, int]:
    # printaddr() in sockstat.c: "ADDR:PORT" with no brackets around IPv6 ("::1:631",
    # "fe80::1%lo0:123"); "*" for the unspecified address and for port 0.
    address, colon, port = text.rpartition(":")
    if not colon or not (port == "*" or port.isdigit()):
        raise ValueError(f"sockstat line {number}: {text!r} is not ADDRESS:PORT")
    if address == "*":
        return None, 0 if port == "*" else int(port)
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        raise ValueError(f"sockstat line {number}: {text!r} has no IP address") from None
    return ip, 0 if port == "*" else int(port)


def parse_sockstat(text: str) -> list[Socket]:
    """The local ends of the Internet sockets sockstat lists: USER COMMAND PID FD PROTO
    LOCAL-ADDRESS FOREIGN-ADDRESS, one socket per line (a socket with several descriptors is
    listed once for each). The header and UNIX sockets are skipped."""
    sockets = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        # COMMAND is at most 10 characters but may hold a blank: find PROTO from the fifth word on.
        at = next((i for i in range(4, len(words)) if _SOCK_PROTO.fullmatch(words[i])), None)
        if at is None:
            continue
        if at + 1 >= len(words):
            raise ValueError(f"sockstat line {number}: no local address after {words[at]!r}")
        address, port = _sock_address(words[at + 1], number)
        name = _SOCK_PROTO.fullmatch(words[at])["name"]
        sockets.append(Socket("tcp" if name == "toe" else name, address, port))  # toe: TCP offload
    return sockets
