"""User-mode networking (pasta, slirp4netns) and rootless runs, in the test world: containers
reach the fake upstream through the helper, DNS resolves through a server there, published ports
answer from upstream, the helper ends with its container (stop, or kill -9 plus reconcile), and
an unprivileged user runs a pasta container in a user namespace of its own."""

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from kleenenet.platform.linux.namespaces import process_alive
from tests.linux.world import KLEENENET, UPLINK_ADDR, WAN_ADDR

DRIVERS = [pytest.param(d, marks=pytest.mark.skipif(not shutil.which(d), reason=f"{d} is not installed"))
           for d in ("pasta", "slirp4netns")]
NOBODY = 65534
# A DNS server for the upstream: answers every A question with 198.51.100.7 (one record).
DNS_SERVER = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53)); print('ready', flush=True)
while True:
    q, peer = s.recvfrom(512)
    end = q.index(b'\\0', 12) + 5  # the question: its name, type and class
    s.sendto(q[:2] + b'\\x81\\x80' + q[4:6] + b'\\0\\x01\\0\\0\\0\\0' + q[12:end]
             + b'\\xc0\\x0c\\0\\x01\\0\\x01\\0\\0\\0\\x3c\\0\\x04' + bytes([198, 51, 100, 7]), peer)
"""
ANSWER = "198.51.100.7"


def connect(addr: str, port: int, python: str = sys.executable, send: bool = False) -> list[str]:
    """A command that connects to addr:port, with `send` sends a line, and prints the answer."""
    code = (f"import socket; s=socket.create_connection(({addr!r},{port}),timeout=3); "
            + ("s.sendall(b'hi\\n'); " if send else "") + "print(s.recv(100).decode())")
    return [python, "-c", code]


def helper_of(world, name: str) -> tuple[int, int]:
    [(pid, start)] = world.query(f"SELECT helper_pid, helper_start FROM containers WHERE name = '{name}'")
    return pid, start


def pid_of(world, name: str) -> tuple[int, int]:
    [(pid, start)] = world.query(f"SELECT pid, pid_start FROM containers WHERE name = '{name}'")
    return pid, start


def gone(pid: int, start: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("driver", DRIVERS)
def test_reaches_the_upstream(world, driver):
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    r = world.kn("run", "--rm", "-l", driver, "--", *connect(WAN_ADDR, 8000))
    assert r.stdout.strip() == UPLINK_ADDR  # it leaves through the helper's sockets: the host's address


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_helper_ends_with_stop_and_with_reconcile_after_kill(world, driver):
    world.kn("run", "-d", "--name", "a", "-l", driver, "--", "sleep", "60")
    helper = helper_of(world, "a")
    assert process_alive(*helper)  # positive control
    world.kn("stop", "a")
    assert gone(*helper)
    assert helper_of(world, "a") == (None, None)

    world.kn("run", "-d", "--name", "b", "-l", driver, "--", "sleep", "60")
    helper = helper_of(world, "b")
    world.power_cut()  # the container and its watcher, not the helper
    assert gone(*pid_of(world, "b"))
    assert process_alive(*helper)  # nothing ended it yet
    world.kn("reconcile")
    assert gone(*helper)
    assert helper_of(world, "b") == (None, None)


@pytest.fixture
def upstream_dns(world, tmp_path):
    """A DNS server in the upstream, and the host's resolv.conf naming it."""
    p = subprocess.Popen(["ip", "netns", "exec", world.wan, sys.executable, "-c", DNS_SERVER],
                         stdout=subprocess.PIPE, text=True)
    world.servers.append(p)  # ended with the world
    assert p.stdout.readline().strip() == "ready"
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {WAN_ADDR}\n")
    return {"KLEENENET_HOST_RESOLV_CONF": str(conf)}


@pytest.mark.parametrize("driver", DRIVERS)
def test_dns_resolves_through_the_upstream(world, upstream_dns, driver):
    r = world.kn("run", "--rm", "-l", driver, "--", "getent", "ahostsv4", "www.example.test", env=upstream_dns)
    assert r.stdout.split()[0] == ANSWER
    # positive control of the other side: without the host's resolver there is no answer
    r = world.kn("run", "--rm", "-l", driver, "--dns", "192.0.2.99", "--", "getent", "ahostsv4",
                 "www.example.test", check=False, env=upstream_dns, timeout=90)
    assert r.returncode != 0


