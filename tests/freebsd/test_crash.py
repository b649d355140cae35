"""kleenenet killed at every host change of every operation, then `reconcile` by a new process:
host and store agree, nothing is leaked, and a second reconcile has nothing to do.

The simulated host's crash mode is kill -9: the command at the crash is not run, nor is any later
one (so the plan's rollback undoes nothing), and the store's open transaction rolls back, as
SQLite's does when the process dies."""

from __future__ import annotations

import copy
import ipaddress

import pytest

from kleenenet.errors import KleenenetError
from kleenenet.platform.freebsd import FreeBSDPlatform, jail_name, pf
from kleenenet.ports import by_network_name, forwards, in_given_order
from kleenenet.service import Service
from kleenenet.store import Store
from tests.freebsd.bench import Bench
from tests.freebsd.test_plans import (
    OPERATIONS,
    TEARDOWNS,
    net_bridge,
    net_loopback,
    run_ipnet,
    run_vnet,
)


def rebooted_with_leftovers(host) -> None:
    """A reboot took the jails, interfaces and anchors; an older crash left an epair and an alias."""
    st = host.state
    for name in [n for n, i in st["interfaces"].items() if n not in ("em0", "lo0")]:
        del st["interfaces"][name]
    st["anchors"].clear()
    st["tables"].clear()
    st["jails"].clear()
    a = host.run(["ifconfig", "epair", "create", "group", "kleenenet"]).strip()
    host.run(["ifconfig", a[:-1] + "b", "group", "kleenenet"])
    host.run(["ifconfig", "lo", "create", "group", "kleenenet", "description", "kleenenet:gone"])


def with_two_networks_and_jails(s):
    net_loopback(s)
    net_bridge(s)
    run_ipnet(s)
    run_vnet(s)


# (setup, operation, what to do to the host before the operation)
CRASHES = {
    **{name: (setup, op, None) for name, (setup, op) in {**OPERATIONS, **TEARDOWNS}.items()},
    "prune": (lambda s: (net_loopback(s), net_bridge(s), run_ipnet(s)), lambda s: s.prune_networks(), None),
    "rm-vnet": (lambda s: (net_bridge(s), run_vnet(s)), lambda s: s.remove("app", force=True), None),
    "rm-ipnet": (lambda s: (net_loopback(s), run_ipnet(s)), lambda s: s.remove("web", force=True), None),
    "reconcile": (with_two_networks_and_jails, lambda s: s.reconcile(), rebooted_with_leftovers),
}


def check_host_agrees_with_store(store: Store, host) -> None:
    """Everything of kleenenet's on the host belongs to the store, and everything the store says
    exists is on the host."""
    st = host.state
    networks = store.networks()
    containers = {c.id: c for c in store.containers()}
    wired = [ep for ep in store.endpoints() if ep.epair]
    driver = {ep.id: containers[ep.container_id].network_driver for ep in wired}
    vnet = [ep for ep in wired if driver[ep.id] == "vnet"]
    ifs = st["interfaces"]
    assert set(ifs) == ({"em0", "lo0"} | {n.interface for n in networks}
                        | {ep.epair + end for ep in vnet for end in "ab"})
    for net in networks:
        iface = ifs[net.interface]
        addrs = {a.split("/")[0] for a in iface["addrs"] if not a.startswith("fe80:")}
        mine = [ep for ep in wired if ep.network_id == net.id]
        assert addrs == ({net.gateway, net.gateway6}
                         | {a for ep in mine if driver[ep.id] == "ipnet" for a in (ep.ip_address, ep.ip_address6)}) - {""}
        assert sorted(iface["members"]) == sorted(ep.epair + "a" for ep in mine if driver[ep.id] == "vnet")
        assert iface["up"] and "kleenenet" in iface["groups"]
        members = [a for ep in mine for a in (ep.ip_address, ep.ip_address6) if a]
        path = pf.anchor(net)
        assert pf.label(st["anchors"][path]) == pf.label(pf.render(net, networks, members))
        assert ({ipaddress.ip_address(a) for a in st["tables"][(path, pf.table(net))]}
                == {ipaddress.ip_address(a) for a in members})
    for ep in vnet:
        assert ifs[ep.epair + "b"]["vnet"] == jail_name(containers[ep.container_id])
    running = [c for c in containers.values() if c.running]
    assert set(st["jails"]) == {jail_name(c) for c in running}
    for c in running:
        if c.network_driver == "ipnet":
            params = st["jails"][jail_name(c)]["params"]
            have = {a for key in ("ip4.addr", "ip6.addr") for a in params.get(key, "").split(",") if a}
            assert have == {a for ep in wired if ep.container_id == c.id for a in (ep.ip_address, ep.ip_address6) if a}
    # each running container's published ports: an anchor below the network they lead to (its
    # first by name that reaches out; an ipnet jail's: the first it joined)
    by_id = {n.id: n for n in networks}
    ports = {}
    for c in running:
        mine = [(by_id[ep.network_id], ep) for ep in wired if ep.container_id == c.id]
        rank = in_given_order(mine) if c.network_driver == "ipnet" else by_network_name
        for f in forwards(c, mine, rank):
            ports.setdefault(pf.ports_anchor(by_id[f.network_id], c.id), (c, by_id[f.network_id], []))[2].append(f)
    for path, (c, net, fw) in ports.items():
        assert pf.label(st["anchors"][path]) == pf.label(pf.render_ports(net, c.name, c.id, fw, c.network_driver == "ipnet"))
    assert set(st["anchors"]) == {pf.anchor(n) for n in networks} | set(ports)
    assert {k[0] for k in st["tables"]} <= set(st["anchors"])


