"""kleenenet on FreeBSD for real: jails, interfaces, pf anchors and packets (vagrant/README.md).

Networks are 10.77.N.0/24: on a loopback network the first container gets .1; on a bridge
network the gateway is .1 and the first container gets .2. Loopback networks carry ipnet jails,
bridges vnet jails. Inside jails only base-system tools are used: sh, nc, ifconfig, ping,
sockstat. The fake upstream (fixture `wan`) is 192.0.2.1; the host's end of it is 192.0.2.2.
"""

import ipaddress
import os
import signal
import subprocess
import time

import pytest

from tests.jails.host import (
    DRIVER,
    end,
    SERVER_PORT,
    UPLINK_ADDR,
    WAN_HOST_IF,
    eventually,
    host_can_connect,
    host_exchange,
    host_tcp_server,
    kleenenet_anchors,
    non_loopback_addresses,
    pf_states,
    sh,
)

SUBNET_A = "10.77.1.0/24"
SUBNET_B = "10.77.2.0/24"
HOST_PORT = 9000
PUBLISHED_PORT = 9100  # -p PUBLISHED_PORT:SERVER_PORT
CRASH_STEP = 3  # KLEENENET_FAILPOINT=connect:<step>:stop stops `network connect` before this step

by_network_type = pytest.mark.parametrize("net_type", ["loopback", "bridge"])


def create_network(kn, name: str, net_type: str, subnet: str, *options: str) -> None:
    kn("network", "create", "-t", net_type, "--subnet", subnet, *options, name)


def first_address(net_type: str, subnet: str) -> str:
    """The first container's address: .1 on a loopback network, .2 on a bridge (.1 is the gateway)."""
    return str(ipaddress.ip_network(subnet).network_address + (1 if net_type == "loopback" else 2))


def interfaces() -> list[str]:
    return sh("ifconfig", "-l").stdout.split()


def ipv4_addresses(ifconfig_output: str) -> list[str]:
    return [a for a in non_loopback_addresses(ifconfig_output) if ":" not in a]


def wait_until_stopped(proc: subprocess.Popen, timeout: float = 60) -> bool:
    """True once proc has stopped itself (SIGSTOP); False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid:
            if os.WIFSTOPPED(status):
                return True
            proc.returncode = os.waitstatus_to_exitcode(status)
            return False
        time.sleep(0.05)
    raise AssertionError(f"kleenenet (pid {proc.pid}) neither stopped nor exited in {timeout} s")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL by its exact pid (also when stopped), and reap it."""
    if proc.returncode is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


# traffic

@by_network_type
def test_two_jails_talk_over_tcp(kn, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "net", net_type, SUBNET_A)
    net = kn.network("net")
    assert net["interface"] in interfaces()
    if net_type == "bridge":
        assert net["gateway"] == "10.77.1.1"
    server = kn.serve("a", "net", driver)
    assert server == first_address(net_type, SUBNET_A)
    kn("run", "-d", "-l", driver, "-n", "net", "--name", "b", "--", "sleep", "600")
    assert kn.exec_exchange("b", server, SERVER_PORT) == "pong"
    assert eventually(lambda: "ping" in kn.log_of("a"), "the server's log to show what b sent")
    assert kn.exchange("net", server, SERVER_PORT, driver) == "pong"  # from a foreground container


@by_network_type
def test_nat_to_the_upstream_shows_the_host_address(kn, wan, net_type):
    create_network(kn, "out", net_type, SUBNET_A, "--nat-if", WAN_HOST_IF)
    assert wan.peer_seen_from(kn, "out", DRIVER[net_type]) == UPLINK_ADDR


