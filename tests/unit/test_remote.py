"""The remote FreeBSD host's shell protocol (platform/freebsd/remote.py), against a real shell.

The far end is what a VM's serial port is: a unix socket that accepts one client at a time, in
front of one long-lived /bin/sh whose output goes to whichever client is connected (and is lost
while none is). The commands are this machine's: the protocol needs POSIX sh, cat, tail, wc,
grep, kill and sleep, which FreeBSD has too, and FreeBSD's b64decode, here a stand-in over
base64 -d.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from kleenenet.errors import HostError, KleenenetError
from kleenenet.platform.freebsd.remote import RemoteRunner


class SerialShell:
    """A shell behind a unix socket, as QEMU's `-chardev socket,server=on` puts a serial port."""

    def __init__(self, path: str, bin_dir):
        self.path = path
        # FreeBSD's b64decode -r, as this machine's base64 -d
        bin_dir.mkdir()
        (bin_dir / "b64decode").write_text('#!/bin/sh\nexec base64 -d\n')
        (bin_dir / "b64decode").chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.shell = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, bufsize=0, env=env)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.client: socket.socket | None = None
        self.spoil = 0  # requests whose middle is lost on the way, as a full tty queue loses it
        threading.Thread(target=self._output, daemon=True).start()
        threading.Thread(target=self._accept, daemon=True).start()

    def _output(self):
        while chunk := os.read(self.shell.stdout.fileno(), 65536):
            client = self.client
            if client is not None:
                try:
                    client.sendall(chunk)
                except OSError:
                    pass

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.client = conn
            while data := conn.recv(65536):
                if self.spoil and len(data) > 40:
                    self.spoil -= 1
                    data = data[:20] + data[40:]
                self.shell.stdin.write(data)
            self.client = None
            conn.close()

    def close(self):
        self.listener.close()
        self.shell.kill()  # by its own pid
        self.shell.wait()


@pytest.fixture
def shell(tmp_path):
    shell = SerialShell(str(tmp_path / "cmd.sock"), tmp_path / "bin")
    try:
        yield shell
    finally:
        shell.close()


@pytest.fixture
def serial(shell):
    return RemoteRunner(f"serial:{shell.path}")


def test_output_error_and_status_come_back_apart(serial):
    done = serial.execute(["sh", "-c", "printf 'out\\nno newline'; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\nno newline", "err\n")
    assert serial.run(["echo", "a b", "'c'"]) == "a b 'c'\n"


def test_a_failure_is_one_line_naming_the_command(serial):
    with pytest.raises(HostError, match=r"^ls /nonexistent-kleenenet: .*No such file"):
        serial.run(["ls", "/nonexistent-kleenenet"])
    assert serial.succeeds(["true"]) and not serial.succeeds(["false"])


def test_standard_input_arrives_whole(serial):
    text = "".join(f"pass quick from 10.0.{k // 250}.{k % 250} to any label \"x'$HOME\"\n" for k in range(5000))
    assert serial.run(["cat"], text) == text
    assert serial.run(["wc", "-l"], "no newline at the end").split() == ["1"]


def test_leftover_output_of_an_abandoned_exchange_is_not_taken_for_the_next(serial, tmp_path):
    # A client that dies mid-command: its output arrives while the next client is connected.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(serial.path)
    s.sendall(b"sleep 0.3; echo stale-output\n")
    s.close()
    assert serial.run(["echo", "fresh"]) == "fresh\n"


def test_exchanges_of_several_processes_do_not_mix(serial):
    results = {}

    def worker(k):
        results[k] = [serial.run(["echo", f"{k}-{j}"]) for j in range(10)]
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: [f"{k}-{j}\n" for j in range(10)] for k in range(4)}


def test_a_background_command_is_an_ordinary_subprocess_here(serial, tmp_path):
    log = tmp_path / "log"
    proc = serial.start(["sh", "-c", "echo started; echo $GREETING; exit 7"], log, {"GREETING": "hi there"})
    assert proc.wait(timeout=30) == 7
    assert log.read_text() == "started\nhi there\n"


