"""A jail's resolver files on FreeBSD (platform/freebsd/dns.py), on the simulated host: nullfs
mounts of the container's files over its own root's /etc/hosts and /etc/resolv.conf, never over
the host's; unmounted when it stops, rolled back when a start fails, leftovers unmounted by
reconcile; the files kept current as peers come and go."""

from __future__ import annotations

import pytest

from kleenenet.errors import HostError
from tests.freebsd.bench import Bench
from tests.freebsd.test_plans import check_golden, net_bridge
from tests.freebsd.test_zfs import CLONE, ROOT, add_image

IMG = "/srv/img"
HOSTS, RESOLV = f"{IMG}/etc/hosts", f"{IMG}/etc/resolv.conf"


def image_root(host, root: str = IMG) -> None:
    """A directory image whose root has both files."""
    host.state["directories"].append(root)
    host.state["files"] += [f"{root}/etc/hosts", f"{root}/etc/resolv.conf"]


@pytest.fixture
def resolver(tmp_path, monkeypatch):
    """The host's resolver: local_unbound on 127.0.0.1, its upstream in forward.conf."""
    (tmp_path / "resolv.conf").write_text("search example.test\nnameserver 127.0.0.1\noptions edns0\n")
    (tmp_path / "forward.conf").write_text("forward-zone:\n\tname: .\n\tforward-addr: 192.0.2.53\n")
    monkeypatch.setenv("KLEENENET_HOST_RESOLV_CONF", str(tmp_path / "resolv.conf"))
    monkeypatch.setenv("KLEENENET_UPSTREAM_RESOLV_CONF", str(tmp_path / "forward.conf"))


def run_app(s, name="app", path=IMG):
    s.run(["nc", "-l", "80"], name=name, driver="vnet", networks=("bnet",), detach=True, path=path)


def mounts(bench) -> list[list[str]]:
    state = str(bench.store.state_dir)
    return [[src.replace(state, "<state>"), point] for src, point in bench.host.state["mounts"]]


def test_run_and_stop_plans(bench, resolver):
    """The mounts come before the jail is created, the unmounts after it is removed (golden: the
    plans' jail and mount lines; the rest is the plain vnet run's)."""
    image_root(bench.host)
    s = bench.svc()
    net_bridge(s)
    run = bench.plan(run_app)
    run_app(s)
    stop = bench.plan(lambda s: s.stop("app"))
    text = "".join(line + "\n" for plan in (run, stop) for line in plan.splitlines()
                   if line.startswith(("mount", "umount", "jail")))
    check_golden("resolver-files", text.replace(str(bench.store.state_dir), "<state>"))


def test_the_jail_sees_its_files_kept_current(bench, resolver):
    image_root(bench.host)
    s = bench.svc()
    net_bridge(s)
    run_app(s)
    assert mounts(bench) == [["<state>/containers/000000000002/hosts", HOSTS],
                             ["<state>/containers/000000000002/resolv.conf", RESOLV]]
    files = bench.store.state_dir / "containers" / "000000000002"
    resolv = (files / "resolv.conf").read_text()
    assert "nameserver 192.0.2.53\nsearch example.test\noptions edns0\n" in resolv  # unbound's upstream
    assert "10.5.0.2\tapp\n" in (files / "hosts").read_text()
    inode = (files / "hosts").stat().st_ino
    run_app(s, "peer", path="/")  # a jail on the host's root: it joins app's hosts
    assert "10.5.0.3\tpeer\n" in (files / "hosts").read_text() and (files / "hosts").stat().st_ino == inode
    assert len(bench.host.state["mounts"]) == 2  # none for the jail on /
    s.stop("peer")
    hosts = (files / "hosts").read_text()
    assert "#0.5.0.3\tpeer\n" in hosts and "10.5.0.3\tpeer\n" not in hosts  # struck out, in place
    assert (files / "hosts").stat().st_ino == inode
    s.remove("app", force=True)
    assert bench.host.state["mounts"] == [] and not files.exists()
    assert "umount /srv/img/etc/hosts" in bench.host.log


