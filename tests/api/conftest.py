import os
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.klee import run_klee
from tests.linux.world import KLEENENET, World


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
        return run_klee(self.socket, *args, check=check)


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
