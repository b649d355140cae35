"""Connect/disconnect on running containers, dry runs, bad input, failures halfway, reconcile."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.linux.world import KLEENENET, WAN_ADDR, sh


def test_connect_and_disconnect_a_running_container(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "a")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "b")
    ip = world.serve_in_container("srv", "b", 7000)
    world.kn("run", "-d", "--name", "cli", "-n", "a", "--", "sleep", "60")
    probe = [sys.executable, "-c",
             f"import socket; socket.create_connection(('{ip}', 7000), timeout=1)"]
    assert world.kn("exec", "cli", "--", *probe, check=False).returncode != 0
    world.kn("network", "connect", "--ip", "10.2.4.9", "b", "cli")
    assert world.kn("exec", "cli", "--", *probe, check=False).returncode == 0
    eps = world.kn_json("inspect", "cli")["container_endpoints"]
    assert [e["ip_address"] for e in eps] == ["10.2.3.2", "10.2.4.9"]
    world.kn("network", "disconnect", "b", "cli")
    assert world.kn("exec", "cli", "--", *probe, check=False).returncode != 0
    assert "eth1" not in world.kn("exec", "cli", "--", "ip", "-br", "link").stdout
    assert "kv" + eps[1]["id"] not in world.links()


def test_run_returns_the_exit_code_and_rm_cleans_up(world):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    assert world.kn("run", "-n", "n", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    assert world.kn("run", "--rm", "-n", "n", "--", "true").returncode == 0
    names = [c["name"] for c in world.kn_json("ps", "-a", "--json")]
    assert len(names) == 1  # the --rm one is gone, the other is kept stopped
    assert world.kn("run", "-n", "n", "--", "no-such-command", check=False).returncode == 127


def test_sigterm_to_a_foreground_run_stops_the_container_and_cleans_up(world):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    proc = subprocess.Popen(world.in_host(*KLEENENET, "run", "--name", "fg", "-n", "n", "--", "sleep", "60"),
                            env=world.env)
    deadline = time.monotonic() + 10
    while not [c for c in world.kn_json("ps", "--json") if c["name"] == "fg"]:  # committed, running
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert not [link for link in world.links() if link.startswith("kv")]
    assert world.kn_json("ps", "-a", "--json")[0]["running"] is False
    assert world.container_pids() == []


def test_forwarding_is_turned_on_only_when_a_network_needs_it(world):
    def forwarding():
        return sh(*world.in_host("sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")).stdout.split()
    assert forwarding() == ["0", "0"]
    world.kn("network", "create", "-t", "bridge", "--internal", "--subnet", "10.2.3.0/24", "l2only")
    assert forwarding() == ["0", "0"]
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "routed")
    assert forwarding() == ["1", "0"]
    world.kn("network", "create", "--subnet6", "fd00:5::/64", "routed6")
    assert forwarding() == ["1", "1"]


def test_vnet_driver_is_wired_like_ipnet(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "n")
    out = world.kn("run", "--rm", "-l", "vnet", "-n", "n", "--", "ip", "-br", "addr", "show", "eth0").stdout
    assert "10.2.3.2/24" in out


def test_drivers_host_and_disabled(world):
    host = world.kn("run", "--rm", "-l", "host", "--", "ip", "-br", "link").stdout
    assert "uplink" in host
    disabled = world.kn("run", "--rm", "-l", "disabled", "--", "ip", "-br", "link").stdout
    assert disabled.split() [:2] == ["lo", "UNKNOWN"] and "uplink" not in disabled


def test_stop_and_rm_leave_nothing(world):
    before = world.snapshot()
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    cid = world.kn("run", "-d", "--name", "s", "-n", "n", "--", "sh", "-c", "echo started; exec sleep 60").stdout.strip()
    pid = world.container_pids()[0]
    log = world.state_dir / "logs" / f"{cid}.log"
    deadline = time.monotonic() + 5
    while not (log.exists() and log.read_text() == "started\n"):  # a detached container's output
        assert time.monotonic() < deadline
        time.sleep(0.02)
    world.kn("stop", "s")
    assert not os.path.exists(f"/proc/{pid}/ns") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not [link for link in world.links() if link.startswith("kv")]
    world.kn("rm", "s")
    assert not log.exists()
    world.kn("network", "rm", "n")
    after = world.snapshot()
    assert after["links"] == before["links"] and after["nft"] == before["nft"] == ""


CHANGING = [
    ["network", "create", "-t", "bridge", "--subnet", "10.2.9.0/24", "--subnet6", "fd00:9::/64", "new"],
    ["network", "rm", "unused"],
    ["network", "prune"],
    ["network", "connect", "n", "idle"],
    ["network", "disconnect", "n", "s"],
    ["run", "-n", "n", "--name", "x", "--", "true"],
    ["stop", "s"],
    ["rm", "-f", "s"],
    ["reconcile"],
]


@pytest.mark.parametrize("args", CHANGING, ids=lambda a: " ".join(a[:2]))
def test_dry_run_changes_nothing(world, args):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    world.kn("network", "create", "--subnet", "10.2.5.0/24", "unused")
    world.kn("run", "-d", "--name", "s", "-n", "n", "--", "sleep", "60")
    world.kn("run", "-l", "ipnet", "--name", "idle", "--", "true")
    before = world.snapshot()
    out = world.kn("run", "--dry-run", *args[1:]) if args[0] == "run" else world.kn(*args, "--dry-run")
    assert world.snapshot() == before
    if args[:2] in (["network", "create"], ["network", "connect"], ["network", "rm"], ["run", "-n"]):
        assert out.stdout.strip(), "a dry run prints its plan"


BAD = [
    (["network", "create", "--subnet", "10.2.3.0/24", "a;b"], "invalid network name 'a;b'"),
    (["network", "create", "--subnet", "10.2.3.0/24", "a b"], "invalid network name 'a b'"),
    (["network", "create", "--subnet", "10.2.3.0/24", "x" * 65], "invalid network name"),
    (["network", "create", "--subnet", "10.2.3.1/24", "n2"], "host bits are set (did you mean 10.2.3.0/24?)"),
    (["network", "create", "--subnet", "10.2.3.0/33", "n2"], "invalid --subnet '10.2.3.0/33'"),
    (["network", "create", "--subnet", "fd00::/64", "n2"], "not an IPv4 subnet"),
    (["network", "create", "n2"], "needs a --subnet or a --subnet6"),
    (["network", "create", "--subnet", "10.2.0.0/16", "n2"], "overlaps network 'n' (10.2.3.0/24)"),
    (["network", "create", "--subnet", "192.0.2.128/25", "n2"], "overlaps address 192.0.2.2/24 on uplink"),
    (["network", "create", "--subnet", "10.7.0.0/24", "n"], "network name 'n' is already in use"),
    (["network", "create", "--subnet", "10.7.0.0/24", "-i", "uplink", "n2"], "interface 'uplink' already exists"),
    (["network", "create", "--subnet", "10.7.0.0/24", "-i", "averyveryverylongname", "n2"], "invalid interface name"),
    (["network", "create", "--subnet", "10.7.0.0/24", "--gw", "10.7.1.1", "-t", "bridge", "n2"],
     "not in subnet 10.7.0.0/24"),
    (["network", "create", "--subnet", "10.7.0.0/24", "--gw", "10.7.0.1", "n2"], "loopback networks have no gateway"),
    (["network", "create", "--subnet", "10.7.0.0/24", "--nat-if", "bad if", "n2"], "invalid interface name 'bad if'"),
    (["network", "connect", "--ip", "10.2.4.1", "n", "idle"], "not in subnet 10.2.3.0/24"),
    (["network", "connect", "--ip", "10.2.3.255", "n", "idle"], "broadcast address"),
    (["network", "connect", "--ip", "10.2.3.1", "n", "idle"], "address 10.2.3.1 is already in use"),
    (["network", "connect", "--ip", "nonsense", "n", "idle"], "invalid --ip 'nonsense'"),
    (["network", "connect", "nope", "idle"], "network not found: 'nope'"),
    (["network", "connect", "n", "nope"], "no such container: 'nope'"),
    (["network", "connect", "n", "s"], "already connected to network 'n'"),
    (["network", "disconnect", "n", "idle"], "not connected to network 'n'"),
    (["network", "rm", "n"], "has connected containers (s)"),
    (["run", "-n", "nope", "--", "true"], "network not found: 'nope'"),
    (["run", "-l", "host", "-n", "n", "--", "true"], "driver 'host' takes no networks"),
    (["run", "--name", "s", "-n", "n", "--", "true"], "container name 's' is already in use"),
    (["run", "--name", "a;b", "--", "true"], "invalid container name 'a;b'"),
    (["run", "-n", "n"], "no command given"),
    (["run", "-J", "allow.raw_sockets", "--", "true"], "jail parameters need FreeBSD"),
    (["rm", "s"], "is running: stop it first"),
    (["exec", "idle", "--", "true"], "container 'idle' is not running"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_refused_and_changes_nothing(world, args, message):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    world.kn("run", "-d", "--name", "s", "-n", "n", "--", "sleep", "60")
    world.kn("run", "-l", "ipnet", "--name", "idle", "--", "true")
    before = world.snapshot()
    r = world.kn(*args, check=False)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert world.snapshot() == before


def test_unusable_state_directory_is_one_line_error(world):
    unusable = "/proc/kleenenet-state"  # nothing can be created there
    r = world.kn("network", "ls", check=False, env={"KLEENENET_STATE_DIR": unusable})
    assert r.returncode == 1
    assert r.stderr.startswith(f"kleenenet: cannot open the state in {unusable}") and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_failure_at_each_step_of_connect_leaves_nothing(world, type_):
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "--subnet6", "fd00:3::/64", "n")
    world.kn("run", "-d", "-l", "ipnet", "--name", "idle2", "--", "sleep", "60")
    before = world.snapshot()
    inside_before = world.kn("exec", "idle2", "--", "ip", "addr").stdout
    # fail before step 1, 2, ... until k is past the last step and the connect succeeds
    for k in range(1, 50):
        r = world.kn("network", "connect", "n", "idle2", check=False,
                     env={"KLEENENET_FAILPOINT": f"connect:{k}"})
        if r.returncode == 0:
            break
        assert r.returncode == 1 and f"failpoint connect:{k}" in r.stderr
        assert world.snapshot() == before, f"step {k}"
        assert world.kn("exec", "idle2", "--", "ip", "addr").stdout == inside_before
    assert k > 6, "connect has at least six steps"
    assert "10.2.3." in world.kn("exec", "idle2", "--", "ip", "addr").stdout


def test_failure_at_each_step_of_network_create_leaves_nothing(world):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    before = world.snapshot()
    for k in range(1, 50):
        r = world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.4.0/24", "--subnet6", "fd00:4::/64",
                     "m", check=False, env={"KLEENENET_FAILPOINT": f"network-create:{k}"})
        if r.returncode == 0:
            break
        assert r.returncode == 1 and f"failpoint network-create:{k}" in r.stderr
        assert world.snapshot() == before, f"step {k}"
    assert k > 4, "network create has at least four steps"


def test_nft_table_removed_behind_our_back_fails_cleanly(world):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    world.kn("run", "-d", "-l", "ipnet", "--name", "idle", "--", "sleep", "60")
    sh(*world.in_host("nft", "delete", "table", "inet", "kleenenet"))
    before = world.snapshot()
    r = world.kn("network", "connect", "n", "idle", check=False)
    assert r.returncode == 1 and r.stderr.startswith("kleenenet: nft")
    assert world.snapshot() == before
    world.kn("reconcile")
    world.kn("network", "connect", "n", "idle")
    assert "kleenenet" in world.nft()


@pytest.mark.parametrize("type_", ["bridge", "loopback"])
def test_stop_rewrites_a_firewall_changed_behind_our_back(world, type_):
    """A stop whose port's elements are gone still stops the container, says so, and puts the
    firewall back as the state renders it (the other container's element included)."""
    world.kn("network", "create", "-t", type_, "--subnet", "10.2.3.0/24", "n")
    world.kn("run", "-d", "--name", "s", "-n", "n", "--", "sleep", "60")
    world.kn("run", "-d", "--name", "t", "-n", "n", "--", "sleep", "60")
    sh(*world.in_host("nft", "flush", "set", "inet", "kleenenet", "port_sources4"))
    assert world.kn("reconcile", "--dry-run").stdout != ""  # the firewall is not as it should be
    r = world.kn("stop", "s")
    assert r.stderr.startswith("kleenenet: nft"), r.stderr
    assert {c["name"]: c["running"] for c in world.kn_json("ps", "-a", "--json")} == {"s": False, "t": True}
    assert world.kn("reconcile", "--dry-run").stdout == ""
    assert world.ip_of("t") in world.nft()


def test_reconcile_after_kleenenet_is_killed_mid_connect(world):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    world.kn("run", "-d", "-l", "ipnet", "--name", "idle", "--", "sleep", "60")
    before = world.snapshot()
    # killed halfway: the veth exists, the transaction is open
    assert world.kill_at(["network", "connect", "n", "idle"], "connect:7:stop")
    leaked = [link for link in world.links() if link.startswith("kv")]
    assert leaked, "the killed connect left its veth behind"
    world.kn("reconcile")
    assert world.snapshot() == before
    world.kn("network", "connect", "n", "idle")


def test_reconcile_rebuilds_after_reboot(world):
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "b")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "l")
    world.kn("run", "-d", "--name", "s", "-n", "l", "--", "sleep", "60")
    intact = world.snapshot()
    # a "reboot": containers die, interfaces and the firewall are gone
    world.power_cut()
    for link in world.links():
        if link.startswith(("kleene", "kv")):
            sh(*world.in_host("ip", "link", "del", link), check=False)
    sh(*world.in_host("nft", "delete", "table", "inet", "kleenenet"))
    sh(*world.in_host("ip", "link", "add", "kv0123456789ab", "group", "27502", "type", "bridge"))  # a leftover
    world.kn("reconcile")
    rebuilt = world.snapshot()
    assert [n for n in rebuilt["links"] if n.startswith("kleene")] == [n for n in intact["links"] if n.startswith("kleene")]
    assert "kv0123456789ab" not in world.links()
    assert world.kn_json("ps", "-a", "--json")[0]["running"] is False
    assert world.connect_from("b", WAN_ADDR, 8000) is not None
    assert world.connect_from("l", WAN_ADDR, 8000) is not None
    sh(*world.in_host("ip", "addr", "flush", "dev", "kleene0"))  # the bridge lost its gateway
    world.kn("reconcile")
    assert "10.2.3.1/24" in sh(*world.in_host("ip", "-br", "addr", "show", "kleene0")).stdout
    assert world.connect_from("b", WAN_ADDR, 8000) is not None
    settled = world.snapshot()
    world.kn("reconcile")  # idempotent
    assert world.snapshot() == settled


