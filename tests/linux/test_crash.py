"""kleenenet killed (SIGKILL) at every step of every operation — and after its last step, before
the store commits — then `reconcile`: host and store agree, nothing is leaked (interfaces,
addresses, nft elements, container processes), and a second reconcile plans nothing.

A crash is World.kill_at: KLEENENET_FAILPOINT=<plan>:<k>:stop (the process stops itself just
before step k) followed by SIGKILL."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from collections.abc import Callable

import pytest

from tests.linux.world import sh


@dataclass
class Op:
    plan: str  # the plan the failpoint names
    prepare: Callable  # (world, k) -> None: what the k-th attempt consumes
    args: Callable  # k -> the CLI arguments
    rolls_back: bool = True  # a crash leaves the store as before: the host must be as before too


def _nothing(world, k):
    pass


def _idle(world, k):
    world.kn("run", "-d", "-l", "ipnet", "--name", f"idle{k}", "--", "sleep", "600")


def _attached(world, k):
    world.kn("run", "-d", "--name", f"s{k}", "-n", "lb", "-n", "br", "--", "sleep", "600")


def _spare_networks(world, k):
    world.kn("network", "create", "-t", "bridge", "--subnet", f"10.8.{k}.0/24", "--subnet6", f"fd00:8:{k}::/64",
             f"spare{k}")
    world.kn("network", "create", "--subnet", f"10.9.{k}.0/24", f"spare-lo{k}")


def _broken(world, k):
    """What reconcile repairs: a running container's port and a network's bridge gone, the
    firewall gone, a leftover of ours."""
    world.kn("rm", "-f", f"s{k - 1}", check=False)  # one container to rewire per attempt
    _attached(world, k)
    for link in world.links():
        if link.startswith("kv") or link == world.kn_json("network", "inspect", "br")["network"]["interface"]:
            sh(*world.in_host("ip", "link", "del", link), check=False)
    sh(*world.in_host("nft", "delete", "table", "inet", "kleenenet"))
    sh(*world.in_host("ip", "link", "add", f"kv0000000000{k:02x}", "group", "27502", "type", "bridge"))


OPS = {
    "network create bridge": Op("network-create", _nothing, lambda k: [
        "network", "create", "-t", "bridge", "--subnet", f"10.7.{k}.0/24", "--subnet6", f"fd00:7:{k}::/64", f"n{k}"]),
    "network create loopback": Op("network-create", _nothing, lambda k: [
        "network", "create", "--subnet", f"10.7.{k}.0/24", f"n{k}"]),
    "network rm": Op("network-remove", _spare_networks, lambda k: ["network", "rm", f"spare{k}"]),
    # prune removes one network per transaction: a crash keeps the removals before it
    "network prune": Op("network-remove", _spare_networks, lambda k: ["network", "prune"], rolls_back=False),
    "connect bridge": Op("connect", _idle, lambda k: ["network", "connect", "br", f"idle{k}"]),
    "connect loopback": Op("connect", _idle, lambda k: ["network", "connect", "lb", f"idle{k}"]),
    "disconnect bridge": Op("disconnect", _attached, lambda k: ["network", "disconnect", "br", f"s{k}"]),
    "disconnect loopback": Op("disconnect", _attached, lambda k: ["network", "disconnect", "lb", f"s{k}"]),
    "run": Op("run", _nothing, lambda k: ["run", "-d", "--name", f"r{k}", "-n", "lb", "-n", "br", "--",
                                          "sleep", "600"]),
    # stop and rm end the container's process before their transaction: no way back
    "stop": Op("disconnect", _attached, lambda k: ["stop", f"s{k}"], rolls_back=False),
    "rm": Op("disconnect", _attached, lambda k: ["rm", "-f", f"s{k}"], rolls_back=False),
    "reconcile": Op("reconcile", _broken, lambda k: ["reconcile"], rolls_back=False),
    "reconcile, rewiring a container": Op("connect", _broken, lambda k: ["reconcile"], rolls_back=False),
}


def check_agreement(world, where: str) -> None:
    """Host and store agree: a second reconcile has nothing to do, and the only container
    processes alive are those of running containers."""
    plan = world.kn("reconcile", "--dry-run").stdout
    assert plan == "", f"{where}: a second reconcile still plans:\n{plan}"
    (running,), = world.query("SELECT COUNT(*) FROM containers WHERE running")
    assert len(world.container_pids()) == running, where
    assert {link for link in world.links() if link.startswith("kv")} == world.wired_ports(), where


@pytest.mark.parametrize("name", OPS)
def test_crash_at_every_step_then_reconcile(world, name, record_property):
    op = OPS[name]
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "--subnet6", "fd00:3::/64", "br")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "--subnet6", "fd00:4::/64", "lb")
    for k in range(1, 40):
        op.prepare(world, k)
        before = world.snapshot()
        if not world.kill_at(op.args(k), f"{op.plan}:{k}:stop"):
            break  # past the last step (and the one after it): the operation completed
        world.kn("reconcile")
        where = f"{name}: killed before step {k}"
        check_agreement(world, where)
        if op.rolls_back:
            after = world.snapshot()
            assert after == before, f"{where}: " + "".join(difflib.unified_diff(*(
                json.dumps({**snap, "nft": snap["nft"].splitlines()}, indent=1).splitlines(True)
                for snap in (before, after))))
    assert k > 2, f"{name} crashed at no step"
    record_property("crash_points", k - 1)  # the matrix size: `pytest --junitxml` reports it
