"""How kleenenet talks to a FreeBSD host: every command goes through a Runner, and what kleenenet
reads back goes through the parsers. Tests replace the Runner with a simulated host; on any other
system a PreviewRunner answers the read-only questions as a blank FreeBSD host would, so
`--platform freebsd --dry-run` shows the FreeBSD plan anywhere."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from kleenenet.errors import HostError, KleenenetError
from kleenenet.platform.freebsd import parsers, zfs


def command_text(argv: list[str], stdin: str | None = None) -> str:
    """A command as a shell would read it (what plans print)."""
    text = shlex.join(argv)
    return f"{text} <<'EOF'\n{stdin}EOF" if stdin is not None else text


def checked(argv: list[str], status: int, stdout: str, stderr: str) -> str:
    """A command's output, or its failure as one line: its last line on stderr."""
    if status != 0:
        lines = stderr.strip().splitlines() or [f"exit status {status}"]
        hint = " (is pf loaded? see kleenenet doctor)" if argv[0] == "pfctl" and "/dev/pf" in lines[-1] else ""
        raise HostError(f"{shlex.join(argv)}: {lines[-1]}{hint}")
    return stdout


def default_runner() -> Runner:
    """This host's own commands on FreeBSD, the remote host's where KLEENENET_FREEBSD_REMOTE names
    one (remote.py), else a preview of a blank FreeBSD host."""
    from kleenenet.platform.freebsd import remote

    return remote.from_environment() or (Runner() if sys.platform.startswith("freebsd") else PreviewRunner())