def test_a_detached_container_whose_command_exits_leaves_its_networks(world, tmp_path):
    """The process `run -d` leaves to watch the container does what stop would when the command
    exits: off its networks, out of its peers' hosts files; with --rm, removed."""
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "n")
    world.kn("run", "-d", "--name", "peer", "-n", "n", "--", "sleep", "60")
    go = tmp_path / "go"  # the two brief ones run until it exists
    until_go = ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"]
    world.kn("run", "-d", "--name", "brief", "-n", "n", "--", *until_go)
    world.kn("run", "-d", "--rm", "--name", "gone", "-n", "n", "--", *until_go)
    hosts = world.kn("exec", "peer", "--", "cat", "/etc/hosts").stdout
    assert "\tbrief" in hosts and "\tgone" in hosts  # positive control: while they run
    assert len(world.wired_ports()) == 3 and len(world.watchers()) == 3
    go.touch()
    deadline = time.monotonic() + 15
    while world.query("SELECT name FROM containers WHERE running = 1") != [("peer",)] \
            or world.query("SELECT name FROM containers WHERE name = 'gone'"):
        assert time.monotonic() < deadline, world.query("SELECT name, running FROM containers")
        time.sleep(0.1)
    [peer_port] = world.wired_ports()
    assert [link for link in world.links() if link.startswith("kv")] == [peer_port]
    hosts = "".join(line for line in world.kn("exec", "peer", "--", "cat", "/etc/hosts").stdout.splitlines(True)
                    if not line.startswith("#"))  # struck lines are comments
    assert "\tbrief" not in hosts and "\tgone" not in hosts and "\tpeer" in hosts
    deadline = time.monotonic() + 5
    while len(world.watchers()) != 1:  # the peer's, still watching
        assert time.monotonic() < deadline, world.watchers()
        time.sleep(0.05)
    assert world.kn("reconcile", "--dry-run").stdout == ""
