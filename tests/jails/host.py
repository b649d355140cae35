"""The FreeBSD host as the jail tests see it: the kleenenet command line, what kleenenet leaves on
the host (interfaces, pf anchors, jails), a fake upstream ("wan") jail, and kleenenet's daemon
with Kleene's client talking to it.

Commands used (base system, FreeBSD 14): ifconfig(8), jail(8), jexec(8), jls(8), pfctl(8),
sockstat(1), nc(1), ping(8), zfs(8), zpool(8); and klee, Kleene's client (kleene-cli, in the
`test` extra). Jails run with path=/, so the host's binaries are theirs too.
Importable anywhere: nothing here runs until a test calls it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# kleenenet's names on the host: networks are kleeneN, endpoints' host ends kv<endpoint id>;
# its pf anchors live under kleenenet/ (the test machine's pf.conf: vagrant/provision.sh).
KLEENENET_IF_PREFIXES = ("kleene", "kv")
ANCHOR = "kleenenet"
JAIL_PREFIX = "kn"  # a container's jail is kn<container id> (README, FreeBSD)

# The fake upstream, TEST-NET-1: a vnet jail holding one end of an epair, the host the other.
# The jail has no route beyond 192.0.2.0/24, so it can only answer traffic that was NATed to
# the host's 192.0.2.2: a connection that succeeds proves the NAT. Names avoid kleenenet's
# prefixes so that kleenenet's reconcile never takes them for its own leftovers.
WAN_JAIL = "kn-test-wan"
WAN_HOST_IF = "tstwan0a"  # stays on the host: the networks' --nat-if
WAN_JAIL_IF = "tstwan0b"
WAN_ADDR = "192.0.2.1"
UPLINK_ADDR = "192.0.2.2"
WAN_PORT = 8000

# Containers on a network of each type: ipnet jails on loopback networks, vnet jails on bridges.
DRIVER = {"loopback": "ipnet", "bridge": "vnet"}
SERVER_PORT = 5000
CONNECT_TIMEOUT = 3  # seconds, nc -w
NO_CONNECTION = 42  # exit status of the probes below when the TCP connection failed


# commands on the host

# The FreeBSD host: this machine, or the one KLEENENET_FREEBSD_REMOTE names (a VM's root shell,
# kleenenet/platform/freebsd/remote.py), where the same commands run while kleenenet and pytest
# run here.
REMOTE = os.environ.get("KLEENENET_FREEBSD_REMOTE")


def remote_runner():
    from kleenenet.platform.freebsd.remote import RemoteRunner

    return RemoteRunner(REMOTE)


def sh(*args: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a command on the FreeBSD host; with check, a failure raises with its output."""
    if REMOTE:
        r = remote_runner().execute(list(args), stdin)
    else:
        r = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout, input=stdin,
                           stdin=None if stdin is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} exited {r.returncode}\n"
                             f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
    return r


def prepare_remote() -> None:
    """Make the remote host a test machine as vagrant/provision.sh does: pf enabled with
    kleenenet's fragment and `pass all`, pf on bridges as doctor advises."""
    fragment = (Path(__file__).resolve().parents[2] / "pf" / "kleenenet.conf").read_text()
    sh("pfctl", "-f", "-", stdin=f"{fragment}pass all\n")
    if "Enabled" not in sh("pfctl", "-s", "info").stdout:
        sh("pfctl", "-e")
    sh("sysctl", "net.link.bridge.pfil_member=0", "net.link.bridge.pfil_bridge=0")


def spawn(argv: list[str], log: Path | None = None) -> subprocess.Popen:
    """A long-running command on the FreeBSD host, its output (stdout and stderr) in `log`. On a
    remote host the process here is the relay that follows it; end() ends both."""
    if REMOTE:
        argv = remote_runner().wrap(argv)
    with open(log or os.devnull, "w") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def end(proc: subprocess.Popen) -> None:
    """SIGTERM to a spawned command (by its own pid; a relay passes it on), and wait for it."""
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)


