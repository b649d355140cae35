"""Containers from a ZFS image, for real: kleenenet clones the image's snapshot through py-libzfs
and the jail runs in the clone. Skipped without py-libzfs (vagrant/provision.sh installs
py311-libzfs when pkg has it) or the zfs kernel module. The pool is made for the test on a file
and destroyed after it."""

from pathlib import Path

import pytest

from tests.jails.host import sh

POOL = "kntest"
POOL_FILE = Path("/var/tmp/kntest.img")
SNAPSHOT = f"{POOL}/images/rescue@1"


@pytest.fixture
def pool():
    pytest.importorskip("libzfs", reason="py-libzfs is not installed: pkg install py311-libzfs")
    if sh("kldload", "-n", "zfs", check=False).returncode != 0:
        pytest.skip("the zfs kernel module does not load")
    if sh("zpool", "list", POOL, check=False).returncode == 0:
        pytest.fail(f"a pool {POOL} exists already: the test makes and destroys its own")
    sh("truncate", "-s", "256m", str(POOL_FILE))
    try:
        sh("zpool", "create", "-m", f"/{POOL}", POOL, str(POOL_FILE))
        # The image: FreeBSD's statically linked tools (rescue(8)); tar keeps their hard links.
        sh("zfs", "create", "-p", f"{POOL}/images/rescue")
        sh("sh", "-c", f"tar -cf - -C / rescue | tar -xpf - -C /{POOL}/images/rescue")
        sh("zfs", "snapshot", SNAPSHOT)
        yield POOL
    finally:
        sh("zpool", "destroy", "-f", POOL, check=False)
        POOL_FILE.unlink(missing_ok=True)


def test_a_container_runs_in_a_clone_of_its_image(pool, kn):  # (kn is torn down first: its clones go before the pool)
    kn("image", "add", "rescue", SNAPSHOT)
    kn("network", "create", "--subnet", "10.77.1.0/24", "lnet")
    r = kn("run", "--image", "rescue", "-l", "ipnet", "-n", "lnet", "--name", "r", "--",
           "/rescue/sh", "-c", "echo made here > /made; /rescue/ifconfig")
    assert "10.77.1.1" in r.stdout, r.stdout
    c = kn.json("inspect", "r")["container"]
    assert c["dataset"] == f"{POOL}/kleenenet/containers/{c['id']}" and c["root"] == "/" + c["dataset"]
    origin = sh("zfs", "get", "-H", "-o", "value", "origin", c["dataset"]).stdout.strip()
    assert origin == SNAPSHOT
    assert Path(c["root"], "made").read_text() == "made here\n"  # the jail's / is the clone
    assert not Path(f"/{POOL}/images/rescue/made").exists()  # and the image is as it was
    kn("rm", "r")
    assert sh("zfs", "list", c["dataset"], check=False).returncode != 0
    assert sh("zfs", "get", "-H", "-o", "value", "canmount", f"{POOL}/kleenenet").stdout.strip() == "off"
    sh("zfs", "destroy", SNAPSHOT)  # no clone holds it any more
