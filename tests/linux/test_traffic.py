"""Real packets between containers, the host and a fake upstream."""

import pytest

from tests.linux.world import UPLINK_ADDR, WAN_ADDR


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_two_containers_talk_over_tcp(world, type_):
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "testnet")
    ip = world.serve_in_container("srv", "testnet", 7000)
    assert ip == ("10.2.3.2" if type_ == "bridge" else "10.2.3.1")
    seen = world.connect_from("testnet", ip, 7000)
    assert seen == ("10.2.3.3" if type_ == "bridge" else "10.2.3.2")


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_ipv6_between_containers(world, type_):
    world.kn("network", "create", "-t", type_, "--subnet6", "fd00:2:3::/64", "net6")
    world.serve_in_container("srv", "net6", 7000)
    ip6 = world.ip_of("srv", 6)
    assert world.connect_from("net6", ip6, 7000) is not None


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_nat_to_upstream_shows_the_host_address(world, type_):
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "testnet")
    assert world.connect_from("testnet", WAN_ADDR, 8000) == UPLINK_ADDR


def test_no_nat_routes_with_the_container_address(world):
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    world.kn("network", "create", "-t", "bridge", "--no-nat", "--subnet", "10.2.3.0/24", "plain")
    # without NAT the upstream sees 10.2.3.x and has no route back: the connection fails
    assert world.connect_from("plain", WAN_ADDR, 8000) is None


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_networks_are_isolated(world, type_):
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.4.0/24", "b")
    ip = world.serve_in_container("srv", "a", 7000)
    assert world.connect_from("a", ip, 7000) is not None  # the server is reachable at all
    assert world.connect_from("b", ip, 7000) is None


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_icc_off_drops_traffic_between_containers(world, type_):
    world.kn("network", "create", "-t", type_, "--no-icc", "--subnet", "10.2.3.0/24", "quiet")
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    ip = world.serve_in_container("srv", "quiet", 7000)
    assert world.connect_from("quiet", ip, 7000) is None
    assert world.connect_from("quiet", WAN_ADDR, 8000) == UPLINK_ADDR  # egress still works


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_internal_network_has_no_egress(world, type_):
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    world.kn("network", "create", "-t", type_, "--internal", "--subnet", "10.2.3.0/24", "inner")
    ip = world.serve_in_container("srv", "inner", 7000)
    assert world.connect_from("inner", ip, 7000) is not None  # inside the network: fine
    assert world.connect_from("inner", WAN_ADDR, 8000) is None


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_containers_cannot_reach_host_services(world, type_):
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "testnet")
    world.serve(world.in_host(), 9000, bind="0.0.0.0")
    targets = [UPLINK_ADDR] + (["10.2.3.1"] if type_ == "bridge" else ["169.254.1.1"])
    for addr in targets:
        assert world.connect_from("testnet", addr, 9000) is None, addr
    # the same service answers from the upstream side, so the drop is kleenenet's doing
    from tests.linux.world import sh
    r = sh("ip", "netns", "exec", world.wan, "python3", "-c",
           f"import socket; print(socket.create_connection(('{UPLINK_ADDR}', 9000), timeout=2).recv(99).decode())")
    assert r.stdout.strip() == WAN_ADDR


def test_multiple_networks_per_container(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "b")
    world.kn("run", "-d", "--name", "both", "-n", "a", "-n", "b", "--", "sleep", "60")
    addrs = world.kn("exec", "both", "--", "ip", "-br", "addr").stdout
    assert "eth0" in addrs and "10.2.3.2/24" in addrs
    assert "eth1" in addrs and "10.2.4.1/32" in addrs
