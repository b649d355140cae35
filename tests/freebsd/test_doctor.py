"""What `kleenenet doctor` says about the host, case by case, on the simulated host."""

from __future__ import annotations

import pytest

from tests.freebsd.test_plans import net_bridge, net_loopback

FIX = 'add `pass quick on lo0` after `anchor "kleenenet/*"`'


def findings(bench):
    return bench.platform.doctor(bench.store.networks())


def about(bench, start: str):
    found = [c for c in findings(bench) if c.what.startswith(start)]
    assert len(found) == 1, [c.what for c in findings(bench)]
    return found[0]


def test_simulated_pfctl_marks_what_a_skip_covers(bench):
    """`set skip on lo` covers the group and every member (pfi_skip_if); `lo0` only lo0."""
    net_loopback(bench.svc())
    bench.host.state["skip"] = ["lo"]
    text = bench.host.run(["pfctl", "-s", "Interfaces", "-v"])
    assert {"lo (skip)", "lo0 (skip)", "kleene0 (skip)", "em0"} <= set(text.splitlines())
    bench.host.state["skip"] = ["lo0"]
    text = bench.host.run(["pfctl", "-s", "Interfaces", "-v"])
    assert {"lo", "lo0 (skip)", "kleene0"} <= set(text.splitlines())


def test_nothing_skipped(bench):
    net_loopback(bench.svc())
    assert about(bench, "pf filters lo0").ok is True


def test_skip_on_lo0_only(bench):
    net_loopback(bench.svc())
    bench.host.state["skip"] = ["lo0"]
    check = about(bench, "pf skips lo0")
    assert check.ok is False
    assert "ipnet jails to the host's own addresses" in check.what
    assert "ipnet jails on bridge networks" in check.what
    assert "between ipnet jails of loopback networks they hold" in check.what
    assert "`set skip on` for lo0" in check.advice and FIX in check.advice
    assert "the host's own connections to a published port at its own address are not redirected" in check.what


def test_skip_on_the_lo_group(bench):
    net_loopback(bench.svc())
    bench.host.state["skip"] = ["lo"]
    check = about(bench, "pf skips interface group lo")
    assert check.ok is False
    assert "kleene0 (testnet)" in check.what and "between ipnet jails of loopback networks" in check.what
    assert "`set skip on` for lo " in check.advice and FIX in check.advice
    assert not [c for c in findings(bench) if c.what.startswith("pf skips kleene0")]  # said once


def test_skip_on_a_network_interface(bench):
    s = bench.svc()
    net_loopback(s)
    net_bridge(s)
    bench.host.state["skip"] = ["kleene0"]
    check = about(bench, "pf skips kleene0")
    assert check.ok is False and "network 'testnet'" in check.what
    assert "`set skip on` for kleene0" in check.advice
    assert not [c for c in findings(bench) if c.what.startswith(("pf skips lo", "pf skips interface group"))]


def test_skip_without_networks_is_a_warning(bench):
    bench.host.state["skip"] = ["lo0"]
    assert about(bench, "pf skips lo0").ok is None


@pytest.mark.parametrize("release, ok, text", [
    (1302000, None, "FreeBSD 13.2 (kern.osreldate 1302000) has no `ifconfig -j`"),
    (1402000, True, "FreeBSD 14.2 (kern.osreldate 1402000): vnet jails are configured with `ifconfig -j`"),
    (1500000, True, "FreeBSD 15.0 (kern.osreldate 1500000)"),
])
def test_release(bench, release, ok, text):
    bench.host.release(release)
    check = about(bench, text)
    assert check.ok is ok
    if ok is None:
        assert "/sbin/ifconfig" in check.advice


def test_router_advertisements_with_forwarding(bench):
    st = bench.host.state
    st["sysctl"]["net.inet6.ip6.forwarding"] = "1"  # turned on by the user, not by kleenenet
    assert not [c for c in findings(bench) if "rfc6204w3" in c.what]  # no SLAAC interface
    st["interfaces"]["em0"]["nd6"] = ["PERFORMNUD", "ACCEPT_RTADV", "AUTO_LINKLOCAL"]
    check = about(bench, "net.inet6.ip6.forwarding=1 and net.inet6.ip6.rfc6204w3=0 while em0")
    assert check.ok is False and "loses its IPv6 default route" in check.what
    assert "net.inet6.ip6.rfc6204w3=1 in /etc/sysctl.conf" in check.advice
    st["sysctl"]["net.inet6.ip6.rfc6204w3"] = "1"
    assert about(bench, "net.inet6.ip6.rfc6204w3=1: em0").ok is True
