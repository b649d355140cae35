"""Container processes: the host's filesystem, their own mount and (unless `host`) network namespace,
and, when kleenenet runs without root, their own user namespace, in which the user is root.

In its mount namespace a container has its own view (dns.py): a sysfs of its network namespace
on /sys, and its resolv.conf and hosts over /etc's.

A container is started in two phases so its network is wired before its command runs: the child
unshares its namespaces and waits on a pipe; the parent wires the interfaces into
/proc/<pid>/ns/net and then releases it (or kills it if wiring failed).

A rootless container's network namespace belongs to its user namespace: only its own process may
configure it (lo up, forwarding off), which it does before it reports ready; the user-mode helper
joins that user namespace to configure the rest.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kleenenet.errors import HostError
from kleenenet.platform.linux import dns
from kleenenet.platform.linux.namespaces import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    make_mounts_slave,
    map_own_user,
    own_user_namespace,
    process_alive,
    process_start,
    set_up_own_netns,
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


def spawn(cmd: list[str], new_netns: bool, detach: bool, log_path: Path | None, root: str = "/",
          env: list[str] = (), user: str = "", etc: str | None = None, new_userns: bool = False,
          sysctls_off: tuple[str, ...] = ()) -> Spawned:
    """The container's process, waiting to be released. With `detach` it has its own session and
    writes to `log_path`; `root` becomes its root directory, `env` is added to its environment;
    `etc` holds its resolver files (kleenenet/dns.py). With `new_userns` it has its own user
    namespace (the caller's user is its root) and sets up its own network namespace: lo up,
    `sysctls_off` 0."""
    environ = {**os.environ, **dict(e.split("=", 1) for e in env)}
    uid, gid = os.geteuid(), os.getegid()
    release_r, release_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(release_w)
            os.close(ready_r)
            if detach:  # opened before the root changes: the log is the host's
                os.setsid()
                null = os.open(os.devnull, os.O_RDONLY)
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            unshare(CLONE_NEWNS | (CLONE_NEWNET if new_netns else 0) | (CLONE_NEWUSER if new_userns else 0))
            if new_userns:
                map_own_user(uid, gid)
                if new_netns:
                    set_up_own_netns(sysctls_off)
            make_mounts_slave()
            dns.make_view(root, etc, new_netns)
            if root != "/":
                os.chroot(root)
                os.chdir("/")
            if user:
                uid, gid = resolve_user(user)
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            os.write(ready_w, b"r")
            os.close(ready_w)
            if os.read(release_r, 1) != b"g":
                os._exit(EXIT_CANNOT_RUN)
            os.close(release_r)
            if detach:
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvpe(cmd[0], cmd, environ)
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


def resolve_user(user: str, root: str = "/") -> tuple[int, int]:
    """uid and gid of a user name or number, from the container's /etc/passwd."""
    try:
        with open(os.path.join(root, "etc/passwd")) as passwd:
            for line in passwd:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and user in (fields[0], fields[2]):
                    return int(fields[2]), int(fields[3])
    except OSError:
        pass
    if user.isascii() and user.isdigit():
        return int(user), int(user)
    raise HostError(f"no user {user!r} in the container's /etc/passwd")


def exec_command(pid: int, start: int, cmd: list[str], new_netns: bool, user: str,
                 root: str) -> tuple[list[str], list[int]]:
    """nsenter's argv that runs `cmd` inside the container, and the descriptors it needs: the
    container's namespaces and root, opened first and then checked to belong to its process. A
    container with a user namespace of its own (rootless) is entered there first, keeping the
    caller's user, which is root there."""
    userns = own_user_namespace(pid)
    paths = [f"/proc/{pid}/ns/mnt", f"/proc/{pid}/root"] + ([f"/proc/{pid}/ns/net"] if new_netns else []) \
        + ([f"/proc/{pid}/ns/user"] if userns else [])
    fds = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        pass
    if len(fds) < len(paths) or not process_alive(pid, start):
        for fd in fds:
            os.close(fd)
        raise HostError("the container stopped")
    # nsenter as kleenenet finds it: the exec's environment is the container's, whose PATH may differ
    argv = [shutil.which("nsenter") or "nsenter", f"--mount=/proc/self/fd/{fds[0]}", f"--root=/proc/self/fd/{fds[1]}"]
    if new_netns:
        argv.append(f"--net=/proc/self/fd/{fds[2]}")
    if userns:
        argv += [f"--user=/proc/self/fd/{fds[-1]}", "--preserve-credentials"]
    if user:
        uid, gid = resolve_user(user, root)
        argv += [f"--setuid={uid}", f"--setgid={gid}"]
    return [*argv, "--", *cmd], fds
