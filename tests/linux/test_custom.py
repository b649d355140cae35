"""Custom networks: containers on the host's LAN, through an existing bridge (a veth port each) or
a plain NIC ("direct": a macvlan child each). kleenenet never creates, changes or removes those
interfaces, and its firewall leaves the LAN's own traffic alone.

The `lan` fixture builds, inside the world's host namespace, a LAN bridge lanbr0 carrying the
host's LAN address with a LAN machine behind it (its own namespace, a veth port on the bridge),
and a plain "NIC" lannic0 (a veth) with another machine behind it."""

import ipaddress
import json
import sys
import time
from dataclasses import dataclass

import pytest

from tests.linux.test_security import log_of, send_udp, set_br_netfilter, wait_for_line
from tests.linux.world import sh

LAN_SUBNET, LAN_HOST, LAN_MACHINE, LAN_GW = "192.168.50.0/24", "192.168.50.2", "192.168.50.10", "192.168.50.1"
LAN_RANGE = "192.168.50.128/25"
NIC_SUBNET, NIC_HOST, NIC_MACHINE = "192.168.60.0/24", "192.168.60.2", "192.168.60.10"
# The LAN machine's port: a MAC above kleenenet's 02:... ones, so that a port of kleenenet's with
# a lower MAC would become the bridge's (a bridge whose MAC was never set takes its lowest port's).
LAN_PORT_MAC = "aa:bb:cc:00:00:01"


