"""User-mode networking (Linux): a helper process of the host's network namespace carries a
container's traffic through sockets of its own, so neither root nor a network of kleenenet's is
needed. The helper is started against the container's process once its namespaces exist, returns
once the container's network is configured, and is tracked by pid and start time (the store's
helper_pid/helper_start) until it is ended with the container, or by reconcile.

pasta    the container gets a copy of the host's addresses and routes on one tap interface
         (--config-net); connections leave through pasta's sockets as the host's own. Without
         --map-gw the gateway's address is the real gateway, not the host. Nothing is forwarded
         unless asked (-t/-u/-T/-U none); published ports become -t/-u specs. pasta forks to the
         background once the namespace is configured, which is the readiness signal, and writes
         its pid (--pid). The namespaces are passed as open descriptors (/proc/self/fd/N): root's
         pasta keeps root (--runas 0) as it could not enter a root-owned namespace otherwise, and a
         descriptor opened by kleenenet after checking the process's start time cannot be another
         process's namespace.
slirp4netns  the container is 10.0.2.100/24 behind 10.0.2.2 on tap0; 10.0.2.3 answers DNS with
         the host's resolvers; the host's loopback is not reachable. Ready when it writes to
         --ready-fd; published ports are added through its API socket (add_hostfwd).

DNS: the container's resolv.conf (kleenenet/dns.py) names the host's resolvers that are not on
its loopback; both helpers reach them as the host does.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tempfile

from kleenenet.errors import HostError, InvalidInput
from kleenenet.model import Container
from kleenenet.platform.linux.namespaces import own_user_namespace, process_alive, process_stat
from kleenenet.platform.linux.process import terminate

DRIVERS = ("pasta", "slirp4netns")
READY_TIMEOUT = 30.0  # seconds for a helper to configure the container's network
END_TIMEOUT = 2.0
# pasta's forwarding options (short, long): "none" for each the user leaves out.
PASTA_FORWARDS = (("-t", "--tcp-ports"), ("-u", "--udp-ports"), ("-T", "--tcp-ns"), ("-U", "--udp-ns"))
# Options kleenenet sets itself, or that would keep pasta from reporting readiness.
PASTA_OWN_OPTIONS = ("-f", "--foreground", "-P", "--pid", "--netns", "--userns", "--netns-only",
                     "--runas", "-1", "--one-off", "-h", "--help", "--version", "--config-net", "--no-map-gw")
MAP_GW = "--map-gw"  # kleenenet's pseudo-option: let pasta map the gateway's address to the host
SLIRP_GUEST = "10.0.2.100"


def available(driver: str) -> tuple[str, str | None]:
    """The driver that will run for `driver`, and a warning to print once (pasta's fallback)."""
    if shutil.which(driver):
        return driver, None
    if driver == "pasta" and shutil.which("slirp4netns"):
        return "slirp4netns", "pasta is not installed: using slirp4netns"
    raise InvalidInput(f"invalid network driver {driver!r}: neither pasta (Debian: passt) nor slirp4netns is installed")


def _option_name(option: str) -> str:
    """The option an argument names: '--tcp-ports=80' -> '--tcp-ports', '-t80' -> '-t'."""
    if option.startswith("--"):
        return option.partition("=")[0]
    return option[:2] if option.startswith("-") else option


def check(c: Container) -> None:
    """Refuse what a user-mode container cannot do, in one line naming the value."""
    for pp in c.public_ports:
        if pp.interfaces:
            raise InvalidInput(f"invalid published port interface {pp.interfaces[0]!r}: {c.network_driver} "
                               "publishes on every address of the host; leave the interface out")
    published = {pp.protocol for pp in c.public_ports}
    options = c.network_options
    for k, option in enumerate(options):
        name = _option_name(option)
        if name in PASTA_OWN_OPTIONS:
            raise InvalidInput(f"invalid pasta option {option!r}: kleenenet sets it itself"
                               + (f" (give {MAP_GW} to map the gateway to the host)" if name == "--no-map-gw" else ""))
        protocol = {"-t": "tcp", "--tcp-ports": "tcp", "-u": "udp", "--udp-ports": "udp"}.get(name)
        if protocol in published and _option_value(options, k) == "none":
            given = option if len(option) > len(name) else f"{option} none"
            raise InvalidInput(f"invalid pasta option {given!r}: the container publishes {protocol} ports (-p)")


def _option_value(options: list[str], k: int) -> str:
    """The value of the option at options[k]: '--tcp-ports=80', '-t80' or '-t', '80'."""
    option = options[k]
    if option.startswith("--") and "=" in option:
        return option.partition("=")[2]
    if not option.startswith("--") and len(option) > 2:
        return option[2:]
    return options[k + 1] if k + 1 < len(options) else ""


def _ranges(pairs: list[tuple[int, int]]) -> list[str]:
    """HOST:CTR pairs as pasta's specs, consecutive ones as one range (8000-8009:9000-9009)."""
    specs: list[list[int]] = []
    for host, ctr in sorted(pairs):
        last = specs[-1] if specs else None
        if last and host == last[1] + 1 and ctr == last[3] + 1:
            last[1], last[3] = host, ctr
        else:
            specs.append([host, host, ctr, ctr])
    return [(f"{h1}" if h1 == h2 else f"{h1}-{h2}") + ("" if (h1, h2) == (c1, c2) else
                                                       f":{c1}" if c1 == c2 else f":{c1}-{c2}")
            for h1, h2, c1, c2 in specs]


def pasta_options(c: Container) -> list[str]:
    """pasta's options for container `c` (without the namespaces and the pid file)."""
    user = [o for o in c.network_options if o != MAP_GW]
    args = ["--config-net"] + ([] if MAP_GW in c.network_options else ["--no-map-gw"])
    published = set()
    for protocol, flag in (("tcp", "-t"), ("udp", "-u")):
        pairs = [pair for pp in c.public_ports if pp.protocol == protocol for pair in pp.pairs()]
        if pairs:
            args += [flag, ",".join(_ranges(pairs))]
            published.add(flag)
    given = {_option_name(o) for o in user}
    for short, long in PASTA_FORWARDS:
        if short not in published and not given & {short, long}:
            args += [short, "none"]
    return args + user


def start(c: Container) -> tuple[int, int]:
    """Start the helper of container `c` (running, waiting to be released); (pid, start time)
    once the container's network is configured. HostError when it could not."""
    nsfds = _open_namespaces(c)
    try:
        if c.network_driver == "pasta":
            return _start_pasta(c, nsfds)
        return _start_slirp4netns(c, nsfds)
    finally:
        for fd in nsfds.values():
            os.close(fd)


def end(pid: int, start_time: int | None) -> None:
    """End helper `pid` if it is still the process started at `start_time`."""
    terminate(pid, start_time, END_TIMEOUT)
    state, started = process_stat(pid)
    if state == "Z" and started == start_time:  # our own child (slirp4netns): reap it
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _open_namespaces(c: Container) -> dict[str, int]:
    """The container's network namespace, and its user namespace when it has one of its own;
    opened, then checked to still be its process's."""
    wanted = ["net"] + (["user"] if own_user_namespace(c.pid) else [])
    fds = {}
    try:
        for ns in wanted:
            fds[ns] = os.open(f"/proc/{c.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        for fd in fds.values():
            os.close(fd)
        raise HostError(f"cannot open the namespaces of container {c.name!r}: {e.strerror}") from None
    if not process_alive(c.pid, c.pid_start):
        for fd in fds.values():
            os.close(fd)
        raise HostError(f"container {c.name!r} stopped before its network was configured")
    return fds


def _messages(text: str) -> str:
    """pasta's own messages, without its complaints about a missing syslog."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("Failed to send")]
    return "; ".join(lines[-3:]) or "no message"


def _start_pasta(c: Container, nsfds: dict[str, int]) -> tuple[int, int]:
    argv = ["pasta", "--quiet", "--no-netns-quit", "--netns", f"/proc/self/fd/{nsfds['net']}"]
    if "user" in nsfds:
        argv += ["--userns", f"/proc/self/fd/{nsfds['user']}"]
    elif os.geteuid() == 0:
        argv += ["--runas", "0:0"]
    with tempfile.TemporaryDirectory(prefix="kleenenet-pasta-") as tmp:
        pidfile = os.path.join(tmp, "pid")
        argv += ["--pid", pidfile, *pasta_options(c)]
        try:
            done = subprocess.run(argv, pass_fds=list(nsfds.values()), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise HostError(f"pasta did not configure the network of container {c.name!r} "
                            f"within {READY_TIMEOUT:.0f} s") from None
        try:
            with open(pidfile) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            pid = None
    started = process_stat(pid)[1] if pid else None
    if done.returncode != 0 or pid is None or started is None:
        if pid and started:
            end(pid, started)
        raise HostError(f"pasta could not configure the network of container {c.name!r}: {_messages(done.stderr)}")
    return pid, started


def _start_slirp4netns(c: Container, nsfds: dict[str, int]) -> tuple[int, int]:
    ready_r, ready_w = os.pipe()
    api_dir = tempfile.mkdtemp(prefix="kleenenet-slirp-") if c.public_ports else None
    argv = ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback", f"--ready-fd={ready_w}",
            "--netns-type=path"]
    if "user" in nsfds:
        argv.append(f"--userns-path=/proc/self/fd/{nsfds['user']}")
    if api_dir:
        argv.append(f"--api-socket={api_dir}/api.sock")
    argv += [f"/proc/self/fd/{nsfds['net']}", "tap0"]
    try:
        with tempfile.TemporaryFile() as err:
            # Its own session: a terminal's Ctrl-C for the container is not for it; kleenenet ends it.
            helper = subprocess.Popen(argv, pass_fds=[ready_w, *nsfds.values()], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            os.close(ready_w)
            ready_w = None
            ready = select.select([ready_r], [], [], READY_TIMEOUT)[0] and os.read(ready_r, 1) == b"1"
            started = process_stat(helper.pid)[1]
            if not ready or started is None:
                if started is not None:
                    end(helper.pid, started)
                helper.wait()
                err.seek(0)
                raise HostError(f"slirp4netns could not configure the network of container {c.name!r}: "
                                f"{_messages(err.read().decode(errors='replace'))}")
            helper.returncode = 0  # tracked by pid from now on (ended with the container)
        try:
            for pp in c.public_ports:
                for host, ctr in pp.pairs():
                    _add_hostfwd(f"{api_dir}/api.sock", pp.protocol, host, ctr)
        except HostError:
            end(helper.pid, started)
            raise
        return helper.pid, started
    finally:
        os.close(ready_r)
        if ready_w is not None:
            os.close(ready_w)
        if api_dir:
            shutil.rmtree(api_dir, ignore_errors=True)


def _add_hostfwd(path: str, protocol: str, host_port: int, ctr_port: int) -> None:
    """Forward the host's port to the container's through slirp4netns's API (one request a
    connection)."""
    request = {"execute": "add_hostfwd", "arguments": {"proto": protocol, "host_addr": "0.0.0.0",
                                                        "host_port": host_port, "guest_addr": SLIRP_GUEST,
                                                        "guest_port": ctr_port}}
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(READY_TIMEOUT)
        s.connect(path)
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    reply = json.loads(answer or b"{}")
    if "return" not in reply:
        raise HostError(f"slirp4netns could not publish port {protocol}/{host_port}: "
                        f"{reply.get('error', {}).get('desc', answer.decode(errors='replace'))}")
