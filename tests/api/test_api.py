"""Kleene's API over the daemon's socket with a real HTTP and WebSocket client: every path and
status code, bad input, many clients at once, a daemon restart, clients that go away."""

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import unix_connect

from tests.klee import KLEE
from tests.linux.world import sh

# The status codes klee's generated client accepts for each call (klee/client/api/default/*.py);
# it fails on any other.
ACCEPTED = {
    ("POST", "/networks/create"): {201, 409, 500},
    ("GET", "/networks/list"): {200, 500},
    ("GET", "/networks/{}/inspect"): {200, 404, 500},
    ("DELETE", "/networks/{}"): {200, 404, 500},
    ("POST", "/networks/prune"): {200, 500},
    ("POST", "/networks/connect"): {204, 404, 409, 500},
    ("POST", "/networks/{}/disconnect/{}"): {204, 404, 500},
    ("POST", "/containers/create"): {201, 404, 500},
    ("GET", "/containers/list"): {200},
    ("GET", "/containers/{}/inspect"): {200, 404, 500},
    ("POST", "/containers/{}/stop"): {200, 404, 500},
    ("DELETE", "/containers/{}"): {200, 404, 409, 500},
    ("POST", "/containers/prune"): {200, 500},
    ("POST", "/exec/create"): {201, 404, 500},
    ("GET", "/images/list"): {200},
}


