"""kleenenet's networks through a real NIC, to an upstream that is another operating system.

Where the FreeBSD host is a VM on this machine (KLEENENET_FREEBSD_REMOTE), its NIC IFACE is a
tap device TAP in the Linux network namespace NETNS (KLEENENET_FREEBSD_UPLINK=NETNS:TAP:IFACE),
which plays the upstream: 203.0.113.1/24 and 2001:db8:113::1/64 on TAP (set here), .2 and ::2
on IFACE, the FreeBSD host's own configuration, with its default routes toward the upstream
(documentation prefixes, inside that namespace only). A TCP server there logs the peer of every
connection and answers 'pong'. Networks here NAT toward IFACE: the upstream sees IFACE's address,
or with a route back and no NAT (`--no-ipv6-nat`, `--no-nat`), the jail's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.jails.host import DRIVER, REMOTE, SERVER_PORT, eventually, neighbour, sh

UPLINK = os.environ.get("KLEENENET_FREEBSD_UPLINK", "")
pytestmark = pytest.mark.skipif(not (REMOTE and UPLINK.count(":") == 2),
                                reason="needs KLEENENET_FREEBSD_REMOTE and KLEENENET_FREEBSD_UPLINK=NETNS:TAP:IFACE")
NETNS, TAP, IFACE = (UPLINK.split(":") + ["", "", ""])[:3]
UP4, HOST4 = "203.0.113.1", "203.0.113.2"
UP6, HOST6 = "2001:db8:113::1", "2001:db8:113::2"
UP_PORT = 8000
PUBLISHED = 9100
SUBNET, SUBNET6 = "10.78.1.0/24", "fd78:1::/64"

# The upstream's server: one line per connection, "PEER-ADDRESS", then 'pong' to the peer.
SERVER = f"""
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", {UP_PORT}))
s.listen(16)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    print(peer[0].removeprefix("::ffff:"), flush=True)
    c.sendall(b"pong\\n")
    c.close()
"""

# A client in the upstream: 'ping' to ADDR PORT, prints the answer; exit 42 when it cannot connect.
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    c.sendall(b"ping\\n")
    c.shutdown(socket.SHUT_WR)
    print(c.recv(100).decode().strip())
except OSError:
    sys.exit(42)
"""


def in_upstream(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NETNS, *argv], capture_output=True, text=True, check=check,
                          timeout=60)


