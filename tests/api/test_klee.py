"""The real klee client (PyPI kleene-cli) against the daemon: Kleene's ipnet walkthrough and the
other commands a Kleene user types, unchanged."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.linux.world import UPLINK_ADDR, WAN_ADDR, copy_shell

SERVER = ("import socket\n"
          "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',8080)); s.listen()\n"
          "while True:\n c,a=s.accept(); c.sendall(b'hello '+a[0].encode()); c.close()\n")
CLIENT = ("import socket,sys,time\n"
          "for _ in range(100):\n"
          " try: s=socket.create_connection((sys.argv[1],8080),timeout=1); break\n"
          " except OSError: time.sleep(0.05)\n"
          "print(s.recv(100).decode())\n")


def test_ipnet_walkthrough(daemon):
    r = daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    net_id = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", net_id)
    assert "testnet" in daemon.klee("network", "ls").stdout

    # a foreground run: the output comes back, then how the command ended
    r = daemon.klee("run", "-l", "ipnet", "-n", "testnet", "FreeBSD", "ip", "-4", "addr")
    assert "inet 10.2.3.1/32" in r.stdout
    assert "exited with exit-code 0" in r.stdout
    r = daemon.klee("run", "-l", "ipnet", "-n", "testnet", "FreeBSD", "sh", "-c", "echo out; exit 3")
    assert "out" in r.stdout and "exited with exit-code 3" in r.stdout

    # two detached containers; one reaches the other over TCP through `klee exec`
    daemon.klee("run", "-d", "--name", "server", "-l", "ipnet", "-n", "testnet", "FreeBSD",
                sys.executable, "-c", SERVER)
    daemon.klee("run", "-d", "--name", "client", "-l", "ipnet", "-n", "testnet", "FreeBSD", "sleep", "600")
    inspect = json.loads(daemon.klee("container", "inspect", "server").stdout)
    [endpoint] = inspect["container_endpoints"]
    assert endpoint["network_id"] == net_id and endpoint["epair"]
    server_ip, client_ip = endpoint["ip_address"], daemon.world.ip_of("client")
    r = daemon.klee("exec", "client", sys.executable, "-c", CLIENT, server_ip)
    assert f"hello {client_ip}" in r.stdout

    listing = daemon.klee("lsc").stdout
    assert "server" in listing and "client" in listing and "running" in listing
    network = json.loads(daemon.klee("network", "inspect", "testnet").stdout)
    assert {ep["ip_address"] for ep in network["network_endpoints"]} >= {server_ip, client_ip}

    for name in ("server", "client"):
        daemon.klee("stop", name)
        daemon.klee("rmc", name)
    daemon.klee("container", "prune", "-f")  # the foreground runs, stopped
    assert daemon.world.query("SELECT * FROM containers") == []
    assert daemon.klee("network", "rm", "testnet").stdout.strip() == net_id
    assert daemon.world.query("SELECT * FROM networks") == []


def test_connect_disconnect_and_prune(daemon):
    daemon.klee("network", "create", "--subnet", "10.2.4.0/24", "-t", "bridge", "lan")
    daemon.klee("network", "create", "--subnet", "10.2.5.0/24", "spare")
    daemon.klee("run", "-d", "--name", "box", "-l", "vnet", "-n", "lan", "FreeBSD", "sleep", "600")
    daemon.klee("network", "connect", "--ip", "10.2.5.7", "spare", "box")
    eps = json.loads(daemon.klee("container", "inspect", "box").stdout)["container_endpoints"]
    assert sorted(ep["ip_address"] for ep in eps) == ["10.2.4.2", "10.2.5.7"]
    r = daemon.klee("exec", "box", "ip", "-4", "-br", "addr")
    assert "10.2.5.7/32" in r.stdout and "10.2.4.2/24" in r.stdout

    daemon.klee("network", "disconnect", "spare", "box")
    r = daemon.klee("exec", "box", "ip", "-4", "-br", "addr")
    assert "10.2.5.7" not in r.stdout and "10.2.4.2/24" in r.stdout
    [(spare_id,)] = daemon.world.query("SELECT id FROM networks WHERE name = 'spare'")
    assert spare_id in daemon.klee("network", "prune", "-f").stdout  # lan is in use: kept
    assert [name for name, in daemon.world.query("SELECT name FROM networks")] == ["lan"]
    daemon.klee("rmc", "-f", "box")
    assert daemon.world.query("SELECT * FROM containers") == []


def test_run_publishes_ports(daemon):
    """`klee run -p` over the API: a client in the fake upstream reaches the container's server
    on the host's uplink address; the port it did not publish stays closed."""
    daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    daemon.klee("run", "-d", "--name", "web", "-l", "ipnet", "-n", "testnet", "-p", "8081:8080",
                "FreeBSD", sys.executable, "-c", SERVER)
    [port] = json.loads(daemon.klee("container", "inspect", "web").stdout)["container"]["public_ports"]
    assert port == {"interfaces": [], "host_port": "8081", "container_port": "8080", "protocol": "tcp",
                    "ip_address": "10.2.3.1", "ip_address6": ""}
    deadline = time.monotonic() + 10
    while (seen := from_upstream(daemon.world, 8081)) is None and time.monotonic() < deadline:
        time.sleep(0.1)  # until the server listens
    assert seen == f"hello {WAN_ADDR}"
    assert from_upstream(daemon.world, 8080) is None  # the container's port itself is not published
    daemon.klee("rmc", "-f", "web")
    assert from_upstream(daemon.world, 8081) is None  # gone with its container


