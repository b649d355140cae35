"""Fixtures of the jail suite. Every test here is marked `freebsd` and skipped unless it runs as
root on FreeBSD (a machine prepared by vagrant/provision.sh). Each test gets a state directory
of its own and ends by removing every container and network it made, then checks that no
kleenenet interface, pf anchor or jail is left on the host."""

import os
import sys
from pathlib import Path

import pytest

from tests.jails.host import REMOTE, Kleenenet, Wan, neighbour, jail_names, leftovers, prepare_remote, remove_leftovers

HERE = Path(__file__).resolve().parent
ON_FREEBSD = sys.platform.startswith("freebsd")
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# Where the suite runs: as root on FreeBSD, or against the FreeBSD host KLEENENET_FREEBSD_REMOTE
# names (kleenenet and pytest here, every FreeBSD command there).
FREEBSD_HOST = bool(REMOTE) or (ON_FREEBSD and AS_ROOT)


def pytest_collection_modifyitems(items):
    if REMOTE:
        skip = None
    elif not ON_FREEBSD:
        skip = pytest.mark.skip(reason="needs FreeBSD, or KLEENENET_FREEBSD_REMOTE: see vagrant/README.md")
    elif not AS_ROOT:
        skip = pytest.mark.skip(reason="needs root: it creates jails, interfaces and pf anchors")
    else:
        skip = None
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.freebsd)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def remote_host():
    """A remote host is prepared as vagrant/provision.sh prepares a test machine: pf with
    kleenenet's fragment, bridge filtering as doctor advises."""
    if REMOTE:
        prepare_remote()


@pytest.fixture
def kn(tmp_path, remote_host):
    """kleenenet with a fresh state directory; cleans up and checks for leftovers afterwards."""
    jails_before = jail_names()
    found = leftovers(jails_before)
    if found:
        pytest.fail(f"this machine already has kleenenet's interfaces or pf anchors ({found}); the suite "
                    "needs a machine without other kleenenet networks (see vagrant/README.md)")
    k = Kleenenet(tmp_path / "state")
    try:
        yield k
    finally:
        try:
            k.remove_everything()
        finally:
            leaked = leftovers(jails_before)
            remove_leftovers(leaked)
        assert not k.cleanup_errors, f"cleanup failed: {k.cleanup_errors}"
        assert not leaked, f"left on the host after removing every container and network: {leaked}"


@pytest.fixture
def wan(kn, tmp_path):
    """The fake upstream jail (kn-test-wan, 192.0.2.1) and the host's end of its link
    (tstwan0a, 192.0.2.2): create networks with --nat-if tstwan0a."""
    with neighbour(kn, Wan(tmp_path / "wan.log")) as w:
        yield w
