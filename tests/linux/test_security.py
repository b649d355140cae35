"""What a container must not be able to do even as root in its own namespace: send as another
address or MAC, answer ARP or neighbour discovery for a neighbour, act as a router; and rules
that hold the same with and without br_netfilter. Every "cannot" has a positive control: the
same probe, sent as the container itself, gets through."""

import json
import sys
import time
from pathlib import Path

import pytest

from kleenenet.platform.linux.namespaces import set_sysctls_in
from tests.linux import frames
from tests.linux.world import UPLINK6_ADDR, UPLINK_ADDR, WAN6_ADDR, WAN_ADDR, sh

FRAMES = str(Path(frames.__file__))


def link(world, container: str, ifname: str = "eth0") -> dict:
    return json.loads(world.kn("exec", container, "--", "ip", "-j", "addr", "show", ifname).stdout)[0]


def wait_for_line(path: Path, line: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and line in path.read_text().splitlines()):
        assert time.monotonic() < deadline, f"{path} never said {line!r}"
        time.sleep(0.05)


def log_of(world, container: str) -> Path:
    cid = world.kn_json("inspect", container)["container"]["id"]
    return world.state_dir / "logs" / f"{cid}.log"


def send_udp(world, container: str, sends: list[tuple[str, str, int, str]]) -> None:
    """From inside `container`: one datagram per (source, destination, port, payload)."""
    code = ("import socket,sys,json\n"
            "for src,dst,port,data in json.loads(sys.argv[1]):\n"
            " s=socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET,socket.SOCK_DGRAM)\n"
            " s.bind((src,0)); s.sendto(data.encode(),(dst,port)); s.close()\n")
    world.kn("exec", container, "--", sys.executable, "-c", code, json.dumps(sends))


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_spoofed_sources_never_leave(world, type_):
    """Another network's address and foreign addresses (IPv4 and IPv6) are dropped where they
    enter; the container's own address still goes out, masqueraded."""
    sink = world.udp_sink(9999)
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "--subnet6", "fd00:3::/64", "a")
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.4.0/24", "--subnet6", "fd00:4::/64", "b")
    world.kn("run", "-d", "--name", "x", "-n", "a", "--", "sleep", "60")
    world.kn("run", "-d", "--name", "other", "-n", "b", "--", "sleep", "60")
    own, own6 = world.ip_of("x"), world.ip_of("x", 6)
    neighbour, neighbour6 = world.ip_of("other"), world.ip_of("other", 6)
    for addr in ("10.2.4.50/32", "203.0.113.77/32"):
        world.kn("exec", "x", "--", "ip", "addr", "add", addr, "dev", "eth0")
    for addr in ("fd00:4::50/128", "2001:db8:ffff::77/128"):
        world.kn("exec", "x", "--", "ip", "addr", "add", addr, "dev", "eth0", "nodad")
    send_udp(world, "x", [
        ("10.2.4.50", WAN_ADDR, 9999, "other-network"),
        ("203.0.113.77", WAN_ADDR, 9999, "foreign"),
        ("fd00:4::50", WAN6_ADDR, 9999, "other-network6"),
        ("2001:db8:ffff::77", WAN6_ADDR, 9999, "foreign6"),
        (own, WAN_ADDR, 9999, "own"),
        (own6, WAN6_ADDR, 9999, "own6"),
    ])
    wait_for_line(sink, f"{UPLINK6_ADDR} own6")
    assert sorted(sink.read_text().splitlines()) == sorted([f"{UPLINK_ADDR} own", f"{UPLINK6_ADDR} own6"])
    # Nor can it pose as a container of another network toward that network.
    world.kn("exec", "x", "--", "ip", "addr", "add", f"{neighbour}/32", "dev", "eth0")
    world.kn("exec", "x", "--", "ip", "addr", "add", f"{neighbour6}/128", "dev", "eth0", "nodad")
    send_udp(world, "x", [(neighbour, WAN_ADDR, 9999, "neighbour"), (neighbour6, WAN6_ADDR, 9999, "neighbour6"),
                          (own, WAN_ADDR, 9999, "own-again")])
    wait_for_line(sink, f"{UPLINK_ADDR} own-again")
    assert not [line for line in sink.read_text().splitlines() if "neighbour" in line]


