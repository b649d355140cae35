"""Linux: the host's resolver configuration, and what a container sees of /etc and /sys.

A container's process makes its view in its own mount namespace (whose mounts never reach the
host: process.py makes it a slave), before it changes its root: a sysfs of its own network
namespace on /sys, as `ip netns exec` does (so /sys/class/net lists its interfaces, not the
host's), and its resolver files (kleenenet/dns.py) bind-mounted over its root's /etc/hosts and
/etc/resolv.conf. A root without one of those files (an image without /etc/resolv.conf) keeps
it missing: kleenenet mounts over files, it never creates them in an image.
"""

from __future__ import annotations

import ctypes
import os
import stat

from kleenenet import dns
from kleenenet.dns import FILES, HostResolver

# The servers behind a local stub: systemd-resolved lists them in
# its own file while /etc/resolv.conf points at its stub, 127.0.0.53 (KLEENENET_UPSTREAM_RESOLV_CONF
# moves it).
UPSTREAM_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 0x2, 0x4, 0x8, 0x1000
MNT_DETACH = 2
MAX_SYMLINKS = 40  # as the kernel follows

_libc = ctypes.CDLL(None, use_errno=True)


def host_resolver(own: frozenset[str]) -> HostResolver:
    return dns.host_resolver(UPSTREAM_RESOLV_CONF, own)


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}")


def resolve_in(root: str, path: str, kind=stat.S_ISREG) -> str | None:
    """Where `path` is on the host for a process whose root is `root` (its symlinks followed
    inside `root`, as that process would follow them), if it exists and is of `kind`."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            done = done[:-1]
            continue
        here = os.path.join(root, *done, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(here).st_mode)
        except OSError:
            return None
        if is_link:
            links += 1
            target = os.readlink(here)
            if links > MAX_SYMLINKS:
                return None
            if target.startswith("/"):
                done = []
            todo[:0] = [p for p in target.split("/") if p not in ("", ".")]
            continue
        done.append(part)
    found = os.path.join(root, *done)
    return found if kind(os.lstat(found).st_mode) else None


def make_view(root: str, etc: str | None, new_netns: bool) -> None:
    """In a new container's process, in its own mount namespace, before it changes root: its
    network namespace's /sys, and the files of `etc` over its root's /etc/hosts, /etc/resolv.conf."""
    if new_netns:
        sys_dir = resolve_in(root, "sys", stat.S_ISDIR)
        if sys_dir:
            _libc.umount2(sys_dir.encode(), MNT_DETACH)  # fails when nothing is mounted there: fine
            _mount("sysfs", sys_dir, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in FILES if etc else ():
        target = resolve_in(root, f"etc/{name}")
        if target:
            _mount(os.path.join(etc, name), target, None, MS_BIND)
