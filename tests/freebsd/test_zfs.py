"""Container roots on FreeBSD: a directory, or a clone of a ZFS image's snapshot (zfs.py), made
through py-libzfs, here its fake on the simulated host (fakezfs.py); and what the jail's command
gets: its environment, its user, `exec`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kleenenet.errors import HostError, InvalidInput, KleenenetError
from kleenenet.model import Container, Image
from kleenenet.platform.freebsd import COMMAND_DEFAULTS, FreeBSDPlatform, zfs
from kleenenet.platform.freebsd.host import PreviewRunner
from kleenenet.service import Service
from kleenenet.store import Store
from tests.freebsd.bench import Bench
from tests.freebsd.simhost import SimulatedFreeBSD
from tests.freebsd.test_plans import check_golden, net_loopback

SNAPSHOT = "zroot/images/base@1"
CLONE = "zroot/kleenenet/containers/000000000003"  # the container's id follows the network's and image's
ROOT = "/" + CLONE


def add_image(s):
    s.add_image("base", SNAPSHOT)


def with_image(s):
    net_loopback(s)
    add_image(s)


def run_from_image(s):
    s.run(["ifconfig"], name="web", driver="ipnet", networks=("testnet",), detach=True, image="base")


def create_from_image(s):
    s.create_container(["sh"], name="web", image="base")


def datasets(host) -> dict:
    return host.state["zfs"]["datasets"]


# Each (setup, op): op is planned into a golden file, carried out, and failed at each of its
# steps in turn (`run` only where its root is made: see test_a_failing_jail_destroys_the_new_clone).
OPERATIONS = {
    "create-zfs-image": (with_image, create_from_image),
    "rm-zfs-image": (lambda s: (with_image(s), create_from_image(s)), lambda s: s.remove("web")),
}
PLANS = {**OPERATIONS, "run-zfs-image": (with_image, run_from_image)}


@pytest.mark.parametrize("name", PLANS)
def test_plan_matches_golden_file(bench, name):
    setup, op = PLANS[name]
    setup(bench.svc())
    check_golden(name, bench.plan(op))


@pytest.mark.parametrize("name", OPERATIONS)
def test_failure_at_every_step_rolls_back(tmp_path, name):
    setup, op = OPERATIONS[name]
    ok = Bench(tmp_path / "ok")
    setup(ok.svc())
    start = ok.host.changes
    op(ok.svc())
    steps = ok.host.changes - start
    assert steps > 0
    for k in range(1, steps + 1):
        b = Bench(tmp_path / f"fail{k}")
        setup(b.svc())
        before, containers = b.host.snapshot(), b.store.containers()
        b.host.fail_at = b.host.changes + k
        with pytest.raises(HostError, match="injected failure"):
            op(b.svc())
        assert b.host.snapshot() == before, f"step {k} ({b.host.log[-1]}) left changes behind"
        assert b.store.containers() == containers


def test_the_clone_is_the_jail_root_and_removing_the_container_destroys_it(bench):
    s = bench.svc()
    with_image(s)
    run_from_image(s)
    c = s.store.container("web")
    assert (c.dataset, c.root) == (CLONE, ROOT)
    clone = datasets(bench.host)[CLONE]
    assert clone["origin"] == SNAPSHOT and clone["mounted"] and clone["props"] == {"mountpoint": ROOT}
    for parent in ("zroot/kleenenet", "zroot/kleenenet/containers"):  # never mounted
        assert datasets(bench.host)[parent] == {"props": {"canmount": "off"}, "origin": None, "mounted": False}
    assert bench.host.state["jails"]["kn000000000003"]["params"]["path"] == ROOT
    s.remove("web", force=True)  # jail -r first: a jail's root keeps its file system busy
    assert CLONE not in datasets(bench.host)
    assert "zroot/kleenenet/containers" in datasets(bench.host)  # kept for the next container
    assert bench.store.containers() == []
    # With its last clone gone, the image's snapshot could be destroyed.
    bench.host.zfs.ZFS().get_snapshot(SNAPSHOT).delete()
    assert SNAPSHOT not in bench.host.state["zfs"]["snapshots"]


def test_a_second_container_finds_the_parents(bench):
    s = bench.svc()
    with_image(s)
    create_from_image(s)
    lines = bench.plan(lambda s: s.create_container(["sh"], name="other", image="base")).splitlines()
    assert [line.split()[:2] for line in lines] == [["zfs", "clone"], ["zfs", "mount"]]


def test_a_failing_jail_destroys_the_new_clone(bench):
    """The clone is made in the container's transaction: a later failure (here the jail) should
    roll it back with the store."""
    s = bench.svc()
    with_image(s)
    before = bench.host.snapshot()
    bench.host.fail_on = "jail -c"
    with pytest.raises(HostError, match="injected failure"):
        run_from_image(s)
    assert bench.host.snapshot() == before
    assert bench.store.containers() == []
    start = bench.host.log.index("zfs create -o canmount=off zroot/kleenenet")
    assert bench.host.log[start:] == [
        "zfs create -o canmount=off zroot/kleenenet",
        "zfs create -o canmount=off zroot/kleenenet/containers",
        f"zfs clone -u -o mountpoint={ROOT} {SNAPSHOT} {CLONE}",
        f"zfs mount {CLONE}",
        f"jail -c name=kn000000000003 path={ROOT} host.hostname=web persist ip4=new ip6=new",
        # the rollback
        f"zfs unmount -f {CLONE}",
        f"zfs destroy {CLONE}",
        "zfs destroy zroot/kleenenet/containers",
        "zfs destroy zroot/kleenenet",
    ]


def test_removing_a_container_whose_clone_is_gone(bench):
    s = bench.svc()
    with_image(s)
    create_from_image(s)
    fake = bench.host.zfs.ZFS().get_dataset(CLONE)
    fake.umount()
    fake.delete()  # behind kleenenet's back
    assert bench.plan(lambda s: s.remove("web")) == "\n"
    s.remove("web")
    assert bench.store.containers() == []


def test_an_unmounted_clone_is_mounted_before_its_jail_starts(bench):
    """After a reboot with zfs_enable off nothing mounts the clone: starting the container does."""
    s = bench.svc()
    with_image(s)
    create_from_image(s)
    datasets(bench.host)[CLONE]["mounted"] = False
    lines = bench.plan(lambda s: s.start("web")).splitlines()
    assert lines[:2] == [f"zfs mount {CLONE}", f"jail -c name=kn000000000003 path={ROOT} host.hostname=web "
                                                "persist ip4=inherit ip6=inherit"]
    s.start("web")
    assert datasets(bench.host)[CLONE]["mounted"]


def test_the_origin_snapshot_outlives_its_clones(bench):
    s = bench.svc()
    with_image(s)
    create_from_image(s)
    with pytest.raises(RuntimeError, match="snapshot has dependent clones"):
        bench.host.zfs.ZFS().get_snapshot(SNAPSHOT).delete()
    with pytest.raises(RuntimeError, match="filesystem has children"):
        bench.host.zfs.ZFS().get_dataset("zroot/kleenenet/containers").delete()


def test_a_clone_is_busy_while_a_jail_has_its_root_there(bench):
    s = bench.svc()
    with_image(s)
    run_from_image(s)
    with pytest.raises(RuntimeError, match="busy"):
        bench.host.zfs.ZFS().get_dataset(CLONE).umount()
    with pytest.raises(RuntimeError, match="dataset is busy"):
        bench.host.zfs.ZFS().get_dataset(CLONE).delete()  # mounted


# images

@pytest.mark.parametrize("snapshot", ["zroot@1", "/zroot/images/base@1", "zroot/images/base@",
                                      "zroot//base@1", "zroot/../base@1", "zroot/images base@1", "1pool/base@1",
                                      "zroot/images/base@1@2", "zroot/" + "x" * 250 + "@1"])
def test_a_snapshot_name_is_checked(bench, snapshot):
    before = bench.store.images()
    with pytest.raises(InvalidInput, match="invalid image snapshot .*use POOL/DATASET@SNAPSHOT"):
        bench.svc().add_image("base", snapshot)
    assert bench.store.images() == before


def test_a_missing_snapshot_is_refused(bench):
    with pytest.raises(InvalidInput, match=r"^invalid image snapshot 'zroot/images/base@2': no such ZFS snapshot$"):
        bench.svc().add_image("base", "zroot/images/base@2")


def test_an_image_snapshot_is_kept(bench):
    img = bench.svc().add_image("base:14.2", SNAPSHOT)
    assert (img.snapshot, img.root, img.tag) == (SNAPSHOT, "", "14.2")


def test_without_py_libzfs(monkeypatch):
    """On FreeBSD without the port, one line says what to install (and only a ZFS image needs it)."""
    monkeypatch.setitem(sys.modules, "libzfs", None)  # import libzfs raises ImportError
    with pytest.raises(HostError) as e:
        zfs.import_libzfs()
    message = str(e.value)
    assert message == (f"ZFS images need py-libzfs: pkg install py{sys.version_info.major}{sys.version_info.minor}"
                       "-libzfs (the devel/py-libzfs port)")
    assert "\n" not in message


def test_the_preview_host_assumes_the_snapshot_exists_and_changes_nothing():
    platform = FreeBSDPlatform(PreviewRunner())
    assert platform.check_snapshot(SNAPSHOT) == SNAPSHOT
    c = Container(id="000000000001", name="web", cmd=["sh"], network_driver="host", created="now")
    img = Image(id="000000000002", name="base", snapshot=SNAPSHOT, created="now")
    c = c.model_copy(update=platform.container_dataset(c, img))
    plan = platform.plan_create_root(c, img)
    assert plan.lines()[-2:] == [f"zfs clone -u -o mountpoint=/zroot/kleenenet/containers/000000000001 {SNAPSHOT} "
                                 "zroot/kleenenet/containers/000000000001",
                                 "zfs mount zroot/kleenenet/containers/000000000001"]
    with pytest.raises(KleenenetError, match="this is not FreeBSD"):
        plan.execute()


def kn(state, *args):
    return subprocess.run([sys.executable, "-m", "kleenenet", "--state-dir", str(state), "--platform", "freebsd",
                           *args], capture_output=True, text=True)


def test_run_from_a_zfs_image_plan(tmp_path):
    r = kn(tmp_path, "--dry-run", "image", "add", "base", SNAPSHOT)
    assert r.returncode == 0, r.stderr
    store = Store(tmp_path)
    Service(store, FreeBSDPlatform(SimulatedFreeBSD())).add_image("base", SNAPSHOT)
    store.close()
    r = kn(tmp_path, "--dry-run", "run", "-l", "host", "--image", "base", "--", "sh")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["zfs create -o canmount=off zroot/kleenenet",
                         "zfs create -o canmount=off zroot/kleenenet/containers"]
    clone = lines[2].split()[-1]
    assert lines[2] == f"zfs clone -u -o mountpoint=/{clone} {SNAPSHOT} {clone}"
    assert lines[3] == f"zfs mount {clone}"
    assert lines[4].startswith(f"jail -c name=kn{clone.rpartition('/')[2]} path=/{clone} ")


# directories

def test_a_root_directory_must_exist(bench):
    with pytest.raises(InvalidInput, match=r"^invalid root directory '/jails/www': not a directory$"):
        bench.svc().run(["true"], name="w", detach=True, path="/jails/www")
    bench.host.state["directories"].append("/jails/www")
    bench.svc().run(["true"], name="w", detach=True, path="/jails/www")
    jail = "kn" + bench.store.container("w").id
    assert bench.host.state["jails"][jail]["params"]["path"] == "/jails/www"


def test_a_path_jail_parameter_still_wins(bench):
    bench.host.state["directories"].append("/jails/other")
    bench.svc().run(["true"], name="w", detach=True, jail_params=("path=/jails/other",))
    assert bench.host.state["jails"]["kn000000000001"]["params"]["path"] == "/jails/other"


def test_the_preview_host_does_not_check_this_machines_directories(tmp_path):
    r = kn(tmp_path, "--dry-run", "run", "-l", "host", "--path", "/no/such/dir/here", "--", "sh")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("jail -c name=kn")
    assert " path=/no/such/dir/here " in r.stdout.splitlines()[0]


# the command: environment, user, exec

def test_the_command_gets_its_environment_and_user(bench):
    s = bench.svc()
    s.create_container(["sh", "-c", "env"], name="w", env=["GREETING=hello world", "EMPTY="], user="www")
    lines = bench.plan(lambda s: s.start("w")).splitlines()
    assert lines[-1] == ("# then: env PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin "
                         "'GREETING=hello world' EMPTY= jexec -U www kn000000000001 sh -c env")
    s.start("w")
    assert bench.host.started == ["jexec -U www kn000000000001 sh -c env"]
    assert bench.host.environments == [{"PATH": COMMAND_DEFAULTS["PATH"], "GREETING": "hello world", "EMPTY": ""}]


def test_a_command_of_a_port_is_found_whoever_starts_it(bench):
    """jexec keeps its caller's environment, and rc.d's PATH has no /usr/local/bin: the command
    gets login.conf's default PATH, unless the container's env sets one."""
    s = bench.svc()
    assert s.run(["python3", "-c", "pass"], name="py") == 0
    assert bench.host.environments[-1]["PATH"] == COMMAND_DEFAULTS["PATH"]
    assert s.exec_environ("py")["PATH"] == COMMAND_DEFAULTS["PATH"]  # (kleenenet exec, the API's exec)
    s.create_container(["sleep", "60"], name="own", env=["PATH=/bin:/usr/bin"])
    s.start("own")
    assert bench.host.environments[-1]["PATH"] == "/bin:/usr/bin"
    assert s.exec_environ("own")["PATH"] == "/bin:/usr/bin"


def test_exec_command(bench):
    s = bench.svc()
    s.create_container(["sleep", "60"], name="w", user="www")
    s.start("w")
    assert s.exec_command("w", ["id", "-un"]) == (["jexec", "-U", "www", "kn000000000001", "id", "-un"], [])
    assert s.exec_command("w", ["id"], user="root") == (["jexec", "-U", "root", "kn000000000001", "id"], [])
    c = bench.store.container("w").model_copy(update={"user": ""})
    assert bench.platform.exec_command(c, ["true"], "") == (["jexec", "kn000000000001", "true"], [])
