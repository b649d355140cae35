import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.linux.world import KLEENENET, World

KLEE = str(Path(sys.executable).parent / "klee")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/api/" in str(item.fspath):
            item.add_marker(pytest.mark.linux)


class Daemon:
    """`kleenenet daemon` on a socket of its own, inside the world's host namespace."""

    def __init__(self, world: World):
        self.world = world
        self.socket = world.state_dir.parent / "kleenenet.sock"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(self.world.in_host(*KLEENENET, "daemon", "--socket", str(self.socket), *args),
                                     env={**self.world.env, **(env or {})}, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not self.serving():
            assert self.proc.poll() is None, f"the daemon exited: {self.proc.stderr.read()}"
            assert time.monotonic() < deadline, "the daemon did not start serving"
            time.sleep(0.02)

    def serving(self) -> bool:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self) -> str:
        """SIGTERM, as rc.d and systemd stop it; what it wrote to stderr."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return err

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://kleenenet",
                            timeout=60)

    def klee(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The real klee client, as a user runs it."""
        r = subprocess.run([KLEE, *args], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "KLEE_HOST": f"http://{self.socket}", "COLUMNS": "200"})
        assert "Traceback" not in r.stderr + r.stdout, r.stderr + r.stdout
        if check:
            assert r.returncode == 0, r.stderr + r.stdout
        return r


@pytest.fixture
def world(tmp_path):
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.fail("the API tests need root and nftables (see README)")
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.destroy()


@pytest.fixture
def daemon(world):
    d = Daemon(world)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.stop()