@dataclass
class Lan:
    machine: str  # the namespace of the machine on lanbr0
    nic_machine: str  # the namespace of the machine behind lannic0

    def at(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


@pytest.fixture
def lan(world):
    tag = world.host.rsplit("-", 1)[1]
    made = Lan(f"kn-l-{tag}", f"kn-n-{tag}")
    host = ["ip", "-n", world.host]
    try:
        for ns in (made.machine, made.nic_machine):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # distinct indexes on each side of a veth (see world.py)
        sh(*host, "link", "add", "lanbr0", "type", "bridge")
        sh(*host, "link", "add", "lanm0", "index", "21", "address", LAN_PORT_MAC, "type", "veth",
           "peer", "name", "eth0", "index", "22", "netns", made.machine)
        sh(*host, "link", "add", "lannic0", "index", "23", "type", "veth",
           "peer", "name", "eth0", "index", "24", "netns", made.nic_machine)
        for ns, dev in ((world.host, "lanbr0"), (world.host, "lanm0"), (world.host, "lannic0"), (made.machine, "eth0"),
                        (made.nic_machine, "eth0")):  # no tentative addresses to change under a comparison
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0")
        sh(*host, "link", "set", "lanm0", "master", "lanbr0", "up")
        for ns, dev, addr in ((world.host, "lanbr0", LAN_HOST), (world.host, "lannic0", NIC_HOST),
                              (made.machine, "eth0", LAN_MACHINE), (made.nic_machine, "eth0", NIC_MACHINE)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield made
    finally:
        for ns in (made.machine, made.nic_machine):
            sh("ip", "netns", "del", ns, check=False)


def without_timers(value):
    """`ip -d -j` output without what runs by itself (a bridge's and its ports' timers)."""
    if isinstance(value, dict):
        return {k: without_timers(v) for k, v in value.items() if not k.endswith("_timer")}
    if isinstance(value, list):
        return [without_timers(v) for v in value]
    return value


def link_state(world, *names: str) -> dict:
    """What each interface is and carries: `ip -d -j link` (flags, state, MTU, MAC, master,
    bridge and port settings) and `ip -j addr`."""
    return {name: (without_timers(json.loads(sh(*world.in_host("ip", "-d", "-j", "link", "show", "dev", name)).stdout)),
                   json.loads(sh(*world.in_host("ip", "-j", "addr", "show", "dev", name)).stdout)[0]["addr_info"])
            for name in names}


def foreign(world) -> dict:
    return link_state(world, "lanbr0", "lanm0", "lannic0")


def flat(value, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path: value}


def changes(before: dict, after: dict) -> dict[str, tuple]:
    """What differs, path by path: (before, after)."""
    old, new = flat(before), flat(after)
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def create_lan(world, name: str = "lan", *opts: str) -> None:
    world.kn("network", "create", "-t", "custom", "-i", "lanbr0", "--subnet", LAN_SUBNET, "--gw", LAN_GW,
             "--ip-range", LAN_RANGE, *opts, name)


def connect(where: list[str], addr: str, port: int) -> str | None:
    """Connect from a namespace (not a container): what the server saw, or None."""
    code = ("import socket,sys\n"
            f"try: s=socket.create_connection(({addr!r},{port}),timeout=1)\n"
            "except OSError: sys.exit(3)\n"
            "print(s.recv(100).decode())\n")
    r = sh(*where, sys.executable, "-c", code, check=False)
    assert r.returncode in (0, 3), r.stderr
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.mark.parametrize("br_netfilter", ["0", "1"])
def test_a_lan_bridge_container_is_on_the_lan_with_its_own_address(world, lan, br_netfilter):
    """Out and in without NAT, the host's own LAN traffic untouched beside kleenenet's own
    bridge network and its rules, and the LAN's interfaces as they were after all of it."""
    set_br_netfilter(world, br_netfilter)
    before = foreign(world)
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "own")
    world.kn("run", "-d", "--name", "mine", "-n", "own", "--", "sleep", "60")
    create_lan(world)
    world.serve(lan.at(lan.machine), 8000)
    world.serve(world.in_host(), 9000)

    seen = world.connect_from("lan", LAN_MACHINE, 8000)
    assert ipaddress.ip_address(seen) in ipaddress.ip_network(LAN_RANGE)
    ip = world.serve_in_container("srv", "lan", 7000)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(LAN_RANGE)
    assert connect(lan.at(lan.machine), ip, 7000) == LAN_MACHINE  # inbound from the LAN: no NAT either
    routes = world.kn("exec", "srv", "--", "ip", "-j", "route", "show", "default").stdout
    assert [(r["gateway"], r["dev"]) for r in json.loads(routes)] == [(LAN_GW, "eth0")]
    # The host and the LAN machine, both ways, as before; the container and the host too.
    assert connect(world.in_host(), LAN_MACHINE, 8000) == LAN_HOST
    assert connect(lan.at(lan.machine), LAN_HOST, 9000) == LAN_MACHINE
    assert world.connect_from("lan", LAN_HOST, 9000) is not None
    # A port of kleenenet's on the LAN's bridge changes nothing of it (its MAC, its MTU).
    assert changes(before["lanbr0"], foreign(world)["lanbr0"]) == {}

    world.kn("stop", "srv")
    world.kn("rm", "srv")
    world.kn("network", "rm", "lan")
    world.kn("reconcile")
    assert changes(before, foreign(world)) == {}
    assert connect(lan.at(lan.machine), LAN_HOST, 9000) == LAN_MACHINE


def test_a_direct_container_reaches_the_machine_behind_the_nic(world, lan):
    before = foreign(world)
    world.serve(lan.at(lan.nic_machine), 8000)
    world.kn("network", "create", "-t", "custom", "-i", "lannic0", "--subnet", NIC_SUBNET, "direct")
    seen = world.connect_from("direct", NIC_MACHINE, 8000)
    assert seen != NIC_HOST and ipaddress.ip_address(seen) in ipaddress.ip_network(NIC_SUBNET)

    world.kn("run", "-d", "--name", "x", "-n", "direct", "--", "sleep", "60")
    eth0 = json.loads(world.kn("exec", "x", "--", "ip", "-d", "-j", "link", "show", "eth0").stdout)[0]
    assert (eth0["linkinfo"]["info_kind"], eth0["linkinfo"]["info_data"]["mode"]) == ("macvlan", "bridge")
    assert not [name for name in world.links() if name.startswith("kv")]  # nothing on the host's side
    assert world.wired_ports()  # yet the store has it wired

    # Its macvlan child lost (deleted inside): reconcile wires it again.
    world.kn("exec", "x", "--", "ip", "link", "del", "eth0")
    world.kn("reconcile")
    code = ("import socket\n"
            f"print(socket.create_connection(({NIC_MACHINE!r},8000),timeout=1).recv(99).decode())\n")
    assert world.kn("exec", "x", "--", sys.executable, "-c", code).stdout.strip() == world.ip_of("x")

    # Stopped, killed, removed: nothing of the NIC changes.
    world.kn("stop", "x")
    world.kn("run", "-d", "--name", "y", "-n", "direct", "--", "sleep", "60")
    for pid in world.container_pids():
        sh("kill", "-9", str(pid))
    world.kn("reconcile")
    world.kn("rm", "x")
    world.kn("rm", "y")
    world.kn("network", "rm", "direct")
    world.kn("reconcile")
    assert changes(before, foreign(world)) == {}


def test_a_lan_container_sends_as_itself_only(world, lan):
    """Its port on the LAN's bridge is bound to its address: another LAN address is dropped,
    its own goes through (the positive control)."""
    code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',9999))\n"
            "print('ready',flush=True)\nwhile True:\n d,a=s.recvfrom(99); print(a[0],d.decode(),flush=True)\n")
    create_lan(world)
    world.kn("run", "-d", "--name", "x", "-n", "lan", "--", "sleep", "60")
    world.kn("run", "-d", "--name", "sink", "-n", "lan", "--", sys.executable, "-c", code)
    sink = log_of(world, "sink")
    wait_for_line(sink, "ready")
    own, sink_ip = world.ip_of("x"), world.ip_of("sink")
    world.kn("exec", "x", "--", "ip", "addr", "add", "192.168.50.77/32", "dev", "eth0")
    world.kn("exec", "x", "--", "ip", "addr", "add", f"{LAN_MACHINE}/32", "dev", "eth0")
    send_udp(world, "x", [("192.168.50.77", sink_ip, 9999, "spoofed"), (LAN_MACHINE, sink_ip, 9999, "machine"),
                          (own, sink_ip, 9999, "own")])
    wait_for_line(sink, f"{own} own")
    assert [line for line in sink.read_text().splitlines() if line != "ready"] == [f"{own} own"]


