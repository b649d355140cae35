"""Kleene's client, klee, against `kleenenet daemon` (the API Kleene's kleened serves): a network,
a container run from the FreeBSD image (root /, as kleenenet's store has it), and their removal."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.jails.host import Daemon, Klee, eventually


@pytest.fixture
def klee(kn, tmp_path):
    # A short directory: a socket's path must fit sun_path (104 bytes on FreeBSD, sys/un.h).
    where = Path(tempfile.mkdtemp(prefix="kn-klee-", dir="/tmp"))
    if "FreeBSD" not in [img["name"] for img in kn.json("image", "ls", "--json")]:
        kn("image", "add", "FreeBSD", "/")
    daemon = Daemon(kn, where / "k.sock", tmp_path / "daemon.log")
    try:
        daemon.start()
        yield Klee(where / "k.sock")
        daemon.stop()
        assert not (where / "k.sock").exists(), "the daemon left its socket behind"
    finally:
        try:
            daemon.stop()
        finally:
            shutil.rmtree(where, ignore_errors=True)


def test_klee_runs_an_ipnet_jail_through_the_daemon(kn, klee):
    out = klee("network", "create", "--subnet", "10.2.3.0/24", "testnet")
    assert kn.network("testnet")["subnet"] == "10.2.3.0/24", out
    out = klee("run", "--name", "klee-ipnet", "-l", "ipnet", "-n", "testnet", "FreeBSD", "ifconfig")
    assert "10.2.3.1" in out, out  # the jail's ifconfig, streamed back by the daemon
    cid = kn.json("inspect", "klee-ipnet")["container"]["id"]
    assert cid in out  # klee printed the id of the container it created
    assert cid in klee("lsc", "-a")
    # Its command has exited: the daemon takes it off the network, then it can be removed.
    eventually(lambda: not kn.json("inspect", cid)["container"]["running"], "klee-ipnet to stop")
    klee("rmc", cid)
    assert cid not in klee("lsc", "-a")
    klee("network", "rm", "testnet")
    assert kn.json("network", "ls", "--json") == []
    assert kn.json("ps", "-a", "--json") == []
