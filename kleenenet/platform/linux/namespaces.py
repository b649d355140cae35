"""Linux namespaces through libc (Python 3.11 has no os.unshare/os.setns)."""

from __future__ import annotations

import ctypes
import os
import socket
from contextlib import contextmanager
from collections.abc import Iterator

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
NETLINK_ROUTE = 0

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


def process_start(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie has no namespaces any more
        return None
    return int(fields[19])


def process_alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and process_start(pid) == start
