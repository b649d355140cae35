"""Published ports (`run -p`), with real packets: from the upstream to the host's uplink address,
from the host itself and from containers through it (hairpin), IPv4 and IPv6, TCP and UDP;
conflicts refused without a trace; closed again when the container goes. Every "cannot reach"
has its positive control."""

import json
import queue
import subprocess
import sys
import threading
import time

import pytest

from tests.linux.test_security import log_of, set_br_netfilter, wait_for_line
from tests.linux.world import UPLINK6_ADDR, UPLINK_ADDR, WAN6_ADDR, WAN_ADDR, sh

# Answers every connection or datagram with the peer's address and the port it came to.
SERVER = """
import socket, sys, threading

def serve(proto, port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    answer = lambda peer: f"{peer[0].removeprefix('::ffff:')} {port}".encode()
    if proto == "tcp":
        s.listen()
    while True:
        if proto == "tcp":
            c, peer = s.accept()
            c.sendall(answer(peer))
            c.close()
        else:
            _, peer = s.recvfrom(99)
            s.sendto(answer(peer), peer)

threads = [threading.Thread(target=serve, args=(p, int(n))) for p, n in (a.split("/") for a in sys.argv[1:])]
for t in threads:
    t.start()
print("ready", flush=True)
"""

# What the server answers, or exit status 3 when nothing answers in time.
CLIENT = """
import socket, sys
addr, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
try:
    if proto == "tcp":
        s = socket.create_connection((addr, port), timeout=timeout)
        print(s.recv(99).decode())
    else:  # a datagram a second until one is answered
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(min(timeout, 1))
        for _ in range(max(1, int(timeout))):
            s.sendto(b"?", (addr, port))
            try:
                print(s.recv(99).decode())
                break
            except TimeoutError:
                pass
        else:
            raise TimeoutError("no answer")
except OSError as e:
    print("FAIL", e)
    sys.exit(3)
"""


# An answer may take a lost first packet's retry (a TCP SYN is sent again after a second);
# waiting for none takes one second.
ANSWER, NONE = 3, 1


def serve(world, name: str, networks: list[str], listen: list[str], *publish: str) -> None:
    """A detached container on `networks` answering on `listen` (PROTO/PORT), with `-p publish`."""
    world.kn("run", "-d", "--name", name, *(a for n in networks for a in ("-n", n)),
             *(a for p in publish for a in ("-p", p)), "--", sys.executable, "-c", SERVER, *listen)
    wait_for_line(log_of(world, name), "ready")


# A UDP peer that never pauses, as a game client or a DNS forwarder: a datagram every 0.1 s from
# one source port, every answer printed. Its flow's conntrack entry never expires.
STEADY_PEER = """
import socket, sys
addr, port, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", source))
s.settimeout(0.1)
while True:
    s.sendto(b"?", (addr, port))
    try:
        print(s.recv(99).decode(), flush=True)
    except TimeoutError:
        pass
"""


class SteadyPeer:
    def __init__(self, world, addr: str, port: int, source: int):
        self.proc = subprocess.Popen(["ip", "netns", "exec", world.wan, sys.executable, "-c", STEADY_PEER, addr,
                                      str(port), str(source)], stdout=subprocess.PIPE, text=True)
        world.servers.append(self.proc)  # ended by the world, by PID
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.answers.put(line.strip()) for line in self.proc.stdout],
                         daemon=True).start()

    def hears(self, answer: str, within: float = ANSWER) -> bool:
        """Whether `answer` comes back within `within` seconds (earlier answers are passed over)."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.answers.get(timeout=left) == answer:
                    return True
            except queue.Empty:
                break
        return False


def _answer(r: subprocess.CompletedProcess) -> str | None:
    if r.returncode == 3:
        return None
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def ask(where: list[str], addr: str, port: int, proto: str = "tcp", timeout: float = ANSWER) -> str | None:
    """The answer of whatever `addr` port/proto leads to, asked from the namespace of `where`."""
    return _answer(subprocess.run([*where, sys.executable, "-c", CLIENT, addr, str(port), proto, str(timeout)],
                                  capture_output=True, text=True, timeout=30))


def from_wan(world, addr: str, port: int, proto: str = "tcp", timeout: float = ANSWER) -> str | None:
    return ask(["ip", "netns", "exec", world.wan], addr, port, proto, timeout)


def from_container(world, name: str, addr: str, port: int, proto: str = "tcp",
                   timeout: float = ANSWER) -> str | None:
    return _answer(world.kn("exec", name, "--", sys.executable, "-c", CLIENT, addr, str(port), proto,
                            str(timeout), check=False))


def published(world) -> dict[str, list]:
    """The non-empty published-port maps and sets of kleenenet's table."""
    listing = json.loads(sh(*world.in_host("nft", "-j", "list", "table", "inet", "kleenenet")).stdout)
    return {body["name"]: body["elem"] for obj in listing["nftables"] for kind, body in obj.items()
            if kind in ("map", "set") and body["name"].startswith("published") and body.get("elem")}