def eventually(probe: Callable[[], T], what: str, timeout: float = 20, interval: float = 0.1) -> T:
    """probe()'s first true value, polling until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def tcp_listeners(port: int, jail: str | None = None) -> list[str]:
    """sockstat lines of IPv4 TCP sockets listening on port, on the host or inside a jail.

    A vnet jail has its own network stack, so its sockets are only visible from inside it."""
    argv = ["sockstat", "-4", "-l", "-P", "tcp", "-p", str(port)]
    r = sh("jexec", jail, *argv, check=False) if jail else sh(*argv, check=False)
    return [line for line in r.stdout.splitlines()[1:] if f":{port}" in line]


@contextmanager
def host_tcp_server(port: int) -> Iterator[None]:
    """A TCP server of the host's own, listening on every IPv4 address (nc -l)."""
    server = spawn(["nc", "-d", "-k", "-l", str(port)])
    try:
        eventually(lambda: tcp_listeners(port), f"the host's server on port {port} to listen")
        yield
    finally:
        end(server)


def host_can_connect(addr: str, port: int) -> bool:
    """Whether the host itself can open a TCP connection to addr:port (kleenenet's anchors
    never block the host: a positive control for the jails' probes)."""
    return sh("nc", "-z", "-n", "-w", str(CONNECT_TIMEOUT), addr, str(port), check=False).returncode == 0


# what kleenenet leaves on the host

def kleenenet_interfaces() -> list[str]:
    return [name for name in sh("ifconfig", "-l").stdout.split() if name.startswith(KLEENENET_IF_PREFIXES)]


def kleenenet_anchors() -> list[str]:
    """Every anchor under kleenenet/ (-v: recursively, and those starting with '_') that holds
    rules, translation rules or tables: pf keeps listing an emptied anchor that another one
    calls (`anchor "ports/*"`), and the name of one whose parent's caller is gone, which pfctl
    then says "does not exist" (FreeBSD 15.0)."""
    r = sh("pfctl", "-v", "-a", ANCHOR, "-s", "Anchors", check=False)
    if r.returncode != 0:
        if "Anchor does not exist" in r.stderr:
            return []  # no anchor under kleenenet/, and no rule that calls one
        raise AssertionError(f"cannot list pf anchors under {ANCHOR}/ (is pf loaded, with the anchor "
                             f"lines of vagrant/provision.sh in /etc/pf.conf?): {r.stderr.strip()}")
    listed = [line.strip() for line in r.stdout.splitlines() if line.strip()]
    return [a for a in listed if any(sh("pfctl", "-a", a, "-s", what, check=False).stdout.strip()
                                     for what in ("rules", "nat", "Tables"))]


def pf_states() -> str:
    """pf's state table (`pfctl -s states`): a redirected flow shows the container's address."""
    return sh("pfctl", "-s", "states").stdout


