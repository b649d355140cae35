"""Custom networks on real FreeBSD (run by run-tests.sh with tests/jails, whose helpers it uses).

A fake LAN without touching the machine's own: a vnet jail `kn-test-lan` is the LAN's other
machine, on two links whose host ends stand for the host's LAN interfaces —
  tstlan0a    a "NIC": one end of an epair, 198.51.100.2/24 (the jail: 198.51.100.1)
  tstlanbr0   a bridge holding tstlan1a (an epair's end, as a NIC would be), 198.51.101.2/24 on
              the bridge (the jail: 198.51.101.1)
The jail logs the peer of every TCP connection to port 8000: a container reaching it with an
address from --ip-range proves it is on the LAN with its own address, not NATed. After
`network rm` both interfaces carry exactly what they had. Names avoid kleenenet's prefixes.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess

import pytest

from tests.jails.conftest import FREEBSD_HOST
from tests.jails.host import (end, eventually, host_can_connect, interface_summary, neighbour, sh, spawn,
                              tcp_listeners)

pytestmark = [pytest.mark.freebsd,
              pytest.mark.skipif(not FREEBSD_HOST, reason="needs root on FreeBSD, or KLEENENET_FREEBSD_REMOTE: "
                                                          "see vagrant/README.md")]

LAN_JAIL = "kn-test-lan"
NIC, NIC_PEER = "tstlan0a", "tstlan0b"
BRIDGE, MEMBER, MEMBER_PEER = "tstlanbr0", "tstlan1a", "tstlan1b"
NIC_SUBNET, NIC_HOST, NIC_LAN = "198.51.100.0/24", "198.51.100.2", "198.51.100.1"
BR_SUBNET, BR_HOST, BR_LAN = "198.51.101.0/24", "198.51.101.2", "198.51.101.1"
LAN_PORT = 8000


class Lan:
    """The fake LAN: its jail, the NIC and the bridge (see the module's docstring)."""

    def __init__(self, log):
        self.log = log
        self.server: subprocess.Popen | None = None

    def start(self) -> None:
        self.remove()
        for host_end, jail_end in ((NIC, NIC_PEER), (MEMBER, MEMBER_PEER)):
            a = sh("ifconfig", "epair", "create").stdout.strip()
            sh("ifconfig", a, "name", host_end)
            sh("ifconfig", a[:-1] + "b", "name", jail_end)
        bridge = sh("ifconfig", "bridge", "create").stdout.strip()
        sh("ifconfig", bridge, "name", BRIDGE)
        sh("ifconfig", BRIDGE, "addm", MEMBER, "up")
        sh("ifconfig", MEMBER, "up")
        sh("ifconfig", BRIDGE, "inet", f"{BR_HOST}/24")
        sh("ifconfig", NIC, "inet", f"{NIC_HOST}/24", "up")
        sh("jail", "-c", f"name={LAN_JAIL}", "path=/", f"host.hostname={LAN_JAIL}", "vnet=new",
           f"vnet.interface={NIC_PEER}", f"vnet.interface={MEMBER_PEER}", "persist")
        sh("jexec", LAN_JAIL, "ifconfig", NIC_PEER, "inet", f"{NIC_LAN}/24", "up")
        sh("jexec", LAN_JAIL, "ifconfig", MEMBER_PEER, "inet", f"{BR_LAN}/24", "up")
        self.server = spawn(["jexec", LAN_JAIL, "nc", "-v", "-n", "-d", "-k", "-l", str(LAN_PORT)], self.log)
        eventually(lambda: tcp_listeners(LAN_PORT, jail=LAN_JAIL), "the LAN machine's server to listen")

    def stop(self) -> None:
        if self.server is not None:
            end(self.server)  # jexec execs nc: the pid is the server itself
            self.server = None
        self.remove()

    @staticmethod
    def remove() -> None:
        for jail_end in (NIC_PEER, MEMBER_PEER):  # home first: destroying the host's end takes the pair
            sh("ifconfig", jail_end, "-vnet", LAN_JAIL, check=False)
        for name in (BRIDGE, NIC, MEMBER):
            sh("ifconfig", name, "destroy", check=False)
        sh("jail", "-r", LAN_JAIL, check=False)

    def peers(self) -> list[str]:
        return re.findall(r"Connection (?:received on|from) ([0-9A-Fa-f:.]+)", self.log.read_text())

    def peer_seen_from(self, kn, network: str, addr: str, driver: str) -> str | None:
        """The source address the LAN machine sees for a connection from a fresh container."""
        before = len(self.peers())
        if kn.exchange(network, addr, LAN_PORT, driver) is None:
            return None
        return eventually(lambda: self.peers()[before:], "the LAN machine to log the connection")[-1]


@pytest.fixture
def lan(kn, tmp_path):
    with neighbour(kn, Lan(tmp_path / "lan.log")) as fake:
        yield fake


def test_ipnet_jail_on_a_nic_is_on_the_lan_with_its_own_address(kn, lan):
    assert host_can_connect(NIC_LAN, LAN_PORT)  # positive control: the LAN machine answers
    before = interface_summary(NIC)
    kn("network", "create", "-t", "custom", "-i", NIC, "--subnet", NIC_SUBNET, "--ip-range", "198.51.100.128/25", "lan")
    seen = lan.peer_seen_from(kn, "lan", NIC_LAN, "ipnet")
    assert seen and ipaddress.ip_address(seen) in ipaddress.ip_network("198.51.100.128/25")
    assert interface_summary(NIC) == before  # the run's alias went with it
    kn("network", "rm", "lan")
    assert interface_summary(NIC) == before


def test_vnet_jail_on_a_lan_bridge_is_on_the_lan_with_its_own_address(kn, lan):
    before = {name: interface_summary(name) for name in (BRIDGE, MEMBER)}
    kn("network", "create", "-t", "custom", "-i", BRIDGE, "--subnet", BR_SUBNET, "--gw", BR_LAN,
       "--ip-range", "198.51.101.128/25", "blan")
    seen = lan.peer_seen_from(kn, "blan", BR_LAN, "vnet")
    assert seen and ipaddress.ip_address(seen) in ipaddress.ip_network("198.51.101.128/25")
    kn("network", "rm", "blan")
    assert {name: interface_summary(name) for name in (BRIDGE, MEMBER)} == before


def test_a_vnet_jail_on_a_plain_nic_is_refused(kn, lan):
    kn("network", "create", "-t", "custom", "-i", NIC, "--subnet", NIC_SUBNET, "lan")
    before = interface_summary(NIC)
    r = kn("run", "-l", "vnet", "-n", "lan", "--", "true", check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "create a bridge holding it" in r.stderr and "-l ipnet" in r.stderr
    assert interface_summary(NIC) == before and kn.json("ps", "-a", "--json") == []
