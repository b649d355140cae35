"""Published ports on the simulated FreeBSD host: each container's ports are an anchor of their own
below its network's (kleenenet/<network>/ports/<container id>), loaded when it is wired and flushed
when it leaves, with its pf states; a host port that something of the host listens on is refused.
The exact rules are in the golden files (test_plans.py: run-*-published, disconnect-*published,
stop-ipnet-published); the real packets are in tests/jails."""

from __future__ import annotations

import pytest

from kleenenet.errors import Conflict, InvalidInput
from kleenenet.platform.freebsd import pf
from kleenenet.vocabulary import parse_publish
from tests.freebsd.test_plans import (
    PUBLISHED,
    net_bridge,
    net_loopback,
    run_ipnet_published,
    run_vnet_published,
)

WEB = "kleenenet/testnet/ports/000000000002"  # run_ipnet_published after net_loopback


def anchors(bench) -> dict[str, str]:
    return bench.host.state["anchors"]


def test_an_ipnet_jail_publishes_on_the_nat_interface_and_on_lo0(bench):
    s = bench.svc()
    net_loopback(s)
    run_ipnet_published(s)
    text = anchors(bench)[WEB]
    # IPv4 and IPv6; the UDP range maps 9000:9001 onto 8000:8001 (pf.conf(5): port 8000:*)
    assert "rdr on em0 inet proto tcp from any to (em0) port 8080 tag kp_000000000001 -> 10.2.3.1 port 80\n" in text
    assert "rdr on em0 inet6 proto udp from any to (em0) port 9000:9001 tag kp_000000000001 -> fd00:2:3::1 port 8000:*\n" in text
    # the host's own connections to its em0 address arrive on lo0
    assert "rdr on lo0 inet proto tcp from any to (em0) port 8080 tag kp_000000000001 -> 10.2.3.1 port 80\n" in text
    # a pass for exactly what was redirected, never `rdr pass`
    assert "rdr pass" not in text
    assert f'pass quick inet proto udp from any to 10.2.3.1 port 8000:8001 tagged kp_000000000001 label "{pf.label(text)}"' in text
    assert 'rdr-anchor "ports/*"' in anchors(bench)["kleenenet/testnet"]
    assert 'anchor "ports/*"' in anchors(bench)["kleenenet/testnet"]
    s.remove("web", force=True)
    assert set(anchors(bench)) == {"kleenenet/testnet"}
    listed = bench.host.run(["pfctl", "-v", "-a", "kleenenet", "-s", "Anchors"]).split()
    assert listed == ["kleenenet/testnet", "kleenenet/testnet/ports"]  # (the called, empty one stays)


def test_a_vnet_jail_publishes_on_the_given_interface_only(bench):
    s = bench.svc()
    net_bridge(s)
    run_vnet_published(s)
    text = anchors(bench)["kleenenet/bnet/ports/000000000002"]
    assert "rdr on em0 inet proto tcp from any to (em0) port 8443 tag kp_000000000001 -> 10.5.0.2 port 443\n" in text
    # its answers to the host would not cross lo0 back (they arrive on the bridge): no lo0 rule
    assert "lo0" not in text


def test_no_ports_on_an_internal_network(bench):
    """Ports without an interface lead nowhere from an internal network: refused, nothing changes."""
    s = bench.svc()
    s.create_network("inner", "bridge", subnet="10.7.0.0/24", internal=True)
    before = anchors(bench)
    with pytest.raises(InvalidInput, match="leads nowhere: none of its networks reaches out .--internal.; "
                                           "name the interface it arrives on, e.g. -p em0:8080"):
        s.run(["true"], name="hidden", driver="vnet", networks=("inner",), detach=True, public_ports=PUBLISHED)
    assert anchors(bench) == before and "ports" not in before["kleenenet/inner"]
    assert s.store.containers() == []


