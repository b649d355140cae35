"""A real reboot of the FreeBSD host, then `kleenenet reconcile` (what rc.d/kleenenet runs at boot).

Only where the host is a VM that the suite may reboot: KLEENENET_FREEBSD_REMOTE and
KLEENENET_FREEBSD_REBOOTABLE=1. The reboot takes every jail, every interface kleenenet made and
every pf anchor; kleenenet's state stays (it is on this side). The host comes back with pf
enabled and no rules, as a machine whose pf.conf does not (yet) include kleenenet's fragment.
"""

from __future__ import annotations

import os

import pytest

from kleenenet.errors import HostError
from tests.jails.host import (
    REMOTE,
    SERVER_PORT,
    UPLINK_ADDR,
    WAN_HOST_IF,
    end,
    eventually,
    kleenenet_anchors,
    kleenenet_interfaces,
    prepare_remote,
    remote_runner,
    sh,
)

pytestmark = pytest.mark.skipif(not (REMOTE and os.environ.get("KLEENENET_FREEBSD_REBOOTABLE") == "1"),
                                reason="needs a FreeBSD VM that may be rebooted: KLEENENET_FREEBSD_REMOTE and "
                                       "KLEENENET_FREEBSD_REBOOTABLE=1")


def boot_time() -> str | None:
    try:
        status, out, _ = remote_runner().exchange("sysctl -n kern.boottime", timeout=5)
    except HostError:
        return None  # rebooting
    return out.decode() if status == 0 else None


def reboot() -> None:
    before = boot_time()
    assert before
    remote_runner().exchange("(sleep 1; reboot) </dev/null >/dev/null 2>&1 &")
    eventually(lambda: boot_time() not in (None, before), "the host to come back", timeout=300, interval=2)


def test_reconcile_after_a_real_reboot(kn, wan):
    kn("network", "create", "-t", "loopback", "--subnet", "10.77.1.0/24", "--nat-if", WAN_HOST_IF, "lnet")
    kn("network", "create", "-t", "bridge", "--subnet", "10.77.2.0/24", "--subnet6", "fd77:2::/64",
       "--nat-if", WAN_HOST_IF, "bnet")
    kn.serve("ls", "lnet", "ipnet", SERVER_PORT, 4, "-p", "9100:5000")
    kn.serve("bs", "bnet", "vnet", SERVER_PORT, 4, "-p", "9101:5000")
    interfaces = sorted(n for n in kleenenet_interfaces() if n.startswith("kleene"))
    reboot()
    end(wan.server)  # its relay here: the server went with the reboot
    wan.server = None
    assert kleenenet_interfaces() == [] and kleenenet_anchors() == []

    # pf without kleenenet's lines: reconcile still rebuilds everything it owns
    sh("pfctl", "-e", check=False)
    sh("pfctl", "-f", "-", stdin="pass all\n")
    kn("reconcile")
    assert sorted(n for n in kleenenet_interfaces() if n.startswith("kleene")) == interfaces
    assert sorted((c["name"], c["running"]) for c in kn.json("ps", "-a", "--json")) == [("bs", False), ("ls", False)]
    anchors = kleenenet_anchors()
    assert {"kleenenet/lnet", "kleenenet/bnet"} <= set(anchors), anchors
    for anchor in ("kleenenet/lnet", "kleenenet/bnet"):  # the stopped containers are out of the tables
        tables = sh("pfctl", "-a", anchor, "-s", "Tables").stdout.split()
        assert [sh("pfctl", "-a", anchor, "-t", t, "-T", "show").stdout.strip() for t in tables] == [""]
    settled = kn.snapshot()
    kn("reconcile")
    assert kn.snapshot() == settled  # nothing more to do
    assert "kleenenet/*" in kn("doctor", check=False).stdout  # it names the lines pf.conf lacks

    # pf.conf with the fragment, as at the next boot: the networks work again
    prepare_remote()
    kn("reconcile")
    assert kn.snapshot() == settled
    wan.start()
    for name, network, driver, port in (("ls2", "lnet", "ipnet", 9102), ("bs2", "bnet", "vnet", 9103)):
        server = kn.serve(name, network, driver, SERVER_PORT, 4, "-p", f"{port}:{SERVER_PORT}")
        assert kn.exchange(network, server, SERVER_PORT, driver) == "pong"
        assert wan.peer_seen_from(kn, network, driver) == UPLINK_ADDR
        assert wan.exchange(UPLINK_ADDR, port) == "pong"
