"""The FreeBSD platform through its plans, on a simulated host.

Golden files in tests/freebsd/golden/ hold the exact commands and pf text of each operation
(regenerate with KLEENENET_UPDATE_GOLDEN=1 and read the diff). Every operation is also carried out
on the simulated host, and failed at each of its steps in turn: the host must be left as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kleenenet.errors import HostError, KleenenetError
from kleenenet.platform.freebsd.doctor import fragment_path
from kleenenet.vocabulary import parse_publish
from tests.freebsd.bench import Bench

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("KLEENENET_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"plan differs from {path} (KLEENENET_UPDATE_GOLDEN=1 rewrites it)"


# The operations, each as (setup, op): setup brings the bench to the state op starts from.

def net_loopback(s):
    s.create_network("testnet", "loopback", subnet="10.2.3.0/24", subnet6="fd00:2:3::/64")


def net_bridge(s):
    s.create_network("bnet", "bridge", subnet="10.5.0.0/24", icc=False)


def run_ipnet(s):
    s.run(["ifconfig"], name="web", driver="ipnet", networks=("testnet",), detach=True)


def run_vnet(s):
    s.run(["nc", "-l", "80"], name="app", driver="vnet", networks=("bnet",), detach=True,
          jail_params=("allow.raw_sockets",))


# a port, and a UDP range that maps onto another range
PUBLISHED = [parse_publish("8080:80"), parse_publish("9000-9001:8000-8001/udp")]


def run_ipnet_published(s):
    s.run(["nc", "-l", "80"], name="web", driver="ipnet", networks=("testnet",), detach=True, public_ports=PUBLISHED)


def run_vnet_published(s):
    s.run(["nc", "-l", "443"], name="app", driver="vnet", networks=("bnet",), detach=True,
          public_ports=[parse_publish("em0:8443:443")])


def nothing(s):
    pass


OPERATIONS = {
    "network-create-loopback": (nothing, net_loopback),
    "network-create-bridge": (net_loopback, net_bridge),
    "network-rm": (lambda s: (net_loopback(s), net_bridge(s)), lambda s: s.remove_network("testnet")),
    "run-ipnet": (net_loopback, run_ipnet),
    "run-vnet": (net_bridge, run_vnet),
    "run-host": (nothing, lambda s: s.run(["true"], name="h", driver="host", detach=True)),
    "run-disabled": (nothing, lambda s: s.run(["ifconfig"], name="d", driver="disabled", detach=True)),
    "connect-ipnet-running": (lambda s: (net_loopback(s), net_bridge(s), run_ipnet(s)),
                              lambda s: s.connect("web", "bnet")),
    "connect-vnet-running": (lambda s: (net_loopback(s), net_bridge(s), s.create_network(
        "b2", "bridge", subnet="10.6.0.0/24"), run_vnet(s)), lambda s: s.connect("app", "b2")),
    "disconnect-ipnet-running": (lambda s: (net_loopback(s), net_bridge(s), run_ipnet(s), s.connect("web", "bnet")),
                                 lambda s: s.disconnect("web", "testnet")),
    "disconnect-vnet-running": (lambda s: (net_bridge(s), run_vnet(s)), lambda s: s.disconnect("app", "bnet")),
    # IPv6 routed (no NAT66) and a given MTU on a bridge
    "network-create-routed6": (nothing, lambda s: s.create_network("six", "bridge", subnet="10.8.0.0/24",
                                                                   subnet6="fd00:8::/64", nat6=False, mtu=9000)),
    "run-ipnet-published": (net_loopback, run_ipnet_published),
    "run-vnet-published": (net_bridge, run_vnet_published),
    # its ports move to the network it still has (IPv4 only: bnet has no subnet6)
    "disconnect-published": (lambda s: (net_loopback(s), net_bridge(s), run_ipnet_published(s), s.connect("web", "bnet")),
                             lambda s: s.disconnect("web", "testnet")),
    "disconnect-vnet-published": (lambda s: (net_bridge(s), run_vnet_published(s)), lambda s: s.disconnect("app", "bnet")),
}
# Stopping goes on past a failing step (it takes down what it can): no rollback to test. A
# foreground run ends with the same teardown.
TEARDOWNS = {
    "run-ipnet-foreground": (net_loopback, lambda s: s.run(["ifconfig"], name="fg", driver="ipnet",
                                                           networks=("testnet",))),
    "stop-vnet": (lambda s: (net_bridge(s), run_vnet(s)), lambda s: s.stop("app")),
    "stop-ipnet": (lambda s: (net_loopback(s), run_ipnet(s)), lambda s: s.stop("web")),
    "stop-ipnet-published": (lambda s: (net_loopback(s), net_bridge(s), run_ipnet_published(s),
                                        s.connect("web", "bnet")), lambda s: s.stop("web")),
}


@pytest.mark.parametrize("name", {**OPERATIONS, **TEARDOWNS})
def test_plan_matches_golden_file(bench, name):
    setup, op = {**OPERATIONS, **TEARDOWNS}[name]
    setup(bench.svc())
    check_golden(name, bench.plan(op))


@pytest.mark.parametrize("name", OPERATIONS)
def test_failure_at_every_step_rolls_back(tmp_path, name):
    check_every_step_rolls_back(tmp_path, *OPERATIONS[name])


def check_every_step_rolls_back(tmp_path, setup, op, new_bench=Bench) -> None:
    """Run the operation once to count its host changes, then fail it at each of them in turn:
    the host is as it was before."""
    ok = new_bench(tmp_path / "ok")
    setup(ok.svc())
    start = len(ok.host.log)
    op(ok.svc())
    steps = len(ok.host.log) - start
    assert steps > 0
    for k in range(1, steps + 1):
        b = new_bench(tmp_path / f"fail{k}")
        setup(b.svc())
        before, log = b.host.snapshot(), len(b.host.log)
        b.host.fail_at = b.host.changes + k
        with pytest.raises(HostError, match="injected failure"):
            op(b.svc())
        assert b.host.snapshot() == before, f"step {k} ({b.host.log[log + k - 1]}) left changes behind"


def test_pfctl_rejecting_a_ruleset_changes_nothing(bench):
    bench.host.fail_on = "pfctl -n -a kleenenet/testnet"
    with pytest.raises(HostError, match="pfctl -n"):
        net_loopback(bench.svc())
    assert bench.store.networks() == []
    assert set(bench.host.state["interfaces"]) == {"em0", "lo0"}


def test_executed_state(bench):
    """What the simulated host holds after a loopback and a bridge network with a jail each."""
    s = bench.svc()
    net_loopback(s)
    net_bridge(s)
    run_ipnet(s)
    run_vnet(s)
    ifs, st = bench.host.state["interfaces"], bench.host.state
    assert ifs["kleene0"]["addrs"] == ["10.2.3.1/32", "fd00:2:3::1/128"] and ifs["kleene0"]["groups"] == ["lo", "kleenenet"]
    assert ifs["kleene1"]["addrs"] == ["10.5.0.1/24"] and ifs["kleene1"]["members"] == ["kv000000000006a"]
    assert ifs["kleene1"]["private"] == ["kv000000000006a"]  # --no-icc
    assert ifs["kv000000000006b"]["vnet"] == "kn000000000005"
    web, app = st["jails"]["kn000000000003"], st["jails"]["kn000000000005"]
    assert web["params"]["ip4.addr"] == "10.2.3.1" and web["params"]["ip6.addr"] == "fd00:2:3::1"
    assert app["routes"] == {"-inet": ("10.5.0.1", "kv000000000006b")} and app["params"]["allow.raw_sockets"] == ""
    assert st["tables"][("kleenenet/testnet", "kn_000000000001")] == ["10.2.3.1", "fd00:2:3::1"]
    assert st["tables"][("kleenenet/bnet", "kn_000000000002")] == ["10.5.0.2"]
    assert st["sysctl"]["net.inet.ip.forwarding"] == "1"  # for the bridge, not for ipnet
    assert st["sysctl"]["net.inet6.ip6.forwarding"] == "0"
    # Stopping and removing leaves only the networks.
    s.remove("web", force=True)
    s.remove("app", force=True)
    assert set(ifs) == {"em0", "lo0", "kleene0", "kleene1"}
    assert ifs["kleene0"]["addrs"] == [] and ifs["kleene1"]["members"] == []
    assert st["jails"] == {}
    assert st["tables"][("kleenenet/testnet", "kn_000000000001")] == []
    s.remove_network("testnet")
    s.remove_network("bnet")
    assert set(ifs) == {"em0", "lo0"} and st["anchors"] == {} and st["tables"] == {}


def test_icc_off_loopback_lets_a_jail_reach_itself(bench):
    s = bench.svc()
    s.create_network("quiet", "loopback", subnet="10.9.0.0/24", icc=False)
    s.run(["true"], name="a", driver="ipnet", networks=("quiet",), detach=True)
    s.run(["true"], name="b", driver="ipnet", networks=("quiet",), detach=True)
    text = bench.host.state["anchors"]["kleenenet/quiet"]
    assert "pass quick from 10.9.0.1 to 10.9.0.1\npass quick from 10.9.0.2 to 10.9.0.2\n" in text
    assert "block drop quick from <kn_000000000001> to <kn_000000000001>" in text
    s.remove("a", force=True)
    assert "10.9.0.1" not in bench.host.state["anchors"]["kleenenet/quiet"]


def test_isolation_lists_every_other_network(bench):
    s = bench.svc()
    net_loopback(s)
    net_bridge(s)
    anchors = bench.host.state["anchors"]
    assert "block drop quick from <kn_000000000001> to { 10.5.0.0/24 }" in anchors["kleenenet/testnet"]
    assert "block drop quick from <kn_000000000002> to { 10.2.3.0/24, fd00:2:3::/64 }" in anchors["kleenenet/bnet"]


def test_reconcile_after_reboot(bench):
    """After a reboot the interfaces, anchors and jails are gone; the store still has them."""
    s = bench.svc()
    net_loopback(s)
    net_bridge(s)
    run_ipnet(s)
    st = bench.host.state
    for name in ("kleene0", "kleene1"):
        del st["interfaces"][name]
    st["anchors"].clear()
    st["tables"].clear()
    st["jails"].clear()
    st["sysctl"]["net.inet.ip.forwarding"] = "0"
    s.reconcile()
    assert st["interfaces"]["kleene0"]["addrs"] == [] and st["interfaces"]["kleene1"]["addrs"] == ["10.5.0.1/24"]
    assert set(st["anchors"]) == {"kleenenet/testnet", "kleenenet/bnet"}
    assert st["sysctl"]["net.inet.ip.forwarding"] == "1"
    assert [c.running for c in s.containers()] == [False]  # its jail is gone: stopped
    assert bench.plan(lambda s: s.reconcile()) == "\n"  # nothing left to do


def test_reconcile_removes_leftovers(bench):
    s = bench.svc()
    net_loopback(s)
    run_ipnet(s)
    st = bench.host.state
    # A crash left: an epair of ours, an alias nobody owns, an anchor of a removed network, a jail.
    st["interfaces"]["kv0000000000aaa"] = {**st["interfaces"]["em0"], "addrs": [], "groups": ["kleenenet"]}
    st["interfaces"]["kleene0"]["addrs"].append("10.2.3.77/32")
    bench.host.run(["pfctl", "-a", "kleenenet/gone", "-f", "-"], "table <kn_000000000abc> persist { 10.2.3.9 }\n")
    st["jails"]["kn0000000000ff"] = {"params": {}, "vnet": False, "processes": False, "routes": {}}
    s.reconcile()
    assert "kv0000000000aaa" not in st["interfaces"]
    assert st["interfaces"]["kleene0"]["addrs"] == ["10.2.3.1/32", "fd00:2:3::1/128"]
    assert "kleenenet/gone" not in st["anchors"]
    assert set(st["jails"]) == {"kn000000000002"}  # the running container's jail stays


@pytest.mark.parametrize("args, message", [
    ({"name": "a;b"}, "invalid network name 'a;b'"),
    ({"name": "a b"}, "invalid network name 'a b'"),
    ({"name": 'a"b'}, "invalid network name 'a\"b'"),
    ({"name": "a{b"}, "invalid network name 'a{b'"),
    ({"name": "n" * 64}, "at most 63 characters on FreeBSD"),
    ({"interface": "kleene_much_too_long"}, "invalid interface name 'kleene_much_too_long'"),
    ({"interface": "lo0;x"}, "invalid interface name 'lo0;x'"),
    ({"nat": "em0 -> 1.2.3.4"}, "invalid interface name 'em0 -> 1.2.3.4'"),
    ({"subnet": "10.2.3.128/25"}, "overlaps network 'testnet'"),
    ({"subnet": "192.0.2.0/25"}, "overlaps address 192.0.2.2/24 on em0"),
    ({"type": "custom"}, "a custom network needs -i IFACE"),
])
def test_bad_network_input_runs_nothing(bench, args, message):
    net_loopback(bench.svc())
    before, log = bench.host.snapshot(), len(bench.host.log)
    kwargs = {"name": "other", "subnet": "10.99.0.0/24", **args}
    with pytest.raises(KleenenetError, match=message.replace("{", r"\{").replace("(", r"\(")):
        bench.svc().create_network(**kwargs)
    assert bench.host.snapshot() == before and len(bench.host.log) == log
    assert [n.name for n in bench.store.networks()] == ["testnet"]


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "x;y"}, "invalid container name 'x;y'"),
    ({"jail_params": ("ip4.addr=1.2.3.4",)}, "kleenenet sets ip4.addr"),
    ({"jail_params": ("vnet.interface=em0",)}, "kleenenet sets vnet.interface"),
    ({"jail_params": ("Bad Key=1",)}, "invalid jail parameter 'Bad Key=1'"),
    # pseudo-parameters jail(8) acts on at creation and `jail -r NAME` never undoes
    ({"jail_params": ("mount.devfs",)}, "invalid jail parameter 'mount.devfs': jail.8. acts on mount.devfs"),
    ({"jail_params": ("mount.fstab=/etc/fstab.web",)}, "acts on mount.fstab when it creates"),
    ({"jail_params": ("exec.poststart=touch /tmp/x",)}, "acts on exec.poststart when it creates"),
    ({"jail_params": ("depend=other",)}, "acts on depend when it creates"),
    ({"jail_params": ("ip_hostname",)}, "acts on ip_hostname when it creates"),
    ({"jail_params": ("interface=em0",)}, "acts on interface when it creates"),
    ({"driver": "vnet"}, "vnet jail: it can join bridge networks only"),
    ({"networks": (("testnet", "10.9.9.9", "<auto>"),)}, "10.9.9.9"),
])
def test_bad_container_input_runs_nothing(bench, kwargs, message):
    net_loopback(bench.svc())
    before, log = bench.host.snapshot(), len(bench.host.log)
    with pytest.raises(KleenenetError, match=message.replace("(", r"\(")):
        bench.svc().run(["true"], **{"driver": "ipnet", "networks": ("testnet",), "detach": True, **kwargs})
    assert bench.host.snapshot() == before and len(bench.host.log) == log
    assert bench.store.containers() == []


def doctor_report(bench) -> dict[str, bool | None]:
    return {c.what: c.ok for c in bench.platform.doctor(bench.store.networks())}


def test_doctor_on_a_ready_host(bench):
    net_bridge(bench.svc())
    report = doctor_report(bench)
    assert report['the main ruleset has nat-anchor "kleenenet/*"'] is True
    assert report['the main ruleset has anchor "kleenenet/*"'] is True
    assert report["pf filters lo0 and kleenenet's loopback interfaces (the host reaches published ports of "
                  "ipnet jails at its own addresses)"] is True
    assert report["FreeBSD 14.2 (kern.osreldate 1402000): vnet jails are configured with `ifconfig -j` and `route -j`"]
    assert report["net.inet.ip.forwarding=1"] is True  # the bridge network turned it on
    assert report["net.link.bridge.pfil_member=1"] is None  # a warning, with advice
    assert False not in report.values()


def test_doctor_says_what_to_add(bench):
    net_loopback(bench.svc())
    bench.host.state["main"]["nat"] = 'nat-anchor "other/*" all\n'
    bench.host.state["pf_enabled"] = False
    bench.host.state["skip"] = ["lo0"]
    found = {c.what: c for c in bench.platform.doctor(bench.store.networks())}
    assert found["pf is disabled"].advice.startswith("enable it with `pfctl -e`")
    missing = found['the main ruleset lacks nat-anchor "kleenenet/*"']
    assert missing.ok is False and missing.advice.startswith(f'add `include "{fragment_path()}"`')
    assert 'or `nat-anchor "kleenenet/*"` with the other translation rules' in missing.advice
    assert found['the main ruleset lacks rdr-anchor "kleenenet/*"'].ok is False
    assert found['the main ruleset has anchor "kleenenet/*"'].ok is True
    skip = next(c for w, c in found.items() if w.startswith("pf skips lo0"))
    assert skip.ok is False  # a loopback network exists: its isolation would not hold
    bench.host.state["modules"].discard("pf")
    assert [(c.ok, c.what) for c in bench.platform.doctor([])] == [(False, "pf is not loaded")]


def test_reconcile_puts_running_jails_back_on_a_recreated_bridge(bench):
    s = bench.svc()
    net_bridge(s)
    run_vnet(s)
    del bench.host.state["interfaces"]["kleene0"]  # destroyed behind kleenenet's back
    s.reconcile()
    bridge = bench.host.state["interfaces"]["kleene0"]
    assert bridge["members"] == ["kv000000000003a"] and bridge["private"] == ["kv000000000003a"]
    assert bridge["addrs"] == ["10.5.0.1/24"]


def test_reconcile_resets_a_jail_address_list_left_by_a_crash(bench):
    s = bench.svc()
    net_loopback(s)
    run_ipnet(s)
    jail = bench.host.state["jails"]["kn000000000002"]
    jail["params"]["ip4.addr"] = "10.2.3.1,10.2.3.9"  # a connect that died before its commit
    bench.host.state["interfaces"]["kleene0"]["addrs"].append("10.2.3.9/32")
    s.reconcile()
    assert jail["params"]["ip4.addr"] == "10.2.3.1"
    assert bench.host.state["interfaces"]["kleene0"]["addrs"] == ["10.2.3.1/32", "fd00:2:3::1/128"]


def published_then_rebooted(s, host, main_rules: str) -> dict:
    """A container publishing ports on a loopback network, then pf as after a reboot whose
    pf.conf has `main_rules` and not kleenenet's lines: no anchor, no table. The host's state."""
    net_loopback(s)
    run_ipnet_published(s)
    st = host.state
    st["main"] = {"nat": "", "rules": main_rules}
    st["anchors"].clear()
    st["tables"].clear()
    return st


def test_reconcile_after_a_reboot_without_kleenenets_lines_in_pf_conf(bench):
    """With no anchor loaded and pf.conf not calling kleenenet's, pf has no anchor `kleenenet`:
    `pfctl -a kleenenet -s Anchors` fails ("Anchor does not exist.", FreeBSD 15.0). That means no
    anchor is loaded: reconcile loads them all."""
    s = bench.svc()
    st = published_then_rebooted(s, bench.host, "pass all flags S/SA keep state\n")
    with pytest.raises(HostError, match="Anchor does not exist"):
        bench.host.run(["pfctl", "-v", "-a", "kleenenet", "-s", "Anchors"])
    s.reconcile()
    assert set(st["anchors"]) == {"kleenenet/testnet", "kleenenet/testnet/ports/000000000002"}
    assert st["tables"][("kleenenet/testnet", "kn_000000000001")] == ["10.2.3.1", "fd00:2:3::1"]
    assert bench.plan(lambda s: s.reconcile()) == "\n"


def test_stopping_a_published_container_after_a_reboot_without_anchors(bench):
    """Its network's anchor is missing too: nothing of its ports to flush, and the stop goes on."""
    s = bench.svc()
    st = published_then_rebooted(s, bench.host, "")
    s.stop("web")
    assert st["jails"] == {} and st["interfaces"]["kleene0"]["addrs"] == []


def test_reconcile_empties_a_table_whose_network_has_no_running_container(bench):
    """Reloading `table <t> persist` without { } would keep the table's members (FreeBSD 15.0):
    the anchor always lists them, `{ }` when there are none."""
    s = bench.svc()
    net_loopback(s)
    run_ipnet(s)
    s.stop("web")
    table = ("kleenenet/testnet", "kn_000000000001")
    bench.host.run(["pfctl", "-a", table[0], "-t", table[1], "-T", "add", "10.2.3.1"])  # a crash left it
    s.reconcile()
    assert bench.host.state["tables"][table] == []
    assert "table <kn_000000000001> persist { }\n" in bench.host.state["anchors"]["kleenenet/testnet"]
    assert bench.plan(lambda s: s.reconcile()) == "\n"