def states(bench, c_label: str) -> list[dict]:
    """States pf could hold around container web (10.2.3.1, fd00:2:3::1) and one of another."""
    return [
        {"src": "10.2.3.1", "dst": "198.51.100.7", "labels": []},  # its own connection out
        {"src": "fd00:2:3::1", "dst": "2001:db8::7", "labels": []},
        {"src": "192.0.2.2", "dst": "10.2.3.1", "labels": []},  # the host's, to it
        # a client of its published port, as pf has it on the wire (before rdr)
        {"src": "198.51.100.9", "dst": "192.0.2.2", "labels": [c_label]},
        {"src": "198.51.100.9", "dst": "10.2.3.9", "labels": []},  # another container's: stays
    ]


@pytest.mark.parametrize("how", ["disconnect", "stop"])
def test_leaving_kills_the_containers_states(bench, how):
    s = bench.svc()
    net_loopback(s)
    run_ipnet_published(s)
    bench.host.state["pf_states"] = states(bench, pf.label(anchors(bench)[WEB]))
    if how == "disconnect":
        s.disconnect("web", "testnet")
    else:
        s.stop("web")
    assert bench.host.state["pf_states"] == [{"src": "198.51.100.9", "dst": "10.2.3.9", "labels": []}]
    assert WEB not in anchors(bench)


def test_an_ipnet_jails_ports_stay_on_its_first_address_and_move_on_when_it_goes(bench):
    """A server in an ipnet jail that had one address when it bound to the wildcard listens on
    that address only (prison_local_ip4): a `network connect` must not take its ports elsewhere,
    whatever the new network is called."""
    s = bench.svc()
    net_loopback(s)
    net_bridge(s)
    run_ipnet_published(s)
    cid = bench.store.container("web").id
    web, web_bnet = f"kleenenet/testnet/ports/{cid}", f"kleenenet/bnet/ports/{cid}"
    assert set(anchors(bench)) == {"kleenenet/testnet", "kleenenet/bnet", web}
    before = anchors(bench)[web]
    s.connect("web", "bnet")  # bnet comes first by name, but the jail has had 10.2.3.1 longer
    assert anchors(bench)[web] == before and web_bnet not in anchors(bench)
    changes = len(bench.host.log)
    bench.svc().reconcile()
    assert bench.host.log[changes:] == []  # reconcile agrees: nothing to change
    s.disconnect("web", "testnet")  # its first address gone: the ports follow the one it has
    assert "-> 10.5.0.2 port 80" in anchors(bench)[web_bnet]
    assert web not in anchors(bench)


@pytest.mark.parametrize("listener, taken", [
    (["tcp", "*", 8080], True),  # every address
    (["tcp", "192.0.2.2", 8080], True),  # em0's, where the rdr takes connections
    (["tcp", "127.0.0.1", 8080], False),  # lo0: the rdr does not take 127.0.0.1
    (["tcp", "10.2.3.77", 8080], False),  # an ipnet jail's address on kleenenet's interface
    (["udp", "*", 8080], False),  # another protocol
    (["tcp", "*", 8081], False),  # another port
])
def test_a_port_the_host_listens_on_is_refused(bench, listener, taken):
    s = bench.svc()
    net_loopback(s)
    bench.host.state["interfaces"]["kleene0"]["addrs"].append("10.2.3.77/32")
    bench.host.state["listening"] = [listener]
    before, log = bench.host.snapshot(), len(bench.host.log)
    if taken:
        with pytest.raises(Conflict, match="port tcp/8080 is already in use on the host"):
            run_ipnet_published(s)
        assert bench.host.snapshot() == before and len(bench.host.log) == log
        assert bench.store.containers() == []
    else:
        run_ipnet_published(s)
        assert WEB in anchors(bench)


def test_a_port_published_by_a_running_container_is_refused(bench):
    s = bench.svc()
    net_loopback(s)
    run_ipnet_published(s)
    before, log = bench.host.snapshot(), len(bench.host.log)
    with pytest.raises(Conflict, match="port udp/9001 is already published by container 'web'"):
        s.run(["true"], name="other", driver="ipnet", networks=("testnet",), detach=True,
              public_ports=[parse_publish("9001:53/udp")])
    assert bench.host.snapshot() == before and len(bench.host.log) == log


