"""The daemon serves the FreeBSD platform as it serves Linux: the real app (make_app) on a unix
socket, its Backend's services on one simulated FreeBSD host, driven by the real klee client as a
Kleene user drives kleened. After each command the host holds what the FreeBSD platform should
have made; at the end it is as it was, but for IP forwarding (turned on for a bridge, never off).
(`klee exec` is not here: the daemon starts the argv of platform.exec_command itself, not
through the platform's Runner, so the simulated host never sees it.)"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from aiohttp import web

from kleenenet.api.app import Backend, make_app
from kleenenet.platform.freebsd import FreeBSDPlatform
from kleenenet.platform.freebsd.host import Runner
from kleenenet.service import Service
from kleenenet.store import Store
from tests.freebsd.simhost import SimulatedFreeBSD
from tests.klee import run_klee
FORWARDING = "net.inet.ip.forwarding"


class LockedRunner(Runner):
    """The simulated host for the daemon's worker threads: one command at a time."""

    def __init__(self, host: SimulatedFreeBSD):
        self.host = host
        self.lock = threading.RLock()

    def run(self, argv, stdin=None):
        with self.lock:
            return self.host.run(argv, stdin)

    def succeeds(self, argv):
        with self.lock:
            return self.host.succeeds(argv)

    def start(self, argv, log, env=None):
        with self.lock:
            return self.host.start(argv, log, env)

    def is_directory(self, path):
        with self.lock:
            return self.host.is_directory(path)

    def libzfs(self):
        return self.host.libzfs()