def serve_in(world, name: str, driver_args: list[str], port: int) -> None:
    """A detached container whose server reads a line, then answers with the peer's address
    (client first: pasta 2023-03 leaves a connection from outside half-open until the client
    sends, so a server that speaks first is never heard)."""
    code = ("import socket\n"
            "s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('::',{port})); s.listen()\n"
            "while True:\n c,a=s.accept(); c.recv(100); c.sendall(a[0].removeprefix('::ffff:').encode()); c.close()\n")
    world.kn("run", "-d", "--name", name, *driver_args, "--", sys.executable, "-c", code)
    deadline = time.monotonic() + 5
    while not world.kn("exec", name, "--", "ss", "-Htln", check=False).stdout.strip():
        assert time.monotonic() < deadline, f"server in {name} did not start"
        time.sleep(0.05)


def from_upstream(world, port: int) -> str | None:
    r = subprocess.run(["ip", "netns", "exec", world.wan, *connect(UPLINK_ADDR, port, send=True)], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.mark.skipif(not shutil.which("pasta"), reason="pasta is not installed")
def test_pasta_forwards_a_port_from_the_upstream(world):
    serve_in(world, "closed", ["-l", "pasta"], 8080)
    assert from_upstream(world, 8080) is None  # nothing forwarded unless asked
    world.kn("rm", "-f", "closed")
    serve_in(world, "open", ["-l", "pasta:-t,8080"], 8080)
    assert from_upstream(world, 8080) == WAN_ADDR
    serve_in(world, "published", ["-l", "pasta", "-p", "8081:9000"], 9000)
    assert from_upstream(world, 8081) == WAN_ADDR


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
def test_slirp4netns_publishes_a_port(world):
    serve_in(world, "s", ["-l", "slirp4netns", "-p", "8082:9000"], 9000)
    assert from_upstream(world, 8082) is not None
    assert from_upstream(world, 8083) is None  # positive control's other side: only what is published
    r = world.kn("run", "--rm", "-l", "slirp4netns", "-p", "uplink:8084:80", "--", "true", check=False)
    assert r.returncode != 0 and "'uplink'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# rootless

@pytest.fixture
def nobody(world):
    """Run kleenenet as an unprivileged user inside the world's host namespace, its state in a
    directory of its own. The machine's /dev/net/tun is root's only (0600; distributions ship
    it 0666 for user-mode networking): the user sees the usual node in a mount namespace of its
    own, nothing of the machine's changes."""
    home = tempfile.mkdtemp(prefix="kleenenet-nobody-")
    os.chmod(home, 0o755)
    os.chown(home, NOBODY, NOBODY)
    state = os.path.join(home, "state")
    tun = os.path.join(home, "tun")
    os.mknod(tun, 0o20666, os.makedev(10, 200))
    os.chmod(tun, 0o666)

    def kn(*args: str, check: bool = True, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
        script = 'mount --bind "$0" /dev/net/tun && exec "$@"'
        argv = ["nsenter", f"--net=/run/netns/{world.host}", "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, tun, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                *KLEENENET, *args]
        environ = {**world.env, "KLEENENET_STATE_DIR": state, "HOME": home, **(env or {})}  # None unsets
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/",
                           env={k: v for k, v in environ.items() if v is not None})
        if check and r.returncode != 0:
            raise AssertionError(f"kleenenet {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r
    kn.state = state
    try:
        yield kn
    finally:
        for pid in world_processes_of(state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(home, ignore_errors=True)


def world_processes_of(state: str) -> list[int]:
    """Processes started with this state directory (containers and their helpers)."""
    mark = f"KLEENENET_STATE_DIR={state}".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not shutil.which("pasta"), reason="pasta is not installed")
def test_an_unprivileged_user_runs_a_pasta_container(world, nobody):
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    # (the system's python: the test's may be under a home the user cannot enter)
    r = nobody("run", "--rm", "-l", "pasta", "--", *connect(WAN_ADDR, 8000, shutil.which("python3", path="/usr/bin")))
    assert r.stdout.strip() == UPLINK_ADDR
    # a plain run without root is the same: user-mode networking, not the host's
    assert nobody("run", "--rm", "--", *connect(WAN_ADDR, 8000, shutil.which("python3", path="/usr/bin"))
                  ).stdout.strip() == UPLINK_ADDR
    assert nobody("run", "--rm", "-l", "none", "--", "ls", "/sys/class/net").stdout.split() == ["lo"]
    # in a user namespace of its own, where the user is root
    assert nobody("run", "--rm", "-l", "pasta", "--", "id", "-u").stdout.strip() == "0"
    nobody("run", "-d", "--name", "a", "-l", "pasta", "--", "sleep", "60")
    assert nobody("exec", "a", "--", "cat", "/proc/self/uid_map").stdout.split() == ["0", str(NOBODY), "1"]
    assert nobody("exec", "a", "--", "ls", "/sys/class/net").stdout.split() == ["lo", "uplink"]
    helper = helper_of_state(nobody.state, "a")
    assert process_alive(*helper)
    nobody("stop", "a")
    assert gone(*helper)


def test_an_unprivileged_users_state_is_their_own(world, nobody):
    """Without KLEENENET_STATE_DIR a user's state is $XDG_DATA_HOME/kleenenet, else
    ~/.local/share/kleenenet: never root's, never another user's."""
    home = os.path.dirname(nobody.state)
    nobody("run", "--name", "by-xdg", "-l", "none", "--", "true",
           env={"KLEENENET_STATE_DIR": None, "XDG_DATA_HOME": os.path.join(home, "data")})
    nobody("run", "--name", "by-home", "-l", "none", "--", "true", env={"KLEENENET_STATE_DIR": None})
    for state, name in ((os.path.join(home, "data", "kleenenet"), "by-xdg"),
                        (os.path.join(home, ".local", "share", "kleenenet"), "by-home")):
        with sqlite3.connect(f"file:{state}/kleenenet.db?mode=ro", uri=True) as conn:
            assert conn.execute("SELECT name FROM containers").fetchall() == [(name,)]
        assert os.stat(state).st_uid == NOBODY and stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert not os.path.exists(nobody.state)  # the fixture's own state was not used
    assert world.kn("ps", "-a").stdout.count("by-") == 0  # nor root's


def helper_of_state(state: str, name: str) -> tuple[int, int]:
    with sqlite3.connect(f"file:{state}/kleenenet.db?mode=ro", uri=True) as conn:
        [(pid, start)] = conn.execute("SELECT helper_pid, helper_start FROM containers WHERE name = ?", (name,))
    return pid, start


def test_an_unprivileged_user_is_refused_what_needs_root(world, nobody):
    for args in (["network", "create", "--subnet", "10.9.0.0/24", "n"], ["run", "--rm", "-l", "vnet", "--", "true"]):
        r = nobody(*args, check=False)
        assert r.returncode != 0 and "needs root" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
def test_without_pasta_slirp4netns_runs_instead(world, tmp_path):
    """A PATH without pasta: `-l pasta` says once that slirp4netns runs instead, and it does;
    pasta's own options are refused, since slirp4netns would not honour them."""
    no_pasta = tmp_path / "bin"
    no_pasta.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for entry in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if not entry.startswith(("pasta", "passt")) and not (no_pasta / entry).exists():
                (no_pasta / entry).symlink_to(os.path.join(d, entry))
    env = {"PATH": str(no_pasta)}
    world.serve(["ip", "netns", "exec", world.wan], 8000)
    r = world.kn("run", "--rm", "-l", "pasta", "--", *connect(WAN_ADDR, 8000), env=env)
    assert r.stderr.splitlines() == ["kleenenet: pasta is not installed: using slirp4netns"]
    assert r.stdout.strip() == UPLINK_ADDR  # through slirp4netns's sockets: the host's address
    r = world.kn("run", "--rm", "-l", "pasta:-T,7890", "--", "true", env=env, check=False)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        "kleenenet: pasta options '-T,7890' given, but the driver is slirp4netns: install pasta (Debian: passt) "
        "or leave them out"]
    assert world.kn("ps", "-a", "--json").stdout.strip() == "[]"
    r = world.kn("run", "--rm", "-l", "pasta", "--", *connect(WAN_ADDR, 8000))  # positive control: pasta
    assert r.stderr == "" and r.stdout.strip() == UPLINK_ADDR