def test_reconcile_restores_ports_and_removes_leftover_ones(bench):
    s = bench.svc()
    net_loopback(s)
    run_ipnet_published(s)
    st = bench.host.state
    loaded = anchors(bench)[WEB]
    del st["anchors"][WEB]  # flushed behind kleenenet's back
    st["anchors"]["kleenenet/testnet/ports/0000000000ff"] = ('rdr on em0 inet proto tcp from any to (em0) port 81 '
                                                           'tag kp_000000000001 -> 10.2.3.9 port 81\n'
                                                           'pass quick inet proto tcp from any to 10.2.3.9 port 81 '
                                                           'tagged kp_000000000001 label "kleenenet:00ff"\n')
    st["pf_states"] = [{"src": "198.51.100.9", "dst": "192.0.2.2", "labels": ["kleenenet:00ff"]}]
    s.reconcile()
    assert anchors(bench)[WEB] == loaded
    assert "kleenenet/testnet/ports/0000000000ff" not in anchors(bench) and st["pf_states"] == []
    assert bench.plan(lambda s: s.reconcile()) == "\n"


def listed_anchors(bench) -> list[str]:
    return bench.host.run(["pfctl", "-v", "-a", "kleenenet", "-s", "Anchors"]).split()


@pytest.mark.parametrize("driver", ["ipnet", "vnet"])
def test_removing_a_published_container_flushes_its_ports_without_tables(bench, driver):
    """A ports anchor has no table: `-F all` would fail there after clearing it (FreeBSD 15.0),
    and abort the rest of the detach; its rules and translation rules are flushed instead."""
    s = bench.svc()
    net_bridge(s)
    s.run(["nc", "-l", "80"], name="web", driver=driver, networks=("bnet",), detach=True, public_ports=PUBLISHED)
    s.remove("web", force=True)
    assert not [n for n, i in bench.host.state["interfaces"].items() if i["kind"] == "epair"]
    assert set(anchors(bench)) == {"kleenenet/bnet"} and s.store.containers() == []
    assert not any("-F all" in line for line in bench.host.log if "/ports/" in line)


def test_reconcile_flushes_a_leftover_ports_anchor(bench):
    s = bench.svc()
    net_loopback(s)
    left = "kleenenet/testnet/ports/0000000000ff"
    bench.host.run(["pfctl", "-a", left, "-f", "-"],
                   "pass quick inet proto tcp from any to 10.2.3.9 port 81 tagged kp_000000000001\n")
    s.reconcile()
    assert left not in anchors(bench) and left not in listed_anchors(bench)
    assert bench.plan(lambda s: s.reconcile()) == "\n"


def test_reconcile_after_a_network_rm_has_nothing_to_do(bench):
    """pf keeps listing a flushed network anchor that called `ports/*` (FreeBSD 15.0): it holds
    nothing, so it is no leftover to flush again and again."""
    s = bench.svc()
    net_loopback(s)
    net_bridge(s)
    s.remove_network("bnet")
    assert "kleenenet/bnet" in listed_anchors(bench) and "kleenenet/bnet" not in anchors(bench)
    assert bench.plan(lambda s: s.reconcile()) == "\n"
    run_ipnet_published(s)  # (the listed, empty anchor of another network is left alone)
    s.remove("web", force=True)
    assert bench.plan(lambda s: s.reconcile()) == "\n"


@pytest.mark.parametrize("release, killed", [(1500000, True), (1402000, False)])
def test_leaving_kills_its_nated_states_from_freebsd_15(bench, release, killed):
    """A connection out through NAT has the host's address on the wire: FreeBSD 15.0 kills it by
    its address before NAT (pfctl -k nat -k ADDR); before 15.0 it lives until it expires."""
    bench.host.release(release)
    s = bench.svc()
    net_loopback(s)
    run_ipnet_published(s)
    nated = {"src": "192.0.2.2", "dst": "198.51.100.7", "nat_src": "10.2.3.1", "labels": []}
    other = {"src": "192.0.2.2", "dst": "198.51.100.7", "nat_src": "10.2.3.9", "labels": []}
    bench.host.state["pf_states"] = [nated, other]
    s.disconnect("web", "testnet")
    assert bench.host.state["pf_states"] == ([other] if killed else [nated, other])