@by_network_type
def test_networks_are_isolated(kn, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "a", net_type, SUBNET_A)
    create_network(kn, "b", net_type, SUBNET_B)
    server = kn.serve("srv", "a", driver)
    assert kn.exchange("a", server, SERVER_PORT, driver) == "pong"  # the server answers at all
    other = kn.serve("srv-b", "b", driver)
    assert kn.exchange("b", other, SERVER_PORT, driver) == "pong"  # network b works
    assert not kn.can_connect("b", server, SERVER_PORT, driver)


def test_icc_off_separates_jails_but_not_from_the_gateway(kn):
    create_network(kn, "quiet", "bridge", SUBNET_A, "--no-icc")
    gateway = kn.network("quiet")["gateway"]
    server = kn.serve("a", "quiet", "vnet")
    kn("run", "-d", "-l", "vnet", "-n", "quiet", "--name", "b", "--", "sleep", "600")
    assert host_can_connect(server, SERVER_PORT)  # the server answers from an allowed place
    assert kn.ping("b", gateway).returncode == 0  # and b's network works
    assert not kn.exec_can_connect("b", server, SERVER_PORT)
    for name in ("a", "b"):
        r = kn.ping(name, gateway)
        assert r.returncode == 0, f"{name} cannot ping the gateway {gateway}:\n{r.stdout}{r.stderr}"


@by_network_type
def test_internal_network_has_no_way_out(kn, wan, net_type):
    driver = DRIVER[net_type]
    wan.route_back("10.77.0.0/16")  # so that the upstream could answer even without NAT
    create_network(kn, "plain", net_type, SUBNET_B, "--no-nat")
    seen = wan.peer_seen_from(kn, "plain", driver)
    assert seen is not None and seen.startswith("10.77.2."), seen  # routed out, not NATed
    create_network(kn, "inner", net_type, SUBNET_A, "--internal")
    server = kn.serve("srv", "inner", driver)
    assert kn.exchange("inner", server, SERVER_PORT, driver) == "pong"  # inside the network: fine
    assert wan.peer_seen_from(kn, "inner", driver) is None


@by_network_type
def test_jails_cannot_reach_host_services(kn, wan, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "net", net_type, SUBNET_A, "--nat-if", WAN_HOST_IF)
    targets = [UPLINK_ADDR] + ([kn.network("net")["gateway"]] if net_type == "bridge" else [])
    assert wan.peer_seen_from(kn, "net", driver) == UPLINK_ADDR  # the jails' network works
    with host_tcp_server(HOST_PORT):
        # the service is up, and answers from outside: the drop below is kleenenet's doing
        assert wan.can_connect(UPLINK_ADDR, HOST_PORT)
        for addr in targets:
            assert not kn.can_connect("net", addr, HOST_PORT, driver), f"a jail reached {addr}:{HOST_PORT}"


# published ports

@by_network_type
def test_a_published_port_is_reached_from_upstream_and_nothing_else(kn, wan, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "pub", net_type, SUBNET_A, "--nat-if", WAN_HOST_IF)
    server = kn.serve("web", "pub", driver, SERVER_PORT, 4, "-p", f"{PUBLISHED_PORT}:{SERVER_PORT}")
    assert wan.exchange(UPLINK_ADDR, PUBLISHED_PORT) == "pong"  # rdr on the NAT interface, and a pass
    assert eventually(lambda: "ping" in kn.log_of("web"), "the server's log to show what the upstream sent")
    # the container's own port number on the host's address was not published
    assert wan.exchange(UPLINK_ADDR, SERVER_PORT) is None
    if net_type == "loopback":  # an ipnet jail: the host's own connection is redirected on lo0
        assert host_exchange(UPLINK_ADDR, PUBLISHED_PORT) == "pong"
    else:  # a vnet jail: the host reaches it at its own address
        assert host_exchange(server, SERVER_PORT) == "pong"
    # two containers cannot have one host port
    r = kn("run", "-d", "-l", driver, "-n", "pub", "-p", f"{PUBLISHED_PORT}:80", "--", "sleep", "60", check=False)
    assert r.returncode != 0 and f"port tcp/{PUBLISHED_PORT} is already published by container 'web'" in r.stderr