def refused(world, *args: str) -> str:
    r = world.kn(*args, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_upstream_reaches_published_tcp_and_udp_ports(world, type_):
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "--subnet6", "fd00:2:3::/64", "net")
    serve(world, "web", ["net"], ["tcp/80", "udp/53"], "8080:80", "5353:53/udp")
    for uplink, client in ((UPLINK_ADDR, WAN_ADDR), (UPLINK6_ADDR, WAN6_ADDR)):
        # the container sees the client itself
        assert from_wan(world, uplink, 8080) == f"{client} 80"
        assert from_wan(world, uplink, 5353, "udp") == f"{client} 53"


def test_a_published_range(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "net")
    serve(world, "web", ["net"], ["tcp/7000", "tcp/7001", "tcp/7002"], "9000-9002:7000-7002")
    for k in range(3):
        assert from_wan(world, UPLINK_ADDR, 9000 + k) == f"{WAN_ADDR} {7000 + k}"
    assert from_wan(world, UPLINK_ADDR, 9003, timeout=NONE) is None


def test_an_unpublished_port_stays_closed(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "net")
    serve(world, "web", ["net"], ["tcp/80", "tcp/81", "udp/53", "udp/54"], "8080:80", "5353:53/udp")
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"  # positive controls
    assert from_wan(world, UPLINK_ADDR, 5353, "udp") == f"{WAN_ADDR} 53"
    assert from_wan(world, UPLINK_ADDR, 81, timeout=NONE) is None
    assert from_wan(world, UPLINK_ADDR, 54, "udp", timeout=NONE) is None
    # Not even straight to the container's address, for an upstream that routes to it: only
    # the DNAT of a published port opens the way in.
    sh("ip", "-n", world.wan, "route", "add", "10.2.3.0/24", "via", UPLINK_ADDR)
    ip = world.ip_of("web")
    assert from_wan(world, ip, 80, timeout=NONE) is None
    assert from_wan(world, ip, 81, timeout=NONE) is None
    assert from_wan(world, ip, 53, "udp", timeout=NONE) is None


def test_a_host_port_has_one_owner(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "net")
    serve(world, "web", ["net"], ["tcp/80"], "8080:80")
    before = world.snapshot()
    error = refused(world, "run", "-d", "--name", "other", "-n", "net", "-p", "9000-9100:9000-9100",
                    "-p", "8080:81", "--", "sleep", "60")
    assert "tcp/8080" in error and "'web'" in error
    assert world.snapshot() == before
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"  # still web's
    # the same number in another protocol is another port
    serve(world, "other", ["net"], ["udp/81"], "8080:81/udp")
    assert from_wan(world, UPLINK_ADDR, 8080, "udp") == f"{WAN_ADDR} 81"


def test_a_port_that_would_lead_nowhere_is_refused(world):
    """Without an interface a port arrives on its network's NAT interface: on an internal or
    --no-nat network there is none, and it is refused rather than published nowhere."""
    world.kn("network", "create", "-t", "bridge", "--internal", "--subnet", "10.2.5.0/24", "inner")
    world.kn("network", "create", "-t", "bridge", "--no-nat", "--subnet", "10.2.6.0/24", "routed")
    before = world.snapshot()
    assert "leads nowhere: none of its networks reaches out" in refused(
        world, "run", "-d", "-n", "inner", "-p", "8080:80", "--", "sleep", "60")
    assert "leads nowhere: network 'routed' has no NAT interface" in refused(
        world, "run", "-d", "-n", "routed", "-p", "8080:80", "--", "sleep", "60")
    assert world.snapshot() == before
    serve(world, "web", ["routed"], ["tcp/80"], "uplink:8080:80")  # with its interface: published
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"


