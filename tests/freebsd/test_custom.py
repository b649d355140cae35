"""Custom networks on FreeBSD, on the simulated host with its LANs (SimulatedFreeBSD.add_lan):
em1, a NIC on 192.168.1.0/24 and fd00:1::/64, and bridge0, a bridge on 192.168.2.0/24 holding
the NIC em2. ipnet jails join by a host alias on the NIC or the bridge, vnet jails by an epair
whose host end joins the bridge; the interfaces themselves are the host's: never created,
reconfigured or destroyed, their own addresses never touched (golden plans, rollback at every
step, refusals, reconcile)."""

from __future__ import annotations

import copy

import pytest

from kleenenet.errors import HostError, InvalidInput, KleenenetError
from kleenenet.platform.freebsd import parsers
from kleenenet.vocabulary import parse_publish
from tests.freebsd.bench import Bench
from tests.freebsd.test_plans import check_every_step_rolls_back, check_golden, net_bridge, net_loopback

FOREIGN = ("em0", "em1", "em2", "bridge0", "lo0")  # the host's own interfaces


def lan_bench(path) -> Bench:
    b = Bench(path)
    b.host.add_lan()
    return b


@pytest.fixture
def lan(tmp_path):
    return lan_bench(tmp_path / "state")


def net_nic(s):
    """A custom network on the NIC em1 (the classic jail setup: aliases on the LAN card)."""
    s.create_network("lan", "custom", subnet="192.168.1.0/24", subnet6="fd00:1::/64", interface="em1",
                     gateway="192.168.1.1", ip_range="192.168.1.128/25", ip_range6="fd00:1::100/120")


def net_lanbridge(s):
    """A custom network on bridge0, which holds the LAN's NIC em2."""
    s.create_network("blan", "custom", subnet="192.168.2.0/24", interface="bridge0", gateway="192.168.2.1",
                     ip_range="192.168.2.64/26")


def run_ipnet_nic(s):
    s.run(["nc", "-l", "80"], name="web", driver="ipnet", networks=("lan",), detach=True)


def run_ipnet_bridge(s):
    s.run(["nc", "-l", "80"], name="web", driver="ipnet", networks=("blan",), detach=True)


def run_vnet_bridge(s):
    s.run(["nc", "-l", "80"], name="app", driver="vnet", networks=("blan",), detach=True)


def nothing(s):
    pass


def foreign(host) -> dict:
    """What the host's own interfaces are (addresses, members, MTU, groups, state...)."""
    return copy.deepcopy({name: host.state["interfaces"][name] for name in FOREIGN})


OPERATIONS = {
    "network-create-custom-nic": (nothing, net_nic),
    "network-create-custom-bridge": (nothing, net_lanbridge),
    "network-rm-custom": (net_nic, lambda s: s.remove_network("lan")),
    "run-ipnet-custom-nic": (net_nic, run_ipnet_nic),
    "run-ipnet-custom-bridge": (net_lanbridge, run_ipnet_bridge),
    "run-vnet-custom-bridge": (net_lanbridge, run_vnet_bridge),
    "connect-ipnet-custom-running": (lambda s: (net_loopback(s), net_nic(s), s.run(
        ["sleep", "60"], name="web", driver="ipnet", networks=("testnet",), detach=True)),
        lambda s: s.connect("web", "lan")),
    "disconnect-ipnet-custom-running": (lambda s: (net_loopback(s), net_nic(s), s.run(
        ["sleep", "60"], name="web", driver="ipnet", networks=("testnet", "lan"), detach=True)),
        lambda s: s.disconnect("web", "lan")),
}
TEARDOWNS = {
    "stop-ipnet-custom-nic": (lambda s: (net_nic(s), run_ipnet_nic(s)), lambda s: s.stop("web")),
    "stop-vnet-custom-bridge": (lambda s: (net_lanbridge(s), run_vnet_bridge(s)), lambda s: s.stop("app")),
}


@pytest.mark.parametrize("name", {**OPERATIONS, **TEARDOWNS})
def test_plan_matches_golden_file(lan, name):
    setup, op = {**OPERATIONS, **TEARDOWNS}[name]
    setup(lan.svc())
    check_golden(name, lan.plan(op))


