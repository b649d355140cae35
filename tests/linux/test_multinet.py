"""A container on several networks: one interface and address on each, each reachable, and
connecting or disconnecting one leaves the others as they were."""

import sys

PROBE = ("import socket,sys\n"
         "try: s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1)\n"
         "except OSError: sys.exit(3)\n"
         "print(s.recv(100).decode())\n")


def reach(world, container: str, addr: str, port: int) -> str | None:
    """What a server at addr:port saw when `container` connected, or None if it could not."""
    r = world.kn("exec", container, "--", sys.executable, "-c", PROBE, addr, str(port), check=False)
    assert r.returncode in (0, 3), r.stderr
    return r.stdout.strip() if r.returncode == 0 else None


def addresses_inside(world, container: str) -> dict[str, list[str]]:
    out = world.kn("exec", container, "--", "ip", "-br", "-4", "addr").stdout
    return {line.split()[0].split("@")[0]: line.split()[2:] for line in out.splitlines()}


def test_a_container_on_two_networks_has_an_address_on_each_and_reaches_both(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "-t", "loopback", "--subnet", "10.2.4.0/24", "b")
    srv_a = world.serve_in_container("srv-a", "a", 7000)
    srv_b = world.serve_in_container("srv-b", "b", 7000)
    # --ip belongs to the -n before it; b's address is the next free one
    world.kn("run", "-d", "--name", "m", "-n", "a", "--ip", "10.2.3.50", "-n", "b", "--", "sleep", "300")
    eps = {ep["network_id"]: ep["ip_address"] for ep in world.kn_json("inspect", "m")["container_endpoints"]}
    net_ids = {n["name"]: n["id"] for n in world.kn_json("network", "ls", "--json")}
    assert eps == {net_ids["a"]: "10.2.3.50", net_ids["b"]: "10.2.4.2"}
    assert addresses_inside(world, "m") == {"lo": ["127.0.0.1/8"], "eth0": ["10.2.3.50/24"], "eth1": ["10.2.4.2/32"]}
    assert reach(world, "m", srv_a, 7000) == "10.2.3.50"
    assert reach(world, "m", srv_b, 7000) == "10.2.4.2"

    # Leaving b: a is untouched (same interface, same address, still reachable); b is not reachable.
    world.kn("network", "disconnect", "b", "m")
    assert addresses_inside(world, "m") == {"lo": ["127.0.0.1/8"], "eth0": ["10.2.3.50/24"]}
    assert reach(world, "m", srv_a, 7000) == "10.2.3.50"
    assert reach(world, "m", srv_b, 7000) is None

    # Joining b again with a static address: a still untouched, b reachable from it.
    world.kn("network", "connect", "--ip", "10.2.4.77", "b", "m")
    assert addresses_inside(world, "m")["eth0"] == ["10.2.3.50/24"]
    assert reach(world, "m", srv_b, 7000) == "10.2.4.77"
    assert reach(world, "m", srv_a, 7000) == "10.2.3.50"


def test_ip_options_that_belong_to_no_network_are_refused_and_change_nothing(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.4.0/24", "b")
    before = world.snapshot()
    for args, words in (
        (["--ip", "10.2.3.5", "-n", "a", "-n", "b"], "comes before any -n"),
        (["-n", "a", "--ip", "10.2.3.5", "--ip", "10.2.3.6", "-n", "b"], "--ip is given twice for network 'a'"),
        (["--ip6", "fd00::5"], "need a -n NETWORK"),
        (["-n", "a", "--ip", "10.2.4.5", "-n", "b"], "10.2.4.5"),  # b's address given for a
    ):
        r = world.kn("run", "--name", "x", *args, "--", "true", check=False)
        assert r.returncode != 0 and words in r.stderr and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    assert world.snapshot() == before
    # the positive control: each --ip after its own -n
    world.kn("run", "--rm", "-n", "a", "--ip", "10.2.3.5", "-n", "b", "--ip", "10.2.4.5", "--", "true")