def test_a_port_in_use_on_the_host_is_refused(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "net")
    world.serve(world.in_host(), 8080)  # a TCP listener of the host's own
    udp = subprocess.Popen(world.in_host(sys.executable, "-c", "import socket,time\n"
                                         "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM); s.bind(('::',5353))\n"
                                         "print('ready',flush=True); time.sleep(600)"),
                           stdout=subprocess.PIPE, text=True)
    world.servers.append(udp)
    assert udp.stdout.readline().strip() == "ready"
    before = world.snapshot()
    assert "tcp/8080" in refused(world, "run", "-d", "-n", "net", "-p", "8080:80", "--", "sleep", "60")
    assert "udp/5353" in refused(world, "run", "-d", "-n", "net", "-p", "5353:53/udp", "--", "sleep", "60")
    assert world.snapshot() == before
    # A TCP listener leaves the UDP port free, and the other way round; a listener on a loopback
    # address takes nothing a published port would (those addresses are never forwarded).
    world.serve(world.in_host(), 9090, bind="127.0.0.1")
    serve(world, "web", ["net"], ["udp/53", "tcp/80"], "8080:53/udp", "5353:80", "9090:80")
    assert from_wan(world, UPLINK_ADDR, 8080, "udp") == f"{WAN_ADDR} 53"
    assert from_wan(world, UPLINK_ADDR, 5353) == f"{WAN_ADDR} 80"
    assert from_wan(world, UPLINK_ADDR, 9090) == f"{WAN_ADDR} 80"


@pytest.mark.parametrize("br_netfilter", ["0", "1"])
def test_the_host_and_containers_reach_a_published_port_through_the_host(world, br_netfilter):
    set_br_netfilter(world, br_netfilter)
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "--subnet6", "fd00:2:3::/64", "a")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "--subnet6", "fd00:2:4::/64", "b")
    serve(world, "web", ["a"], ["tcp/80", "udp/53"], "8080:80", "5353:53/udp")
    serve(world, "routed", ["b"], ["tcp/80"], "8081:80")  # on a loopback network
    for name, net in (("peer", "a"), ("far", "b")):
        world.kn("run", "-d", "--name", name, "-n", net, "--", "sleep", "60")
    for uplink in (UPLINK_ADDR, UPLINK6_ADDR):
        # the host itself, through its own address (which the container sees)
        assert ask(world.in_host(), uplink, 8080) == f"{uplink} 80"
        assert ask(world.in_host(), uplink, 5353, "udp") == f"{uplink} 53"
        assert ask(world.in_host(), uplink, 8081) == f"{uplink} 80"
        # containers on the same network and on another one, through the host
        for client in ("peer", "far"):
            assert from_container(world, client, uplink, 8080) is not None, (client, uplink)
            assert from_container(world, client, uplink, 8081) is not None, (client, uplink)
        assert from_container(world, "far", uplink, 5353, "udp") is not None
    # also through the host's address on the container's own network
    assert from_container(world, "peer", "10.2.3.1", 8081) is not None


def test_an_internal_network_does_not_reach_published_ports(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "net")
    world.kn("network", "create", "-t", "bridge", "--internal", "--subnet", "10.2.5.0/24", "inner")
    serve(world, "web", ["net"], ["tcp/80"], "8080:80")
    world.kn("run", "-d", "--name", "in", "-n", "inner", "--", "sleep", "60")
    world.kn("run", "-d", "--name", "out", "-n", "net", "--", "sleep", "60")
    for addr in (UPLINK_ADDR, "10.2.5.1"):
        assert from_container(world, "out", addr, 8080) is not None  # positive control
        assert from_container(world, "in", addr, 8080, timeout=NONE) is None


def test_stop_and_rm_close_the_port(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "--subnet6", "fd00:2:3::/64", "net")
    serve(world, "web", ["net"], ["tcp/80", "udp/53"], "8080:80", "5353:53/udp")
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"
    assert set(published(world)) == {f"{m}{v}" for m in ("published", "published_local", "published_targets")
                                      for v in "46"}
    world.kn("stop", "web")
    assert published(world) == {}
    assert from_wan(world, UPLINK_ADDR, 8080, timeout=NONE) is None
    assert from_wan(world, UPLINK6_ADDR, 5353, "udp", timeout=NONE) is None
    world.kn("rm", "web")
    assert published(world) == {}
    serve(world, "next", ["net"], ["tcp/80"], "8080:80")  # the port is free again
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"