@pytest.mark.parametrize("name", OPERATIONS)
def test_failure_at_every_step_rolls_back(tmp_path, name):
    """The host is as it was before, the LAN interfaces included."""
    check_every_step_rolls_back(tmp_path, *OPERATIONS[name], new_bench=lan_bench)


def test_network_create_and_rm_leave_the_interfaces_as_they_were(lan):
    before = foreign(lan.host)
    s = lan.svc()
    net_nic(s)
    net_lanbridge(s)
    assert not [line for line in lan.host.log if line.startswith(("ifconfig", "sysctl"))]  # pf anchors only
    net = lan.store.network("lan")
    assert (net.nat, net.mtu, net.interface) == ("", 1500, "em1")
    s.remove_network("lan")
    s.remove_network("blan")
    s.reconcile()
    assert foreign(lan.host) == before
    assert lan.host.state["anchors"] == {} and lan.host.state["sysctl"]["net.inet.ip.forwarding"] == "0"


def test_jails_on_the_lan_and_back(lan):
    """ipnet jails get /32 and /128 aliases on the NIC (the interface's own address keeps the
    subnet's netmask), a vnet jail an epair in the bridge; after stop, rm, network rm and
    reconcile the interfaces carry exactly what they had."""
    before = foreign(lan.host)
    s = lan.svc()
    net_nic(s)
    net_lanbridge(s)
    run_ipnet_nic(s)
    run_vnet_bridge(s)
    ifs = lan.host.state["interfaces"]
    assert sorted(ifs["em1"]["addrs"]) == sorted([*before["em1"]["addrs"], "192.168.1.128/32", "fd00:1::100/128"])
    assert ifs["bridge0"]["members"] == ["em2", "kv000000000006a"] and ifs["bridge0"]["addrs"] == ["192.168.2.10/24"]
    app = lan.host.state["jails"]["kn000000000005"]
    assert app["routes"] == {"-inet": ("192.168.2.1", "kv000000000006b")}
    assert ifs["kv000000000006b"]["addrs"][0] == "192.168.2.64/24"
    assert "NO_DAD" not in ifs["kv000000000006b"]["nd6"]  # a LAN has other machines: DAD stays
    assert lan.host.state["sysctl"]["net.inet.ip.forwarding"] == "0"  # bridged, not routed
    s.stop("web")
    s.stop("app")
    assert foreign(lan.host) == before
    s.remove("web")
    s.remove("app")
    s.remove_network("lan")
    s.remove_network("blan")
    s.reconcile()
    assert foreign(lan.host) == before and set(lan.host.state["interfaces"]) == set(FOREIGN)


@pytest.mark.parametrize("case", ["vnet on a NIC", "no such interface", "lo0", "a loopback clone",
                                  "kleenenet's own", "the NIC's own address", "pasta", "slirp4netns"])
def test_refusals_change_nothing(lan, case):
    s = lan.svc()
    net_nic(s)
    lan.host.run(["ifconfig", "lo", "create"])  # lo1: another tool's loopback clone
    net_bridge(s)  # kleene0, kleenenet's own bridge
    before, networks, containers = lan.host.snapshot(), lan.store.networks(), lan.store.containers()
    if case == "vnet on a NIC":
        with pytest.raises(InvalidInput, match=r"^container 'app' is a vnet jail and network 'lan' is on em1, a NIC "
                                               r".*create a bridge holding it.* with -i, or use -l ipnet$"):
            s.run(["true"], name="app", driver="vnet", networks=("lan",), detach=True)
    elif case == "the NIC's own address":
        with pytest.raises(KleenenetError, match="192.168.1.10"):
            s.run(["true"], name="web", driver="ipnet", networks=(("lan", "192.168.1.10", ""),), detach=True)
    elif case in ("pasta", "slirp4netns"):
        with pytest.raises(InvalidInput, match=f"^driver '{case}' needs Linux: on FreeBSD use ipnet, vnet, host or "
                                               "disabled$"):
            s.run(["true"], name="web", driver=case, detach=True)
    else:
        interface, message = {"no such interface": ("em9", "no such interface on this host"),
                              "lo0": ("lo0", "a loopback interface is on no LAN"),
                              "a loopback clone": ("lo1", "a loopback interface is on no LAN"),
                              "kleenenet's own": ("kleene0", "it is kleenenet's own")}[case]
        with pytest.raises(InvalidInput, match=f"^invalid interface '{interface}' for custom network 'other': {message}"):
            s.create_network("other", "custom", subnet="192.168.7.0/24", interface=interface, force=True)
    assert lan.host.snapshot() == before
    assert lan.store.networks() == networks and lan.store.containers() == containers


