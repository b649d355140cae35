"""How the FreeBSD plans meet the kernel's ways: epairs die in pairs, interfaces moved into a jail
lose their groups, a failed rename leaves the clone behind, `self` is fixed at load time, a /32
alias on a bridge routes over lo0, IPv6 needs neighbour discovery and router advertisements,
`-j` needs FreeBSD 14 and FreeBSD 15 bridges refuse members with addresses."""

from __future__ import annotations

import pytest

from kleenenet.errors import HostError
from kleenenet.platform.freebsd import FreeBSDPlatform
from kleenenet.platform.freebsd.host import PreviewRunner
from tests.freebsd.bench import Bench
from tests.freebsd.test_plans import net_bridge, net_loopback, run_vnet


def reconcile_plan(bench) -> list[str]:
    return [line for line in bench.plan(lambda s: s.reconcile()).splitlines() if line]


# epairs

def test_reconcile_destroys_a_leftover_epair_once(bench):
    """Both ends of a crashed connect are in group kleenenet; destroying the a end takes the b
    end along (epair_clone_destroy), so a second destroy would fail and roll everything back."""
    s = bench.svc()
    net_bridge(s)
    a = bench.host.run(["ifconfig", "epair", "create"]).strip()
    bench.host.run(["ifconfig", a, "name", "kv00000000ffffa", "group", "kleenenet"])
    bench.host.run(["ifconfig", a[:-1] + "b", "name", "kv00000000ffffb", "group", "kleenenet"])
    s.reconcile()
    assert not {"kv00000000ffffa", "kv00000000ffffb"} & set(bench.host.state["interfaces"])
    assert reconcile_plan(bench) == []


def test_an_interface_moved_into_a_jail_comes_back_without_its_groups(bench):
    s = bench.svc()
    net_bridge(s)
    run_vnet(s)
    jail_end = bench.host.state["interfaces"]["kv000000000003b"]
    assert jail_end["groups"] == ["epair"] and jail_end["addrs"]  # in the jail: the cloner's group only
    bench.host.run(["jail", "-r", "kn000000000002"])  # the jail is gone behind kleenenet's back
    assert jail_end["vnet"] is None and jail_end["groups"] == ["epair"] and jail_end["addrs"] == []
    assert jail_end["description"] is None and jail_end["ether"]  # the MAC stays
    s.reconcile()  # the a end is still in group kleenenet: it goes, and the b end with it
    assert not {"kv000000000003a", "kv000000000003b"} & set(bench.host.state["interfaces"])
    assert reconcile_plan(bench) == []


@pytest.mark.parametrize("what", ["epair", "lo", "bridge"])
def test_every_interface_a_crash_leaves_is_recognisable(bench, what):
    """Killed at each command that creates or renames an interface: reconcile finds the
    leftover by group kleenenet, whatever name it has by then."""
    setup = {"epair": net_bridge, "lo": lambda s: None, "bridge": lambda s: None}[what]
    op = {"epair": run_vnet, "lo": net_loopback, "bridge": net_bridge}[what]
    probe = Bench(bench.store.state_dir.parent / "probe")
    setup(probe.svc())
    start = len(probe.host.log)
    op(probe.svc())
    steps = [k for k, line in enumerate(probe.host.log[start:], 1) if " create" in line or " name " in line]
    assert len(steps) >= 2
    for k in steps:
        b = Bench(bench.store.state_dir.parent / f"crash{k}")
        setup(b.svc())
        before = b.host.snapshot()
        b.host.crash_at = b.host.changes + k + 1  # the command after it never runs
        with pytest.raises(HostError):
            op(b.svc())
        b.host.revive()
        b.svc().reconcile()
        assert set(b.host.state["interfaces"]) == set(before["interfaces"]), f"after step {k}"


def test_a_failed_rename_of_a_new_network_interface_leaves_nothing(bench):
    """`ifconfig lo create name X` that fails at the rename leaves loN behind: the plan must
    know the clone's name to undo it."""
    bench.host.fail_on = "name kleene0"
    with pytest.raises(HostError, match="injected"):
        net_loopback(bench.svc())
    assert set(bench.host.state["interfaces"]) == {"em0", "lo0"}


def test_simulated_clone_left_behind_by_a_failing_rename(bench):
    bench.host.run(["ifconfig", "lo", "create", "name", "kleene0"])
    with pytest.raises(HostError, match="File exists"):
        bench.host.run(["ifconfig", "lo", "create", "name", "kleene0"])
    assert "lo2" in bench.host.state["interfaces"]  # what FreeBSD leaves: the clone, unnamed


