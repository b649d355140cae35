"""A FreeBSD host reached through a root shell instead of this machine's own kernel.

`KLEENENET_FREEBSD_REMOTE=serial:PATH` makes the FreeBSD platform run every command on the
host whose root `/bin/sh` reads the unix socket PATH (a VM's serial port: QEMU's
`-chardev socket,path=PATH,server=on`, with a shell on the guest's port, its tty raw and without
echo). kleenenet itself (state, plans, daemon) runs here; the jails, interfaces and pf anchors
are the remote host's. It is how the FreeBSD platform is exercised on a real FreeBSD kernel from
another system, and where there is no FreeBSD Python to run kleenenet on the host itself.

Each command is one exchange: the shell runs it, its standard output comes back between marks
made of a random nonce, then its exit status and its standard error. One exchange at a time
(an flock beside the socket), so several kleenenet processes can share the shell. A long-running
command (a container's, an exec) runs in the remote background; a local relay process
(`python -m kleenenet.platform.freebsd.remote relay SPEC -- ARGV`, or `follow SPEC BASE` for one
that start() has started) follows it: it copies the command's output to its own, passes SIGINT,
SIGTERM and SIGHUP on and exits with its status, so callers get an ordinary subprocess. Such
commands read no standard input. A large standard input of a short command goes through a file
there (a tty's input queue holds a few kilobytes).

What stays local: the state directory. A jail with a root of its own gets its resolver files
as copies made at the same path there when it starts (provide()); later changes to them (a peer
joining) reach the remote host only where the state directory is shared at that path.
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kleenenet.errors import HostError, KleenenetError
from kleenenet.platform.freebsd.host import Runner, checked

ENVIRONMENT = "KLEENENET_FREEBSD_REMOTE"
SCHEME = "serial:"
TIMEOUT = 300  # seconds an exchange may take (a `jail -r` waits for its processes)
REMOTE_DIR = "/tmp/kleenenet-remote"  # on the remote host: the background commands' files
POLL = (0.05, 1.0)  # a relay's polling interval: first, and at most (it doubles while idle)
ACKNOWLEDGE = 20  # seconds: a request whose start mark has not come by then is sent again
ATTEMPTS = 3
REQUEST = "/tmp/.kleenenet-request"  # on the remote host: the request being run
CHUNK = 4096  # bytes: the most standard input sent in one exchange (see _exchange_with_file)
GONE = 255  # a relay's status when its command's host lost it (a reboot)
PENDING: list[int] = []  # signals for the relayed command, sent when the relay next polls


def from_environment() -> RemoteRunner | None:
    spec = os.environ.get(ENVIRONMENT)
    return RemoteRunner(spec) if spec else None


class RemoteRunner(Runner):
    """Runs commands on the FreeBSD host at `spec` (serial:PATH, see the module's docstring)."""

    def __init__(self, spec: str):
        if not spec.startswith(SCHEME) or len(spec) == len(SCHEME):
            raise KleenenetError(f"invalid {ENVIRONMENT} {spec!r}: use serial:PATH (the unix socket of a "
                                 "FreeBSD host's root shell)")
        self.spec = spec
        self.path = spec[len(SCHEME):]

    # one exchange

    def exchange(self, script: str, stdin: str | None = None, timeout: float = TIMEOUT) -> tuple[int, bytes, bytes]:
        """Run shell `script` on the remote host: its exit status, standard output and error."""
        if stdin is not None and len(stdin) > CHUNK:
            return self._exchange_with_file(script, stdin, timeout)
        return self._exchange(script, stdin, timeout)

    def _exchange(self, script: str, stdin: str | None, timeout: float) -> tuple[int, bytes, bytes]:
        """One request and its reply."""
        if stdin is not None:
            # a here-document ends with a newline; pfctl and the rest read text
            body = stdin if stdin.endswith("\n") or not stdin else stdin + "\n"
        nonce = secrets.token_hex(8)
        if stdin is not None:
            redirect, document = f" <<'{nonce}_IN'", f"{body}{nonce}_IN\n"
        else:
            redirect, document = " </dev/null", ""
        # A request sent again may have been only late (the shell busy with a command whose
        # client gave up): its mark file makes sure it runs once.
        ran = f"{REMOTE_DIR}/ran-{nonce}"
        text = (f"mkdir -p {REMOTE_DIR}; [ -e {ran} ] && exit; : >{ran}\n"
                f"cd /; printf '\\n%s<\\n' {nonce}; ( {script} ){redirect} 2>/tmp/.kleenenet-err\n{document}"
                f"printf '\\n%s>%d\\n' {nonce} $?; cat /tmp/.kleenenet-err; printf '\\n%s.\\n' {nonce}\n")
        # One line without quotes or brackets: bytes the tty loses spoil this request only,
        # never leave the shell waiting for a closing quote. The script is base64 and runs, in a
        # shell of its own, only when none of it was lost.
        encoded = base64.b64encode(text.encode()).decode()
        request = (f"printf %s {encoded} >{REQUEST}; wc -c <{REQUEST} | grep -qx \\ *{len(encoded)} "
                   f"&& b64decode -r <{REQUEST} | sh\n").encode()
        for _attempt in range(ATTEMPTS):
            reply = self._send(request, nonce, timeout)
            if reply is not None:
                break
        else:
            raise HostError(f"cannot reach the FreeBSD host at {self.spec}: no answer to {ATTEMPTS} requests")
        start = reply.index(f"\n{nonce}<\n".encode()) + len(nonce) + 3
        status_mark = reply.index(f"\n{nonce}>".encode(), start)
        newline = reply.index(b"\n", status_mark + len(nonce) + 2)
        status = int(reply[status_mark + len(nonce) + 2:newline])
        end = reply.rindex(f"\n{nonce}.\n".encode())
        return status, reply[start:status_mark], reply[newline + 1:end]

    def _exchange_with_file(self, script: str, stdin: str, timeout: float) -> tuple[int, bytes, bytes]:
        """A large input goes first into a file there, a chunk per exchange: a tty's input queue
        holds a few kilobytes, and what comes while it is full is lost."""
        path = f"/tmp/.kleenenet-in-{secrets.token_hex(8)}"
        data = stdin.encode()
        chunks = [base64.encodebytes(data[k:k + CHUNK]).decode() for k in range(0, len(data), CHUNK)]
        try:
            for chunk in chunks:
                status, _, err = self._exchange(f"b64decode -r >>{path}", chunk, timeout)
                if status != 0:
                    return status, b"", err
            return self.exchange(f"( {script} ) <{path}", None, timeout)
        finally:
            self.exchange(f"rm -f {path}")

    def _send(self, request: bytes, nonce: str, timeout: float) -> bytes | None:
        """The reply to `request`; None when its start mark has not come within ACKNOWLEDGE
        seconds: the request was spoilt on its way, and did not run."""
        started, last = f"\n{nonce}<\n".encode(), f"\n{nonce}.\n".encode()
        now = time.monotonic()
        acknowledge, deadline = now + ACKNOWLEDGE, now + timeout
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(1)
                    while True:  # the far end takes one client at a time: its backlog may be full
                        try:
                            s.connect(self.path)
                            break
                        except BlockingIOError:
                            if time.monotonic() > acknowledge:
                                raise
                            time.sleep(0.05)
                    s.sendall(request)
                    reply = bytearray()
                    while not reply.endswith(last):
                        now = time.monotonic()
                        if started not in reply and now > acknowledge:
                            return None
                        if now > deadline:
                            raise socket.timeout()
                        try:
                            chunk = s.recv(65536)
                        except socket.timeout:
                            continue
                        if not chunk:
                            raise ConnectionError("the shell's socket was closed")
                        reply += chunk
                    return bytes(reply)
            except (OSError, socket.timeout) as e:
                why = "no answer in time" if isinstance(e, socket.timeout) else (e.strerror or str(e))
                raise HostError(f"cannot reach the FreeBSD host at {self.spec}: {why}") from None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # Runner

    def execute(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        status, out, err = self.exchange(shlex.join(argv), stdin)
        return subprocess.CompletedProcess(argv, status, out.decode(errors="replace"), err.decode(errors="replace"))

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        done = self.execute(argv, stdin)
        return checked(argv, done.returncode, done.stdout, done.stderr)

    def succeeds(self, argv: list[str]) -> bool:
        return self.execute(argv).returncode == 0

    def wrap(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """A local command that runs `argv` on the remote host (see the module's docstring)."""
        assignments = [f"{k}={v}" for k, v in (env or {}).items()]
        return [sys.executable, "-m", "kleenenet.platform.freebsd.remote", "relay", self.spec, "--",
                *(["env", *assignments] if assignments else []), *argv]

    def start(self, argv: list[str], log: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Started there before this returns (a container is running once `run -d` has
        returned), followed here by a relay."""
        assignments = [f"{k}={v}" for k, v in (env or {}).items()]
        command = Background(self, [*(["env", *assignments] if assignments else []), *argv])
        return super().start([sys.executable, "-m", "kleenenet.platform.freebsd.remote", "follow", self.spec,
                              command.base], log)

    def provide(self, path: Path) -> None:
        """A copy of the file, as it is now, at the same path there."""
        status, _, err = self.exchange(f"mkdir -p {shlex.quote(str(path.parent))} && cat >{shlex.quote(str(path))}",
                                       path.read_text())
        if status != 0:
            raise HostError(f"cannot copy {path} to the FreeBSD host: {err.decode(errors='replace').strip()}")

    def is_directory(self, path: str) -> bool:
        return self.succeeds(["test", "-d", path])

    def libzfs(self):
        raise KleenenetError("ZFS images need kleenenet on the FreeBSD host itself (py-libzfs): "
                             f"not with {ENVIRONMENT}")


class Background:
    """A command running in the remote host's background: its pid, output and exit status are
    files in REMOTE_DIR there."""

    def __init__(self, runner: RemoteRunner, argv: list[str] | None = None, base: str | None = None):
        """Start `argv`, or follow the command started as `base`."""
        self.runner = runner
        self.offset = 0
        if base is not None:
            self.base = base
            return
        self.base = f"{REMOTE_DIR}/{secrets.token_hex(8)}"
        base = shlex.quote(self.base)
        # The inner sh writes its pid and execs the command: the pid is the command's own.
        inner = shlex.join(["sh", "-c", 'echo $$ >"$0.pid"; exec "$@"', self.base, *argv])
        # Started means past the launchers in front of the command (this sh, env, jexec): until a
        # jexec has attached to its jail, the jail has no process and its container looks
        # stopped (at most 5 s: a command that is itself sh on the host is not waited out longer).
        status, _, err = runner.exchange(
            f"mkdir -p {REMOTE_DIR} && ( {inner} </dev/null >{base}.out 2>&1; echo $? >{base}.rc ) "
            f"</dev/null >/dev/null 2>&1 & while [ ! -s {base}.pid ] && [ ! -s {base}.rc ]; do sleep 0.01; done; "
            f"i=0; while [ $i -lt 100 ] && [ ! -s {base}.rc ]; do "
            f"set -- $(ps -o jid=,comm= -p $(cat {base}.pid) 2>/dev/null); "
            f'[ "${{1:-}}" = 0 ] && case "${{2:-}}" in sh|env|jexec) ;; *) break ;; esac || break; '
            f"sleep 0.05; i=$((i + 1)); done")
        if status != 0:
            raise HostError(f"cannot start {shlex.join(argv)}: {err.decode(errors='replace').strip()}")

    def poll(self) -> tuple[bytes, int | None]:
        """The output since the last poll, and the exit status once the command has exited."""
        base = shlex.quote(self.base)
        # The status first: when it is there, the output read after it is complete. No files at
        # all: the host has rebooted, and the command is gone.
        _, out, err = self.runner.exchange(
            f"if [ -s {base}.rc ]; then cat {base}.rc >&2; elif [ ! -e {base}.pid ]; then echo {GONE} >&2; fi; "
            f"tail -c +{self.offset + 1} {base}.out 2>/dev/null")
        self.offset += len(out)
        return out, int(err) if err.strip() else None

    def signal(self, signum: int) -> None:
        base = shlex.quote(self.base)
        self.runner.exchange(f"[ -s {base}.rc ] || kill -s {signal.Signals(signum).name[3:]} $(cat {base}.pid) "
                             "2>/dev/null")

    def remove(self) -> None:
        self.runner.exchange(f"rm -f {shlex.quote(self.base)}.pid {shlex.quote(self.base)}.out {shlex.quote(self.base)}.rc")


def relay(command: Background) -> int:
    """Follow a command on the remote host, copying its output to ours; its exit status (as a
    shell reports a signal: 128 + its number). SIGINT, SIGTERM and SIGHUP are passed on."""
    interval = POLL[0]
    out = sys.stdout.buffer
    try:
        while True:
            while PENDING:
                command.signal(PENDING.pop(0))
            chunk, status = command.poll()
            if chunk:
                out.write(chunk)
                out.flush()
            if status is not None:
                return status
            interval = POLL[0] if chunk else min(interval * 2, POLL[1])
            time.sleep(interval)
    finally:
        try:
            command.remove()
        except HostError:
            pass


USAGE = ("usage: python -m kleenenet.platform.freebsd.remote relay serial:PATH -- ARGV...\n"
         "       python -m kleenenet.platform.freebsd.remote follow serial:PATH BASE")


def main(args: list[str]) -> int:
    """`relay`: start ARGV there and follow it; `follow`: a command start() has started."""
    relaying = len(args) >= 4 and args[0] == "relay" and args[2] == "--"
    if not relaying and not (len(args) == 3 and args[0] == "follow" and args[2].startswith(REMOTE_DIR + "/")):
        print(USAGE, file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # from the start: none is lost
        signal.signal(signum, lambda signum, _: PENDING.append(signum))
    try:
        runner = RemoteRunner(args[1])
        return relay(Background(runner, args[3:]) if relaying else Background(runner, base=args[2]))
    except KleenenetError as e:
        print(f"kleenenet: {e}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
