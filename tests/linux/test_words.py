"""The words users bring from other tools: `-l none`, `-n host|none|private`, and a plain `run`,
which is private: the container's own namespace on the private network (created on first use,
its subnet clear of the host's routes, NAT), never the host's namespace unless asked for."""

import ipaddress
import sys

from tests.linux.world import UPLINK_ADDR, WAN_ADDR, sh

CONNECT = ("import socket; print(socket.create_connection(({addr!r}, 7000), timeout=2).recv(100).decode())")
LINKS = ["python3", "-c", "import socket; print(' '.join(sorted(n for _, n in socket.if_nameindex())))"]


def links(world, *opts: str) -> str:
    return world.kn("run", "--rm", *opts, "--", *LINKS).stdout.strip()


def test_none_and_disabled_have_only_loopback(world):
    assert links(world, "-l", "none") == "lo"
    assert links(world, "-n", "none") == "lo"
    assert links(world, "-l", "disabled") == "lo"
    assert "uplink" in links(world, "-n", "host")  # positive control: the host's own interfaces
    assert links(world, "-l", "host") == links(world, "-n", "host")


def test_a_plain_run_is_private_and_egresses_through_nat(world):
    # A route of the host's takes 10.88.0.0/24: the private network keeps clear of it.
    sh("ip", "-n", world.host, "route", "add", "10.88.0.0/24", "via", WAN_ADDR)
    world.serve(["ip", "netns", "exec", world.wan], 7000)
    seen = world.kn("run", "--rm", "--", sys.executable, "-c", CONNECT.format(addr=WAN_ADDR)).stdout.strip()
    assert seen == UPLINK_ADDR  # masqueraded toward the uplink
    private = world.kn_json("network", "inspect", "private")["network"]
    assert private["type"] == "bridge" and private["nat"] == "uplink"
    assert ipaddress.ip_network(private["subnet"]) == ipaddress.ip_network("10.88.1.0/24")
    assert links(world) == "eth0 lo"  # its own namespace, not the host's
    # --network private is the same network, used again
    assert world.kn("run", "--rm", "--network", "private", "--", sys.executable, "-c",
                    CONNECT.format(addr=WAN_ADDR)).stdout.strip() == UPLINK_ADDR
    assert [n["name"] for n in world.kn_json("network", "ls", "--json")] == ["private"]


def test_private_beside_another_network(world):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "--internal", "back")
    world.serve(["ip", "netns", "exec", world.wan], 7000)
    r = world.kn("run", "--rm", "-n", "back", "-n", "private", "--", sys.executable, "-c",
                 CONNECT.format(addr=WAN_ADDR))
    assert r.stdout.strip() == UPLINK_ADDR  # out through the private network's NAT
    r = world.kn("run", "--rm", "-n", "back", "--", sys.executable, "-c", CONNECT.format(addr=WAN_ADDR), check=False)
    assert r.returncode != 0  # the internal network alone has no way out


def test_the_private_network_comes_back_after_rm(world):
    world.kn("run", "--rm", "--", "true")
    world.kn("network", "rm", "private")
    assert "private" not in world.kn("network", "ls").stdout
    world.kn("run", "--rm", "-n", "private", "--", "true")
    assert "private" in world.kn("network", "ls").stdout


def test_the_words_are_not_network_names(world):
    world.kn("network", "ls")  # the state exists
    before = world.snapshot()
    for name in ("private", "host", "none"):
        r = world.kn("network", "create", "--subnet", "10.2.3.0/24", name, check=False)
        assert r.returncode != 0 and f"invalid network name {name!r}" in r.stderr and len(r.stderr.splitlines()) == 1
    for args, message in ((["-n", "host", "-n", "private"], "-n host takes no other network"),
                          (["-l", "vnet", "-n", "none"], "-n none and -l vnet disagree"),
                          (["-n", "host", "--ip", "10.0.0.2"], "--ip and --ip6 do not apply to -n host"),
                          (["-l", "bogus"], "invalid network driver 'bogus'"),
                          (["-l", "vnet:x"], "only pasta takes options")):
        r = world.kn("run", "--rm", *args, "--", "true", check=False)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
    assert world.snapshot() == before
