"""A container's resolver files: its resolv.conf and its /etc/hosts.

Every container with a network of its own (every driver but `host`) gets both, kept by kleenenet
under the state directory (<state>/containers/<id>/), and sees them as /etc/resolv.conf and
/etc/hosts: Linux bind-mounts them in the container's mount namespace, FreeBSD nullfs-mounts them
in a jail root of its own (platform/*/dns.py). The host's own files are never written.

resolv.conf  the host's, its nameservers that only answer on the host itself (loopback: a stub
             such as systemd-resolved's 127.0.0.53, a local unbound; IPv6 link-local) replaced
             by the servers behind them when kleenenet can read them, else by the operator's
             fallback list (FALLBACK in the state directory); `run --dns` replaces the whole list.
             search, domain, options and sortlist lines are kept as the host has them.
hosts        localhost, the container's own name on each of its addresses, and the name of every
             other running container on its networks with its address on the shared network.
             Kept current in place (the same inode: it is mounted): a container joining a network
             is appended to its peers' files; one leaving has its lines there commented out, a
             byte a line (Files.strike), and a file mostly struck is written anew. Neither order
             nor comments are part of the content (same_lines).

The text is computed here from the state and what the host's files say (pure); `Files` keeps
the files in kleenenet's state directory, as the store and the logs are kept there.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from kleenenet.model import Container, Endpoint

FILES = ("hosts", "resolv.conf")
FALLBACK = "fallback-resolv.conf"  # in the state directory: `nameserver ADDR` lines
# A hosts file's header counts the lines struck out of it since it was written; once they are
# more than COMPACT_AFTER and half the file, it is written anew without them: a leave costs a
# peer a few bytes, and a file stays about its live size.
STRUCK, STRUCK_DIGITS = "lines struck since written: ", 8
COMPACT_AFTER = 64
# Where a container's name points when it has no address (a `disabled` container): its loopback.
NO_ADDRESS = "127.0.0.1"
LOCALHOST = ("127.0.0.1\tlocalhost\n"
             "::1\tlocalhost ip6-localhost ip6-loopback\n"
             "fe00::0\tip6-localnet\n"
             "ff00::0\tip6-mcastprefix\n"
             "ff02::1\tip6-allnodes\n"
             "ff02::2\tip6-allrouters\n")


@dataclass(frozen=True)
class HostResolver:
    """What the host's resolver configuration says."""

    resolv_conf: str  # the host's resolv.conf ("" when it has none)
    upstreams: list[str] | None = None  # the servers behind a local stub, None when unknown
    source: str = "/etc/resolv.conf"  # where resolv_conf was read, for messages
    # The host's own addresses: a nameserver there (dnsmasq on a bridge, unbound on the LAN
    # address) answers the host only, since containers do not reach the host's services.
    own: frozenset[str] = frozenset()


# resolv.conf

def _read(variable: str, default: str) -> tuple[str, str | None]:
    path = os.environ.get(variable) or default
    try:
        with open(path) as f:
            return path, f.read()
    except (OSError, UnicodeDecodeError):
        return path, None


def host_resolver(upstream_default: str, own: frozenset[str] = frozenset()) -> HostResolver:
    """The host's resolv.conf (KLEENENET_HOST_RESOLV_CONF, default /etc/resolv.conf) and the
    servers behind a local stub (KLEENENET_UPSTREAM_RESOLV_CONF, default `upstream_default`: where
    the platform's usual stub lists them)."""
    path, text = _read("KLEENENET_HOST_RESOLV_CONF", "/etc/resolv.conf")
    _, upstream = _read("KLEENENET_UPSTREAM_RESOLV_CONF", upstream_default)
    return HostResolver(text or "", nameservers(upstream) if upstream is not None else None, path, own)