def comparable(state: dict) -> dict:
    """A host state without what a crash may change harmlessly: sysctls (forwarding is turned on
    when needed, never off), the kernel's unit numbers, the order of a table's members in the
    anchor text (pf has them as a set: the label is what counts), and the order of an ipnet
    jail's addresses (an address reconcile puts back goes last, as a connect adds it)."""
    state = copy.deepcopy(state)
    del state["sysctl"]
    for jail in state["jails"].values():
        for key in ("ip4.addr", "ip6.addr"):
            if key in jail["params"]:
                jail["params"][key] = sorted(jail["params"][key].split(","))
    state["anchors"] = {path: pf.label(text) for path, text in state["anchors"].items()}
    for iface in state["interfaces"].values():
        iface.pop("unit")
    return state


def steps_of(tmp_path, name: str) -> int:
    setup, op, disturb = CRASHES[name]
    ok = Bench(tmp_path / "count")
    setup(ok.svc())
    if disturb:
        disturb(ok.host)
    start = ok.host.changes
    op(ok.svc())
    return ok.host.changes - start


@pytest.mark.parametrize("name", CRASHES)
def test_crash_at_every_step_then_reconcile(tmp_path, name):
    setup, op, disturb = CRASHES[name]
    steps = steps_of(tmp_path, name)
    assert steps > 0
    for k in range(1, steps + 1):
        b = Bench(tmp_path / f"crash{k}")
        setup(b.svc())
        if disturb:
            disturb(b.host)
        before = b.host.snapshot()
        b.host.crash_at = b.host.changes + k
        with pytest.raises(KleenenetError):
            op(b.svc())
        assert b.host.crashed, f"step {k}: the operation ended without reaching its crash"
        b.host.revive()
        store = Store(b.store.state_dir)  # a new process
        fresh = Service(store, FreeBSDPlatform(b.host), out=lambda line: None)
        fresh.reconcile()
        where = f"{name}, crash at step {k} ({b.host.log[-1] if b.host.log else ''})"
        try:
            check_host_agrees_with_store(store, b.host)
        except AssertionError as e:
            raise AssertionError(f"{where}: {e}") from None
        lines = []
        Service(store, FreeBSDPlatform(b.host), dry_run=True, out=lines.append).reconcile()
        assert lines == [], f"{where}: a second reconcile still plans {lines}"
        if name in OPERATIONS:  # nothing was committed: the host is as before the operation
            assert comparable(b.host.snapshot()) == comparable(before), where


def test_matrix_size(tmp_path):
    """Every operation is crashed at each of its steps (the report quotes this number)."""
    sizes = {name: steps_of(tmp_path / name, name) for name in CRASHES}
    assert len(sizes) == 24 and sum(sizes.values()) >= 140, sizes


def test_reconcile_wires_what_it_can_and_says_what_it_could_not(bench):
    """A jail whose epair cannot be made again keeps none of the others from being rewired; the
    failure is reported (non-zero), and a later reconcile finishes the job."""
    s = bench.svc()
    net_bridge(s)
    for name in ("one", "two"):
        s.run(["nc", "-l", "80"], name=name, driver="vnet", networks=("bnet",), detach=True)
    eps = {name: bench.store.endpoints(container_id=bench.store.container(name).id)[0] for name in ("one", "two")}
    for ep in eps.values():  # both lost their epair (destroying one end takes the other)
        bench.host.run(["ifconfig", ep.epair + "a", "destroy"])
    bench.host.fail_on = eps["one"].id  # one's new epair cannot be named
    with pytest.raises(KleenenetError, match=r"could not wire 1 endpoint\(s\), and did the rest: one on bnet"):
        bench.svc().reconcile()
    assert eps["two"].epair + "a" in bench.host.state["interfaces"]
    assert bench.store.endpoints(container_id=bench.store.container("two").id)[0].epair
    assert not bench.store.endpoints(container_id=bench.store.container("one").id)[0].epair
    bench.host.fail_on = None
    bench.svc().reconcile()
    assert eps["one"].epair + "a" in bench.host.state["interfaces"]
