"""IPv6 on every network type: v6-only and dual-stack networks reach the upstream, NAT66 or routed
egress (--ipv6-nat / --no-ipv6-nat), inbound stays stateful either way, `--subnet6 auto`, a default
route from router advertisements kept when forwarding goes on."""

import ipaddress
import re
import sys

import pytest

from tests.linux.world import UPLINK6_ADDR, UPLINK_ADDR, WAN6_ADDR, WAN_ADDR, sh

TYPES = ["bridge", "loopback"]


V4, V6 = 8000, 8006  # the upstream's servers, answering with the address they see


def upstream_servers(world) -> None:
    world.serve(["ip", "netns", "exec", world.wan], V4)
    world.serve(["ip", "netns", "exec", world.wan], V6, bind="::")


def route_back(world, subnet6: str) -> None:
    """The upstream routes the network's subnet6 to the host, as a routed (not NAT66) subnet needs."""
    sh("ip", "-n", world.wan, "-6", "route", "add", subnet6, "via", UPLINK6_ADDR)


@pytest.mark.parametrize("type_", TYPES)
def test_v6_only_network_reaches_upstream_and_has_no_ipv4(world, type_):
    upstream_servers(world)
    world.kn("network", "create", "-t", type_, "--subnet6", "fd00:6:1::/64", "v6")
    assert world.connect_from("v6", WAN6_ADDR, V6) == UPLINK6_ADDR  # NAT66 by default
    # ... and nothing of IPv4 beyond its loopback: no address, no route, the upstream unreachable
    out = world.kn("run", "--rm", "-n", "v6", "--", "sh", "-c", "ip -4 -o addr; echo routes; ip -4 route").stdout
    assert out.split() and all(" lo " in line for line in out.split("routes")[0].strip().splitlines())
    assert out.split("routes")[1].strip() == ""
    assert world.connect_from("v6", WAN_ADDR, V4) is None


@pytest.mark.parametrize("type_", TYPES)
def test_dual_stack_network_reaches_upstream_on_both(world, type_):
    upstream_servers(world)
    world.kn("network", "create", "-t", type_, "--subnet", "10.6.2.0/24", "--subnet6", "fd00:6:2::/64", "dual")
    assert world.connect_from("dual", WAN_ADDR, V4) == UPLINK_ADDR
    assert world.connect_from("dual", WAN6_ADDR, V6) == UPLINK6_ADDR


@pytest.mark.parametrize("type_", TYPES)
def test_routed_ipv6_keeps_the_container_address(world, type_):
    upstream_servers(world)
    world.kn("network", "create", "-t", type_, "--no-ipv6-nat", "--subnet", "10.6.3.0/24",
             "--subnet6", "fd00:6:3::/64", "routed")
    route_back(world, "fd00:6:3::/64")
    seen = world.connect_from("routed", WAN6_ADDR, V6)
    assert seen and ipaddress.ip_address(seen) in ipaddress.ip_network("fd00:6:3::/64")
    assert world.connect_from("routed", WAN_ADDR, V4) == UPLINK_ADDR  # IPv4 is still masqueraded


@pytest.mark.parametrize("type_,nat6", [("bridge", "--ipv6-nat"), ("loopback", "--no-ipv6-nat")])
def test_inbound_ipv6_from_upstream_is_dropped(world, type_, nat6):
    upstream_servers(world)
    world.kn("network", "create", "-t", type_, nat6, "--subnet6", "fd00:6:4::/64", "n")
    route_back(world, "fd00:6:4::/64")  # the upstream could reach the subnet if the firewall let it
    world.serve_in_container("srv", "n", 7000)
    addr = world.ip_of("srv", 6)
    # positive control: the container's own connections out get their replies
    seen = world.kn("exec", "srv", "--", sys.executable, "-c",
                    f"import socket; print(socket.create_connection(({WAN6_ADDR!r}, {V6}), timeout=2).recv(99).decode())")
    assert seen.stdout.strip() == (UPLINK6_ADDR if nat6 == "--ipv6-nat" else addr)
    # a new connection from upstream to the container is not let in
    r = sh("ip", "netns", "exec", world.wan, sys.executable, "-c",
           f"import socket; socket.create_connection(({addr!r}, 7000), timeout=0.5)", check=False)
    assert r.returncode != 0 and "timed out" in r.stderr, r.stderr


def test_subnet6_auto_picks_a_free_unique_local_64(world):
    world.kn("network", "create", "-t", "bridge", "--subnet6", "fd00:6:5::/64", "first")
    subnets = set()
    for name in ("a", "b"):
        world.kn("network", "create", "-t", "bridge", "--subnet", f"10.6.{len(subnets) + 6}.0/24",
                 "--subnet6", "auto", name)
        subnets.add(world.kn_json("network", "inspect", name)["network"]["subnet6"])
    nets = [ipaddress.ip_network(s) for s in subnets | {"fd00:6:5::/64"}]
    assert len(nets) == 3 and all(n.prefixlen == 64 and n.subnet_of(ipaddress.ip_network("fd00::/8")) for n in nets)
    assert not any(x.overlaps(y) for x in nets for y in nets if x != y)
    # and it works: the container gets an address of it and reaches the upstream
    upstream_servers(world)
    assert world.connect_from("a", WAN6_ADDR, V6) == UPLINK6_ADDR


@pytest.mark.parametrize("how", ["disabled", "link-local only"])
def test_subnet6_auto_is_refused_where_the_host_has_no_ipv6(world, how):
    if how == "disabled":
        sh(*world.in_host("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
    else:  # IPv6 on, but no global address and no default route
        sh(*world.in_host("ip", "-6", "route", "del", "default"))
        sh(*world.in_host("ip", "addr", "del", f"{UPLINK6_ADDR}/64", "dev", "uplink"))
    world.kn("network", "create", "--subnet", "10.6.8.0/24", "other")
    before = world.snapshot()
    r = world.kn("network", "create", "-t", "bridge", "--subnet", "10.6.9.0/24", "--subnet6", "auto", "n", check=False)
    assert r.returncode != 0 and "--subnet6 'auto'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert world.snapshot() == before


# The upstream announces itself as the default router: a router advertisement (type 134, router
# lifetime 1800 s) from its link-local address to all nodes; the kernel fills in the checksum.
ADVERTISE = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.sendto(bytes([134, 0, 0, 0, 64, 0]) + (1800).to_bytes(2, "big") + bytes(8),
         ("ff02::1", 0, 0, socket.if_nametoindex("wan0")))
"""


def default_route(world) -> str:
    return re.sub(r" expires \d+sec", "", sh(*world.in_host("ip", "-6", "route", "show", "default")).stdout)


def test_ipv6_forwarding_keeps_the_default_route_from_router_advertisements(world):
    sh(*world.in_host("ip", "-6", "route", "del", "default"))
    sh("ip", "netns", "exec", world.wan, sys.executable, "-c", ADVERTISE)
    default = default_route(world)
    assert "proto ra" in default, default
    upstream_servers(world)
    world.kn("network", "create", "-t", "bridge", "--subnet6", "fd00:6:7::/64", "n")  # turns forwarding on
    assert sh(*world.in_host("sysctl", "-n", "net.ipv6.conf.all.forwarding")).stdout.strip() == "1"
    assert default_route(world) == default
    assert sh(*world.in_host("sysctl", "-n", "net.ipv6.conf.uplink.accept_ra")).stdout.strip() == "2"
    assert world.connect_from("n", WAN6_ADDR, V6) == UPLINK6_ADDR