def test_an_ipnet_jails_published_port_survives_a_network_connect(kn, wan):
    """A server that bound the wildcard while its jail had one address listens on that address
    only: the port must keep leading there when the jail joins a network that sorts first."""
    create_network(kn, "pub", "loopback", SUBNET_A, "--nat-if", WAN_HOST_IF)
    create_network(kn, "another", "loopback", SUBNET_B, "--nat-if", WAN_HOST_IF)
    kn.serve("web", "pub", "ipnet", SERVER_PORT, 4, "-p", f"{PUBLISHED_PORT}:{SERVER_PORT}")
    assert wan.exchange(UPLINK_ADDR, PUBLISHED_PORT) == "pong"
    kn("network", "connect", "another", "web")
    assert wan.exchange(UPLINK_ADDR, PUBLISHED_PORT) == "pong"


def test_a_port_the_host_listens_on_cannot_be_published(kn):
    create_network(kn, "pub", "loopback", SUBNET_A)
    with host_tcp_server(HOST_PORT):
        r = kn("run", "-d", "-l", "ipnet", "-n", "pub", "-p", f"{HOST_PORT}:80", "--", "sleep", "60", check=False)
    assert r.returncode != 0 and f"port tcp/{HOST_PORT} is already in use on the host" in r.stderr
    assert kn.json("ps", "-a", "--json") == []


def test_stopping_a_published_container_ends_its_flows(kn, wan):
    create_network(kn, "pub", "loopback", SUBNET_A, "--nat-if", WAN_HOST_IF)
    server = kn.serve("web", "pub", "ipnet", SERVER_PORT, 4, "-p", f"{PUBLISHED_PORT}:{SERVER_PORT}")
    client = wan.client(UPLINK_ADDR, PUBLISHED_PORT)
    try:
        eventually(lambda: server in pf_states(), "pf to hold the redirected flow's state")
        kn("stop", "web")
        # without `pfctl -k`, the closing flow's states would stay for pf's timeouts
        assert server not in pf_states()
    finally:
        end(client)


# containers

def test_foreground_run_returns_the_exit_code_and_rm_leaves_nothing(kn):
    create_network(kn, "lnet", "loopback", SUBNET_A)
    r = kn("run", "-l", "ipnet", "-n", "lnet", "--name", "kept", "--", "ifconfig")
    assert ipv4_addresses(r.stdout) == ["10.77.1.1"], r.stdout
    r = kn("run", "--rm", "-l", "ipnet", "-n", "lnet", "--", "sh", "-c", "ifconfig; exit 3", check=False)
    assert r.returncode == 3, r.stderr
    assert ipv4_addresses(r.stdout) == ["10.77.1.2"], r.stdout  # .1 stays with the stopped container
    containers = kn.json("ps", "-a", "--json")
    assert [(c["name"], c["running"]) for c in containers] == [("kept", False)]


def test_host_and_disabled_drivers(kn):
    kn("run", "--rm", "-l", "host", "--", "true")
    host_view = kn("run", "--rm", "-l", "host", "--", "ifconfig").stdout
    assert non_loopback_addresses(host_view), host_view  # the host's own addresses
    disabled_view = kn("run", "--rm", "-l", "disabled", "--", "ifconfig").stdout
    # lo0 only: ip4/ip6 disabled, or a vnet jail that has nothing but lo0
    assert non_loopback_addresses(disabled_view) == [], disabled_view


def test_doctor_finds_pf_ready(kn):
    out = kn("doctor").stdout
    assert "pf filters lo0 and kleenenet's loopback interfaces" in out, out  # provision.sh skips nothing
    assert "vnet jails are configured with `ifconfig -j` and `route -j`" in out, out  # FreeBSD 14
    assert 'the main ruleset has anchor "kleenenet/*"' in out, out