def test_bridge_port_is_bound_to_its_mac_and_addresses(world):
    """Forged frames from x — ARP and neighbour advertisements for y's addresses, y's MAC, y's
    source address, a router advertisement, a VLAN tag — never reach the sniffing neighbour z;
    the same frames made with x's own MAC and addresses do."""
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "--subnet6", "fd00:3::/64", "lan")
    world.kn("run", "-d", "--name", "z", "-n", "lan", "--", sys.executable, "-u", FRAMES, "sniff", "eth0")
    world.kn("run", "-d", "--name", "x", "-n", "lan", "--", "sleep", "60")
    world.kn("run", "-d", "--name", "y", "-n", "lan", "--", "sleep", "60")
    wait_for_line(log_of(world, "z"), "ready")
    x, y = link(world, "x"), link(world, "y")
    x_mac, y_mac = x["address"], y["address"]
    x_ip, y_ip = world.ip_of("x"), world.ip_of("y")
    x_ip6, y_ip6 = world.ip_of("x", 6), world.ip_of("y", 6)
    x_ll = next(a["local"] for a in x["addr_info"] if a["local"].startswith("fe80:"))
    allowed = {
        "arp for itself": frames.arp_announce(x_mac, x_mac, x_ip),
        "ipv4 from itself": frames.udp4_broadcast(x_mac, x_ip, b"own"),
        "neighbour advert for itself": frames.neighbour_advert(x_mac, x_ll, x_ip6),
        "neighbour advert for its link-local": frames.neighbour_advert(x_mac, x_ll, x_ll),
    }
    forged = {
        "arp for a neighbour's address": frames.arp_announce(x_mac, x_mac, y_ip),
        "arp with a neighbour's MAC": frames.arp_announce(y_mac, y_mac, y_ip),
        "arp sender MAC not its own": frames.arp_announce(x_mac, y_mac, x_ip),
        "ipv4 from a neighbour's address": frames.udp4_broadcast(x_mac, y_ip, b"spoof"),
        "ipv4 from a neighbour's MAC": frames.udp4_broadcast(y_mac, x_ip, b"spoof"),
        "neighbour advert for a neighbour": frames.neighbour_advert(x_mac, x_ll, y_ip6),
        "neighbour advert from a neighbour's address": frames.neighbour_advert(x_mac, y_ip6, y_ip6),
        "router advertisement": frames.router_advert(x_mac, x_ll),
        "vlan tagged": frames.vlan_tagged(frames.udp4_broadcast(x_mac, x_ip, b"tagged")),
    }
    world.kn("exec", "x", "--", sys.executable, FRAMES, "send", "eth0",
             *(f.hex() for f in (*forged.values(), *allowed.values())))
    time.sleep(0.5)
    seen = set(log_of(world, "z").read_text().splitlines())
    assert {name for name, f in allowed.items() if f.hex() not in seen} == set()
    assert {name for name, f in forged.items() if f.hex() in seen} == set()


def set_br_netfilter(world, value: str) -> None:
    """In the test's own host namespace: whether bridged frames pass through IP's hooks."""
    sh("ip", "netns", "exec", world.host, "sysctl", "-qw",
       *(f"net.bridge.bridge-nf-call-{t}={value}" for t in ("iptables", "ip6tables", "arptables")))


