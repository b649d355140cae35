"""A network's MTU: the egress interface's by default, `--mtu` to choose; on the bridge and both
ends of every container's veth, and full-size packets cross the host at it."""

import re
import subprocess
import sys

import pytest

from tests.linux.world import WAN6_ADDR, WAN_ADDR, sh

# The container sends, with fragmentation forbidden, one UDP datagram that fills its MTU for each
# family (it must reach the upstream) and one a byte larger (the kernel must refuse it: EMSGSIZE),
# then uploads 1 MB over TCP. It prints what it saw.
PROBE = """
import errno, socket, sys
mtu, port = int(sys.argv[1]), int(sys.argv[2])
for fam, addr, header, level, opt, val in ((socket.AF_INET, {wan!r}, 28, socket.IPPROTO_IP, 10, 2),
                                          (socket.AF_INET6, {wan6!r}, 48, socket.IPPROTO_IPV6, 62, 1)):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(level, opt, val)  # IP_MTU_DISCOVER=IP_PMTUDISC_DO, IPV6_DONTFRAG
    s.connect((addr, port))
    s.send(b"x" * (mtu - header))
    try:
        s.send(b"x" * (mtu - header + 1))
        print("too big sent")
    except OSError as e:
        print("too big refused" if e.errno == errno.EMSGSIZE else e)
c = socket.create_connection(({wan!r}, port), timeout=5)
c.sendall(b"y" * 1000000)
c.shutdown(socket.SHUT_WR)
print("tcp", c.recv(100).decode())
""".format(wan=WAN_ADDR, wan6=WAN6_ADDR)

# upstream: the size of every UDP datagram, and for each TCP connection the bytes it carried
SINK = """
import socket, sys, threading
port, out = int(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", port))
t = socket.socket(socket.AF_INET6)
t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
t.bind(("::", port)); t.listen()
def udp():
    while True:
        out.write("udp %d\\n" % len(u.recvfrom(65535)[0]))
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = t.accept()
    n = 0
    while data := c.recv(65536):
        n += len(data)
    c.sendall(str(n).encode()); c.close()
"""


def mtu_of(where: list[str], ifname: str) -> int:
    return int(re.search(r" mtu (\d+) ", sh(*where, "ip", "-o", "link", "show", ifname).stdout)[1])


def sink(world, port: int):
    out = world.state_dir.parent / f"sink-{port}.log"
    p = subprocess.Popen(["ip", "netns", "exec", world.wan, sys.executable, "-c", SINK, str(port), str(out)],
                         stdout=subprocess.PIPE, text=True)
    world.servers.append(p)
    assert p.stdout.readline().strip() == "ready"
    return out


def egress_mtu(world, mtu: int) -> None:
    """The uplink and the upstream's end of it take `mtu`."""
    sh(*world.in_host("ip", "link", "set", "uplink", "mtu", str(mtu)))
    sh("ip", "-n", world.wan, "link", "set", "wan0", "mtu", str(mtu))


def check_mtu_everywhere(world, network: str, container: str, mtu: int) -> None:
    net = world.kn_json("network", "inspect", network)
    assert net["network"]["mtu"] == mtu
    assert mtu_of(world.in_host(), net["network"]["interface"]) == mtu
    port = world.kn_json("inspect", container)["container_endpoints"][0]["epair"]
    assert mtu_of(world.in_host(), port) == mtu
    inside = world.kn("exec", container, "--", "ip", "-o", "link", "show", "eth0").stdout
    assert f" mtu {mtu} " in inside


