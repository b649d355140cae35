"""A container's resolv.conf and /etc/hosts, and its own /sys: peers' names resolve as they join
and leave, without restarting anything; the host's resolver settings are followed, a stub
resolver replaced; the machine's own /etc files stay as they were."""

import os
import sys

import pytest

from tests.linux.world import copy_shell

MACHINE_FILES = ("/etc/hosts", "/etc/resolv.conf")


@pytest.fixture(autouse=True)
def machine_files_untouched():
    """The machine's /etc/hosts and /etc/resolv.conf: byte for byte, the same inode, after."""
    def look():
        return {p: (open(p, "rb").read(), os.stat(p).st_ino) for p in MACHINE_FILES if os.path.exists(p)}
    before = look()
    yield
    assert look() == before


def resolves(world, container: str, name: str) -> str | None:
    """The first address getaddrinfo() gives for NAME inside the container (`getent ahosts`)."""
    r = world.kn("exec", container, "--", "getent", "ahosts", name, check=False)
    return r.stdout.split()[0] if r.returncode == 0 else None


def unknown(world, container: str, name: str) -> bool:
    """No such name in the container's /etc/hosts (its files only: asking DNS for a missing name
    would wait for the host's nameserver, which a container of the test world cannot reach)."""
    return world.kn("exec", container, "--", "getent", "-s", "files", "hosts", name, check=False).returncode == 2


def test_peers_resolve_as_they_join_and_leave(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "front")
    world.kn("network", "create", "--subnet", "10.2.4.0/24", "back")
    world.serve_in_container("a", "front", 7000)
    inode = world.kn("exec", "a", "--", "stat", "-c", "%i", "/etc/hosts").stdout
    world.kn("run", "-d", "--name", "b", "-n", "front", "--", "sleep", "60")  # started after a
    world.kn("run", "-d", "--name", "late", "-n", "back", "--", "sleep", "60")
    assert resolves(world, "a", "a") == "10.2.3.2"  # its own name
    assert resolves(world, "a", "b") == "10.2.3.3" and resolves(world, "b", "a") == "10.2.3.2"
    assert unknown(world, "a", "late")  # not on a network a is on
    world.kn("network", "connect", "front", "late")  # joins a's network while both run
    assert resolves(world, "a", "late") == "10.2.3.4"
    assert resolves(world, "late", "a") == "10.2.3.2" and resolves(world, "late", "late") == "10.2.4.1"
    # and they talk by name
    connect = "import socket; print(socket.create_connection(('a', 7000), timeout=2).recv(100).decode())"
    assert world.kn("exec", "late", "--", sys.executable, "-c", connect).stdout.strip() == "10.2.3.4"
    world.kn("network", "disconnect", "front", "late")
    assert unknown(world, "a", "late") and unknown(world, "late", "a")
    assert resolves(world, "a", "b") == "10.2.3.3"  # positive control
    world.kn("stop", "b")
    assert unknown(world, "a", "b")
    world.kn("rm", "b")
    # The file a sees was rewritten in place all along: the mount still shows the current one.
    assert world.kn("exec", "a", "--", "stat", "-c", "%i", "/etc/hosts").stdout == inode
    cid = world.kn_json("inspect", "a")["container"]["id"]
    assert world.kn("exec", "a", "--", "cat", "/etc/hosts").stdout == \
        (world.state_dir / "containers" / cid / "hosts").read_text()
    world.kn("rm", "-f", "a")
    assert not (world.state_dir / "containers" / cid).exists()


def test_resolv_conf_follows_the_host_and_replaces_a_stub(world, tmp_path):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    host_conf, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    host_conf.write_text("# systemd-resolved's stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\n"
                         "search example.test\n")
    upstream.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.test\n")
    env = {"KLEENENET_HOST_RESOLV_CONF": str(host_conf), "KLEENENET_UPSTREAM_RESOLV_CONF": str(upstream)}

    def resolv(*opts: str, **kw) -> list[str]:
        r = world.kn("run", "--rm", "-n", "n", *opts, "--", "cat", "/etc/resolv.conf", env=env, **kw)
        return [line for line in r.stdout.splitlines() if not line.startswith("#")]

    assert resolv() == ["nameserver 192.0.2.53", "nameserver 2001:db8::53", "options edns0 trust-ad",
                        "search example.test"]
    assert resolv("--dns", "198.51.100.7", "--dns", "2001:db8::7") == [
        "nameserver 198.51.100.7", "nameserver 2001:db8::7", "options edns0 trust-ad", "search example.test"]
    # The stub's upstreams unknown: the operator's fallback list in the state directory.
    env["KLEENENET_UPSTREAM_RESOLV_CONF"] = str(tmp_path / "missing")
    (world.state_dir / "fallback-resolv.conf").write_text("nameserver 198.51.100.53\n")
    assert resolv()[0] == "nameserver 198.51.100.53"
    # Nothing usable: no nameserver at all (never a public one), and kleenenet says so.
    (world.state_dir / "fallback-resolv.conf").unlink()
    r = world.kn("run", "--rm", "-n", "n", "--", "cat", "/etc/resolv.conf", env=env)
    assert "nameserver" not in "".join(line for line in r.stdout.splitlines() if not line.startswith("#"))
    assert "gets no nameserver" in r.stderr and "fallback-resolv.conf" in r.stderr
    # A host whose resolvers are not local is followed as it is; `host` containers use its file.
    host_conf.write_text("nameserver 192.0.2.1\nsearch lan\n")
    assert resolv() == ["nameserver 192.0.2.1", "search lan"]
    machine = open("/etc/resolv.conf").read()
    assert world.kn("run", "--rm", "-l", "host", "--", "cat", "/etc/resolv.conf", env=env).stdout == machine
    assert list((world.state_dir / "containers").iterdir()) == []  # --rm took each one's files along