class Api:
    """An HTTP client on the socket that checks every answer is one klee accepts."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.http = daemon.client()

    def call(self, method: str, route: str, *parts: str, expect: int | None = None, **kwargs):
        r = self.http.request(method, route.format(*parts), **kwargs)
        assert r.status_code in ACCEPTED[(method, route)], (method, route, parts, r.status_code, r.text)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            message = r.json()["message"]
            assert message and "\n" not in message
        if expect is not None:
            assert r.status_code == expect, r.text
        return r.json() if r.content else None

    def exec_start(self, exec_id: str, attach: bool = True, start_container=True, first=None):
        """The WebSocket: the frames received and the close code and reason."""
        frames = []
        with unix_connect(str(self.daemon.socket), uri="ws://localhost/exec/start") as ws:
            ws.send(first if first is not None else json.dumps(
                {"exec_id": exec_id, "attach": attach, "start_container": start_container}))
            try:
                while True:
                    frames.append(ws.recv(timeout=60))
            except ConnectionClosed:
                pass
            return frames, ws.close_code, ws.close_reason

    def container(self, name: str, cmd: list[str], network: str | None = None, **config) -> str:
        cid = self.call("POST", "/containers/create", expect=201, json={
            "name": name, "image": "FreeBSD", "cmd": cmd,
            "network_driver": "ipnet" if network else "host", **config})["id"]
        if network:
            self.call("POST", "/networks/connect", expect=204, json={"container": cid, "network": network})
        return cid

    def start(self, cid: str, attach: bool = False):
        exec_id = self.call("POST", "/exec/create", expect=201, json={"container_id": cid, "cmd": []})["id"]
        return self.exec_start(exec_id, attach=attach)


@pytest.fixture
def api(daemon):
    return Api(daemon)


def test_the_socket_is_the_only_listener_and_is_root_only(daemon):
    mode = os.stat(daemon.socket)
    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 0
    assert sh(*daemon.world.in_host("ss", "-Htln")).stdout.strip() == ""
    # a TCP listener only when asked, and only on loopback
    r = daemon.world.kn("daemon", "--socket", str(daemon.socket) + "2", "--listen", "0.0.0.0:8085", check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        "kleenenet: invalid --listen '0.0.0.0:8085': give a loopback address and port, e.g. 127.0.0.1:8085")
    # a second daemon on a served socket is refused, and the first keeps serving
    r = daemon.world.kn("daemon", "--socket", str(daemon.socket), check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"kleenenet: a daemon already serves {daemon.socket}"
    assert daemon.serving()


def test_listen_on_loopback(world):
    from tests.api.conftest import Daemon

    d = Daemon.__new__(Daemon)
    d.world, d.socket = world, world.state_dir.parent / "k.sock"
    d.start("--listen", "127.0.0.1:8085")
    try:
        code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8085/networks/list').read().decode())"
        assert sh(*world.in_host(sys.executable, "-c", code)).stdout.strip() == "[]"
    finally:
        d.stop()


def test_every_call_and_its_status_codes(api):
    w = api.daemon.world
    net = api.call("POST", "/networks/create", expect=201, json={
        "name": "testnet", "type": "bridge", "subnet": "10.2.3.0/24", "gateway": "<auto>", "gateway6": "<auto>"})["id"]
    api.call("POST", "/networks/create", expect=409, json={"name": "testnet", "type": "loopback", "subnet": "10.9.0.0/24"})
    api.call("POST", "/networks/create", expect=409, json={"name": "other", "type": "loopback", "subnet": "10.2.3.0/25"})
    assert [n["name"] for n in api.call("GET", "/networks/list", expect=200)] == ["testnet"]
    assert api.call("GET", "/networks/{}/inspect", net[:5], expect=200)["network"]["gateway"] == "10.2.3.1"
    api.call("GET", "/networks/{}/inspect", "nonet", expect=404)

    cid = api.container("box", ["sleep", "600"], "testnet", env=["GREETING=hi there"])
    api.call("POST", "/networks/connect", expect=409, json={"container": cid, "network": "testnet"})
    api.call("POST", "/networks/connect", expect=404, json={"container": "nobody", "network": "testnet"})
    api.call("POST", "/containers/create", expect=404, json={"name": "box", "image": "FreeBSD", "cmd": ["true"]})
    api.call("POST", "/containers/create", expect=404, json={"image": "NoSuchImage", "cmd": ["true"]})
    assert api.call("GET", "/containers/list", params={"all": "false"}) == []
    [summary] = api.call("GET", "/containers/list", params={"all": "true"})
    assert (summary["name"], summary["image_name"], summary["image_tag"], summary["running"]) == (
        "box", "FreeBSD", "latest", False)

    frames, code, reason = api.start(cid)
    assert code == 1001 and frames == [] and json.loads(reason)["msg_type"] == "closing"
    frames, code, reason = api.start(cid)  # already running
    assert code == 1011 and "already running" in json.loads(reason)["message"]
    exec_id = api.call("POST", "/exec/create", expect=201, json={
        "container_id": "box", "cmd": ["sh", "-c", "echo $GREETING; ip -4 -br addr show eth0; exit 7"],
        "env": ["GREETING=hello"]})["id"]
    api.call("POST", "/exec/create", expect=404, json={"container_id": "nobody", "cmd": ["true"]})
    frames, code, reason = api.exec_start(exec_id, start_container="true")  # as klee's exec sends it
    assert json.loads(frames[0]) == {"msg_type": "starting", "message": "", "data": ""}
    assert "hello\n" in "".join(frames[1:]) and "10.2.3.2/24" in "".join(frames[1:])
    assert code == 1000 and json.loads(reason)["message"] == f"{exec_id} has exited with exit-code 7"
    frames, code, reason = api.exec_start(exec_id)  # an instance starts once
    assert code == 1002 and "no such exec instance" in json.loads(reason)["message"]
    frames, code, reason = api.exec_start("", first="{not json")
    assert code == 1002 and "invalid exec start config" in json.loads(reason)["message"]

    assert api.call("GET", "/containers/{}/inspect", "box", expect=200)["container"]["running"] is True
    api.call("DELETE", "/containers/{}", "box", expect=409)
    api.call("POST", "/networks/{}/disconnect/{}", "testnet", "box", expect=204)
    api.call("POST", "/networks/{}/disconnect/{}", "testnet", "box", expect=404)
    assert w.wired_ports() == set()
    assert api.call("POST", "/containers/{}/stop", "box", expect=200) == {"id": cid}
    api.call("POST", "/containers/{}/stop", "nobody", expect=404)
    api.call("GET", "/containers/{}/inspect", "nobody", expect=404)
    assert api.call("POST", "/containers/prune", expect=200) == [cid]
    api.call("DELETE", "/containers/{}", "box", expect=404)
    assert [i["name"] for i in api.call("GET", "/images/list", expect=200)] == ["FreeBSD"]
    assert api.call("POST", "/networks/prune", expect=200) == [net]
    api.call("DELETE", "/networks/{}", "testnet", expect=404)
    assert w.store_dump()["containers"] == [] and w.store_dump()["networks"] == []


def test_removing_a_network_disconnects_its_containers_as_in_kleene(api):
    api.call("POST", "/networks/create", expect=201, json={"name": "n", "type": "loopback", "subnet": "10.2.3.0/24"})
    cid = api.container("box", ["sleep", "600"], "n")
    api.start(cid)
    assert api.daemon.world.wired_ports()
    api.call("DELETE", "/networks/{}", "n", expect=200)
    assert api.daemon.world.wired_ports() == set() and api.daemon.world.query("SELECT * FROM endpoints") == []
    api.call("POST", "/containers/{}/stop", cid, expect=200)


BAD_REQUESTS = [
    # (method, path, body, status, words the message names)
    ("POST", "/networks/create", b"{not json", 409, "invalid JSON body"),
    ("POST", "/networks/create", b"\xff\xfe", 409, "invalid JSON body"),
    ("POST", "/networks/create", b'["a"]', 409, "invalid body"),
    ("POST", "/networks/create", b'{"type": "loopback", "subnet": "10.2.3.0/24"}', 409, "missing field 'name'"),
    ("POST", "/networks/create", b'{"name": 5, "type": "loopback"}', 409, "invalid name 5"),
    ("POST", "/networks/create", b'{"name": "a", "type": "loopback", "subnet": "10.2.3.0/24", "color": "red"}',
     409, "unknown field 'color'"),
    ("POST", "/networks/create", b'{"name": "a/b", "type": "loopback", "subnet": "10.2.3.0/24"}', 409, "'a/b'"),
    ("POST", "/networks/create", b'{"name": "..", "type": "loopback", "subnet": "10.2.3.0/24"}', 409, "'..'"),
    ("POST", "/networks/create", b'{"name": "a\\u0000b", "type": "loopback", "subnet": "10.2.3.0/24"}', 409, "a\\x00b"),
    ("POST", "/networks/create", b'{"name": "a", "type": "wormhole", "subnet": "10.2.3.0/24"}', 409, "'wormhole'"),
    ("POST", "/networks/create", b'{"name": "a", "type": "loopback", "subnet": "10.2.3.0/24", "icc": "yes"}',
     409, "invalid icc 'yes'"),
    ("POST", "/networks/create", b'{"name":"a","type":"loopback","subnet":"10.2.3.0/24"}' + b" " * 300_000,
     409, "too large"),
    ("POST", "/networks/connect", b'{"container": "\\udcff", "network": "n"}', 409, "'\\udcff' is not a Unicode"),
    ("POST", "/networks/connect", b'{"container": "x"}', 409, "missing field 'network'"),
    ("POST", "/networks/connect", b'{"container": ["x"], "network": "n"}', 409, "invalid container ['x']"),
    ("POST", "/containers/create", b'{"cmd": ["true"]}', 404, "missing field 'image'"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": "true"}', 404, "invalid cmd 'true'"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": ["true"], "name": "../x"}', 404, "'../x'"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": ["true"], "network_driver": "tunnel"}', 404, "'tunnel'"),
    ("POST", "/containers/create", b'{"image": "../etc", "cmd": ["true"]}', 404, "kleenenet image add"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": ["true"], "env": ["NOEQUALS"]}', 404, "'NOEQUALS'"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": ["true"], "network_driver": "ipnet", '
     b'"public_ports": [{"interfaces": [], "host_port": "0", "container_port": "80"}]}', 404, "invalid port '0'"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": ["true"], "network_driver": "ipnet", '
     b'"public_ports": [{"interfaces": [], "host_port": "80", "container_port": "80", "protocol": "sctp"}]}',
     404, "invalid public_ports.0.protocol 'sctp'"),
    ("POST", "/containers/create", b'{"image": "FreeBSD", "cmd": ["true"], "dns": ["resolver.example"]}',
     404, "'resolver.example'"),
    ("POST", "/exec/create", b'{"container_id": 7}', 404, "invalid container_id 7"),
    ("GET", "/networks/%ff/inspect", b"", 404, "'%ff'"),
    ("GET", "/networks/a%00b/inspect", b"", 404, "'a\\x00b'"),
    ("GET", "/containers/..%2f..%2fetc/inspect", b"", 404, None),
    ("GET", "/containers/list?all=maybe", b"", 400, "invalid all 'maybe'"),
    ("GET", "/no/such/path", b"", 404, "no such path: GET /no/such/path"),
    ("PUT", "/networks/list", b"", 405, "method PUT not allowed"),
]


def test_bad_requests_are_refused_in_one_line_and_change_nothing(api):
    w = api.daemon.world
    api.call("POST", "/networks/create", expect=201, json={"name": "n", "type": "loopback", "subnet": "10.2.9.0/24"})
    before = w.snapshot()
    for method, path, body, status, words in BAD_REQUESTS:
        r = api.http.request(method, path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (path, body[:80], r.status_code, r.text)
        message = r.json()["message"]
        assert "\n" not in message and (words is None or words in message), (path, body[:80], message)
    assert w.snapshot() == before
    assert api.call("GET", "/networks/list", expect=200)[0]["name"] == "n"  # still serving


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=6)
FIELDS = {"/networks/create": ["name", "type", "subnet", "subnet6", "gateway", "gateway6", "interface", "nat", "icc",
                               "internal"],
          "/networks/connect": ["container", "network", "ip_address", "ip_address6"],
          "/containers/create": ["name", "image", "cmd", "env", "user", "network_driver", "jail_param", "persist",
                                 "restart_policy", "mounts", "public_ports"],
          "/exec/create": ["container_id", "cmd", "env", "user", "tty"]}
PLAUSIBLE = st.sampled_from(["n", "box", "FreeBSD", "loopback", "bridge", "10.2.9.0/24", "10.2.9.5", "<auto>",
                             "", "ipnet", "no", "a/b", "..", "\x00", "\udcff"])


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(sorted(FIELDS)), data=st.data())
def test_random_bodies_get_accepted_status_codes(api_for_fuzz, path, data):
    api, before = api_for_fuzz
    fields = data.draw(st.dictionaries(st.sampled_from(FIELDS[path] + ["extra"]),
                                       st.one_of(PLAUSIBLE, json_values, st.lists(PLAUSIBLE, max_size=2)), max_size=6))
    body = json.dumps(fields).encode("utf-8", "surrogatepass")
    r = api.http.post(path, content=body)
    assert r.status_code in ACCEPTED[("POST", path)] and r.status_code < 500, (fields, r.status_code, r.text)
    if r.status_code >= 400:
        assert "\n" not in r.json()["message"]
        assert api.daemon.world.store_dump() == before
    elif path == "/networks/create":
        api.call("DELETE", "/networks/{}", r.json()["id"], expect=200)
    elif path == "/containers/create":
        api.call("DELETE", "/containers/{}", r.json()["id"], expect=200)
    elif path == "/networks/connect":
        api.call("POST", "/networks/{}/disconnect/{}", fields["network"], fields["container"], expect=204)


@pytest.fixture(scope="module")
def api_for_fuzz(tmp_path_factory):
    """One daemon for every example (hypothesis calls the test many times in one fixture scope)."""
    from tests.api.conftest import Daemon
    from tests.linux.world import World

    w = World(tmp_path_factory.mktemp("fuzz"))
    d = None
    try:
        d = Daemon(w)
        api = Api(d)
        api.call("POST", "/networks/create", expect=201, json={"name": "n", "type": "loopback", "subnet": "10.2.9.0/24"})
        api.container("box", ["sleep", "600"])
        yield api, w.store_dump()
    finally:
        if d and d.proc.poll() is None:
            d.stop()
        w.destroy()


def test_fifty_clients_connect_at_once(api):
    """All answered, no duplicate address, nothing 5xx; the containers are running, so each
    connect wires a port while the others wait for the state."""
    w = api.daemon.world
    api.call("POST", "/networks/create", expect=201, json={"name": "home", "type": "loopback", "subnet": "10.2.8.0/24"})
    api.call("POST", "/networks/create", expect=201, json={"name": "busy", "type": "bridge", "subnet": "10.2.7.0/24",
                                                           "gateway": "<auto>"})
    ids = [api.container(f"c{k}", ["sleep", "600"], "home") for k in range(50)]
    with ThreadPoolExecutor(50) as pool:
        started = list(pool.map(lambda cid: Api(api.daemon).start(cid)[1], ids))
        assert started == [1001] * 50
        barrier = threading.Barrier(50)

        def connect(cid):
            client = Api(api.daemon)
            barrier.wait()
            return client.http.post("/networks/connect", json={"container": cid, "network": "busy",
                                                               "ip_address": "<auto>", "ip_address6": "<auto>"})
        answers = list(pool.map(connect, ids))
    assert [r.status_code for r in answers] == [204] * 50, [r.text for r in answers if r.status_code != 204]
    addresses = [a for a, in w.query("SELECT ip_address FROM endpoints e JOIN networks n ON n.id = e.network_id "
                                     "WHERE n.name = 'busy'")]
    assert len(set(addresses)) == 50 and "10.2.7.1" not in addresses and "10.2.7.255" not in addresses
    assert len(w.wired_ports()) == 100


SERVER = ("import socket\n"
          "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',8080)); s.listen()\n"
          "while True:\n c,a=s.accept(); c.sendall(b'up'); c.close()\n")


def test_a_restarted_daemon_takes_over_running_containers(api):
    w = api.daemon.world
    api.call("POST", "/networks/create", expect=201, json={"name": "n", "type": "bridge", "subnet": "10.2.3.0/24"})
    cid = api.container("web", [sys.executable, "-c", SERVER], "n")
    api.start(cid)
    ip = w.ip_of("web")
    assert w.connect_from("n", ip, 8080, 5) == "up"
    before = _host_and_rows(w)
    api.daemon.stop()
    assert w.container_pids() and _host_and_rows(w) == before  # SIGTERM left the container alone
    assert w.connect_from("n", ip, 8080, 5) == "up"
    api.daemon.start()  # its reconcile finds nothing to change
    assert _host_and_rows(w) == before
    api = Api(api.daemon)
    assert api.call("GET", "/containers/{}/inspect", "web", expect=200)["container"]["running"] is True
    exec_id = api.call("POST", "/exec/create", expect=201, json={"container_id": cid, "cmd": ["ss", "-Htln"]})["id"]
    frames, code, _ = api.exec_start(exec_id)
    assert code == 1000 and ":8080" in "".join(frames)
    api.call("POST", "/containers/{}/stop", cid, expect=200)
    assert w.container_pids() == [] and w.wired_ports() == set()


def _host_and_rows(w) -> dict:
    """The host and the state, but for where the next automatic address search starts."""
    snap = w.snapshot()
    snap["store"]["networks"] = [row[:11] + row[13:] for row in snap["store"]["networks"]]  # less last_ip, last_ip6
    return snap


def _drop(daemon, config: dict, frames_before_drop: int = 1, before_drop=None) -> list[str]:
    """Start over a WebSocket and vanish without a close frame, as a killed client does;
    `before_drop(frames)` looks at things while the client is still there."""
    ws = unix_connect(str(daemon.socket), uri="ws://localhost/exec/start")
    ws.send(json.dumps(config))
    frames = [ws.recv(timeout=30) for _ in range(frames_before_drop)]
    if before_drop:
        before_drop(frames)
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()
    return frames


def _eventually(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_client_gone_mid_run_leaves_the_container_running_or_removes_a_rm_one_whole(api):
    w = api.daemon.world
    api.call("POST", "/networks/create", expect=201, json={"name": "n", "type": "bridge", "subnet": "10.2.3.0/24"})
    before = _host_and_rows(w)
    for auto_remove in (False, True):
        cid = api.container(f"sleeper{int(auto_remove)}", ["sleep", "600"], "n", auto_remove=auto_remove)
        exec_id = api.call("POST", "/exec/create", expect=201, json={"container_id": cid, "cmd": []})["id"]
        _drop(api.daemon, {"exec_id": exec_id, "attach": True, "start_container": True})
        if auto_remove:
            _eventually(lambda: not w.query(f"SELECT * FROM containers WHERE id = '{cid}'"))
        else:
            time.sleep(0.5)
            assert api.call("GET", "/containers/list", params={"all": "false"})[0]["id"] == cid
            api.call("POST", "/containers/{}/stop", cid, expect=200)
            api.call("DELETE", "/containers/{}", cid, expect=200)
        assert w.container_pids() == [] and _host_and_rows(w) == before


def test_a_client_gone_mid_exec_ends_the_exec(api):
    cid = api.container("box", ["sleep", "600"])
    api.start(cid)
    exec_id = api.call("POST", "/exec/create", expect=201, json={
        "container_id": cid, "cmd": ["sh", "-c", "echo $$; exec sleep 600"]})["id"]
    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat_file:
                return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (FileNotFoundError, ProcessLookupError):  # reaped (also between opening and reading)
            return True

    def runs_while_the_client_is_there(frames):
        assert not gone(int(frames[1].split()[0]))
    frames = _drop(api.daemon, {"exec_id": exec_id, "attach": True, "start_container": False}, 2,
                   runs_while_the_client_is_there)
    _eventually(lambda: gone(int(frames[1].split()[0])))
    assert api.call("GET", "/containers/{}/inspect", cid, expect=200)["container"]["running"] is True
    api.call("POST", "/containers/{}/stop", cid, expect=200)


@pytest.mark.parametrize("step", [1, 4, 6])
def test_a_start_that_fails_halfway_leaves_the_host_as_it_was(api, step):
    """A step of the start's plan fails: the client gets 1011 with the error, the steps done are
    undone, and the container is there, stopped, as it was after create."""
    w, d = api.daemon.world, api.daemon
    api.call("POST", "/networks/create", expect=201, json={"name": "n", "type": "bridge", "subnet": "10.2.3.0/24"})
    cid = api.container("box", ["sleep", "600"], "n")
    before = w.snapshot()
    d.stop()
    d.start(env={"KLEENENET_FAILPOINT": f"run:{step}"})
    frames, code, reason = Api(d).start(cid, attach=True)
    assert code == 1011 and frames == [] and json.loads(reason)["message"].startswith(f"failpoint run:{step} before: "), reason
    assert w.container_pids() == [] and w.snapshot() == before
    assert Api(d).call("GET", "/containers/{}/inspect", cid, expect=200)["container"]["running"] is False


def test_the_command_line_still_works_while_the_daemon_serves(api):
    """The CLI and the daemon share the state: a change by one is seen by the other at once."""
    w = api.daemon.world
    w.kn("network", "create", "--subnet", "10.2.3.0/24", "cli-net")
    assert [n["name"] for n in api.call("GET", "/networks/list", expect=200)] == ["cli-net"]


def test_an_exec_runs_with_the_containers_environment(api):
    cid = api.container("envy", ["/bin/sleep", "60"], env=["FROM_CONTAINER=c", "BOTH=container", "PATH=/nowhere"])
    api.start(cid)
    exec_id = api.call("POST", "/exec/create", expect=201, json={
        "container_id": cid, "cmd": ["/bin/sh", "-c", "echo $FROM_CONTAINER $BOTH $PATH"], "env": ["BOTH=exec"]})["id"]
    frames, code, _ = api.exec_start(exec_id)
    # the exec's own env wins; its PATH is the container's, yet kleenenet still finds nsenter
    assert code == 1000 and "".join(frames[1:]).strip() == "c exec /nowhere"


def test_reads_are_answered_while_changes_wait(api):
    """Changes queue for the state's write lock (held here by another process); reads have
    workers of their own and do not queue behind them."""
    holder = sqlite3.connect(api.daemon.world.state_dir / "kleenenet.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with ThreadPoolExecutor(20) as pool:
        try:
            creating = [pool.submit(api.daemon.client().post, "/networks/create", json={
                "name": f"n{k}", "type": "loopback", "subnet": f"10.3.{k}.0/24"}) for k in range(20)]
            time.sleep(1)  # every change worker is waiting for the lock
            assert not any(f.done() for f in creating)
            with api.daemon.client() as reader:
                assert reader.get("/networks/list", timeout=10).json() == []
                assert reader.get("/containers/list", params={"all": "true"}, timeout=10).json() == []
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert [f.result().status_code for f in creating] == [201] * 20
    assert len(api.call("GET", "/networks/list", expect=200)) == 20


def test_a_stopping_daemon_tells_attached_clients_and_leaves_their_containers(daemon):
    """SIGTERM: an attached klee hears why its connection ends (no traceback), and the container
    keeps running; the daemon started again shows it running."""
    daemon.klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    klee = subprocess.Popen([KLEE, "run", "-l", "ipnet", "-n", "testnet", "FreeBSD", "sh", "-c", "echo up; sleep 60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "KLEE_HOST": f"http://{daemon.socket}"})
    try:
        assert "up" in [klee.stdout.readline().strip() for _ in range(3)]  # it runs, klee attached
        daemon.stop()
        out = klee.communicate(timeout=30)[0]
    finally:
        if klee.poll() is None:
            klee.kill()
    assert "Traceback" not in out and "kleenenet is stopping; the container keeps running" in out, out
    [pid] = daemon.world.container_pids()
    daemon.start()
    assert daemon.world.container_pids() == [pid]
    lines = [line for line in daemon.klee("lsc").stdout.splitlines() if "sleep 60" in line]
    assert len(lines) == 1 and "running" in lines[0], lines


def test_a_daemon_serves_even_when_reconcile_cannot_finish(daemon):
    """A container's port lost while the daemon was down, and wiring it again fails: the daemon
    says so and serves all the same; a later reconcile finishes the job."""
    w = daemon.world
    w.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "n")
    w.kn("run", "-d", "--name", "x", "-n", "n", "--", "sleep", "60")
    [port] = w.wired_ports()
    daemon.stop()
    sh(*w.in_host("ip", "link", "del", port))
    daemon.start(env={"KLEENENET_FAILPOINT": "connect:1"})  # rewiring fails at its first step
    assert "x" in daemon.klee("lsc").stdout
    err = daemon.stop()
    assert "kleenenet: reconcile: reconcile could not wire 1 endpoint(s)" in err, err
    assert port not in w.links()
    w.kn("reconcile")
    assert port in w.links()