def nameservers(text: str) -> list[str]:
    """The servers a resolver configuration lists: resolv.conf's `nameserver ADDR` lines, and
    unbound's `forward-addr: ADDR[@53][#NAME]` (FreeBSD's local_unbound keeps the upstreams in
    /var/unbound/forward.conf). A server on another port than 53 is left out: resolv.conf has
    no port."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
        elif len(words) >= 2 and words[0] == "forward-addr:":
            addr, _, port = words[1].partition("#")[0].partition("@")
            if port in ("", "53"):
                found.append(addr)
    return found


def reachable(addr: str) -> bool:
    """Whether a nameserver of the host also answers a container: an address, not the host's
    loopback (nor 0.0.0.0, which means it), not an IPv6 link-local one (fe80::1%eth0 is on an
    interface of the host)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or (ip.version == 6 and ip.is_link_local))


def _normal(addr: str) -> str:
    """An address as str(ipaddress) writes it (2001:DB8::1 and 2001:db8:0::1 are one)."""
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr


def _unique(addrs: list[str]) -> list[str]:
    return list(dict.fromkeys(addrs))


def resolv_conf(c: Container, host: HostResolver, fallback: list[str]) -> tuple[str, str | None]:
    """The container's resolv.conf, and a warning when it has no nameserver."""
    kept = []  # search, domain, options, sortlist: as the host has them
    for line in host.resolv_conf.splitlines():
        words = line.split()
        if words and words[0] in ("search", "domain", "options", "sortlist"):
            kept.append(" ".join(words))
    local = []
    if c.dns:
        servers, origin = list(c.dns), "from --dns"
    else:
        # No nameserver line means the resolver asks 127.0.0.1 (resolv.conf(5)).
        listed = nameservers(host.resolv_conf) or ["127.0.0.1"]

        def answers(addr: str) -> bool:
            return reachable(addr) and _normal(addr) not in host.own
        local = [a for a in listed if not answers(a)]
        behind = [a for a in host.upstreams or [] if answers(a)]
        replacement = behind or [a for a in fallback if answers(a)]
        servers = []
        for addr in listed:
            servers += [addr] if answers(addr) else replacement
        servers = _unique(servers)
        origin = f"from {host.source}"
        if local and replacement:
            origin += ", its local resolvers replaced by " + ("the servers behind them" if behind else FALLBACK)
    warning = None
    if not servers:
        warning = (f"container {c.name!r} gets no nameserver: the host's ({', '.join(local)}) answer on the "
                   f"host only and the servers behind them are unknown; give --dns ADDR, or list "
                   f"nameservers in {FALLBACK} in the state directory")
    lines = [f"# kleenenet: resolver of container {c.name}, {origin}"]
    if warning:
        lines.append(f"# {warning}")
    lines += [f"nameserver {addr}" for addr in servers] + kept
    return "\n".join(lines) + "\n", warning


# hosts

def _addresses(ep: Endpoint) -> list[str]:
    return [a for a in (ep.ip_address, ep.ip_address6) if a]


def hosts_lines(name: str, endpoints: list[Endpoint]) -> str:
    """A container's lines in its peers' hosts files: its name on its addresses of `endpoints`."""
    return "".join(f"{a}\t{name}\n" for ep in endpoints for a in _addresses(ep))


def same_lines(a: str | None, b: str) -> bool:
    """Whether two hosts files say the same: the same lines, in any order (appended lines come
    in another), comments (struck lines) aside."""
    def lines(text: str) -> list[str]:
        return sorted(line for line in text.splitlines() if not line.startswith("#"))
    return a is not None and lines(a) == lines(b)