# pf

def test_anchors_use_self_in_parentheses(bench):
    """`self` is expanded by pfctl when the anchor is loaded (ifa_lookup); `(self)` follows the
    host's addresses, ipnet jails' aliases included, as they come and go."""
    s = bench.svc()
    net_loopback(s)
    text = bench.host.state["anchors"]["kleenenet/testnet"]
    assert " to self" not in text and "to (self)" in text


@pytest.mark.parametrize("kwargs", [{}, {"nat6": False}])
def test_nothing_comes_in_from_outside_but_published_ports(bench, kwargs):
    """With a route from the upstream, a new inbound connection to a container (IPv4 behind NAT,
    or a routed subnet6) is dropped on the NAT interface, after the published ports' tagged
    passes; replies to the containers' own connections match their states first."""
    s = bench.svc()
    v6_bridge(s, **kwargs)
    text = bench.host.state["anchors"]["kleenenet/six"]
    block = "block drop in quick on em0 to <kn_000000000001>\n"
    assert text.index('anchor "ports/*"\n') < text.index(block) < text.index("pass quick from <kn_000000000001> to any")


def test_a_no_nat_network_is_routed_both_ways(bench):
    bench.svc().create_network("routed", "bridge", subnet="10.7.0.0/24", nat="")
    assert "block drop in" not in bench.host.state["anchors"]["kleenenet/routed"]


def test_an_internal_network_takes_nothing_in_from_outside(bench):
    s = bench.svc()
    v6_bridge(s, internal=True)
    text = bench.host.state["anchors"]["kleenenet/six"]
    block = "block drop in quick from ! (self) to <kn_000000000001>\n"
    assert text.index("pass quick from <kn_000000000001> to <kn_000000000001>") < text.index(block)


def test_ipnet_jails_ipv6_address_on_a_bridge_network_is_usable_at_once(bench):
    """An ipnet jail's address is an alias on the bridge: no DAD on kleenenet's own link (the
    bridge has no_dad), so its command can bind it at once; reconcile puts the flag back."""
    s = bench.svc()
    v6_bridge(s)
    assert "NO_DAD" in bench.host.state["interfaces"]["kleene0"]["nd6"]
    assert s.run(["nc", "-6", "-l", "fd00:7::2", "80"], name="web", driver="ipnet", networks=("six",)) == 0
    bench.host.state["interfaces"]["kleene0"]["nd6"].remove("NO_DAD")
    s.reconcile()
    assert "NO_DAD" in bench.host.state["interfaces"]["kleene0"]["nd6"]
    assert bench.plan(lambda s: s.reconcile()) == "\n"


def test_icc_off_bridge_lets_an_ipnet_jail_reach_itself(bench):
    """A /32 alias on a bridge is reached over lo0 (in.c: loopback route for a non-loopback
    interface), where `block from <t> to <t>` would drop a jail's traffic to itself."""
    s = bench.svc()
    net_bridge(s)  # icc off
    s.run(["true"], name="a", driver="ipnet", networks=("bnet",), detach=True)
    text = bench.host.state["anchors"]["kleenenet/bnet"]
    assert "pass quick from 10.5.0.2 to 10.5.0.2\n" in text
    net_loopback(s)
    plan = bench.plan(lambda s: s.connect("a", "testnet"))
    assert "pfctl -a kleenenet/bnet" not in plan  # the other network's anchor stays
    s.run(["true"], name="b", driver="ipnet", networks=("bnet",), detach=True)
    assert "pass quick from 10.5.0.3 to 10.5.0.3\n" in bench.host.state["anchors"]["kleenenet/bnet"]
    s.disconnect("b", "bnet")
    assert "10.5.0.3" not in bench.host.state["anchors"]["kleenenet/bnet"]


def v6_bridge(s, **kw):
    s.create_network("six", "bridge", subnet="10.7.0.0/24", subnet6="fd00:7::/64", **kw)


def test_internal_v6_bridge_passes_neighbour_discovery(bench):
    s = bench.svc()
    v6_bridge(s, internal=True)
    text = bench.host.state["anchors"]["kleenenet/six"]
    nd = ("pass quick inet6 proto icmp6 from <kn_000000000001> to ff02::/16 "
          "icmp6-type { neighbrsol, neighbradv, routersol }\n")
    assert nd in text
    assert text.index(nd) < text.index("block drop quick from <kn_000000000001> to any")