def test_reconcile_rewrites_the_files_and_removes_leftovers(world, tmp_path):
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    host_conf = tmp_path / "resolv.conf"
    host_conf.write_text("nameserver 198.51.100.1\n")
    env = {"KLEENENET_HOST_RESOLV_CONF": str(host_conf)}
    world.kn("run", "-d", "--name", "a", "-n", "n", "--", "sleep", "60", env=env)
    cid = world.kn_json("inspect", "a")["container"]["id"]
    hosts = world.state_dir / "containers" / cid / "hosts"
    hosts.write_text("damaged\n")
    leftover = world.state_dir / "containers" / "0123456789ab"
    leftover.mkdir()
    host_conf.write_text("nameserver 198.51.100.2\n")  # the host's resolver changed since a started
    plan = world.kn("reconcile", "--dry-run", env=env).stdout
    assert f"rewrite {hosts}" in plan and f"rm -r {leftover}  # leftover" in plan and "resolv.conf" in plan
    world.kn("reconcile", env=env)
    assert world.kn("reconcile", "--dry-run", env=env).stdout == ""
    assert not leftover.exists()
    assert "nameserver 198.51.100.2" in world.kn("exec", "a", "--", "cat", "/etc/resolv.conf").stdout
    assert resolves(world, "a", "a") == "10.2.3.1"


def test_a_container_sees_its_own_interfaces_in_sys(world):
    world.kn("network", "create", "-t", "bridge", "--subnet", "10.2.3.0/24", "n")
    assert world.kn("run", "--rm", "-n", "n", "--", "ls", "/sys/class/net").stdout.split() == ["eth0", "lo"]
    assert world.kn("run", "--rm", "-l", "disabled", "--", "ls", "/sys/class/net").stdout.split() == ["lo"]
    # a `host` container keeps the /sys of whoever started it (here: the machine's)
    assert world.kn("run", "--rm", "-l", "host", "--", "ls", "/sys/class/net").stdout.split() == \
        sorted(os.listdir("/sys/class/net"))
    mtu = world.kn("run", "--rm", "-n", "n", "--", "cat", "/sys/class/net/eth0/mtu").stdout.strip()
    assert mtu.isdigit()


def _tiny_root(root):
    """A root with a shell and the libraries it needs; /etc/hosts a file, /etc/resolv.conf a
    symlink (absolute: it means the root's /run/resolv.conf, not the host's), /sys a directory."""
    copy_shell(root)
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 image-own\n")
    (root / "run").mkdir()
    (root / "run" / "resolv.conf").write_text("nameserver 192.0.2.99\n")
    (root / "etc" / "resolv.conf").symlink_to("/run/resolv.conf")
    (root / "sys").mkdir()


def test_a_directory_image_gets_the_files_over_its_own(world, tmp_path):
    root = tmp_path / "tiny"
    _tiny_root(root)
    world.kn("image", "add", "tiny", str(root))
    world.kn("network", "create", "--subnet", "10.2.3.0/24", "n")
    world.kn("run", "-d", "--name", "peer", "-n", "n", "--", "sleep", "60")
    show = "for f in /etc/hosts /etc/resolv.conf; do while read -r l; do echo \"$l\"; done < $f; done; echo /sys/class/net/*"
    out = world.kn("run", "--rm", "--image", "tiny", "-n", "n", "--dns", "198.51.100.9", "--",
                   "/bin/sh", "-c", show).stdout
    assert "10.2.3.1\tpeer" in out and "image-own" not in out
    assert "nameserver 198.51.100.9" in out and "192.0.2.99" not in out
    assert out.splitlines()[-1] == "/sys/class/net/eth0 /sys/class/net/lo"
    # the image itself is as it was
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1 image-own\n"
    assert (root / "run" / "resolv.conf").read_text() == "nameserver 192.0.2.99\n"
    assert os.listdir(root / "sys") == []