@pytest.mark.parametrize("icc", [True, False])
def test_containers_on_the_lan_talk_unless_icc_is_off(world, lan, icc):
    world.serve(lan.at(lan.machine), 8000)
    create_lan(world, "lan", "--icc" if icc else "--no-icc")
    ip = world.serve_in_container("srv", "lan", 7000)
    peer = world.connect_from("lan", ip, 7000)
    if icc:
        assert ipaddress.ip_address(peer) in ipaddress.ip_network(LAN_RANGE)
    else:
        assert peer is None
    assert world.connect_from("lan", LAN_MACHINE, 8000) is not None  # positive control: the LAN
    assert connect(lan.at(lan.machine), ip, 7000) == LAN_MACHINE


def refused(world, *args: str) -> str:
    """Run a command that must be refused: its one-line error; nothing changed."""
    before = world.snapshot()
    r = world.kn(*args, check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert world.snapshot() == before
    return r.stderr


def test_what_cannot_carry_a_custom_network(world, lan):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "own")
    own_if = world.kn_json("network", "inspect", "own")["network"]["interface"]
    custom = ("network", "create", "-t", "custom", "--subnet", LAN_SUBNET, "-i")
    assert "'nosuch0'" in refused(world, *custom, "nosuch0", "lan")
    assert f"'{own_if}'" in refused(world, *custom, own_if, "lan")
    assert "'lo'" in refused(world, *custom, "lo", "lan")
    assert "lanbr0" in refused(world, *custom, "lanm0", "lan")  # a port of the LAN bridge: the bridge
    assert "--mtu 1400: a custom network has the MTU of its interface lanbr0" in refused(
        world, *custom, "lanbr0", "--mtu", "1400", "lan")
    # a subnet the interface is not on, unless the operator insists
    assert "10.9.0.0/24" in refused(world, "network", "create", "-t", "custom", "-i", "lanbr0",
                                    "--subnet", "10.9.0.0/24", "lan")
    world.kn("network", "create", "-t", "custom", "-i", "lanbr0", "--subnet", "10.9.0.0/24", "--force", "lan")


def test_a_lan_bridge_that_goes_and_comes_back(world, lan):
    """Reconcile neither creates the LAN's bridge nor fails while it is gone; when the bridge is
    back, the containers' ports join it again."""
    world.serve(lan.at(lan.machine), 8000)
    create_lan(world)
    world.kn("run", "-d", "--name", "x", "-n", "lan", "--", "sleep", "60")
    reach = ("import socket\n"
             f"print(socket.create_connection(({LAN_MACHINE!r},8000),timeout=1).recv(99).decode())\n")
    assert world.kn("exec", "x", "--", sys.executable, "-c", reach).stdout.strip() == world.ip_of("x")
    sh(*world.in_host("ip", "link", "del", "lanbr0"))
    r = world.kn("reconcile")
    assert "lanbr0 is missing" in r.stderr
    assert "lanbr0" not in world.links()
    host = world.in_host("ip")
    sh(*host, "link", "add", "lanbr0", "type", "bridge")
    sh(*host, "link", "set", "lanm0", "master", "lanbr0")
    sh(*host, "addr", "add", f"{LAN_HOST}/24", "dev", "lanbr0")
    sh(*host, "link", "set", "lanbr0", "up")
    world.kn("reconcile")
    deadline = time.monotonic() + 5
    while world.kn("exec", "x", "--", sys.executable, "-c", reach, check=False).returncode:
        assert time.monotonic() < deadline, "x never reached the LAN again"
        time.sleep(0.2)


def test_a_lan_nic_and_a_private_nic_at_once(world, lan):
    """-n lan -n private: on the LAN with its own address, out to the internet through the private
    network's NAT (the LAN network has no --gw, so the default route is private's)."""
    from tests.linux.world import UPLINK_ADDR, WAN_ADDR

    world.kn("network", "create", "-t", "custom", "-i", "lanbr0", "--subnet", LAN_SUBNET, "--ip-range", LAN_RANGE,
             "lan")
    world.serve(lan.at(lan.machine), 8000)
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    world.kn("run", "-d", "--name", "both", "-n", "lan", "-n", "private", "--", "sleep", "60")
    code = ("import socket,sys\n"
            "print(socket.create_connection((sys.argv[1],8000),timeout=2).recv(99).decode())\n")

    def seen_from(addr: str) -> str:
        return world.kn("exec", "both", "--", sys.executable, "-c", code, addr).stdout.strip()
    eps = {ep["network_id"]: ep["ip_address"] for ep in world.kn_json("inspect", "both")["container_endpoints"]}
    lan_ip = eps[world.kn_json("network", "inspect", "lan")["network"]["id"]]
    assert seen_from(LAN_MACHINE) == lan_ip  # on the LAN as itself
    assert seen_from(WAN_ADDR) == UPLINK_ADDR  # to the internet masqueraded, by the private network
    routes = json.loads(world.kn("exec", "both", "--", "ip", "-j", "route", "show", "default").stdout)
    private_gw = world.kn_json("network", "inspect", "private")["network"]["gateway"]
    assert [(r["gateway"], r["dev"]) for r in routes] == [(private_gw, "eth1")]
