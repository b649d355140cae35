"""`kleenenet --host`: the command line sends its commands to the daemon and shows the same results
as when it acts itself; errors are one line; commands without an API equivalent refuse it."""

import json
import re
import subprocess
import sys

import pytest

from tests.linux.world import KLEENENET


def remote(daemon) -> tuple[str, ...]:
    return ("--host", f"unix://{daemon.socket}")


def both(daemon, *args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The command run directly, then through the daemon."""
    w = daemon.world
    return w.kn(*args, check=False), w.kn(*remote(daemon), *args, check=False)


def test_networks_through_the_daemon(daemon):
    w = daemon.world
    host = remote(daemon)
    lan_id = w.kn(*host, "network", "create", "-t", "bridge", "--subnet", "10.3.1.0/24", "lan").stdout.strip()
    direct_id = w.kn("network", "create", "-t", "bridge", "--subnet", "10.3.2.0/24", "direct").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", lan_id)
    # the bridge got its gateway and NAT toward the default route, as a direct create gives it
    lan, direct = (json.loads(w.kn("network", "inspect", n).stdout)["network"] for n in ("lan", "direct"))
    assert (lan["gateway"], lan["nat"], lan["interface"]) == ("10.3.1.1", "uplink", "kleene0")
    assert {k: v for k, v in lan.items() if k not in ("id", "name", "subnet", "gateway", "interface")} == \
        {k: v for k, v in direct.items() if k not in ("id", "name", "subnet", "gateway", "interface")}
    for args in (("network", "ls"), ("network", "ls", "--json"), ("network", "inspect", "lan")):
        local, through = both(daemon, *args)
        assert (through.returncode, through.stdout, through.stderr) == (0, local.stdout, ""), args

    w.kn("run", "-d", "--name", "box", "-l", "vnet", "--", "sleep", "600")
    w.kn(*host, "network", "connect", "--ip", "10.3.1.9", "lan", "box")
    w.kn(*host, "network", "connect", "direct", "box")
    eps = json.loads(w.kn("inspect", "box").stdout)["container_endpoints"]
    assert sorted((ep["ip_address"], bool(ep["epair"])) for ep in eps) == [("10.3.1.9", True), ("10.3.2.2", True)]
    local, through = both(daemon, "ps")
    assert through.stdout == local.stdout and re.search(r"box .* (lan,direct|direct,lan) ", local.stdout)
    local, through = both(daemon, "inspect", "box")
    assert json.loads(through.stdout) == json.loads(local.stdout)

    # a network with containers is refused by rm (the API itself would disconnect them first)
    local, through = both(daemon, "network", "rm", "lan")
    assert through.returncode == local.returncode == 1
    assert through.stderr == local.stderr == \
        "kleenenet: network 'lan' has connected containers (box): disconnect them first\n"
    w.kn(*host, "network", "disconnect", "lan", "box")
    assert [ep["ip_address"] for ep in json.loads(w.kn("inspect", "box").stdout)["container_endpoints"]] == \
        ["10.3.2.2"]
    assert w.kn(*host, "network", "prune").stdout.split() == [lan_id]
    w.kn(*host, "rm", "-f", "box")
    assert w.kn(*host, "network", "rm", "direct").stdout.split() == [direct_id]
    assert w.query("SELECT * FROM networks") == w.query("SELECT * FROM containers") == []
    assert sorted(w.links()) == ["lo", "uplink"]


def test_run_in_the_foreground_and_detached(daemon):
    w = daemon.world
    host = remote(daemon)
    w.kn("network", "create", "--subnet", "10.3.3.0/24", "lan")

    # the output and the exit code of the command, as a direct run gives them
    run = ("run", "-n", "lan", "--", "sh", "-c", "echo hi; ip -4 -br addr | grep -c 10.3.3; exit 3")
    local, through = both(daemon, *run)
    assert (through.returncode, through.stdout, through.stderr) == (3, "hi\n1\n", "")
    assert (local.returncode, local.stdout) == (3, "hi\n1\n")
    stopped = w.query("SELECT id FROM containers WHERE NOT running")
    assert len(stopped) == len(w.query("SELECT id FROM containers")) == 2
    assert w.kn(*host, "rm", *[cid for cid, in stopped]).stdout.split() == [cid for cid, in stopped]

    # --rm: nothing is left, however the command ends
    for cmd in ("true", "exit 7"):
        r = w.kn(*host, "run", "--rm", "-n", "lan", "--", "sh", "-c", cmd, check=False)
        assert r.returncode == (0 if cmd == "true" else 7), r.stderr
    assert w.query("SELECT * FROM containers") == w.query("SELECT * FROM endpoints") == []
    assert not [link for link in w.links() if link.startswith("kv")]

    # detached: the id; then exec, stop and rm through the daemon
    cid = w.kn(*host, "run", "-d", "--name", "box", "-n", "lan", "--", "sleep", "600").stdout.strip()
    assert w.query("SELECT id, running FROM containers") == [(cid, 1)]
    ip = w.ip_of("box")
    show = f"ip -4 -br addr | grep -o {ip}"
    r = w.kn(*host, "exec", "box", "--", "sh", "-c", f"{show}; echo err >&2; exit 4", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, f"{ip}\nerr\n", "")  # stderr comes with the output
    assert w.kn("exec", "box", "--", "sh", "-c", show).stdout == f"{ip}\n"
    local, through = both(daemon, "ps")
    assert through.stdout == local.stdout and "running" in local.stdout
    assert w.kn(*host, "stop", "box").stdout.strip() == cid
    local, through = both(daemon, "ps", "-a")
    assert through.stdout == local.stdout and "stopped" in local.stdout
    assert w.kn(*host, "rm", "box").stdout.strip() == cid
    assert w.store_dump()["containers"] == []


def test_errors_are_one_line_as_directly(daemon):
    w = daemon.world
    host = remote(daemon)
    w.kn("network", "create", "--subnet", "10.3.4.0/24", "lan")
    w.kn("run", "-d", "--name", "box", "-n", "lan", "--", "sleep", "600")
    w.kn("run", "--name", "done", "--", "true")
    before = w.store_dump()
    for args in [
        ("network", "create", "--subnet", "10.3.4.0/24", "lan"),
        ("network", "create", "--subnet", "10.3.4.128/25", "other"),
        ("network", "create", "--subnet", "10.3.5.0/33", "other"),
        ("network", "create", "-t", "loopback", "--gw", "10.3.5.1", "--subnet", "10.3.5.0/24", "other"),
        ("network", "inspect", "nonet"),
        ("network", "rm", "nonet"),
        ("network", "connect", "lan", "nobody"),
        ("network", "connect", "lan", "box"),
        ("network", "disconnect", "nonet", "box"),
        ("run", "-n", "lan", "-n", "lan", "--", "true"),
        ("run", "-l", "host", "-n", "lan", "--", "true"),
        ("run", "--name", "box", "--", "true"),
        ("run", "--name", "bad/name", "--", "true"),
        ("run", "--image", "nosuchimage", "--", "true"),
        ("run", "-n", "nonet", "--", "true"),  # created, then removed again when it cannot connect
        ("run",),
        ("exec", "box"),
        ("exec", "nobody", "--", "true"),
        ("inspect", "nobody"),
        ("stop", "nobody"),
        ("rm", "box"),
        ("rm", "nobody"),
    ]:
        local, through = both(daemon, *args)
        assert local.returncode == through.returncode == 1, (args, local.stderr, through.stderr)
        assert through.stdout == ""
        assert through.stderr == local.stderr, args
        assert re.fullmatch(r"kleenenet: [^\n]+\n", through.stderr), (args, through.stderr)
    assert w.store_dump() == before

    # what only the daemon can say is one line too
    r = w.kn(*host, "exec", "done", "--", "true", check=False)
    assert r.returncode == 1 and re.fullmatch(r"kleenenet: [^\n]*not running[^\n]*\n", r.stderr), r.stderr
    # options that the API has no equivalent for
    for args in (("--dry-run", "network", "ls"), ("network", "connect", "--dry-run", "lan", "done"),
                 ("stop", "-t", "1", "box"), ("run", "--path", "/", "--", "true")):
        r = w.kn(*host, *args, check=False)
        assert r.returncode == 1 and re.fullmatch(r"kleenenet: [^\n]+\n", r.stderr), (args, r.stderr)
    assert w.store_dump() == before
    w.kn("rm", "-f", "box", "done")


def test_a_daemon_on_loopback_tcp(world):
    from tests.api.conftest import Daemon

    d = Daemon.__new__(Daemon)
    d.world, d.socket = world, world.state_dir.parent / "k.sock"
    d.start("--listen", "127.0.0.1:8086")
    try:
        host = ("--host", "http://127.0.0.1:8086")
        world.kn(*host, "network", "create", "--subnet", "10.3.6.0/24", "lan")
        assert world.kn(*host, "network", "ls").stdout == world.kn("network", "ls").stdout
        r = world.kn(*host, "run", "--rm", "-n", "lan", "--", "sh", "-c", "echo over tcp; exit 2", check=False)
        assert (r.returncode, r.stdout, r.stderr) == (2, "over tcp\n", "")
        assert world.query("SELECT * FROM containers") == []
    finally:
        d.stop()


def kn_here(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in this namespace, for what fails before it touches anything."""
    return subprocess.run([*KLEENENET, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("host, reason", [
    ("unix:///nonexistent/kleenenet.sock", "No such file or directory"),
    ("http:///nonexistent/kleenenet.sock", "No such file or directory"),
    ("http://127.0.0.1:1", "Connection refused"),
])
def test_an_unreachable_daemon_is_one_line(host, reason):
    for args in (("network", "ls"), ("network", "connect", "lan", "box"), ("run", "--", "true"),
                 ("exec", "box", "--", "true")):
        r = kn_here("--host", host, *args)
        assert (r.returncode, r.stdout, r.stderr) == (
            1, "", f"kleenenet: cannot reach the daemon at {host}: {reason}\n"), args


def test_commands_that_act_on_this_machine_refuse_host(tmp_path):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KLEENENET_STATE_DIR": str(tmp_path / "state")}
    for args in (("reconcile",), ("doctor",), ("image", "add", "img", "/"),
                 ("daemon", "--socket", str(tmp_path / "k.sock"))):
        r = kn_here("--host", "unix:///run/kleenenet.sock", *args, env=env)
        assert r.returncode == 1 and r.stderr == \
            f"kleenenet: {' '.join(args[:2] if args[0] == 'image' else args[:1])} acts on this machine and takes " \
            "no --host (--host unix:///run/kleenenet.sock is given)\n", r.stderr
        r = kn_here(*args, env={**env, "KLEENENET_HOST": "unix:///run/kleenenet.sock"})
        assert r.returncode == 1 and r.stderr.endswith("(KLEENENET_HOST is set)\n"), r.stderr
    for args in (("--state-dir", str(tmp_path)), ("--platform", "linux")):
        r = kn_here("--host", "unix:///run/kleenenet.sock", *args, "network", "ls", env=env)
        assert r.returncode == 1 and r.stderr.startswith(f"kleenenet: {args[0]} does not work with --host"), r.stderr
    r = kn_here("--host", "https://example.com", "network", "ls", env=env)
    assert r.returncode == 1 and r.stderr.startswith("kleenenet: invalid --host 'https://example.com'")
    assert not (tmp_path / "state").exists()


def test_the_client_reads_what_an_http_server_may_answer(tmp_path):
    """Content-Length, chunked and until-close bodies; a kept-alive connection that the server
    closed is opened again; an error status is the daemon's message."""
    import socket
    import threading

    from kleenenet.api.client import Remote
    from kleenenet.errors import KleenenetError

    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n[1, 2]\n",  # then the server closes: idle
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\n{\"a\"\r\n4;x=y\r\n: 1}\r\n0\r\n\r\n",
        b"HTTP/1.1 409 Conflict\r\nContent-Length: 19\r\n\r\n{\"message\": \"no!\"}\n",
        b"HTTP/1.0 200 OK\r\n\r\n\"until the close\"",
    ]
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def serve():
        conn = None
        for i, answer in enumerate(answers):
            if conn is None or i == 1:
                if conn:
                    conn.close()
                conn = server.accept()[0]
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            conn.sendall(answer)
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    remote = Remote(f"unix://{path}")
    assert remote.call("GET", "/one") == [1, 2]
    assert remote.call("POST", "/two", {"x": 1}) == {"a": 1}
    with pytest.raises(KleenenetError, match="^no!$"):
        remote.call("DELETE", "/three")
    assert remote.call("GET", "/four") == "until the close"
    server.close()


def imported(*args: str, status: int = 0) -> set[str]:
    """The top-level packages a CLI process imports (it must end with `status`: a process that
    failed early would import little)."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "kleenenet", *args], capture_output=True,
                       text=True, timeout=60)
    said = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert r.returncode == status and not any("Traceback" in line for line in said), r.stderr
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in r.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_the_command_line_starts_lean(tmp_path):
    heavy = {"pydantic", "pyroute2", "aiohttp", "jinja2", "sqlite3", "http", "email"}
    assert not imported("--help") & heavy
    assert not imported("--host", "unix:///nonexistent.sock", "network", "connect", "lan", "box", status=1) & (
        heavy - {"http", "email"})  # http.client, for the request
    assert "pyroute2" not in imported("--state-dir", str(tmp_path), "ps")  # the state alone: no netlink


def test_netlink_loads_pyroute2_without_the_packages_init(world):
    """IPRoute comes from its own module; the package's __init__ (NDB, IPDB, ...) runs only when
    someone asks the package itself for a name."""
    code = ("import sys\n"
            "from kleenenet.platform.linux.netlink import Netlink\n"
            "nl = Netlink(); assert 'uplink' in [link['name'] for link in nl.links()]; nl.close()\n"
            "assert not [m for m in sys.modules if m.startswith(('pyroute2.ndb', 'pyroute2.ipdb'))]\n"
            "from pyroute2 import NDB, IPRoute\n"
            "import pyroute2\n"
            "assert pyroute2.IPRoute is IPRoute is sys.modules['kleenenet.platform.linux.netlink'].IPRoute\n"
            "assert 'pyroute2.ndb.main' in sys.modules\n")
    subprocess.run(world.in_host(sys.executable, "-c", code), check=True, timeout=60)
