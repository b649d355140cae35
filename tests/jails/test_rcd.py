"""rc.d/kleenenet and rc.d/kleenenet_daemon under the host's real /etc/rc.subr.

The scripts are copied to a directory of the test's own on the FreeBSD host and run directly
(`onestart`), in the environment service(8) gives them (`env -i HOME=/ PATH=/sbin:/bin:/usr/sbin:/usr/bin`,
as /etc/rc does at boot) plus the variables rc.conf would set. Their program is a stand-in shell script that records its arguments and the PATH
it was given (kleenenet itself may not be installed there: on a remote host it runs elsewhere):
what is tested is the scripts' contract with rc.subr and daemon(8) — the commands they run, the
pidfile, stop by SIGTERM, status — not kleenenet, which the rest of the suite tests.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.jails.host import eventually, sh

RC_D = Path(__file__).resolve().parents[2] / "rc.d"
DIR = "/tmp/kn-test-rcd"
PROGRAM = f"{DIR}/kleenenet"
SERVICE_ENV = "env -i HOME=/ PATH=/sbin:/bin:/usr/sbin:/usr/bin"  # service(8)
# The stand-in: appends "ARGS | PATH=..." to calls.log; as `daemon` it stays until SIGTERM.
STANDIN = f"""#!/bin/sh
echo "$* | PATH=$PATH" >> {DIR}/calls.log
case " $* " in
*" daemon "*) trap 'echo "daemon got TERM" >> {DIR}/calls.log; exit 0' TERM
    while :; do sleep 0.2; done ;;
esac
"""


@pytest.fixture
def rcd(remote_host):
    sh("rm", "-rf", DIR)
    sh("mkdir", "-p", DIR)
    for name, text in [("kleenenet", STANDIN)] + [(f"rc.d-{p.name}", p.read_text()) for p in RC_D.iterdir()]:
        sh("sh", "-c", f"cat > {DIR}/{name} && chmod 555 {DIR}/{name}", stdin=text)
    try:
        yield
    finally:
        pidfile = "/var/run/kleenenet_daemon.pid"
        r = sh("cat", pidfile, check=False)
        if r.returncode == 0 and r.stdout.strip().isdigit():
            sh("kill", r.stdout.strip(), check=False)  # daemon(8), by the pid the test's start wrote
        sh("rm", "-rf", DIR, pidfile, "/var/log/kleenenet_daemon.log")


def rc(script: str, command: str, **variables: str) -> str:
    env = [f"{k}={v}" for k, v in {"kleenenet_program": PROGRAM, "kleenenet_state_dir": f"{DIR}/state",
                                    **variables}.items()]
    r = sh("sh", "-c", f"{SERVICE_ENV} {shlex.join(env)} {DIR}/rc.d-{script} {command} 2>&1", check=False)
    assert r.returncode == 0, f"{script} {command} exited {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def calls() -> list[str]:
    return sh("sh", "-c", f"cat {DIR}/calls.log 2>/dev/null || true").stdout.splitlines()


def test_kleenenet_reconciles_at_start_and_keeps_networks_at_stop(rcd):
    assert rc("kleenenet", "onestart").strip().endswith("Reconciling kleenenet networks.")
    assert calls()[0].startswith(f"--state-dir {DIR}/state reconcile | ")
    assert "nothing to stop" in rc("kleenenet", "onestop")
    rc("kleenenet", "onestatus")
    rc("kleenenet", "onedoctor")
    assert [c.split(" | ")[0] for c in calls()] == [f"--state-dir {DIR}/state {what}"
                                                     for what in ("reconcile", "network ls", "doctor")]


def test_kleenenet_daemon_runs_under_daemon8_and_stops_on_sigterm(rcd):
    socket = f"{DIR}/k.sock"
    rc("kleenenet_daemon", "onestart", kleenenet_daemon_socket=socket)
    started = eventually(lambda: [c for c in calls() if " daemon " in f" {c} "], "the daemon's start")
    argv, path = started[0].split(" | ")
    assert argv == f"--state-dir {DIR}/state daemon --socket {socket}"
    # rc(8)'s PATH: no /usr/local/bin, so the containers' commands must not rely on it
    assert path == "PATH=/sbin:/bin:/usr/sbin:/usr/bin", path
    assert "is running as pid" in rc("kleenenet_daemon", "onestatus", kleenenet_daemon_socket=socket)
    rc("kleenenet_daemon", "onestop", kleenenet_daemon_socket=socket)
    assert "daemon got TERM" in calls()
    r = sh("sh", "-c", f"{SERVICE_ENV} kleenenet_program={PROGRAM} {DIR}/rc.d-kleenenet_daemon onestatus", check=False)
    assert r.returncode != 0 and "is not running" in r.stdout + r.stderr