def host_exchange(addr: str, port: int) -> str | None:
    """From the host itself: send 'ping' to addr:port; the reply, or None when the connection
    fails."""
    r = sh("sh", "-c", f"echo ping | nc -N -n -w {CONNECT_TIMEOUT} {addr} {port}", check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def jail_names() -> set[str]:
    return set(sh("jls", "name").stdout.split())


def kleenenet_jails() -> list[str]:
    """kleenenet's jails with their address lists, one `name=... ip4.addr=... ip6.addr=...` each."""
    lines = sh("jls", "-n", "name", "ip4.addr", "ip6.addr").stdout.splitlines()
    return sorted(line for line in lines if re.match(rf"name={JAIL_PREFIX}[0-9a-f]{{12}} ", line))


def leftovers(jails_before: set[str]) -> dict[str, list[str]]:
    """kleenenet's interfaces and anchors on the host, and jails not in jails_before."""
    found = {"interfaces": kleenenet_interfaces(), "anchors": kleenenet_anchors(),
             "jails": sorted(jail_names() - set(jails_before) - {WAN_JAIL})}
    return {kind: names for kind, names in found.items() if names}


def remove_leftovers(found: dict[str, list[str]]) -> None:
    """Remove what leftovers() found (exact names only), so that the next test starts clean."""
    for jail in found.get("jails", []):
        sh("jail", "-r", jail, check=False)
    for name in found.get("interfaces", []):
        sh("ifconfig", name, "destroy", check=False)
    for anchor in sorted(found.get("anchors", []), key=len, reverse=True):  # children first
        sh("pfctl", "-a", anchor, "-F", "all", check=False)


def interface_summary(name: str) -> list[str]:
    """The parts of `ifconfig NAME` kleenenet decides: addresses, bridge members, groups,
    description (not MACs, link-local addresses or link state)."""
    r = sh("ifconfig", name, check=False)
    summary = []
    for line in r.stdout.splitlines()[1:]:
        words = line.split()
        if not words:
            continue
        if words[0] in ("inet", "inet6") and not words[1].startswith("fe80:"):
            summary.append(" ".join(words[:4]))  # inet ADDR netmask M / inet6 ADDR prefixlen N
        elif words[0] == "member:":
            summary.append(" ".join(words[:2]))
        elif words[0] in ("groups:", "description:"):
            summary.append(" ".join(words))
    return sorted(summary)


def anchor_summary(anchor: str) -> dict:
    def show(*args: str) -> list[str]:
        return [line.strip() for line in sh("pfctl", "-a", anchor, *args).stdout.splitlines() if line.strip()]

    return {"rules": show("-s", "rules"), "nat": show("-s", "nat"),
            "tables": {table: sorted(show("-t", table, "-T", "show")) for table in show("-s", "Tables")}}


def host_snapshot() -> dict:
    """Everything of kleenenet's on the host that a test compares before and after."""
    return {"interfaces": {name: interface_summary(name) for name in kleenenet_interfaces()},
            "anchors": {anchor: anchor_summary(anchor) for anchor in kleenenet_anchors()},
            "jails": kleenenet_jails()}


def non_loopback_addresses(ifconfig_output: str) -> list[str]:
    """inet/inet6 addresses in ifconfig output, other than loopback and link-local ones."""
    found = re.findall(r"^\s+inet6?\s+(\S+)", ifconfig_output, re.MULTILINE)
    return [a for a in found if not (a.startswith(("127.", "fe80:")) or a == "::1")]


@contextmanager
def neighbour(kn, fake):
    """A fake machine next to the host (an upstream, a LAN) for one test, started and stopped;
    kleenenet's networks on its interfaces are removed before it goes."""
    try:
        fake.start()
        yield fake
    finally:
        try:
            kn.remove_everything()
        finally:
            fake.stop()


# kleenenet

class Kleenenet:
    """kleenenet's command line with a state directory of the test's own, and the probes the
    scenarios are written with."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.cleanup_errors: list[str] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kleenenet", "--state-dir", str(self.state_dir), *args]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLEENENET_")}
        if REMOTE:
            env["KLEENENET_FREEBSD_REMOTE"] = REMOTE
        return {**env, **(extra or {})}

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `kleenenet ARGS...`; with check, a non-zero exit raises with its output."""
        r = subprocess.run(self.argv(*args), check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=self.env(env), timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kleenenet {shlex.join(args)} exited {r.returncode}\n"
                                 f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
        return r

    def popen(self, *args: str, env: dict[str, str] | None = None, stderr=subprocess.DEVNULL) -> subprocess.Popen:
        """`kleenenet ARGS...` in the background."""
        return subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, text=True, env=self.env(env))

    def json(self, *args: str):
        return json.loads(self(*args).stdout)

    def network(self, name: str) -> dict:
        return self.json("network", "inspect", name)["network"]

    def ip_of(self, container: str, network: str, family: int = 4) -> str:
        net_id = self.network(network)["id"]
        endpoints = self.json("inspect", container)["container_endpoints"]
        key = "ip_address" if family == 4 else "ip_address6"
        return next(ep[key] for ep in endpoints if ep["network_id"] == net_id)

    def jail_of(self, container: str) -> str:
        return JAIL_PREFIX + self.json("inspect", container)["container"]["id"]

    def log_of(self, container: str) -> str:
        cid = self.json("inspect", container)["container"]["id"]
        path = self.state_dir / "logs" / f"{cid}.log"
        return path.read_text() if path.exists() else ""

    def snapshot(self) -> dict:
        """The host's kleenenet parts and kleenenet's state."""
        return {"host": host_snapshot(), "networks": self.json("network", "ls", "--json"),
                "containers": self.json("ps", "-a", "--json")}

    def remove_everything(self) -> None:
        """rm -f every container, then remove every network; failures are kept in cleanup_errors."""
        steps = [("containers", ("ps", "-a", "--json"), ("rm", "-f")),
                 ("networks", ("network", "ls", "--json"), ("network", "rm"))]
        for what, listing, remove in steps:
            r = self(*listing, check=False)
            if r.returncode != 0:
                self.cleanup_errors.append(f"listing {what}: {r.stderr.strip()}")
                continue
            for item in json.loads(r.stdout):
                r = self(*remove, item["id"], check=False)
                if r.returncode != 0:
                    self.cleanup_errors.append(f"{' '.join(remove)} {item['name']}: {r.stderr.strip()}")

    # containers that talk

    def serve(self, name: str, network: str, driver: str, port: int = SERVER_PORT, family: int = 4,
              *options: str) -> str:
        """A detached container answering each TCP connection with 'pong' (and writing what it
        receives to its log); returns its address (of `family`) on network once it listens."""
        self("run", "-d", "-l", driver, "-n", network, *options, "--name", name, "--",
             "sh", "-c", f"while :; do echo pong | nc -{family} -N -n -l {port}; done")
        eventually(lambda: self.listening(name, port, family), f"{name} to listen on port {port}")
        return self.ip_of(name, network, family)

    def listening(self, container: str, port: int, family: int = 4) -> bool:
        r = self("exec", container, "--", "sockstat", f"-{family}", "-l", "-P", "tcp", "-p", str(port), check=False)
        return r.returncode == 0 and any(f":{port}" in line for line in r.stdout.splitlines()[1:])

    def exchange(self, network: str, addr: str, port: int, driver: str) -> str | None:
        """From a fresh container on network: send 'ping' to addr:port; the reply, or None when
        the connection fails."""
        return self._probe(["run", "--rm", "-l", driver, "-n", network],
                           f"echo ping | nc -N -n -w {CONNECT_TIMEOUT} {addr} {port}")

    def exec_exchange(self, container: str, addr: str, port: int) -> str | None:
        """The same from a running container."""
        return self._probe(["exec", container], f"echo ping | nc -N -n -w {CONNECT_TIMEOUT} {addr} {port}")

    def can_connect(self, network: str, addr: str, port: int, driver: str) -> bool:
        """Whether a fresh container on network can open a TCP connection to addr:port."""
        return self._probe(["run", "--rm", "-l", driver, "-n", network],
                           f"nc -z -n -w {CONNECT_TIMEOUT} {addr} {port}") is not None

    def exec_can_connect(self, container: str, addr: str, port: int) -> bool:
        return self._probe(["exec", container], f"nc -z -n -w {CONNECT_TIMEOUT} {addr} {port}") is not None

    def _probe(self, how: list[str], script: str) -> str | None:
        # nc's failure becomes NO_CONNECTION, so that a failing kleenenet is not taken for a
        # refused connection.
        r = self(*how, "--", "sh", "-c", f"if {script}; then :; else exit {NO_CONNECTION}; fi", check=False)
        if r.returncode == NO_CONNECTION:
            return None
        if r.returncode != 0:
            raise AssertionError(f"kleenenet {shlex.join(how)} exited {r.returncode}\n"
                                 f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
        return r.stdout.strip()

    def ping(self, container: str, addr: str) -> subprocess.CompletedProcess:
        return self("exec", container, "--", "ping", "-c", "1", "-t", "3", addr, check=False)


# the fake upstream

class Wan:
    """A vnet jail at 192.0.2.1 behind an epair whose other end (192.0.2.2) is on the host,
    running a TCP server that logs the address of every peer (nc -v)."""

    def __init__(self, log: Path):
        self.log = log
        self.server: subprocess.Popen | None = None

    def start(self) -> None:
        self.remove()  # what an interrupted earlier run left, by exact name
        end_a = sh("ifconfig", "epair", "create").stdout.strip()  # e.g. epair3a; its peer is epair3b
        sh("ifconfig", end_a, "name", WAN_HOST_IF)
        sh("ifconfig", end_a[:-1] + "b", "name", WAN_JAIL_IF)
        sh("ifconfig", WAN_HOST_IF, "inet", f"{UPLINK_ADDR}/24", "up")
        sh("jail", "-c", f"name={WAN_JAIL}", "path=/", f"host.hostname={WAN_JAIL}", "vnet=new",
           f"vnet.interface={WAN_JAIL_IF}", "persist")
        sh("jexec", WAN_JAIL, "ifconfig", WAN_JAIL_IF, "inet", f"{WAN_ADDR}/24", "up")
        self.server = spawn(["jexec", WAN_JAIL, "nc", "-v", "-n", "-d", "-k", "-l", WAN_ADDR, str(WAN_PORT)], self.log)
        eventually(lambda: tcp_listeners(WAN_PORT, jail=WAN_JAIL), "the upstream server to listen")

    def stop(self) -> None:
        if self.server is not None:
            end(self.server)  # jexec execs nc: the pid is the server itself
            self.server = None
        self.remove()

    @staticmethod
    def remove() -> None:
        # Bring the jail's end home first: destroying the host's end then takes the pair.
        sh("ifconfig", WAN_JAIL_IF, "-vnet", WAN_JAIL, check=False)
        sh("ifconfig", WAN_HOST_IF, "destroy", check=False)
        sh("jail", "-r", WAN_JAIL, check=False)

    def peers(self) -> list[str]:
        """Peer addresses of the connections so far ('Connection received on ADDR PORT' in
        FreeBSD 14's nc -v; older ones say 'Connection from ADDR PORT received!')."""
        return re.findall(r"Connection (?:received on|from) ([0-9A-Fa-f:.]+)", self.log.read_text())

    def peer_seen_from(self, kn: Kleenenet, network: str, driver: str) -> str | None:
        """The source address the upstream sees for a connection from a fresh container on
        network; None when the connection fails."""
        before = len(self.peers())
        if kn.exchange(network, WAN_ADDR, WAN_PORT, driver) is None:
            return None
        return eventually(lambda: self.peers()[before:], "the upstream to log the connection")[-1]

    def route_back(self, subnet: str) -> None:
        """Let the upstream answer subnet without NAT (through the host's 192.0.2.2)."""
        sh("jexec", WAN_JAIL, "route", "add", "-net", subnet, UPLINK_ADDR)

    def exchange(self, addr: str, port: int) -> str | None:
        """From the upstream: send 'ping' to addr:port (on the host); the reply, or None."""
        script = f"echo ping | nc -N -n -w {CONNECT_TIMEOUT} {addr} {port}"
        r = sh("jexec", WAN_JAIL, "sh", "-c", script, check=False)
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None

    def client(self, addr: str, port: int) -> subprocess.Popen:
        """A TCP connection from the upstream to addr:port, held open until end() (nc -d: it
        reads no input, so nothing closes it)."""
        return spawn(["jexec", WAN_JAIL, "nc", "-d", "-n", addr, str(port)])

    def can_connect(self, addr: str, port: int) -> bool:
        """Whether the upstream itself can open a TCP connection to addr:port (on the host)."""
        return sh("jexec", WAN_JAIL, "nc", "-z", "-n", "-w", str(CONNECT_TIMEOUT), addr, str(port),
                  check=False).returncode == 0


# kleenenet's daemon and Kleene's client

class Daemon:
    """`kleenenet daemon --socket PATH` with the test's state directory, serving Kleene's API."""

    def __init__(self, kn: Kleenenet, socket_path: Path, log: Path):
        self.kn, self.socket, self.log = kn, socket_path, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.kn.argv("daemon", "--socket", str(self.socket)),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.kn.env())
        eventually(lambda: self.socket.exists() or self.proc.poll() is not None, "the daemon's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"kleenenet daemon exited {self.proc.returncode}:\n{self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM by its pid: it stops serving and removes its socket."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"kleenenet daemon ignored SIGTERM:\n{self.log.read_text()}") from None
        self.proc = None


class Klee:
    """Kleene's client (PyPI kleene-cli, installed with kleenenet's `test` extra) talking to a
    daemon's socket: KLEE_HOST=http://<socket path>."""

    def __init__(self, socket_path: Path):
        self.socket = socket_path
        self.exe = str(Path(sys.executable).with_name("klee"))

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        env = {**os.environ, "KLEE_HOST": f"http://{self.socket}", "KLEE_THEME": "simple", "COLUMNS": "200"}
        r = subprocess.run([self.exe, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=env, timeout=timeout, cwd=self.socket.parent)  # (no klee_config.yaml there)
        if check and r.returncode != 0:
            raise AssertionError(f"klee {shlex.join(args)} exited {r.returncode}\n"
                                 f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}")
        return r.stdout + r.stderr