def test_reconcile_keeps_published_ports(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "net")
    serve(world, "web", ["net"], ["tcp/80"], "8080:80")
    assert world.kn("reconcile", "--dry-run").stdout == ""
    # a network change rewrites the whole table: the port stays published
    world.kn("network", "create", "--subnet", "10.2.9.0/24", "other")
    assert world.kn("reconcile", "--dry-run").stdout == ""
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"
    world.kn("network", "rm", "other")
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"
    # an element lost behind kleenenet's back is seen, and put back
    sh(*world.in_host("nft", "delete", "element", "inet", "kleenenet", "published4", '{ "uplink" . tcp . 8080 }'))
    assert from_wan(world, UPLINK_ADDR, 8080, timeout=NONE) is None
    assert "nft -f -" in world.kn("reconcile", "--dry-run").stdout
    world.kn("reconcile")
    assert world.kn("reconcile", "--dry-run").stdout == ""
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"


def test_the_port_leads_to_the_first_network_by_name(world):
    """Attach and detach change exactly the container's elements: another network coming and
    going leaves the target alone; when the target's network goes, the next one takes over."""
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "b")
    serve(world, "web", ["a", "b"], ["tcp/80"], "8080:80")

    def target() -> list:
        return published(world).get("published_targets4")

    assert target() == [{"concat": ["10.2.3.2", "tcp", 80]}]
    world.kn("network", "disconnect", "b", "web")
    world.kn("network", "connect", "b", "web")
    assert target() == [{"concat": ["10.2.3.2", "tcp", 80]}]
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"
    world.kn("network", "disconnect", "a", "web")
    on_b = world.ip_of("web")
    assert target() == [{"concat": [on_b, "tcp", 80]}]
    assert world.kn("reconcile", "--dry-run").stdout == ""
    # the default route went with a's interface, and moved to b with the ports
    assert "default via 169.254.1.1" in world.kn("exec", "web", "--", "ip", "route").stdout
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"
    world.kn("network", "disconnect", "b", "web")
    assert published(world) == {}


def test_a_container_that_joined_out_of_name_order_is_reached(world):
    """Its default route follows its ports (to a, first by name), or the answers would leave by b
    and be dropped there as spoofed."""
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "b")
    serve(world, "web", ["b", "a"], ["tcp/80"], "8080:80")
    assert from_wan(world, UPLINK_ADDR, 8080) == f"{WAN_ADDR} 80"


def test_a_steady_udp_flow_follows_its_port(world):
    """NAT is decided on a flow's first packet: a UDP peer that began sending before the port was
    published, or while it led to a container now gone, would keep its first packet's way (to
    the host, to the gone address) for as long as it keeps sending, unless kleenenet deletes
    the flow's conntrack entry when the port's target changes."""
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "--subnet6", "fd00:2:3::/64", "net")
    plan = world.kn("run", "--dry-run", "-d", "-n", "net", "-p", "5353:53/udp", "-p", "8080:80", "--", "true").stdout
    assert [line for line in plan.splitlines() if line.startswith("conntrack")] == [
        "conntrack -D -p udp --orig-port-dst 5353 (flows to the host's own addresses)"]  # not the TCP port
    peers = {WAN_ADDR: SteadyPeer(world, UPLINK_ADDR, 5353, 40004),
             WAN6_ADDR: SteadyPeer(world, UPLINK6_ADDR, 5353, 40006)}
    time.sleep(0.5)  # their flows are tracked, to the host itself, which has nothing on 5353
    serve(world, "first", ["net"], ["udp/53"], "5353:53/udp")
    for client, peer in peers.items():
        assert peer.hears(f"{client} 53"), client
    # the container goes, and the host takes the port itself: the flow reaches the host
    world.kn("rm", "-f", "first")
    host = subprocess.Popen(world.in_host(sys.executable, "-c", SERVER, "udp/5353"), stdout=subprocess.PIPE, text=True)
    world.servers.append(host)
    assert host.stdout.readline().strip() == "ready"
    for client, peer in peers.items():
        assert peer.hears(f"{client} 5353"), client