def probe(world, network: str, mtu: int, port: int):
    out = sink(world, port)
    r = world.kn("run", "--rm", "-n", network, "--", sys.executable, "-c", PROBE, str(mtu), str(port))
    assert r.stdout.split("\n")[:2] == ["too big refused"] * 2, r.stdout
    assert "tcp 1000000" in r.stdout
    # both full-size datagrams crossed the host; nothing larger left the container
    assert sorted(out.read_text().split("\n")[:-1]) == [f"udp {mtu - 48}", f"udp {mtu - 28}"]


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_mtu_follows_the_egress_interface(world, type_):
    egress_mtu(world, 1400)
    world.kn("network", "create", "-t", type_, "--subnet", "10.5.1.0/24", "--subnet6", "fd00:5:1::/64", "n")
    world.kn("run", "-d", "--name", "c", "-n", "n", "--", "sleep", "60")
    check_mtu_everywhere(world, "n", "c", 1400)
    probe(world, "n", 1400, 9001)
    # the bridge keeps it when its last port leaves
    world.kn("rm", "-f", "c")
    interface = world.kn_json("network", "inspect", "n")["network"]["interface"]
    assert mtu_of(world.in_host(), interface) == 1400


def test_mtu_option_overrides_the_egress_interface(world):
    egress_mtu(world, 1400)
    world.kn("network", "create", "-t", "bridge", "--mtu", "1300", "--subnet", "10.5.2.0/24",
             "--subnet6", "fd00:5:2::/64", "n")
    world.kn("run", "-d", "--name", "c", "-n", "n", "--", "sleep", "60")
    check_mtu_everywhere(world, "n", "c", 1300)
    probe(world, "n", 1300, 9002)
    # a container on two networks has each network's MTU on each interface
    world.kn("network", "create", "--subnet", "10.5.3.0/24", "lo1")
    world.kn("network", "connect", "lo1", "c")
    assert " mtu 1400 " in world.kn("exec", "c", "--", "ip", "-o", "link", "show", "eth1").stdout


def test_reconcile_puts_the_mtu_back(world):
    world.kn("network", "create", "-t", "bridge", "--mtu", "1420", "--subnet", "10.5.4.0/24", "n")
    interface = world.kn_json("network", "inspect", "n")["network"]["interface"]
    sh(*world.in_host("ip", "link", "set", interface, "mtu", "1500"))
    assert f"ip link set {interface} mtu 1420" in world.kn("reconcile", "--dry-run").stdout
    world.kn("reconcile")
    assert mtu_of(world.in_host(), interface) == 1420
    sh(*world.in_host("ip", "link", "del", interface))  # recreated with it
    world.kn("reconcile")
    assert mtu_of(world.in_host(), interface) == 1420
    assert world.kn("reconcile", "--dry-run").stdout == ""


IMPOSSIBLE = [
    (["--mtu", "67", "--subnet", "10.5.5.0/24"], "invalid MTU 67"),
    (["--mtu", "0", "--subnet", "10.5.5.0/24"], "invalid MTU 0"),
    (["--mtu", "-1500", "--subnet", "10.5.5.0/24"], "invalid MTU -1500"),
    (["--mtu", "65536", "--subnet", "10.5.5.0/24"], "invalid MTU 65536"),
    (["--mtu", "1279", "--subnet", "10.5.5.0/24", "--subnet6", "fd00:5:5::/64"], "invalid MTU 1279"),
    (["--mtu", "1279", "--subnet6", "fd00:5:5::/64"], "IPv6 needs at least 1280"),
]


def test_impossible_mtu_is_refused_and_changes_nothing(world):
    world.kn("network", "create", "--subnet", "10.5.6.0/24", "other")
    before = world.snapshot()
    for args, message in IMPOSSIBLE:
        r = world.kn("network", "create", "-t", "bridge", *args, "n", check=False)
        assert r.returncode != 0
        assert message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert world.snapshot() == before, args


def test_small_mtu_without_ipv6_is_taken(world):
    # positive control of the above: IPv4 alone works down to 68
    world.kn("network", "create", "-t", "bridge", "--mtu", "68", "--subnet", "10.5.7.0/24", "n")
    interface = world.kn_json("network", "inspect", "n")["network"]["interface"]
    assert mtu_of(world.in_host(), interface) == 68
    # such a link has no IPv6 at all (the kernel's doing): wiring a container still works
    out = world.kn("run", "--rm", "-n", "n", "--", "sh", "-c", "ip -o link show eth0; ip -o addr show eth0").stdout
    assert " mtu 68 " in out and "10.5.7.2/24" in out
