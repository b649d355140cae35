"""A network's MTU and IPv6 on the simulated FreeBSD host: the MTU on the bridge and on both ends of
every epair, taken from the egress interface unless given; IPv6 masqueraded only with nat6;
what the service asks the platform (interface_mtu, has_ipv6), also from real ifconfig output."""

from __future__ import annotations

import pytest

from kleenenet.errors import HostError, InvalidInput
from kleenenet.model import Network
from kleenenet.platform.freebsd import FreeBSDPlatform
from kleenenet.platform.freebsd.host import Runner
from tests.freebsd.test_parsers import sample
from tests.freebsd.test_plans import run_vnet


def mtus(bench) -> dict[str, int]:
    return {name: i["mtu"] for name, i in bench.host.state["interfaces"].items()}


def test_a_bridge_network_takes_the_egress_mtu(bench):
    bench.host.state["interfaces"]["em0"]["mtu"] = 9000
    s = bench.svc()
    net = s.create_network("bnet", "bridge", subnet="10.5.0.0/24", icc=False)
    assert net.mtu == 9000
    run_vnet(s)
    assert mtus(bench) == {"em0": 9000, "lo0": 16384, "kleene0": 9000, "kv000000000003a": 9000, "kv000000000003b": 9000}


def test_mtu_given_and_kept_by_reconcile(bench):
    s = bench.svc()
    s.create_network("bnet", "bridge", subnet="10.5.0.0/24", icc=False, mtu=1400)
    run_vnet(s)
    assert mtus(bench)["kleene0"] == mtus(bench)["kv000000000003a"] == mtus(bench)["kv000000000003b"] == 1400
    bench.host.run(["ifconfig", "kleene0", "mtu", "1500"])  # behind kleenenet's back
    assert mtus(bench)["kv000000000003a"] == 1500  # (a bridge passes its MTU on to its members)
    s.reconcile()
    assert mtus(bench)["kleene0"] == mtus(bench)["kv000000000003a"] == 1400
    assert bench.plan(lambda s: s.reconcile()) == "\n"


def test_a_loopback_network_keeps_its_own_mtu(bench):
    """Its jails' traffic is the host's own: it leaves by the egress interface, with that MTU."""
    bench.svc().create_network("testnet", subnet="10.2.3.0/24", mtu=1400)
    assert mtus(bench)["kleene0"] == 16384


def test_an_impossible_mtu_is_refused_and_changes_nothing(bench):
    before, log = bench.host.snapshot(), len(bench.host.log)
    with pytest.raises(InvalidInput, match="invalid MTU 1000: give 1280-65535"):
        bench.svc().create_network("six", "bridge", subnet6="fd00:6::/64", mtu=1000)
    assert bench.host.snapshot() == before and len(bench.host.log) == log


@pytest.mark.parametrize("nat6", [True, False])
def test_ipv6_is_masqueraded_only_with_nat6(bench, nat6):
    bench.svc().create_network("dual", "bridge", subnet="10.5.0.0/24", subnet6="fd00:5::/64", nat6=nat6)
    text = bench.host.state["anchors"]["kleenenet/dual"]
    assert "nat on em0 inet from <kn_000000000001>" in text
    assert ("nat on em0 inet6 from <kn_000000000001> to any tag kn_000000000001 -> (em0:0)" in text) is nat6
    assert ("IPv6 is routed: no NAT66" in text) is not nat6
    # routed or not, the subnet's own traffic passes out (from the table, not by the NAT tag)
    assert "pass quick from <kn_000000000001> to any" in text


def test_has_ipv6(bench):
    p, st = bench.platform, bench.host.state
    assert p.has_ipv6() is False  # em0 has IPv4 only; lo0's ::1 does not count
    bench.svc().create_network("six", "bridge", subnet6="fd00:6::/64")
    assert p.has_ipv6() is False  # kleenenet's own gateway does not count
    st["interfaces"]["em0"]["addrs"].append("fe80::1/64")
    assert p.has_ipv6() is False  # link-local only
    st["interfaces"]["em0"]["addrs"].append("2001:db8::2/64")
    assert p.has_ipv6() is True


class Answers(Runner):
    """A host that answers `ifconfig -a` with real output."""

    def __init__(self, ifconfig: str):
        self.ifconfig = ifconfig

    def run(self, argv, stdin=None):
        assert argv == ["ifconfig", "-a"], argv
        return self.ifconfig


def test_interface_mtu_from_real_ifconfig_output():
    p = FreeBSDPlatform(Answers(sample("ifconfig_bridge_host.txt")))
    assert p.interface_mtu("lo0") == 16384
    assert p.interface_mtu("bridge0") == 1500
    assert p.interface_mtu("nothere0") is None


def test_an_mtu_a_bridge_does_not_take_is_refused_and_changes_nothing(bench):
    """FreeBSD 15.0's bridges and epairs take an MTU of 72-65535."""
    before, log = bench.host.snapshot(), len(bench.host.log)
    with pytest.raises(InvalidInput, match="invalid MTU 70: give 72-65535 on FreeBSD"):
        bench.svc().create_network("tiny", "bridge", subnet="10.5.0.0/24", mtu=70)
    assert bench.host.snapshot() == before and len(bench.host.log) == log
    bench.svc().create_network("small", "bridge", subnet="10.5.0.0/24", mtu=72)
    assert mtus(bench)["kleene0"] == 72


def test_a_refused_mtu_does_not_leave_the_new_bridge_behind(bench):
    """ifconfig prints a clone's name only when every parameter of `create` was applied: the MTU,
    which the kernel may refuse, is set once the bridge has its name, so the rollback finds it.
    (The network is planned directly: `network create` refuses this MTU before any plan.)"""
    net = Network(id="000000000099", name="tiny", type="bridge", subnet="10.5.0.0/24", gateway="10.5.0.1",
                  interface="kleene0", nat="em0", mtu=70)
    before = bench.host.snapshot()
    with pytest.raises(HostError, match="SIOCSIFMTU"):
        bench.platform.plan_create_network(net, [], [net], []).execute()
    assert bench.host.snapshot() == before