class Runner:
    """Runs commands on this host."""

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
        except OSError as e:
            raise HostError(f"{shlex.join(argv)}: {e.strerror}") from None
        return checked(argv, done.returncode, done.stdout, done.stderr)

    def succeeds(self, argv: list[str]) -> bool:
        """Whether a query command exits 0 (e.g. pgrep: is any process in this jail?)."""
        return subprocess.run(argv, capture_output=True).returncode == 0

    def start(self, argv: list[str], log: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running command: in the foreground with our terminal, or detached with
        its output in `log`; `env` is added to our environment for it."""
        environ = {**os.environ, **env} if env else None
        try:
            if log is None:
                return subprocess.Popen(argv, env=environ)
            with open(log, "ab") as out:
                return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True, env=environ)
        except OSError as e:
            raise HostError(f"cannot run {argv[0]}: {e.strerror}") from None

    def wrap(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """The local command that runs `argv` on the host (here: itself; `env` is the caller's to
        pass, as start() does)."""
        return argv

    def provide(self, path: Path) -> None:
        """Make this machine's file `path` readable at the same path on the host (here: it is)."""

    def is_directory(self, path: str) -> bool:
        return os.path.isdir(path)

    def libzfs(self):
        """py-libzfs (imported on first use: only ZFS images need it)."""
        return zfs.import_libzfs()


PREVIEW_IFCONFIG = """\
em0: flags=8863<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500
\tether 02:00:00:00:00:01
\tinet 192.0.2.2 netmask 0xffffff00 broadcast 192.0.2.255
lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> metric 0 mtu 16384
\tinet 127.0.0.1 netmask 0xff000000
\tinet6 ::1 prefixlen 128
\tgroups: lo
"""
PREVIEW_ROUTES = json.dumps({"statistics": {"route-information": {"route-table": {"rt-family": [
    {"address-family": "Internet", "rt-entry": [
        {"destination": "default", "gateway": "192.0.2.1", "flags": "UGS", "interface-name": "em0"},
        {"destination": "127.0.0.1", "gateway": "lo0", "flags": "UHS", "interface-name": "lo0"},
        {"destination": "192.0.2.0/24", "gateway": "link#1", "flags": "U", "interface-name": "em0"},
    ]}]}}}})


class PreviewRunner(Runner):
    """Not FreeBSD: answer queries as a blank FreeBSD host (em0 with the default route, lo0, pf
    enabled, no jails, forwarding off) and refuse to change anything."""

    ANSWERS = {
        ("ifconfig", "-l"): "em0 lo0\n",
        ("ifconfig", "-a"): PREVIEW_IFCONFIG,
        ("ifconfig", "-g", "kleenenet"): "",
        ("netstat", "-rn", "--libxo", "json"): PREVIEW_ROUTES,
        ("jls", "--libxo", "json", "-v"): json.dumps({"__version": "2", "jail-information": {"jail": []}}),
        ("sysctl", "-n", "net.inet.ip.forwarding"): "0\n",
        ("sysctl", "-n", "net.inet6.ip6.forwarding"): "0\n",
        ("sysctl", "-n", "net.inet6.ip6.rfc6204w3"): "0\n",
        ("sysctl", "-n", "kern.osreldate"): "1402000\n",
        ("mount", "-p"): "",
    }

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        if argv[0] == "sockstat":  # nothing listens
            return "USER     COMMAND    PID   FD PROTO  LOCAL ADDRESS         FOREIGN ADDRESS\n"
        if argv[:2] == ["pfctl", "-v"] and argv[-2:] == ["-s", "Anchors"]:  # no anchor anywhere
            return ""
        answer = self.ANSWERS.get(tuple(argv))
        if answer is None:
            raise KleenenetError(f"cannot run {shlex.join(argv)}: this is not FreeBSD "
                                 "(--platform freebsd only shows plans here: add --dry-run)")
        return answer

    def succeeds(self, argv: list[str]) -> bool:
        return False

    def start(self, argv: list[str], log: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen:
        raise KleenenetError("this is not FreeBSD: --platform freebsd only shows plans here (add --dry-run)")

    def is_directory(self, path: str) -> bool:
        return True  # this machine's directories are not the FreeBSD host's: not checked

    def libzfs(self):
        return zfs.PreviewLibZFS()


def _parsed(parse, text: str, *args):
    try:
        return parse(text, *args)
    except ValueError as e:
        raise HostError(f"unexpected output: {e}") from None


class Host:
    """What kleenenet reads from the host."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def interface_names(self) -> set[str]:
        return set(self.runner.run(["ifconfig", "-l"]).split())

    def interfaces(self) -> dict[str, parsers.Interface]:
        return _parsed(parsers.parse_ifconfig, self.runner.run(["ifconfig", "-a"]))

    def group_members(self, group: str) -> set[str]:
        """Interfaces in an interface group (kleenenet puts its own in group `kleenenet`)."""
        return set(self.runner.run(["ifconfig", "-g", group]).split())

    def routes(self):
        return _parsed(parsers.parse_routes, self.runner.run(["netstat", "-rn", "--libxo", "json"]))

    def default_route_interface(self) -> str | None:
        return _parsed(parsers.default_route_interface, self.runner.run(["netstat", "-rn", "--libxo", "json"]))

    def jails(self) -> dict[str, parsers.Jail]:
        return {j.name: j for j in _parsed(parsers.parse_jls, self.runner.run(["jls", "--libxo", "json", "-v"]))}

    def jail_has_processes(self, name: str) -> bool:
        return self.runner.succeeds(["pgrep", "-j", name, "."])

    def sysctl(self, key: str) -> str:
        return self.runner.run(["sysctl", "-n", key]).strip()

    def anchors(self, parent: str) -> list[str]:
        """Every anchor below `parent`, nested ones too (-v); none when pf has no `parent` at all
        (after a boot whose pf.conf lacks kleenenet's lines, before any anchor is loaded: pfctl
        exits 1 there)."""
        try:
            text = self.runner.run(["pfctl", "-v", "-a", parent, "-s", "Anchors"])
        except HostError as e:
            if parsers.is_missing_anchor(str(e)):
                return []
            raise
        return _parsed(parsers.parse_anchors, text)

    def interface(self, name: str) -> parsers.Interface | None:
        """Interface `name` as `ifconfig NAME` shows it (None: it is gone)."""
        return _parsed(parsers.parse_ifconfig, self.runner.run(["ifconfig", name])).get(name)

    def rule_labels(self, anchor: str) -> list[str]:
        return _parsed(parsers.parse_rule_labels, self.runner.run(["pfctl", "-a", anchor, "-s", "rules"]))

    def table(self, anchor: str, table: str) -> list[str]:
        return _parsed(parsers.parse_table_show, self.runner.run(["pfctl", "-a", anchor, "-t", table, "-T", "show"]))

    def listening(self, protocol: str) -> list[parsers.Socket]:
        """The host's sockets listening (for UDP: bound and not connected) with `protocol`, IPv4
        and IPv6. Only the host's network stack: a vnet jail's sockets are in its own."""
        text = self.runner.run(["sockstat", "-46l", "-P", protocol])
        return [s for s in _parsed(parsers.parse_sockstat, text) if s.protocol == protocol]

    def autoconfiguring_interfaces(self) -> list[str]:
        """Interfaces that take IPv6 settings from router advertisements (nd6 ACCEPT_RTADV)."""
        return sorted(name for name, i in self.interfaces().items() if "ACCEPT_RTADV" in i.nd6)

    def osreldate(self) -> int:
        """__FreeBSD_version of the running kernel, e.g. 1402000 for 14.2 (sys/param.h)."""
        value = self.sysctl("kern.osreldate")
        if not value.isdigit():
            raise HostError(f"unexpected kern.osreldate {value!r}")
        return int(value)