class Upstream:
    def __init__(self, log):
        self.log = log
        self.server: subprocess.Popen | None = None
        self.routes: list[str] = []

    def start(self) -> None:
        in_upstream("ip", "addr", "replace", f"{UP4}/24", "dev", TAP)
        in_upstream("ip", "-6", "addr", "replace", f"{UP6}/64", "dev", TAP, "nodad")
        in_upstream("ip", "link", "set", TAP, "up")
        iface = sh("ifconfig", IFACE).stdout
        if f"inet {HOST4} " not in iface or f"inet6 {HOST6} " not in iface:
            pytest.skip(f"{IFACE} lacks {HOST4}/24 or {HOST6}/64 (the FreeBSD host's uplink, its own "
                        "configuration): see this module's docstring")
        with open(self.log, "w") as out:
            self.server = subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, "-c", SERVER],
                                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        eventually(lambda: "listening" in self.log.read_text(), "the upstream's server")
        # the FreeBSD host reaches the upstream at all (IPv6: once DAD is over)
        eventually(lambda: sh("ping", "-c", "1", "-t", "2", UP4, check=False).returncode == 0, "ping to the upstream")
        eventually(lambda: sh("ping", "-6", "-c", "1", "-t", "2", UP6, check=False).returncode == 0,
                   "ping6 to the upstream", timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()  # by its own pid
            self.server.wait()
        for route in self.routes:
            in_upstream("ip", "route", "del", route, check=False)

    def route_back(self, subnet: str) -> None:
        """The upstream routes `subnet` to the FreeBSD host (as a provider routes a customer's)."""
        via = HOST6 if ":" in subnet else HOST4
        in_upstream("ip", "route", "replace", subnet, "via", via)
        self.routes.append(subnet)

    def peers(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line != "listening"]

    def peer_seen_from(self, kn, network: str, driver: str, family: int = 4) -> str | None:
        """The source address the upstream sees for a connection from a fresh container."""
        before = len(self.peers())
        if kn.exchange(network, UP4 if family == 4 else UP6, UP_PORT, driver) != "pong":
            return None
        return eventually(lambda: self.peers()[before:], "the upstream to log the connection")[-1]

    def exchange(self, addr: str, port: int) -> str | None:
        """From the upstream: 'ping' to addr:port; the answer, or None when it cannot connect."""
        r = in_upstream(sys.executable, "-c", CLIENT, addr, str(port), check=False)
        return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture
def upstream(kn, tmp_path):
    with neighbour(kn, Upstream(tmp_path / "upstream.log")) as up:
        yield up


@pytest.mark.parametrize("net_type", ["loopback", "bridge"])
def test_nat_through_a_real_nic(kn, upstream, net_type):
    kn("network", "create", "-t", net_type, "--subnet", SUBNET, "--subnet6", SUBNET6, "--nat-if", IFACE, "out")
    assert upstream.peer_seen_from(kn, "out", DRIVER[net_type]) == HOST4
    assert upstream.peer_seen_from(kn, "out", DRIVER[net_type], 6) == HOST6  # NAT66


def test_routed_ipv6_keeps_the_jails_address(kn, upstream):
    kn("network", "create", "-t", "bridge", "--subnet6", SUBNET6, "--no-ipv6-nat", "--nat-if", IFACE, "v6")
    upstream.route_back(SUBNET6)
    seen = upstream.peer_seen_from(kn, "v6", "vnet", 6)
    assert seen is not None and seen.startswith("fd78:1::"), seen


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("net_type", ["loopback", "bridge"])
def test_only_published_ports_are_reached_from_the_upstream(kn, upstream, net_type, family):
    """Even with a route to the jails (a provider that routes the subnet, or a neighbour that
    sets one), the upstream reaches a jail only through its published port."""
    driver = DRIVER[net_type]
    nat6 = ["--no-ipv6-nat"] if family == 6 else []
    kn("network", "create", "-t", net_type, "--subnet", SUBNET, "--subnet6", SUBNET6, *nat6, "--nat-if", IFACE, "pub")
    upstream.route_back(SUBNET if family == 4 else SUBNET6)
    server = kn.serve("web", "pub", driver, SERVER_PORT, family, "-p", f"{PUBLISHED}:{SERVER_PORT}")
    other = kn.serve("idle", "pub", driver, SERVER_PORT + 1, family)
    host = HOST4 if family == 4 else HOST6
    assert upstream.exchange(host, PUBLISHED) == "pong"  # the published port: rdr on IFACE
    assert kn.exchange("pub", other, SERVER_PORT + 1, driver) == "pong"  # the other server answers
    assert upstream.peer_seen_from(kn, "pub", driver, family) is not None  # and the way out works
    assert upstream.exchange(other, SERVER_PORT + 1) is None  # unsolicited: blocked
    assert upstream.exchange(server, SERVER_PORT) is None  # the published jail's own port too


def test_mtu_of_a_bridge_network_holds_on_the_wire(kn, upstream):
    kn("network", "create", "-t", "bridge", "--subnet", SUBNET, "--mtu", "1400", "--nat-if", IFACE, "small")
    kn("run", "-d", "-l", "vnet", "-n", "small", "--name", "j", "--", "sleep", "600")
    jail_if = [line.split(":")[0] for line in kn("exec", "j", "--", "ifconfig").stdout.splitlines()
               if line.startswith("kv")]  # (a vnet jail also has its own pflog0 and pfsync0)
    assert len(jail_if) == 1 and "mtu 1400" in kn("exec", "j", "--", "ifconfig", jail_if[0]).stdout
    # 1400 = 20 (IP) + 8 (ICMP) + 1372: the largest unfragmented ping passes, one byte more does not
    fits = kn("exec", "j", "--", "ping", "-D", "-c", "1", "-t", "3", "-s", "1372", UP4, check=False)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    too_big = kn("exec", "j", "--", "ping", "-D", "-c", "1", "-t", "3", "-s", "1373", UP4, check=False)
    assert too_big.returncode != 0, too_big.stdout


def test_a_stopped_jails_nated_flows_end_with_it(kn, upstream):
    """A disconnect kills the states of the jail's flows, NATed ones included (pfctl -k nat)."""
    kn("network", "create", "-t", "bridge", "--subnet", SUBNET, "--nat-if", IFACE, "out")
    kn("run", "-d", "-l", "vnet", "-n", "out", "--name", "talker", "--", "sh", "-c",
       f"nc -n {UP4} {UP_PORT} </dev/zero >/dev/null")
    addr = kn.ip_of("talker", "out")
    eventually(lambda: f"{addr}:" in sh("pfctl", "-s", "states").stdout, "the flow's state")
    kn("stop", "talker")
    time.sleep(0.5)
    states = sh("pfctl", "-s", "states").stdout
    assert f"{addr}:" not in states, states