class Daemon:
    """The daemon's app in an event loop of its own thread, as `serve` runs it (reconcile, then
    the socket), each worker's service a new Store on the state directory and a FreeBSD platform
    on the shared simulated host."""

    def __init__(self, state_dir: Path, socket_path: Path):
        self.host = SimulatedFreeBSD()
        self.initial = self.host.snapshot()
        self.runner = LockedRunner(self.host)
        self.state_dir = state_dir
        self.socket = socket_path
        self.lines: list[str] = []
        self.back = Backend(self.make_service)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="daemon", daemon=True)
        self.thread.start()
        self.app_runner = web.AppRunner(make_app(self.back), handle_signals=False, access_log=None,
                                        shutdown_timeout=5)
        self._await(self._start())

    def make_service(self) -> Service:
        return Service(Store(self.state_dir), FreeBSDPlatform(self.runner), out=self.lines.append)

    def _await(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> None:
        await self.back.call("reconcile")
        await self.app_runner.setup()
        await web.UnixSite(self.app_runner, str(self.socket)).start()

    def close(self) -> None:
        try:
            self._await(self.app_runner.cleanup())
        finally:
            self.back.shutdown()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()

    def state(self) -> dict:
        """The host's state, taken between two commands of the daemon."""
        with self.runner.lock:
            return self.host.snapshot()

    def klee(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_klee(self.socket, *args, check=check)


@pytest.fixture
def daemon(tmp_path):
    sockets = tempfile.mkdtemp(prefix="kn-", dir="/tmp")  # a socket's path holds at most 104 bytes
    d = Daemon(tmp_path / "state", Path(sockets) / "kleened.sock")
    try:
        yield d
    finally:
        d.close()
        shutil.rmtree(sockets)


def containers(listing: str) -> dict[str, list[str]]:
    """The rows of `klee lsc`: container id -> its other columns (the JID column is empty)."""
    rows = [line.split() for line in listing.splitlines()]
    return {row[0]: row[1:] for row in rows if row and re.fullmatch(r"[0-9a-f]{12}", row[0])}


def words(text: str) -> str:
    return " ".join(text.split())


def test_klee_drives_the_freebsd_platform_through_the_daemon(daemon):
    host = daemon.host
    assert daemon.state() == daemon.initial and host.log == []  # reconcile on a blank host: nothing

    # an ipnet network: a cloned lo renamed kleene0, its pf anchor with its (empty) table
    testnet = daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", testnet)
    st = daemon.state()
    lo = st["interfaces"]["kleene0"]
    assert (lo["kind"], lo["addrs"], lo["up"]) == ("lo", [], True)
    assert lo["groups"] == ["lo", "kleenenet"] and lo["description"] == "kleenenet:testnet"
    assert set(st["anchors"]) == {"kleenenet/testnet"}
    assert f"table <kn_{testnet}> persist {{ }}\n" in st["anchors"]["kleenenet/testnet"]
    assert st["tables"] == {("kleenenet/testnet", f"kn_{testnet}"): []}
    assert st["sysctl"][FORWARDING] == "0"  # an ipnet jail's traffic is the host's own

    # a bridge network: if_bridge kleene1 with the gateway, its anchor, forwarding on
    lan = daemon.klee("network", "create", "-t", "bridge", "--subnet", "10.2.4.0/24", "lan").stdout.strip()
    st = daemon.state()
    br = st["interfaces"]["kleene1"]
    assert (br["kind"], br["addrs"], br["up"], br["members"]) == ("bridge", ["10.2.4.1/24"], True, [])
    assert br["groups"] == ["bridge", "kleenenet"] and br["description"] == "kleenenet:lan"
    assert set(st["anchors"]) == {"kleenenet/testnet", "kleenenet/lan"}
    assert st["tables"][("kleenenet/lan", f"kn_{lan}")] == []
    assert st["sysctl"][FORWARDING] == "1"
    networks = daemon.klee("network", "ls").stdout
    assert "testnet" in networks and "lan" in networks

    # a foreground ipnet run: jail with ip4.addr 10.2.3.1, the command through jexec, its output
    # (what ifconfig shows in that jail) back to klee, then the exit code
    start = len(host.log)
    r = daemon.klee("run", "-l", "ipnet", "-n", "testnet", "FreeBSD", "ifconfig")
    out = r.stdout
    assert "kleene0: flags=8049<UP,LOOPBACK,RUNNING>" in out and "\tinet 10.2.3.1 netmask 0xffffffff" in out
    assert "192.0.2.2" not in out and "127.0.0.1" not in out and "10.2.4.1" not in out  # not the jail's
    assert "exited with exit-code 0" in out
    jail = host.started[-1].split()[1]
    assert host.started == [f"jexec {jail} ifconfig"] and re.fullmatch(r"kn[0-9a-f]{12}", jail)
    ran = host.log[start:]
    [create] = [line for line in ran if line.startswith("jail -c ")]
    argv = create.split()
    assert argv[:4] == ["jail", "-c", f"name={jail}", "path=/"] and argv[4].startswith("host.hostname=")
    assert argv[5:] == ["persist", "ip4=new", "ip6=new"]
    assert ran.index("ifconfig kleene0 inet 10.2.3.1/32 alias") < ran.index(f"jail -m name={jail} ip4.addr=10.2.3.1")
    assert f"pfctl -a kleenenet/testnet -t kn_{testnet} -T add 10.2.3.1" in ran
    assert ran[-1] == f"jail -r {jail}"  # it exited: off its network, its jail removed
    st = daemon.state()
    assert st["jails"] == {} and st["interfaces"]["kleene0"]["addrs"] == []
    assert st["tables"][("kleenenet/testnet", f"kn_{testnet}")] == []
    ipnet_id = jail[2:]

    # the exit code is the command's
    r = daemon.klee("run", "--name", "failing", "-l", "ipnet", "-n", "testnet", "FreeBSD", "false")
    assert "exited with exit-code 1" in r.stdout
    assert daemon.state()["jails"] == {}

    # a detached vnet run: an epair, the host end on the bridge, the jail end in the jail with
    # its address and default route, the address in the network's table; sleep keeps running
    r = daemon.klee("run", "-d", "--name", "sleeper", "-l", "vnet", "-n", "lan", "FreeBSD", "sleep", "100")
    sleeper = r.stdout.strip().splitlines()[0]
    assert re.fullmatch(r"[0-9a-f]{12}", sleeper), r.stdout
    jail = f"kn{sleeper}"
    assert host.started[-1] == f"jexec {jail} sleep 100"
    st = daemon.state()
    assert set(st["jails"]) == {jail}
    j = st["jails"][jail]
    assert j["vnet"] and j["processes"] and j["params"]["host.hostname"] == "sleeper"
    [ep] = [name[:-1] for name, i in st["interfaces"].items() if i["kind"] == "epair" and name.endswith("a")]
    assert re.fullmatch(r"kv[0-9a-f]{12}", ep)
    host_end, jail_end = st["interfaces"][ep + "a"], st["interfaces"][ep + "b"]
    assert st["interfaces"]["kleene1"]["members"] == [ep + "a"]
    assert host_end["vnet"] is None and host_end["up"] and "kleenenet" in host_end["groups"]
    assert jail_end["vnet"] == jail and "10.2.4.2/24" in jail_end["addrs"] and jail_end["up"]
    assert j["routes"] == {"-inet": ("10.2.4.1", ep + "b")}
    assert j["lo0"]["addrs"] == ["127.0.0.1/8"]
    assert st["tables"][("kleenenet/lan", f"kn_{lan}")] == ["10.2.4.2"]
    [sleep] = host.processes[jail]
    assert sleep.returncode is None

    # a foreground vnet run meanwhile: ifconfig in a vnet jail shows the jail's own interfaces;
    # at its exit its jail and epair go, and the sleeper is as it was
    r = daemon.klee("run", "--name", "probe", "-l", "vnet", "-n", "lan", "FreeBSD", "ifconfig")
    out = r.stdout
    assert re.search(r"^lo0: .*\n(\t.*\n)*\tinet 127\.0\.0\.1 netmask 0xff000000\n", out, re.M), out
    assert re.search(r"^kv[0-9a-f]{12}b: .*\n(\t.*\n)*\tinet 10\.2\.4\.3 netmask 0xffffff00\n", out, re.M), out
    assert "em0" not in out and "kleene" not in out and "10.2.4.2" not in out
    assert "exited with exit-code 0" in out
    assert daemon.state() == st
    daemon.klee("rmc", "probe")
    assert daemon.state() == st

    # klee's views: the three containers, the sleeper running with its endpoint wired
    rows = containers(daemon.klee("lsc", "-a").stdout)
    assert len(rows) == 3 and rows[ipnet_id][-1] == "stopped"
    assert rows[sleeper][0] == "sleeper" and rows[sleeper][-1] == "running"
    assert [row[0] for row in rows.values()].count("failing") == 1
    assert list(containers(daemon.klee("lsc").stdout)) == [sleeper]
    inspect = json.loads(daemon.klee("container", "inspect", "sleeper").stdout)
    assert inspect["container"]["id"] == sleeper and inspect["container"]["running"] is True
    [endpoint] = inspect["container_endpoints"]
    assert (endpoint["network_id"], endpoint["ip_address"], endpoint["epair"]) == (lan, "10.2.4.2", ep)
    network = json.loads(daemon.klee("network", "inspect", "lan").stdout)
    assert [e["container_id"] for e in network["network_endpoints"]] == [sleeper]

    # stop: jail -r ends sleep (SIGTERM), the epair goes (both ends), the table empties
    assert daemon.klee("stop", "sleeper").stdout.strip() == sleeper
    st = daemon.state()
    assert st["jails"] == {} and host.processes == {}
    assert sleep.returncode == -signal.SIGTERM
    assert not [n for n, i in st["interfaces"].items() if i["kind"] == "epair"]
    assert st["interfaces"]["kleene1"]["members"] == []
    assert st["tables"][("kleenenet/lan", f"kn_{lan}")] == []
    inspect = json.loads(daemon.klee("container", "inspect", "sleeper").stdout)
    assert inspect["container"]["running"] is False
    assert inspect["container_endpoints"][0]["epair"] is None  # its address stays reserved
    assert {row[-1] for row in containers(daemon.klee("lsc", "-a").stdout).values()} == {"stopped"}

    # rmc: the containers (and their logs) go; the host had nothing more of theirs
    before = daemon.state()
    r = daemon.klee("rmc", ipnet_id, "failing", "sleeper")
    assert ipnet_id in r.stdout and sleeper in r.stdout
    assert daemon.state() == before
    assert containers(daemon.klee("lsc", "-a").stdout) == {}
    assert list((daemon.state_dir / "logs").iterdir()) == []

    # network rm: the anchor flushed, the interface destroyed
    assert daemon.klee("network", "rm", "testnet").stdout.strip() == testnet
    st = daemon.state()
    assert "kleene0" not in st["interfaces"] and set(st["anchors"]) == {"kleenenet/lan"}
    assert not [k for k in st["tables"] if k[0] == "kleenenet/testnet"]

    # network prune: lan, unused, goes the same way
    assert lan in daemon.klee("network", "prune", "-f").stdout
    assert "lan" not in daemon.klee("network", "ls").stdout

    final = daemon.state()
    assert final["sysctl"][FORWARDING] == "1"  # turned on for lan, never off
    final["sysctl"][FORWARDING] = "0"
    assert final == daemon.initial
    assert host.processes == {}


def test_an_overlapping_subnet_is_refused_and_changes_nothing(daemon):
    daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    before, log = daemon.state(), list(daemon.host.log)
    for args, message in [
        (("--subnet", "10.2.3.128/25", "other"), "subnet 10.2.3.128/25 overlaps network 'testnet'"),
        # the host's own address, read with ifconfig from the simulated host
        (("-t", "bridge", "--subnet", "192.0.2.0/25", "other"), "subnet 192.0.2.0/25 overlaps address 192.0.2.2/24 on em0"),
    ]:
        r = daemon.klee("network", "create", *args, check=False)
        assert message in words(r.stdout + r.stderr), r.stdout + r.stderr
        assert daemon.state() == before and daemon.host.log == log
    networks = daemon.klee("network", "ls").stdout
    assert "testnet" in networks and "other" not in networks


def test_a_vnet_jail_on_a_loopback_network_is_refused(daemon):
    """klee creates the container, then connects it: the FreeBSD platform refuses a vnet jail on
    a loopback network before anything reaches the host (the container stays, as with kleened)."""
    daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    before, log = daemon.state(), list(daemon.host.log)
    r = daemon.klee("run", "--name", "v", "-l", "vnet", "-n", "testnet", "FreeBSD", "true", check=False)
    assert "it can join bridge networks only" in words(r.stdout + r.stderr), r.stdout + r.stderr
    assert r.returncode == 1
    assert daemon.state() == before and daemon.host.log == log and daemon.host.started == []
    daemon.klee("rmc", "v")