def hosts_files(targets: list[str], endpoints: list[Endpoint], names: dict[str, str]) -> dict[str, str]:
    """The hosts file of each target container (by id). `endpoints`: the targets' own, and those
    of their networks, the wired ones (`epair` set) being the running containers'; `names`:
    container id -> name.

    A network's lines are made once and each target takes them without its own: with k
    containers on one network the work is k files of k lines, not k² lines made one by one."""
    mine: dict[str, list[Endpoint]] = defaultdict(list)
    members: dict[str, list[Endpoint]] = defaultdict(list)
    for ep in endpoints:
        mine[ep.container_id].append(ep)
        if ep.epair:
            members[ep.network_id].append(ep)
    blocks: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}  # network -> text, container -> its span

    def block(network_id: str) -> tuple[str, dict[str, tuple[int, int]]]:
        if network_id not in blocks:
            parts, spans, at = [], {}, 0
            for ep in sorted(members[network_id], key=lambda e: names.get(e.container_id, "")):
                text = hosts_lines(names.get(ep.container_id, ep.container_id), [ep])
                spans[ep.container_id] = (at, at + len(text))
                parts.append(text)
                at += len(text)
            blocks[network_id] = ("".join(parts), spans)
        return blocks[network_id]

    files = {}
    for cid in targets:
        name = names[cid]
        own = hosts_lines(name, mine[cid]) or f"{NO_ADDRESS}\t{name}\n"
        parts = [f"# kleenenet: hosts of container {name}; kept current as containers join and leave "
                 f"its networks; {STRUCK}{0:0{STRUCK_DIGITS}d}\n", LOCALHOST, own]
        for ep in mine[cid]:
            text, spans = block(ep.network_id)
            start, end = spans.get(cid, (len(text), len(text)))
            parts += [text[:start], text[end:]]
        files[cid] = "".join(parts)
    return files


# the files, in the state directory

class Files:
    """Each container's resolver files, in <state>/containers/<id>/."""

    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "containers"

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    def fallback(self) -> list[str]:
        """The operator's nameservers for when the host's only answer on the host."""
        try:
            return nameservers((self.state_dir / FALLBACK).read_text())
        except (OSError, UnicodeDecodeError):
            return []

    def read(self, container_id: str, name: str) -> str | None:
        try:
            return (self.dir(container_id) / name).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def write(self, container_id: str, name: str, text: str) -> None:
        """Write in place: a container sees the file through a mount of this very inode, so it
        is never replaced. Readable by every user: a container's command may run as any."""
        path = self.dir(container_id) / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        data = memoryview(text.encode())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def append(self, container_id: str, name: str, text: str) -> None:
        """Add lines at the end of a file, if the container has it."""
        try:  # (a str path: this runs for every peer of a joining container)
            fd = os.open(os.path.join(self.root, container_id, name), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.write(fd, text.encode())  # (one write: O_APPEND puts it at the end whole)
        finally:
            os.close(fd)

    def strike(self, container_id: str, name: str, text: str) -> bool:
        """Comment out the lines `text` where they are in a file, if the container has it: '#'
        over the first byte of each ("10.0.0.4\tc" becomes "#0.0.0.4\tc"), in place, so a leave
        costs each peer a read and a few bytes, not a rewrite. Whether the file is now mostly
        struck lines, and worth writing anew."""
        try:
            fd = os.open(os.path.join(self.root, container_id, name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        lines = text.encode().splitlines(keepends=True)
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            found = [at for at in (data.find(b"\n" + line) for line in lines) if at >= 0]  # whole lines
            for at in found:
                os.pwrite(fd, b"#", at + 1)
            counter = data.find(STRUCK.encode(), 0, data.find(b"\n"))  # in the header
            if counter < 0:  # a file without the count: written anew once
                return bool(found)
            counter += len(STRUCK)
            struck = int(data[counter:counter + STRUCK_DIGITS]) + len(found)
            os.pwrite(fd, f"{struck:0{STRUCK_DIGITS}d}".encode(), counter)
        finally:
            os.close(fd)
        return struck > COMPACT_AFTER and 2 * struck * len(text) // max(1, len(lines)) > len(data)

    def ids(self) -> list[str]:
        """The containers that have files here."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.dir(container_id), ignore_errors=True)