# icc off and ipnet jails on bridges: a jail still reaches itself

def test_loopback_network_without_icc(kn):
    create_network(kn, "quiet", "loopback", SUBNET_A, "--no-icc")
    server = kn.serve("a", "quiet", "ipnet")
    assert kn.exec_exchange("a", server, SERVER_PORT) == "pong"  # a jail reaches its own address
    assert host_can_connect(server, SERVER_PORT)  # and the host reaches it
    kn("run", "-d", "-l", "ipnet", "-n", "quiet", "--name", "b", "--", "sleep", "600")
    assert not kn.exec_can_connect("b", server, SERVER_PORT)


@pytest.mark.parametrize("icc", ["--icc", "--no-icc"])
def test_ipnet_jails_on_a_bridge_network(kn, icc):
    create_network(kn, "br", "bridge", SUBNET_A, icc)
    server = kn.serve("a", "br", "ipnet")  # an alias on the bridge, as in Kleene
    assert server == "10.77.1.2"
    assert kn.exec_exchange("a", server, SERVER_PORT) == "pong"  # over lo0, past the icc block
    vnet_server = kn.serve("v", "br", "vnet", SERVER_PORT + 1)
    assert host_can_connect(vnet_server, SERVER_PORT + 1)
    reached = kn.exec_exchange("a", vnet_server, SERVER_PORT + 1)
    assert reached == ("pong" if icc == "--icc" else None)


# IPv6