def test_the_platform_refuses_an_address_the_interface_has(lan):
    """Even if the service handed it out: an alias of the NIC's own address would replace it
    (in_aifaddr_ioctl), and stopping the jail would take it off the host."""
    s = lan.svc()
    net_nic(s)
    s.create_container(["true"], name="web", driver="ipnet")
    net, c = lan.store.network("lan"), lan.store.container("web")
    ep = lan.store.allocate_endpoint(net, c.id, "192.168.1.200", "")
    lan.host.run(["ifconfig", "em1", "inet", "192.168.1.200/24", "alias"])  # the operator's, meanwhile
    before = lan.host.snapshot()
    with pytest.raises(InvalidInput, match=r"^invalid address 192.168.1.200 for container 'web': em1 has it as its own$"):
        s.start("web")
    assert lan.host.snapshot() == before and ep.ip_address == "192.168.1.200"


def test_reconcile_removes_only_kleenenets_leftover_aliases(lan):
    """A run killed after its alias was added leaves the alias and the jail listing it; the
    operator's own /32 alias in the same subnet, and the NIC's addresses, stay."""
    s = lan.svc()
    net_nic(s)
    before = foreign(lan.host)
    lan.host.run(["ifconfig", "em1", "inet", "192.168.1.77/32", "alias"])  # the operator's own
    mine = foreign(lan.host)
    steps = [line for line in lan.plan(run_ipnet_nic).splitlines()
             if not line.startswith("#") and "no longer tentative" not in line]  # (a wait changes nothing)
    assert steps[-1].startswith("pfctl -a kleenenet/lan -t")
    lan.host.crash_at = lan.host.changes + len(steps)  # killed after the aliases
    with pytest.raises(HostError):
        run_ipnet_nic(lan.svc())
    lan.host.revive()
    assert {"192.168.1.128/32", "fd00:1::100/128"} <= set(lan.host.state["interfaces"]["em1"]["addrs"])
    assert "kleenenet" not in str(lan.store.containers())
    text = lan.plan(lambda s: s.reconcile())
    assert "ifconfig em1 inet 192.168.1.128 -alias  # leftover" in text
    assert "ifconfig em1 inet6 fd00:1::100 -alias  # leftover" in text
    assert "192.168.1.77" not in text and "192.168.1.10" not in text
    lan.svc().reconcile()
    assert foreign(lan.host) == mine and lan.host.state["jails"] == {}
    assert lan.plan(lambda s: s.reconcile()) == "\n"
    assert mine["em1"]["addrs"] == sorted({*before["em1"]["addrs"], "192.168.1.77/32"}, key=lambda a: (":" in a, a))


def test_reconcile_leaves_the_interface_as_the_operator_set_it(lan):
    """Down, another MTU, an address more: the custom network's interface is the host's."""
    s = lan.svc()
    net_nic(s)
    net_lanbridge(s)
    run_ipnet_nic(s)
    run_vnet_bridge(s)
    ifs = lan.host.state["interfaces"]
    ifs["em1"]["up"] = False
    ifs["bridge0"]["mtu"] = 9000
    lan.host.run(["ifconfig", "bridge0", "inet", "192.168.2.99/32", "alias"])
    assert lan.plan(lambda s: s.reconcile()) == "\n"


