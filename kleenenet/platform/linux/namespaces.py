"""Linux namespaces through libc (Python 3.11 has no os.unshare/os.setns)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from contextlib import contextmanager
from collections.abc import Iterator

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
NETLINK_ROUTE = 0
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def make_mounts_slave() -> None:
    """Mount events of the host still reach us, ours never reach the host."""
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")


@contextmanager
def entered_netns(ns_path: str) -> Iterator[None]:
    """Switch this thread into a network namespace for the duration of the block.

    Sockets created inside stay bound to that namespace, which is how kleenenet talks netlink
    to a container without forking a helper process.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns_path, os.O_RDONLY)
    try:
        setns(target, CLONE_NEWNET)
        try:
            yield
        finally:
            setns(own, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


def netlink_socket(ns_path: str) -> socket.socket:
    with entered_netns(ns_path):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def set_sysctls_in(ns_path: str, values: dict[str, str]) -> None:
    """/proc/sys/net follows the network namespace of the thread that opens the file. A value
    already in place is not written again (writing forwarding flushes routes)."""
    with entered_netns(ns_path):
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "r+") as f:
                if f.read().strip() != value:
                    f.seek(0)
                    f.write(value)


def process_stat(pid: int) -> tuple[str | None, int | None]:
    """State letter (R, S, Z...) and start time in clock ticks since boot of a process, or
    (None, None) when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None, None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def process_start(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, or None."""
    state, start = process_stat(pid)
    if state in (None, "Z", "X"):  # a zombie has no namespaces any more
        return None
    return start


def process_alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and process_start(pid) == start


def own_user_namespace(pid: int) -> bool:
    """Whether process `pid` is in another user namespace than kleenenet (a rootless container's)."""
    try:
        return os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
    except OSError:
        return False


def map_own_user(uid: int, gid: int) -> None:
    """In a process that has just unshared a user namespace: its user and group (those of the
    user who ran kleenenet) are root there; no other is mapped, and setgroups is denied as the
    kernel requires for an unprivileged mapping."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def set_up_own_netns(sysctls: tuple[str, ...]) -> None:
    """From inside a new network namespace: lo up and the `sysctls` off. A rootless container's
    process does this itself: only processes in its user namespace may configure its network."""
    for key in sysctls:
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write("0")
        except FileNotFoundError:  # no IPv6
            pass
    with socket.socket() as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