def test_signals_reach_the_remote_command(serial, tmp_path):
    mark = tmp_path / "mark"
    proc = subprocess.Popen(serial.wrap(["sh", "-c", f"trap 'echo got-term >{mark}; exit 5' TERM; "
                                                      "echo ready; while :; do sleep 0.1; done"]),
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 5
    assert mark.read_text() == "got-term\n"
    # a command killed by a signal: 128 + its number, as a shell says
    proc = subprocess.Popen(serial.wrap(["sh", "-c", "echo ready; exec sleep 60"]), stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM


def test_an_unreachable_host_is_one_line(tmp_path):
    runner = RemoteRunner(f"serial:{tmp_path}/absent.sock")
    with pytest.raises(HostError, match=r"cannot reach the FreeBSD host at serial:.*absent.sock"):
        runner.run(["true"])
    relay = subprocess.run(runner.wrap(["true"]), capture_output=True, text=True)
    assert relay.returncode == 125 and relay.stderr.startswith("kleenenet: cannot reach the FreeBSD host")


def test_a_malformed_spec_is_refused():
    with pytest.raises(KleenenetError, match="invalid KLEENENET_FREEBSD_REMOTE 'ssh:host'"):
        RemoteRunner("ssh:host")


def test_the_environment_variable_chooses_freebsd_and_the_remote_host(serial, monkeypatch):
    from kleenenet.platform import get_platform

    monkeypatch.setenv("KLEENENET_FREEBSD_REMOTE", serial.spec)
    platform = get_platform()
    assert platform.name == "freebsd" and isinstance(platform.runner, RemoteRunner)
    assert platform.runner.spec == serial.spec
    assert platform.runner.is_directory("/") and not platform.runner.is_directory(f"/nonexistent{os.getpid()}")


def test_the_relay_refuses_a_bad_command_line():
    r = subprocess.run([sys.executable, "-m", "kleenenet.platform.freebsd.remote", "relay"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("usage:")


def test_a_relay_whose_command_the_host_lost_ends(serial):
    """After a reboot the remote host has no trace of the command: its relay exits (255)."""
    proc = subprocess.Popen(serial.wrap(["sleep", "60"]))
    pidfiles = []
    for _ in range(100):
        pidfiles = serial.run(["sh", "-c", "ls /tmp/kleenenet-remote/*.pid 2>/dev/null || true"]).split()
        if pidfiles:
            break
        time.sleep(0.1)
    pids = [serial.run(["cat", f]).strip() for f in pidfiles]
    try:
        serial.run(["rm", "-f", *pidfiles])
        assert proc.wait(timeout=30) == 255
    finally:
        serial.run(["kill", *pids])  # the sleep, by the pid its own shell wrote



def test_a_request_spoilt_on_its_way_is_sent_again_and_spoils_nothing_after(shell, serial, monkeypatch):
    monkeypatch.setattr("kleenenet.platform.freebsd.remote.ACKNOWLEDGE", 1)
    shell.spoil = 1
    assert serial.run(["echo", "it's (not) \"quoted\""]) == "it's (not) \"quoted\"\n"
    assert shell.spoil == 0  # the first request was spoilt, the second ran
    assert serial.run(["echo", "after"]) == "after\n"
    shell.spoil = 3
    with pytest.raises(HostError, match="no answer to 3 requests"):
        serial.run(["true"])
    assert serial.run(["echo", "still there"]) == "still there\n"


def test_a_request_that_was_only_late_runs_once(shell, serial, monkeypatch, tmp_path):
    """The shell is busy with a command whose client gave up: the request is sent again, and its
    copies that arrive later do not run it again."""
    monkeypatch.setattr("kleenenet.platform.freebsd.remote.ACKNOWLEDGE", 1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(serial.path)
    s.sendall(b"sleep 2\n")
    s.close()
    counted = tmp_path / "count"
    serial.run(["sh", "-c", f"echo once >>{counted}"])
    serial.run(["sleep", "0.5"])  # the later copies have had their turn
    assert counted.read_text() == "once\n"

