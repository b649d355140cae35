"""Container processes: the host's filesystem, their own mount and (unless `host`) network namespace.

A container is started in two phases so its network is wired before its command runs: the child
unshares its namespaces and waits on a pipe; the parent wires the interfaces into
/proc/<pid>/ns/net and then releases it (or kills it if wiring failed).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kleenenet.errors import HostError
from kleenenet.platform.linux.namespaces import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    make_mounts_slave,
    process_alive,
    process_start,
    setns,
    unshare,
)

EXIT_CANNOT_RUN = 127


@dataclass
class Spawned:
    pid: int
    start: int
    _release_fd: int

    def release(self) -> None:
        """Let the command run."""
        os.write(self._release_fd, b"g")
        os.close(self._release_fd)

    def abort(self) -> None:
        os.close(self._release_fd)  # the child exits when the pipe closes unreleased
        os.waitpid(self.pid, 0)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self) -> int:
        return wait(self.pid)


def spawn(cmd: list[str], new_netns: bool, detach: bool, log_path: Path | None) -> Spawned:
    release_r, release_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(release_w)
            os.close(ready_r)
            if detach:
                os.setsid()
            unshare(CLONE_NEWNS | (CLONE_NEWNET if new_netns else 0))
            make_mounts_slave()
            os.write(ready_w, b"r")
            os.close(ready_w)
            if os.read(release_r, 1) != b"g":
                os._exit(EXIT_CANNOT_RUN)
            os.close(release_r)
            if detach:
                null = os.open(os.devnull, os.O_RDONLY)
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvp(cmd[0], cmd)
        except BaseException as e:
            print(f"kleenenet: cannot run {cmd[0]!r}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        os._exit(EXIT_CANNOT_RUN)
    os.close(release_r)
    os.close(ready_w)
    ok = os.read(ready_r, 1) == b"r"
    os.close(ready_r)
    start = process_start(pid)
    if not ok or start is None:
        os.close(release_w)
        os.waitpid(pid, 0)
        raise HostError("could not create the container's namespaces")
    return Spawned(pid, start, release_w)


def wait(pid: int) -> int:
    """Wait for our own child; its exit code, or 128+signal as shells report it."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def terminate(pid: int, start: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds. Works for processes that are not our children."""
    if not process_alive(pid, start):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_alive(pid, start):
            return
        time.sleep(0.01)
    if process_alive(pid, start):
        os.kill(pid, signal.SIGKILL)
    while process_alive(pid, start):
        _reap(pid)
        time.sleep(0.005)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def exec_in(pid: int, start: int, cmd: list[str], new_netns: bool) -> None:
    """Replace this process with `cmd` inside the container's namespaces."""
    fds = [os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)]
    if new_netns:
        fds.append(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY))
    if not process_alive(pid, start):  # opened the right process's namespaces?
        raise HostError("the container stopped")
    for fd, nstype in zip(fds, (CLONE_NEWNS, CLONE_NEWNET)):
        setns(fd, nstype)
        os.close(fd)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print(f"kleenenet: cannot run {cmd[0]!r}: {e.strerror}", file=sys.stderr)
        os._exit(EXIT_CANNOT_RUN)