def test_vnet_jail_v6_address_skips_dad(bench):
    s = bench.svc()
    v6_bridge(s)
    plan = bench.plan(lambda s: s.run(["true"], name="v", driver="vnet", networks=("six",), detach=True))
    lines = plan.splitlines()
    no_dad = "ifconfig -j kn000000000002 kv000000000003b inet6 no_dad"
    assert no_dad in lines
    assert lines.index(no_dad) < next(k for k, line in enumerate(lines) if "inet6 fd00:7::2/64" in line)
    s.run(["true"], name="v", driver="vnet", networks=("six",), detach=True)
    ep = bench.store.endpoints()[0]
    assert "NO_DAD" in bench.host.state["interfaces"][ep.epair + "b"]["nd6"]


def test_v6_forwarding_keeps_router_advertisements_on_an_autoconfigured_host(bench):
    """ip6.forwarding=1 zeroes the router lifetime of every RA unless ip6.rfc6204w3=1
    (nd6_ra_input in sys/netinet6/nd6_rtr.c): a SLAAC host would lose its default route."""
    st = bench.host.state
    st["interfaces"]["em0"]["nd6"] = ["PERFORMNUD", "ACCEPT_RTADV", "AUTO_LINKLOCAL"]
    bench.host.fail_on = "pfctl -a kleenenet/six -f"
    with pytest.raises(HostError):
        v6_bridge(bench.svc())
    assert st["sysctl"]["net.inet6.ip6.rfc6204w3"] == "0"  # undone
    bench.host.fail_on = None
    v6_bridge(bench.svc())
    assert st["sysctl"]["net.inet6.ip6.forwarding"] == "1" and st["sysctl"]["net.inet6.ip6.rfc6204w3"] == "1"


def test_v6_forwarding_alone_on_a_host_without_autoconfiguration(bench):
    v6_bridge(bench.svc())
    assert bench.host.state["sysctl"]["net.inet6.ip6.rfc6204w3"] == "0"


# releases

def test_freebsd_13_configures_vnet_jails_with_jexec(bench):
    bench.host.release(1302000)
    s = bench.svc()
    net_bridge(s)
    plan = bench.plan(run_vnet)
    assert " -j " not in plan
    assert "jexec kn000000000002 ifconfig kv000000000003b inet 10.5.0.2/24 alias" in plan
    assert "jexec kn000000000002 route add -inet default 10.5.0.1" in plan
    run_vnet(s)
    ep = bench.store.endpoints()[0]
    jail = bench.host.state["jails"]["kn" + ep.container_id]
    assert jail["routes"] == {"-inet": ("10.5.0.1", ep.epair + "b")}


def test_preview_answers_the_release_query():
    assert FreeBSDPlatform(PreviewRunner()).host.osreldate() >= 1400000


def test_simulated_freebsd_15_refuses_a_member_with_an_address(bench):
    bench.host.release(1500000)
    assert bench.host.state["sysctl"]["net.link.bridge.member_ifaddrs"] == "1"  # (15.0-RELEASE's default)
    bench.host.state["sysctl"]["net.link.bridge.member_ifaddrs"] = "0"
    h = bench.host
    h.run(["ifconfig", "bridge", "create", "name", "br"])
    a = h.run(["ifconfig", "epair", "create"]).strip()
    h.run(["ifconfig", a, "up"])  # outside a bridge: it gets its fe80:: address
    assert h.state["interfaces"][a]["addrs"][0].startswith("fe80:")
    with pytest.raises(HostError, match="BRDGADD .*Invalid argument"):
        h.run(["ifconfig", "br", "addm", a])
    b = h.run(["ifconfig", "epair", "create"]).strip()
    h.run(["ifconfig", "br", "addm", b])
    h.run(["ifconfig", b, "up"])  # a member: no address
    assert h.state["interfaces"][b]["addrs"] == [] and h.state["interfaces"]["br"]["members"] == [b]


@pytest.mark.parametrize("release, member_ifaddrs", [(1302000, None), (1402000, None), (1500000, "1"),
                                                     (1500000, "0")])
def test_vnet_jails_on_every_release(bench, release, member_ifaddrs):
    bench.host.release(release)
    if member_ifaddrs:
        bench.host.state["sysctl"]["net.link.bridge.member_ifaddrs"] = member_ifaddrs
    s = bench.svc()
    net_bridge(s)
    run_vnet(s)
    assert bench.host.state["interfaces"]["kleene0"]["members"] == ["kv000000000003a"]
    s.remove("app", force=True)
    assert reconcile_plan(bench) == []