@pytest.mark.parametrize("br_netfilter", ["0", "1"])
def test_a_container_on_two_networks_is_not_a_router(world, br_netfilter):
    # (with br_netfilter, y's frame to r already meets a's isolation from b on its way)
    set_br_netfilter(world, br_netfilter)
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.4.0/24", "b")
    sink_code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',9999))\n"
                 "print('ready',flush=True)\nwhile True:\n d,a=s.recvfrom(99); print(a[0],d.decode(),flush=True)\n")
    world.kn("run", "-d", "--name", "s", "-n", "b", "--", sys.executable, "-c", sink_code)
    world.kn("run", "-d", "--name", "r", "-n", "a", "-n", "b", "--", "sleep", "60")
    world.kn("run", "-d", "--name", "y", "-n", "a", "--", "sleep", "60")
    sink = log_of(world, "s")
    wait_for_line(sink, "ready")
    s_ip, y_ip = world.ip_of("s"), world.ip_of("y")
    r_a, r_b = (ep["ip_address"] for ep in world.kn_json("inspect", "r")["container_endpoints"])
    forwarding = ["sysctl", "-n", "net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding"]
    assert world.kn("exec", "r", "--", *forwarding).stdout.split() == ["0", "0"]
    # y routes toward b through r: with forwarding off in r, nothing arrives ...
    world.kn("exec", "y", "--", "ip", "route", "add", "10.2.4.0/24", "via", r_a)
    send_udp(world, "y", [(y_ip, s_ip, 9999, "routed")])
    send_udp(world, "r", [("0.0.0.0", s_ip, 9999, "direct")])  # positive control: r reaches s
    wait_for_line(sink, f"{r_b} direct")
    # ... and when r turns forwarding on itself, its port on b drops what is not r's own.
    world.kn("exec", "r", "--", "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1")
    send_udp(world, "y", [(y_ip, s_ip, 9999, "routed")])
    send_udp(world, "r", [("0.0.0.0", s_ip, 9999, "direct-again")])
    wait_for_line(sink, f"{r_b} direct-again")
    assert "routed" not in sink.read_text()


@pytest.mark.parametrize("br_netfilter", ["0", "1"])
def test_rules_hold_with_and_without_br_netfilter(world, br_netfilter):
    """br_netfilter passes bridged frames through IP's hooks; the result must not change."""
    set_br_netfilter(world, br_netfilter)
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    world.kn("network", "create", "-t", "bridge", "--internal", "--subnet", "10.2.3.0/24",
             "--subnet6", "fd00:3::/64", "inner")
    ip = world.serve_in_container("srv", "inner", 7000)
    assert world.connect_from("inner", ip, 7000) is not None
    assert world.connect_from("inner", world.ip_of("srv", 6), 7000) is not None
    assert world.connect_from("inner", WAN_ADDR, 8000) is None  # internal: no egress
    world.kn("network", "create", "-t", "bridge", "--no-icc", "--subnet", "10.2.4.0/24",
             "--subnet6", "fd00:4::/64", "quiet")
    quiet = world.serve_in_container("qsrv", "quiet", 7000)
    assert world.connect_from("quiet", quiet, 7000) is None
    assert world.connect_from("quiet", world.ip_of("qsrv", 6), 7000) is None
    assert world.connect_from("quiet", WAN_ADDR, 8000) == UPLINK_ADDR  # positive control
    assert world.connect_from("inner", quiet, 7000) is None  # isolation
    assert world.connect_from("quiet", ip, 7000) is None


def test_forwarding_is_set_off_where_a_namespace_has_it_on(world):
    """What plan_new_namespace does to each container's namespace, on one that starts with
    forwarding on (a new namespace inherits it from the machine's, which here has it off)."""
    keys = ("net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding")
    sh("ip", "netns", "exec", world.wan, "sysctl", "-qw", *(f"{k}=1" for k in keys))
    set_sysctls_in(f"/run/netns/{world.wan}", dict.fromkeys(keys, "0"))
    assert sh("ip", "netns", "exec", world.wan, "sysctl", "-n", *keys).stdout.split() == ["0", "0"]