def test_reconcile_puts_back_what_kleenenet_lost(lan):
    """A jail's alias and its epair's bridge membership, taken away behind kleenenet's back."""
    s = lan.svc()
    net_nic(s)
    net_lanbridge(s)
    run_ipnet_nic(s)
    run_vnet_bridge(s)
    wired = foreign(lan.host)
    lan.host.run(["ifconfig", "em1", "inet", "192.168.1.128", "-alias"])
    lan.host.run(["ifconfig", "bridge0", "deletem", "kv000000000006a"])
    s.reconcile()
    assert foreign(lan.host) == wired


def test_reconcile_waits_for_an_interface_that_is_gone(lan):
    """The LAN bridge destroyed behind kleenenet's back (and its NIC's aliases with a card
    removed): reconcile creates nothing, and wires the jails again once the host has them back."""
    s = lan.svc()
    net_nic(s)
    net_lanbridge(s)
    run_ipnet_nic(s)
    run_vnet_bridge(s)
    wired = foreign(lan.host)
    ifs = lan.host.state["interfaces"]
    gone = {name: ifs.pop(name) for name in ("em1", "bridge0")}
    assert lan.plan(lambda s: s.reconcile()) == "\n"
    s.reconcile()
    own = [a for a in wired["em1"]["addrs"] if a not in ("192.168.1.128/32", "fd00:1::100/128")]
    ifs["em1"] = {**gone["em1"], "addrs": own}
    ifs["bridge0"] = {**gone["bridge0"], "members": ["em2"]}
    s.reconcile()
    assert foreign(lan.host) == wired


def test_a_bridge_networks_anchor_leaves_the_lan_reachable(lan):
    """Other kleenenet networks' containers are blocked, a LAN is not kleenenet's to block."""
    s = lan.svc()
    net_nic(s)
    net_bridge(s)
    text = lan.host.state["anchors"]["kleenenet/bnet"]
    assert "192.168.1.0/24" not in text
    assert "block drop quick from <kn_000000000001> to { 10.5.0.0/24 }" in lan.host.state["anchors"]["kleenenet/lan"]


def test_interface_addresses_from_ifconfig():
    """ifconfig's lines for a NIC with aliases (netmask 0xffffffff) and a link-local address."""
    text = ("em1: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500\n"
            "\toptions=4e524bb<RXCSUM,TXCSUM,VLAN_MTU,VLAN_HWTAGGING,JUMBO_MTU,VLAN_HWCSUM,LRO>\n"
            "\tether 58:9c:fc:00:00:01\n"
            "\tinet 192.168.1.10 netmask 0xffffff00 broadcast 192.168.1.255\n"
            "\tinet 192.168.1.128 netmask 0xffffffff broadcast 192.168.1.128\n"
            "\tinet6 fe80::5a9c:fcff:fe00:1%em1 prefixlen 64 scopeid 0x2\n"
            "\tinet6 fd00:1::10 prefixlen 64\n"
            "\tinet6 fd00:1::100 prefixlen 128\n"
            "\tmedia: Ethernet autoselect (1000baseT <full-duplex>)\n"
            "\tstatus: active\n"
            "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>\n")
    iface = parsers.parse_ifconfig(text)["em1"]
    assert [str(a) for a in parsers.addresses(iface)] == ["192.168.1.10/24", "192.168.1.128/32", "fd00:1::10/64",
                                                          "fd00:1::100/128"]


def test_interface_addresses_of_the_host(lan):
    assert [str(a) for a in lan.platform.interface_addresses("bridge0")] == ["192.168.2.10/24"]
    assert lan.platform.interface_addresses("em2") == [] and lan.platform.interface_addresses("em9") == []


# the simulated host: what FreeBSD does with the LAN's interfaces

def test_simulated_alias_of_an_existing_address_replaces_it(lan):
    """in_aifaddr_ioctl() deletes an address the interface has and adds it again: no EEXIST."""
    lan.host.run(["ifconfig", "em1", "inet", "192.168.1.10/32", "alias"])
    assert "192.168.1.10/32" in lan.host.state["interfaces"]["em1"]["addrs"]
    assert "192.168.1.10/24" not in lan.host.state["interfaces"]["em1"]["addrs"]
    with pytest.raises(HostError, match="Invalid argument"):  # in6_validate_ifra: no new prefix length
        lan.host.run(["ifconfig", "em1", "inet6", "fd00:1::10/128", "alias"])
    with pytest.raises(HostError, match="Can't assign requested address"):  # EADDRNOTAVAIL
        lan.host.run(["ifconfig", "em1", "inet", "192.168.1.99", "-alias"])