def test_ipv6_between_vnet_jails_and_on_an_internal_network(kn):
    kn("network", "create", "-t", "bridge", "--subnet", SUBNET_A, "--subnet6", "fd77:1::/64", "--internal", "six")
    server = kn.serve("a", "six", "vnet", SERVER_PORT, 6)
    assert server.startswith("fd77:1::")
    kn("run", "-d", "-l", "vnet", "-n", "six", "--name", "b", "--", "sleep", "600")
    # At once: the address skips duplicate address detection, and neighbour discovery passes
    # the internal network's block.
    assert kn.exec_exchange("b", server, SERVER_PORT) == "pong"
    r = kn("exec", "b", "--", "ping", "-6", "-c", "1", kn.network("six")["gateway6"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_ipnet_jails_ipv6_address_is_usable_when_its_command_starts(kn):
    """Its alias on the bridge skips duplicate address detection: a tentative address cannot
    be bound ("Can't assign requested address")."""
    kn("network", "create", "-t", "bridge", "--subnet6", "fd77:3::/64", "six")
    r = kn("run", "--rm", "-l", "ipnet", "-n", "six", "--", "sh", "-c",
           f"nc -6 -l fd77:3::2 {SERVER_PORT} & pid=$!; sleep 1; kill $pid && echo bound")
    assert r.stdout.strip() == "bound", r.stdout + r.stderr


# reconcile

@by_network_type
def test_reconcile_after_kleenenet_is_killed_mid_connect(kn, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "first", net_type, SUBNET_A)
    create_network(kn, "second", net_type, SUBNET_B)
    kn("run", "-d", "-l", driver, "-n", "first", "--name", "idle", "--", "sleep", "600")
    before = kn.snapshot()
    proc = kn.popen("network", "connect", "second", "idle", stderr=subprocess.PIPE,
                    env={"KLEENENET_FAILPOINT": f"connect:{CRASH_STEP}:stop"})
    try:
        stopped = wait_until_stopped(proc)
    finally:
        kill(proc)  # halfway through, its transaction open
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert stopped, f"network connect exited {proc.returncode} before step {CRASH_STEP} of its plan: {stderr}"
    kn("reconcile")
    assert kn.snapshot() == before
    kn("network", "connect", "second", "idle")
    kn("run", "--rm", "-l", driver, "-n", "second", "--", "true")


@by_network_type
def test_reconcile_rewires_running_jails_when_their_network_interface_was_destroyed(kn, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "net", net_type, SUBNET_A)
    server = kn.serve("srv", "net", driver)
    interface = kn.network("net")["interface"]
    before = kn.snapshot()
    sh("ifconfig", interface, "destroy")  # behind kleenenet's back; the jail keeps running
    assert interface not in interfaces()
    kn("reconcile")
    assert interface in interfaces()
    assert kn.snapshot() == before
    assert kn.exchange("net", server, SERVER_PORT, driver) == "pong"  # the running server, again
    kn("reconcile")  # idempotent
    assert kn.snapshot() == before


@by_network_type
def test_reconcile_after_a_simulated_reboot(kn, wan, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "net", net_type, SUBNET_A, "--nat-if", WAN_HOST_IF)
    kn.serve("srv", "net", driver)
    interface = kn.network("net")["interface"]
    # what a reboot takes: the jails, kleenenet's interfaces and its pf anchors
    sh("jail", "-r", kn.jail_of("srv"))
    sh("ifconfig", interface, "destroy")
    for anchor in sorted(kleenenet_anchors(), key=len, reverse=True):
        sh("pfctl", "-a", anchor, "-F", "all")
    kn("reconcile")
    assert interface in interfaces()
    assert [(c["name"], c["running"]) for c in kn.json("ps", "-a", "--json")] == [("srv", False)]
    settled = kn.snapshot()
    kn("reconcile")  # idempotent
    assert kn.snapshot() == settled
    # the network works again: containers talk, and reach the upstream through NAT
    server = kn.serve("srv2", "net", driver)
    assert kn.exchange("net", server, SERVER_PORT, driver) == "pong"
    assert wan.peer_seen_from(kn, "net", driver) == UPLINK_ADDR


@by_network_type
def test_reconcile_repairs_pf_anchors_flushed_behind_its_back(kn, wan, net_type):
    driver = DRIVER[net_type]
    create_network(kn, "out", net_type, SUBNET_A, "--nat-if", WAN_HOST_IF)
    assert wan.peer_seen_from(kn, "out", driver) == UPLINK_ADDR
    before = kn.snapshot()
    anchors = kleenenet_anchors()
    assert anchors, "the network has no pf anchor under kleenenet/"
    for anchor in sorted(anchors, key=len, reverse=True):
        sh("pfctl", "-a", anchor, "-F", "all")
    assert kn.snapshot() != before
    kn("reconcile")
    assert kn.snapshot() == before
    assert wan.peer_seen_from(kn, "out", driver) == UPLINK_ADDR


# resolver files

def test_a_jail_with_a_root_of_its_own_gets_its_resolver_files(kn):
    """nullfs mounts of the container's hosts and resolv.conf over its root's (FreeBSD 13.2 and
    later); its root here: the host's /bin, /lib, /libexec read-only, and an etc of its own."""
    root = "/tmp/kn-test-root"
    dirs = ("bin", "lib", "libexec")
    sh("mkdir", "-p", f"{root}/etc", *(f"{root}/{d}" for d in dirs))
    try:
        for d in dirs:
            sh("mount", "-t", "nullfs", "-o", "ro", f"/{d}", f"{root}/{d}")
        sh("sh", "-c", f"echo '127.0.0.1 localhost' >{root}/etc/hosts; : >{root}/etc/resolv.conf")
        create_network(kn, "net", "bridge", SUBNET_A)
        r = kn("run", "--rm", "-l", "vnet", "-n", "net", "--path", root, "--name", "rooted", "--",
               "/bin/cat", "/etc/hosts")
        assert "10.77.1.2" in r.stdout and "rooted" in r.stdout, r.stdout + r.stderr
        assert sh("cat", f"{root}/etc/hosts").stdout == "127.0.0.1 localhost\n"  # unmounted after
    finally:
        for d in dirs:
            sh("umount", f"{root}/{d}", check=False)
        sh("rm", "-rf", root)