def test_a_start_failing_at_any_step_leaves_nothing_mounted(tmp_path, resolver):
    ok = Bench(tmp_path / "ok")
    image_root(ok.host)
    net_bridge(ok.svc())
    start = len(ok.host.log)
    run_app(ok.svc())
    steps = len(ok.host.log) - start
    for k in range(1, steps + 1):
        b = Bench(tmp_path / f"fail{k}")
        image_root(b.host)
        net_bridge(b.svc())
        before = b.host.snapshot()
        b.host.fail_at = b.host.changes + k
        with pytest.raises(HostError, match="injected failure"):
            run_app(b.svc())
        assert b.host.snapshot() == before, f"step {k} left changes behind"
        assert not (b.store.state_dir / "containers").exists() or not list((b.store.state_dir / "containers").iterdir())


@pytest.mark.parametrize("why", ["host root", "old release", "missing files", "symlinked file", "symlinked etc",
                                 "the host's root by another name", "the host's own file"])
def test_never_over_the_hosts_files(bench, resolver, why):
    host, path = bench.host, IMG
    image_root(host)
    if why == "host root":
        path = "/"
    elif why == "old release":
        host.release(1301000)  # 13.1: nullfs mounts directories only
    elif why == "missing files":
        host.state["files"] = []
    elif why == "symlinked file":
        host.state["symlinks"] = {HOSTS: "/etc/hosts", RESOLV: "/etc/resolv.conf"}
    elif why == "symlinked etc":
        host.state["symlinks"] = {f"{IMG}/etc": "/etc"}
    elif why == "the host's root by another name":
        host.state["symlinks"] = {IMG: "/"}
    elif why == "the host's own file":  # e.g. the host's /etc nullfs-mounted into the root
        host.state["files"] = ["/etc/hosts", "/etc/resolv.conf"]
        host.state["symlinks"] = {"/etc/hosts": HOSTS, "/etc/resolv.conf": RESOLV}
    s = bench.svc()
    net_bridge(s)
    run_app(s, path=path)
    assert host.state["mounts"] == [] and not [line for line in host.log if line.startswith("mount")]
    s.remove("app", force=True)


def test_a_zfs_clone_gets_them_at_start_and_is_unmounted_before_it_is_destroyed(bench, resolver):
    s = bench.svc()
    net_bridge(s)
    add_image(s)
    s.create_container(["sh"], name="web", driver="vnet", image="base")
    image_root(bench.host, ROOT)  # what the clone holds
    s.connect("web", "bnet")
    s.start("web")
    assert [point for _, point in bench.host.state["mounts"]] == [f"{ROOT}/etc/hosts", f"{ROOT}/etc/resolv.conf"]
    s.remove("web", force=True)
    log = bench.host.log
    assert log.index(f"umount {ROOT}/etc/resolv.conf") < log.index(f"zfs destroy {CLONE}")
    assert bench.host.state["mounts"] == []


def test_reconcile_unmounts_what_no_running_container_owns(bench, resolver):
    image_root(bench.host)
    s = bench.svc()
    net_bridge(s)
    run_app(s)
    state = str(bench.store.state_dir)
    # a crash left the files of a container that never was stored mounted over another root
    image_root(bench.host, "/srv/other")
    bench.host.state["mounts"].append([f"{state}/containers/00000000abcd/hosts", "/srv/other/etc/hosts"])
    bench.host.state["mounts"].append(["/usr/ports", "/srv/other/usr/ports"])  # not kleenenet's
    text = bench.plan(lambda s: s.reconcile())
    assert text == "umount /srv/other/etc/hosts  # leftover\n"
    s.reconcile()
    assert [point for _, point in bench.host.state["mounts"]] == [HOSTS, RESOLV, "/srv/other/usr/ports"]
    assert bench.plan(lambda s: s.reconcile()) == "\n"


def test_its_own_name_resolves_first_to_the_network_it_joined_first(bench, resolver):
    """A container's own lines come in the order it joined its networks, whatever their ids."""
    image_root(bench.host)
    s = bench.svc()
    s.create_network("first", "bridge", subnet="10.6.0.0/24")  # the smaller id, joined second
    net_bridge(s)
    run_app(s)
    s.connect("app", "first")
    hosts = (bench.store.state_dir / "containers" / s.store.container("app").id / "hosts").read_text()
    assert [line for line in hosts.splitlines() if line.endswith("\tapp")] == ["10.5.0.2\tapp", "10.6.0.2\tapp"]