def test_simulated_nic_refuses_what_a_nic_refuses(lan):
    with pytest.raises(HostError, match="SIOCIFDESTROY: Invalid argument"):
        lan.host.run(["ifconfig", "em1", "destroy"])
    with pytest.raises(HostError, match="BRDGADD em2: Invalid argument"):
        lan.host.run(["ifconfig", "em1", "addm", "em2"])
    with pytest.raises(HostError, match="BRDGDEL em1: No such file or directory"):
        lan.host.run(["ifconfig", "bridge0", "deletem", "em1"])
    assert lan.host.run(["ifconfig", "bridge", "create"]) == "bridge1\n"  # bridge0 holds unit 0


def test_published_ports_cannot_lead_to_a_vnet_jail_on_the_lan(lan):
    """A vnet jail on a custom network answers a client directly or by the LAN's router, never
    through the host: an rdr toward it would never be undone. Refused, nothing changes."""
    s = lan.svc()
    net_lanbridge(s)
    before, log = lan.host.snapshot(), len(lan.host.log)
    for published in ("8080:80", "em0:8080:80"):
        with pytest.raises(InvalidInput, match="published ports cannot lead to container 'app' on the custom "
                                               "network 'blan': it is on the LAN, connect to its address directly"):
            s.run(["nc", "-l", "80"], name="app", driver="vnet", networks=("blan",), detach=True,
                  public_ports=[parse_publish(published)])
        assert lan.host.snapshot() == before and len(lan.host.log) == log and s.store.containers() == []


def test_published_ports_of_a_vnet_jail_lead_to_its_bridge_network_not_the_lan(lan):
    s = lan.svc()
    net_lanbridge(s)  # "blan" comes before "bnet" by name
    net_bridge(s)
    s.run(["nc", "-l", "80"], name="app", driver="vnet", networks=("blan", "bnet"), detach=True,
          public_ports=[parse_publish("8080:80")])
    cid = s.store.container("app").id
    anchors = lan.host.state["anchors"]
    assert f"kleenenet/blan/ports/{cid}" not in anchors
    assert "-> 10.5.0.2 port 80" in anchors[f"kleenenet/bnet/ports/{cid}"]


def test_published_ports_of_an_ipnet_jail_on_the_lan_go_through_the_host(lan):
    """An ipnet jail's address is the host's: its answers leave by the host's stack."""
    s = lan.svc()
    net_nic(s)
    s.run(["nc", "-l", "80"], name="web", driver="ipnet", networks=("lan",), detach=True,
          public_ports=[parse_publish("em0:8080:80")])
    cid = s.store.container("web").id
    [ep] = s.store.endpoints(container_id=cid)
    assert f"-> {ep.ip_address} port 80" in lan.host.state["anchors"][f"kleenenet/lan/ports/{cid}"]


def test_an_ipnet_jails_ipv6_address_on_the_lan_is_past_dad_when_its_command_starts(lan):
    """On the LAN duplicate address detection must run: the command starts once the alias is no
    longer tentative (nc -l on a tentative address: "Can't assign requested address")."""
    s = lan.svc()
    net_nic(s)
    assert s.run(["nc", "-6", "-l", "fd00:1::100", "80"], name="web", driver="ipnet", networks=("lan",)) == 0


def test_an_address_whose_dad_does_not_end_fails_the_run_and_changes_nothing(lan, monkeypatch):
    monkeypatch.setattr("tests.freebsd.simhost.DAD_SECONDS", float("inf"))
    monkeypatch.setattr("kleenenet.platform.freebsd.DAD_TIMEOUT", 0.2)
    s = lan.svc()
    net_nic(s)
    before = lan.host.snapshot()
    with pytest.raises(HostError, match="address fd00:1::100 on em1 is still tentative after 0.2 s"):
        run_ipnet_nic(s)
    assert lan.host.snapshot() == before and s.store.containers() == []