def from_upstream(world, port: int) -> str | None:
    """What the server said to a client in the fake upstream connecting to the host's uplink
    address, or None when it could not connect."""
    code = ("import socket,sys\n"
            f"try: s=socket.create_connection(({UPLINK_ADDR!r},{port}),timeout=1)\n"
            "except OSError: sys.exit(3)\n"
            "print(s.recv(100).decode())\n")
    r = subprocess.run(["ip", "netns", "exec", world.wan, sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    return r.stdout.strip() if r.returncode == 0 else None


def test_errors_print_the_servers_message(daemon):
    daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    before = daemon.world.store_dump()
    for args, message in [
        (("network", "create", "--subnet", "10.2.3.0/24", "testnet"), "network name 'testnet' is already in use"),
        (("network", "create", "--subnet", "10.2.3.128/25", "other"), "overlaps network 'testnet'"),
        (("network", "create", "--subnet", "10.2.3.0/33", "other"), "invalid --subnet '10.2.3.0/33'"),
        (("network", "inspect", "nonet"), "network not found: 'nonet'"),
        (("network", "rm", "nonet"), "network not found: 'nonet'"),
        (("network", "connect", "nonet", "nobody"), "no such container: 'nobody'"),
        (("container", "inspect", "nobody"), "no such container: 'nobody'"),
        (("rmc", "nobody"), "no such container: 'nobody'"),
        (("run", "-l", "ipnet", "-n", "testnet", "NoSuchImage", "true"), "kleenenet image add NoSuchImage"),
    ]:
        r = daemon.klee(*args, check=False)
        assert message in " ".join(r.stdout.split()), (args, r.stdout)
    assert daemon.world.store_dump() == before

    # klee creates the container first, then fails to connect it: as with kleened, it stays
    r = daemon.klee("run", "-l", "ipnet", "-n", "nonet", "FreeBSD", "true", check=False)
    assert "could not connect container: network not found: 'nonet'" in " ".join(r.stdout.split() + r.stderr.split())
    assert r.returncode == 1


def test_containers_of_the_cli_and_of_klee_are_the_same(daemon):
    w = daemon.world
    w.kn("network", "create", "--subnet", "10.2.6.0/24", "shared")
    w.kn("run", "-d", "--name", "from-cli", "-n", "shared", "--", "sleep", "600")
    daemon.klee("run", "-d", "--name", "from-klee", "-n", "shared", "FreeBSD", "sleep", "600")
    assert "from-cli" in daemon.klee("lsc").stdout
    ps = w.kn("ps").stdout
    assert "from-klee" in ps and "running" in ps
    # each stops what the other started, and the addresses do not collide
    assert w.ip_of("from-cli") != w.ip_of("from-klee")
    daemon.klee("stop", "from-cli")
    w.kn("stop", "from-klee")
    assert "running" not in w.kn("ps", "-a").stdout
    daemon.klee("rmc", "from-cli", "from-klee")
    assert w.query("SELECT * FROM containers") == []


def _tiny_root(root) -> None:
    """A directory with a shell and the libraries it needs, and nothing else."""
    copy_shell(root)
    (root / "marker").write_text("inside\n")
    os.mkfifo(root / "fifo")  # `read x < /fifo` waits for ever


def test_a_directory_image_is_the_containers_root(daemon, tmp_path):
    w = daemon.world
    root = tmp_path / "tiny"
    _tiny_root(root)
    image_id = w.kn("image", "add", "tiny:1", str(root)).stdout.strip()
    assert "tiny" in daemon.klee("lsi").stdout
    daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    r = daemon.klee("run", "-l", "ipnet", "-n", "testnet", "tiny:1", "/bin/sh", "-c", "echo /*; read m < /marker; echo $m")
    assert "inside" in r.stdout and "/marker" in r.stdout and "/proc" not in r.stdout  # not the host's root
    daemon.klee("run", "-d", "--name", "box", "-l", "ipnet", "-n", "testnet", "tiny:1", "/bin/sh", "-c", "read x < /fifo")
    r = daemon.klee("exec", "box", "/bin/sh", "-c", "echo /*")
    assert "/marker" in r.stdout and "/proc" not in r.stdout and "has exited with exit-code 0" in r.stdout
    r = w.kn("image", "rm", "tiny:1", check=False)
    assert r.returncode == 1 and "used by containers" in r.stderr
    daemon.klee("rmc", "-f", "box")
    daemon.klee("container", "prune", "-f")
    assert w.kn("image", "rm", "tiny:1").stdout.strip() == image_id
    r = w.kn("image", "add", "tiny", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"kleenenet: invalid image root '{tmp_path / 'missing'}': not a directory"


@pytest.mark.skipif(not shutil.which("pasta"), reason="pasta is not installed")
def test_a_user_mode_container_is_a_vnet_one_to_klee(daemon):
    """Kleene knows four drivers (klee fails on any other): a pasta container is `vnet` there,
    and kleenenet's own field names its helper."""
    daemon.world.kn("run", "-d", "--name", "um", "-l", "pasta", "--", "sleep", "60")
    assert "um" in daemon.klee("lsc").stdout
    shown = daemon.klee("container", "inspect", "um").stdout
    assert '"vnet"' in shown and '"user_mode_driver": "pasta"' in shown, shown
    assert daemon.world.kn_json("inspect", "um")["container"]["network_driver"] == "pasta"  # the CLI's own words
