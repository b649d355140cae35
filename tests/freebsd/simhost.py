"""A FreeBSD host in memory, for testing the FreeBSD platform where there is no FreeBSD.

It carries out the commands kleenenet runs (ifconfig, jail, route, pfctl, sysctl) on a small
model of interfaces, jails, pf anchors and tables, and its libzfs calls on a model of ZFS
datasets (fakezfs.py); it answers the queries in FreeBSD's own output formats (so the real
parsers read them), and refuses what FreeBSD would refuse (a name taken, an interface that does
not exist, a jail that is not vnet...). `fail_at=k` makes the k-th changing command or libzfs
call fail, to test rollback; `crash_at=k` kills the process at the k-th one: from there on no
changing command runs (the rollback cannot undo anything, as after kill -9), until `revive()`.
It is a model, not FreeBSD: the vagrant/ suite is the real test. Where a plan depends on a
kernel behaviour, the comment names the FreeBSD source that has it.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shlex
import signal
import threading
import time

from kleenenet.errors import HostError
from kleenenet.platform.freebsd.host import Runner
from tests.freebsd.fakezfs import FakeLibZFS

QUERIES = (("ifconfig", "-l"), ("ifconfig", "-a"), ("ifconfig", "-g"), ("netstat",), ("jls",), ("sockstat",),
           ("sysctl", "-n"), ("pgrep",), ("kldstat",), ("mount", "-p"))


FILTER = ("pass", "block", "anchor")  # what `pfctl -F rules` clears and `-s rules` shows
TRANSLATION = ("nat", "rdr", "nat-anchor", "rdr-anchor")  # what `-F nat` clears and `-s nat` shows


def _is_query(argv: list[str]) -> bool:
    return ((argv[0] == "ifconfig" and len(argv) == 2 and not argv[1].startswith("-"))  # ifconfig NAME
            or any(tuple(argv[:len(q)]) == q for q in QUERIES)
            or (argv[0] == "pfctl" and ("-s" in argv or argv[-2:] == ["-T", "show"])))


STARTER_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"  # what rc.d gives the daemon (and its jexec)
# Where the commands tests run are (a jail's root is the host's / unless told): base and ports.
COMMANDS_IN = {"/bin": ("sh", "sleep", "echo", "cat", "test"), "/usr/bin": ("true", "false", "nc", "env", "id"),
               "/sbin": ("ifconfig", "route"), "/usr/local/bin": ("python3",)}
DAD_SECONDS = 0.05  # how long the model's duplicate address detection takes (FreeBSD's: about 1 s)
DEFAULT_MTU = {"lo": 16384}  # if_loop.c LOMTU; Ethernet-like interfaces 1500
# Kinds: "lo", "bridge", "epair" (cloned), "nic" (a network card: no cloner, never destroyed),
# "ether" (em0, and interfaces tests make up).


def _iface(kind: str, **kw) -> dict:
    return {"kind": kind, "addrs": [], "groups": [], "description": None, "up": False, "members": [],
            "mtu": DEFAULT_MTU.get(kind, 1500),
            "private": [], "vnet": None, "ether": None, "peer": None, "unit": None,
            "nd6": ["PERFORMNUD", "AUTO_LINKLOCAL"], **kw}


def _link_local(name: str) -> str:
    """A stable fe80::/64 address for an interface (the kernel derives it from the MAC)."""
    return f"fe80::{sum(map(ord, name)) % 0xffff:x}:1/64"


def _skipped(filter_: str, name: str, groups: list[str]) -> bool:
    """Whether `set skip on FILTER` covers this interface or group: pfi_skip_if() in
    sys/netpfil/pf/pf_if.c matches the exact name, or any interface in the group FILTER (a
    filter ending in a digit names one interface only)."""
    return name == filter_ or (not filter_[-1].isdigit() and filter_ in groups)


class SimulatedFreeBSD(Runner):
    def __init__(self, fail_at: int | None = None, fail_on: str | None = None):
        self.state = {
            "interfaces": {"em0": _iface("ether", addrs=["192.0.2.2/24"], up=True),
                           "lo0": _iface("lo", addrs=["127.0.0.1/8", "::1/128"], groups=["lo"], up=True)},
            "jails": {},
            "anchors": {},  # path -> loaded text
            "tables": {},  # (anchor, table) -> sorted member list
            # anchors flushed empty that pf still lists: one that called others ("ports/*"), and
            # those it called (FreeBSD 15.0 keeps listing them after a flush)
            "kept_anchors": [],
            # pf's state table, as `pfctl -k` sees it: the wire side's source and destination,
            # and the labels of the rule that created the state
            "pf_states": [],
            # sockets of the host's stack that `sockstat -l` lists: [protocol, address, port]
            "listening": [],
            "sysctl": {"net.inet.ip.forwarding": "0", "net.inet6.ip6.forwarding": "0",
                       "net.inet6.ip6.rfc6204w3": "0", "net.inet6.ip6.auto_linklocal": "1",
                       "net.link.bridge.pfil_member": "1", "net.link.bridge.pfil_bridge": "0",
                       "kern.osreldate": "1402000"},
            "routes": {"default": "em0"},
            # what doctor looks at: the user's side of pf, and kernel modules
            "modules": {"pf", "if_bridge"},
            "pf_enabled": True,
            "main": {"nat": 'nat-anchor "kleenenet/*" all\nrdr-anchor "kleenenet/*" all\n',
                     "rules": 'anchor "kleenenet/*" all\npass all flags S/SA keep state\n'},
            "skip": [],
            "directories": ["/"],
            # regular files under jail roots, symlinks (path -> target), nullfs mounts [source, point]
            "files": [], "symlinks": {}, "mounts": [],
            "zfs": FakeLibZFS.blank_pool(),
        }
        self.log: list[str] = []  # the changing commands run (and libzfs calls, as zfs commands)
        self.started: list[str] = []  # the containers' commands
        self.environments: list[dict[str, str]] = []  # what each one had added to its environment
        self.processes: dict[str, list[_Sleeping]] = {}  # jail -> its commands still running
        self.zfs = FakeLibZFS(self)  # py-libzfs, on state["zfs"]
        self.changes = 0
        self.fail_at = fail_at
        self.fail_on = fail_on  # fail the first changing command whose text contains this
        self.crash_at: int | None = None
        self.crashed = False
        # IPv6 addresses in duplicate address detection, until when: nd6_dad_start() marks a new
        # address IN6_IFF_TENTATIVE (not on a loopback interface, nor with ND6_IFF_NO_DAD), and
        # it cannot be bound before DAD ends (in6_pcbbind: EADDRNOTAVAIL). Kept out of the state:
        # how long DAD took is no difference a test compares.
        self.dad_until: dict[str, float] = {}

    def snapshot(self) -> dict:
        """The host's state as tests compare it: without the emptied anchors pf keeps listing,
        which hold nothing (a rolled-back network leaves one, as on FreeBSD 15.0)."""
        state = copy.deepcopy(self.state)
        del state["kept_anchors"]
        return state

    def release(self, version: int) -> None:
        """Be FreeBSD `version` (__FreeBSD_version, e.g. 1302000): 15 has
        net.link.bridge.member_ifaddrs (if_bridge(4)), 1 on 15.0-RELEASE as installed (0 refuses
        a member with an address), and net.link.bridge.pfil_member=0 (14: 1)."""
        self.state["sysctl"]["kern.osreldate"] = str(version)
        if version >= 1500000:
            self.state["sysctl"]["net.link.bridge.member_ifaddrs"] = "1"
            self.state["sysctl"]["net.link.bridge.pfil_member"] = "0"
        else:
            self.state["sysctl"].pop("net.link.bridge.member_ifaddrs", None)
            self.state["sysctl"]["net.link.bridge.pfil_member"] = "1"

    def revive(self) -> None:
        """A new kleenenet process after a crash."""
        self.crash_at, self.crashed = None, False

    # Runner

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        argv = list(argv)
        if not _is_query(argv):
            self.changing(shlex.join(argv))
        handler = getattr(self, "_" + argv[0])
        return handler(argv[1:], stdin) or ""

    def changing(self, text: str) -> None:
        """A change is about to be made (a command, or a libzfs call): count and log it, and
        fail or crash here when told to."""
        if self.crashed:
            raise HostError(f"{text}: not run, the process is dead")
        self.changes += 1
        if self.changes == self.crash_at:
            self.crashed = True
            raise HostError(f"{text}: killed before it ran")
        self.log.append(text)
        if self.changes == self.fail_at or (self.fail_on and self.fail_on in text):
            raise HostError(f"{text}: injected failure")

    def is_directory(self, path: str) -> bool:
        """The host's directories: those in the model, and mounted datasets' mountpoints."""
        return path in self.state["directories"] or path in self.zfs.mounted_paths()

    def libzfs(self):
        return self.zfs

    def succeeds(self, argv: list[str]) -> bool:
        if argv[:3] == ["kldstat", "-q", "-m"]:
            return argv[3] in self.state["modules"]
        if argv[:2] == ["pgrep", "-j"]:
            for proc in list(self.processes.get(argv[2], [])):
                proc.poll()  # a sleep whose time is up has exited
            jail = self.state["jails"].get(argv[2])
            return bool(jail and jail["processes"])
        if argv[0] == "test":
            return self._test(argv[1:])
        raise AssertionError(f"unexpected query {argv}")

    def _resolve(self, path: str) -> str:
        """A path with its symlinks followed (the model's: whole prefixes)."""
        for _ in range(40):
            link = next((p for p in self.state["symlinks"] if path == p or path.startswith(p + "/")), None)
            if link is None:
                return path
            path = self.state["symlinks"][link] + path[len(link):]
        return path

    def _test(self, args: list[str]) -> bool:
        """test(1) with the expressions kleenenet uses: `A -ef B`, and `-f F -a ! -L F -a ! -L D
        -a ! F -ef G` (a regular file, no symlink, in a directory that is no symlink, not G)."""
        if len(args) == 3 and args[1] == "-ef":
            return self._resolve(args[0]) == self._resolve(args[2])
        f, d, g = args[1], args[9], args[14]
        assert args == ["-f", f, "-a", "!", "-L", f, "-a", "!", "-L", d, "-a", "!", f, "-ef", g], args
        links = self.state["symlinks"]
        return (self._resolve(f) in self.state["files"] and f not in links and d not in links
                and self._resolve(f) != self._resolve(g))

    def start(self, argv, log, env=None):
        """jexec [-U USER] JAIL CMD...: `sleep N` runs until N seconds have passed or it is killed;
        any other command has exited by the time start() returns, `false` with 1, the others with
        0, `ifconfig` after printing what the jail sees into `log` (a detached command's output).
        jexec without -l keeps its caller's environment: a command is looked up in its PATH
        (`env` over the starter's, rc.d's), and one not found there exits 1 (jexec's execvp)."""
        assert argv[0] == "jexec"
        if self.crashed:
            raise HostError("not started, the process is dead")
        name, cmd = (argv[3], argv[4:]) if argv[1] == "-U" else (argv[1], argv[2:])
        jail = self._jail_of(name)
        self.started.append(shlex.join(argv))
        self.environments.append(dict(env or {}))
        path = (env or {}).get("PATH", STARTER_PATH).split(":")
        if "/" not in cmd[0] and not any(cmd[0] in COMMANDS_IN.get(d, ()) for d in path):
            if log is not None:
                with open(log, "a") as out:
                    out.write(f"jexec: execvp: {cmd[0]}: No such file or directory\n")
            return _Finished(None, 1)
        jail["processes"] = True
        if cmd[:1] == ["nc"] and any(self._tentative(a) for a in jail["params"].get("ip6.addr", "").split(",") if a):
            # nc -l binds the jail's address: not before its DAD has ended
            if log is not None:
                with open(log, "a") as out:
                    out.write("nc: Can't assign requested address\n")
            jail["processes"] = False  # (it has exited)
            return _Finished(None, 1)
        if cmd[:1] == ["sleep"]:
            proc = _Sleeping(self, name, float(cmd[1]))
            self.processes.setdefault(name, []).append(proc)
            return proc
        if log is not None and cmd == ["ifconfig"]:
            with open(log, "a") as out:
                out.write(self._jail_ifconfig(name))
        return _Finished(jail if log is None else None, 1 if cmd == ["false"] else 0)

    # helpers

    def _jail_of(self, name: str) -> dict:
        if name not in self.state["jails"]:
            raise HostError(f'jail "{name}" not found')
        return self.state["jails"][name]

    def _get(self, name: str, jail: str | None = None) -> dict:
        if jail and name == "lo0":  # every vnet jail has its own
            return self._jail_of(jail).setdefault("lo0", _iface("lo"))
        iface = self.state["interfaces"].get(name)
        if iface is None or iface["vnet"] != jail:
            raise HostError(f"ifconfig: interface {name} does not exist")
        return iface

    # commands

    def _ifconfig(self, args: list[str], stdin) -> str:
        ifs = self.state["interfaces"]
        if len(args) == 1 and not args[0].startswith("-"):
            return self._ifconfig_text(args[0], self._get(args[0]))
        if args == ["-l"]:
            return " ".join(n for n, i in ifs.items() if i["vnet"] is None) + "\n"
        if args == ["-a"]:
            return "".join(self._ifconfig_text(n, i) for n, i in ifs.items() if i["vnet"] is None)
        if args[0] == "-g":
            return "".join(f"{n}\n" for n, i in ifs.items() if args[1] in i["groups"] and i["vnet"] is None)
        jail = None
        if args[0] == "-j":
            if int(self.state["sysctl"]["kern.osreldate"]) < 1400000:
                raise HostError("ifconfig: illegal option -- j")  # -j came with FreeBSD 14.0
            jail, args = args[1], args[2:]
            self._jail_of(jail)
        name, args = args[0], args[1:]
        if args[:1] == ["-vnet"]:  # names an interface inside the jail
            jail = args[1]
        printed = None
        if args[:1] == ["create"]:
            name, args = self._create(name), args[1:]
            # ifclonecreate() in sbin/ifconfig/ifclone.c: the kernel's name differs from the
            # cloner's, so it is printed when every parameter has been applied (a failing
            # parameter exits first, and leaves the new interface behind).
            printed = name
        iface = self._get(name, jail)
        while args:
            word, args = args[0], args[1:]
            if word == "destroy":
                if iface["kind"] == "nic":
                    # A NIC has no cloner: if_clone_destroy() in sys/net/if_clone.c gives EINVAL.
                    raise HostError("ifconfig: SIOCIFDESTROY: Invalid argument")
                self._destroy(name)
                if iface["peer"]:  # epair_clone_destroy() in sys/net/if_epair.c takes both ends
                    self._destroy(iface["peer"])
            elif word == "name":
                new, args = args[0], args[1:]
                if new in ifs:
                    raise HostError(f"ifconfig: ioctl SIOCSIFNAME (set name): File exists ({new})")
                ifs[new] = ifs.pop(name)
                if iface["peer"]:
                    ifs[iface["peer"]]["peer"] = new
                for jail_ in self.state["jails"].values():
                    jail_["routes"] = {f: (gw, new if via == name else via) for f, (gw, via) in jail_["routes"].items()}
                name = printed = new  # setifname() prints the new name
            elif word in ("inet", "inet6"):
                addr, args = args[0], args[1:]
                if addr == "no_dad":  # an inet6 interface flag, not an address (ifconfig(8))
                    iface["nd6"] = sorted(set(iface["nd6"]) | {"NO_DAD"})
                    continue
                op = args.pop(0) if args[:1] in (["alias"], ["-alias"]) else "alias"
                if op == "alias":
                    self._add_address(iface, name, word, addr)
                else:
                    self._delete_address(iface, word, addr)
            elif word == "mtu":
                value, args = int(args[0]), args[1:]
                self._set_mtu(name, iface, value)
            elif word in ("group", "description", "ether"):
                value, args = args[0], args[1:]
                if word == "group":
                    iface["groups"].append(value)
                else:
                    iface[word] = value
            elif word in ("up", "down"):
                if word == "up" and not iface["up"]:
                    self._link_local(name, iface)
                iface["up"] = word == "up"
            elif word in ("addm", "deletem", "private"):
                member, args = args[0], args[1:]
                command = {"addm": "BRDGADD", "deletem": "BRDGDEL", "private": "BRDGSIFFLGS"}[word]
                if iface["kind"] != "bridge":
                    # ifconfig's bridge commands are SIOCSDRVSPEC ioctls (sbin/ifconfig/ifbridge.c
                    # do_cmd); a driver that is no bridge refuses them (ether_ioctl: EINVAL).
                    raise HostError(f"ifconfig: {command} {member}: Invalid argument")
                if word != "addm" and member not in iface["members"]:
                    # bridge_lookup_member() finds no such member: ENOENT (sys/net/if_bridge.c)
                    raise HostError(f"ifconfig: {command} {member}: No such file or directory")
                m = self._get(member)
                if word == "addm":
                    if member in iface["members"]:
                        raise HostError(f"ifconfig: BRDGADD {member}: File exists")
                    if m["addrs"] and self.state["sysctl"].get("net.link.bridge.member_ifaddrs") == "0":
                        # FreeBSD 15 (if_bridge(4)): a member with an address, even a link-local
                        # one, is refused unless net.link.bridge.member_ifaddrs=1.
                        raise HostError(f"ifconfig: BRDGADD {member}: Invalid argument")
                    # bridge_ioctl_add() in sys/net/if_bridge.c: the first member sets the
                    # bridge's MTU, a later one is given the bridge's.
                    if iface["members"]:
                        m["mtu"] = iface["mtu"]
                    else:
                        iface["mtu"] = m["mtu"]
                    iface["members"].append(member)
                elif word == "deletem":
                    iface["members"].remove(member)
                    if member in iface["private"]:
                        iface["private"].remove(member)
                else:
                    iface["private"].append(member)
            elif word in ("vnet", "-vnet"):
                target, args = args[0], args[1:]
                if word == "vnet" and not self._jail_of(target)["vnet"]:
                    raise HostError(f"ifconfig: SIOCSIFVNET: Invalid argument (jail {target} is not vnet)")
                self._move(name, iface, target if word == "vnet" else None)
            else:
                raise AssertionError(f"simulated ifconfig does not know {word!r}")
        return f"{printed}\n" if printed else ""

    def _add_address(self, iface: dict, name: str, family: str, addr: str) -> None:
        """`ifconfig NAME inet|inet6 ADDR/LEN alias` (SIOCAIFADDR / SIOCAIFADDR_IN6). An address
        the interface already has is not refused: in_aifaddr_ioctl() in sys/netinet/in.c deletes
        it first and adds it again with the new netmask (so a /32 alias given for the interface's
        own 192.168.1.10/24 would replace it); for IPv6, in6_validate_ifra() in
        sys/netinet6/in6.c updates an existing address of the same prefix length and refuses a
        different one (EINVAL)."""
        assert "/" in addr, "kleenenet always gives a prefix length"
        new = ipaddress.ip_interface(addr)
        if new.version != (4 if family == "inet" else 6):
            raise HostError(f"ifconfig: {addr}: bad value")
        have = [a for a in iface["addrs"] if ipaddress.ip_interface(a).ip == new.ip]
        if have and new.version == 6:
            if ipaddress.ip_interface(have[0]).network.prefixlen != new.network.prefixlen:
                raise HostError("ifconfig: ioctl (SIOCAIFADDR): Invalid argument")
            return
        if self._member_without_addresses(name):
            raise HostError("ifconfig: ioctl (SIOCAIFADDR): Invalid argument")
        for old in have:
            iface["addrs"].remove(old)
        iface["addrs"].append(str(new))
        if new.version == 6 and iface["kind"] != "lo" and "NO_DAD" not in iface["nd6"]:
            self.dad_until[str(new.ip)] = time.monotonic() + DAD_SECONDS
        iface["addrs"].sort(key=lambda a: (ipaddress.ip_interface(a).version, ipaddress.ip_interface(a)))  # (order means nothing)

    def _tentative(self, addr: str) -> bool:
        return time.monotonic() < self.dad_until.get(addr, 0)

    def _delete_address(self, iface: dict, family: str, addr: str) -> None:
        """`ifconfig NAME inet|inet6 ADDR -alias` (SIOCDIFADDR): an address the interface does
        not have is EADDRNOTAVAIL (in_difaddr_ioctl() in sys/netinet/in.c, in6_control())."""
        ip = ipaddress.ip_address(addr.split("/")[0])
        have = [a for a in iface["addrs"] if ipaddress.ip_interface(a).ip == ip]
        if not have:
            call = "SIOCDIFADDR" if family == "inet" else "SIOCDIFADDR_IN6"
            raise HostError(f"ifconfig: ioctl ({call}): Can't assign requested address")
        iface["addrs"].remove(have[0])
        self.dad_until.pop(str(ip), None)

    def add_lan(self) -> None:
        """The host's LANs, interfaces kleenenet did not create: em1, a NIC on 192.168.1.0/24
        (and fd00:1::/64), and bridge0, a bridge on 192.168.2.0/24 holding the NIC em2 (the
        address on the bridge, not on its member, as if_bridge(4) asks). em0 keeps the default
        route."""
        ifs = self.state["interfaces"]
        ifs["em1"] = _iface("nic", addrs=["192.168.1.10/24", "fd00:1::10/64", _link_local("em1")], up=True,
                            ether="58:9c:fc:00:00:01")
        ifs["em2"] = _iface("nic", up=True, ether="58:9c:fc:00:00:02", nd6=["PERFORMNUD"])
        ifs["bridge0"] = _iface("bridge", addrs=["192.168.2.10/24"], up=True, members=["em2"],
                                groups=["bridge"], unit=0, ether="58:9c:fc:00:00:03")

    def _create(self, cloner: str) -> str:
        """A new interface of `cloner`, named with the lowest unit no interface of it holds (a
        renamed interface keeps its unit: if_clone's unit allocator)."""
        ifs = self.state["interfaces"]
        assert cloner in ("lo", "bridge", "epair"), cloner
        units = {i["unit"] for i in ifs.values() if i["kind"] == cloner}
        unit = next(u for u in range(1 if cloner == "lo" else 0, 1000) if u not in units)
        if cloner == "epair":  # the a end is the one printed; its peer is the b end
            a, b = f"epair{unit}a", f"epair{unit}b"
            ifs[a] = _iface("epair", peer=b, groups=["epair"], unit=unit)
            ifs[b] = _iface("epair", peer=a, groups=["epair"], unit=unit)
            return a
        name = f"{cloner}{unit}"
        ifs[name] = _iface(cloner, groups=[cloner], unit=unit)
        return name

    def _destroy(self, name: str) -> None:
        self.state["interfaces"].pop(name)
        self._detached(name)

    def _detached(self, name: str) -> None:
        """What leaves with an interface: its bridge membership and the routes through it."""
        for other in self.state["interfaces"].values():
            if name in other["members"]:
                other["members"].remove(name)
                if name in other["private"]:
                    other["private"].remove(name)
        for jail in self.state["jails"].values():
            jail["routes"] = {f: r for f, r in jail["routes"].items() if r[1] != name}

    def _move(self, name: str, iface: dict, jail: str | None) -> None:
        """if_vmove() in sys/net/if.c: if_detach_internal() drops every group (if_delgroups),
        address and route and takes the interface down; if_attach_internal() puts back only
        the cloner's group (if_clone_restoregroup). Name, description and MAC stay."""
        self._detached(name)
        iface.update(vnet=jail, addrs=[], up=False, groups=[iface["kind"]] if iface["unit"] is not None else [])

    def _set_mtu(self, name: str, iface: dict, mtu: int) -> None:
        """SIOCSIFMTU: an epair and a bridge take 72..65535 (FreeBSD 15.0), a bridge passes the
        MTU on to every member (bridge_ioctl's SIOCSIFMTU in if_bridge.c)."""
        if not 72 <= mtu <= 65535 and iface["kind"] in ("epair", "bridge"):
            raise HostError("ifconfig: ioctl SIOCSIFMTU (set mtu): Invalid argument")
        iface["mtu"] = mtu
        for member in iface["members"]:
            self.state["interfaces"][member]["mtu"] = mtu

    def _member_without_addresses(self, name: str) -> bool:
        return (self.state["sysctl"].get("net.link.bridge.member_ifaddrs") == "0"
                and any(name in i["members"] for i in self.state["interfaces"].values()))

    def _link_local(self, name: str, iface: dict) -> None:
        """An Ethernet-like interface that comes up gets an fe80:: address when
        net.inet6.ip6.auto_linklocal=1 (in6_ifattach); a bridge does not (IFT_BRIDGE is left
        out in nd6_ifattach), nor, on 15, a bridge member."""
        if (iface["kind"] == "epair" and self.state["sysctl"]["net.inet6.ip6.auto_linklocal"] == "1"
                and not self._member_without_addresses(name)
                and not any(a.startswith("fe80:") for a in iface["addrs"])):
            iface["addrs"].append(_link_local(name))

    def _jail_ifconfig(self, jail: str) -> str:
        """`ifconfig` run in a jail. A vnet jail has interfaces of its own (its lo0 and what was
        moved in); any other jail sees the host's interfaces but only the addresses it may use:
        sysctl_iflist() in sys/net/rtsock.c (getifaddrs(3)) skips those prison_if() refuses, so
        with ip4=new/ip6=new only the jail's ip4.addr/ip6.addr show, with inherit all of them."""
        j = self._jail_of(jail)
        if j["vnet"]:
            own = {"lo0": j.get("lo0", _iface("lo")),
                   **{n: i for n, i in self.state["interfaces"].items() if i["vnet"] == jail}}
            return "".join(self._ifconfig_text(n, i) for n, i in own.items())
        params = j["params"]
        allowed = {4: params.get("ip4.addr", "").split(","), 6: params.get("ip6.addr", "").split(",")}

        def visible(addr: str) -> bool:
            ip = ipaddress.ip_interface(addr).ip
            return params.get(f"ip{ip.version}") == "inherit" or str(ip) in allowed[ip.version]
        return "".join(self._ifconfig_text(n, {**i, "addrs": [a for a in i["addrs"] if visible(a)]})
                       for n, i in self.state["interfaces"].items() if i["vnet"] is None)

    def _ifconfig_text(self, name: str, i: dict) -> str:
        flags = ",".join(f for f in ("UP" if i["up"] else "", "LOOPBACK" if i["kind"] == "lo" else "",
                                      "RUNNING" if i["up"] else "") if f)
        lines = [f"{name}: flags={8049 if i['up'] else 8008}<{flags}> metric 0 mtu {i['mtu']}"]
        if i["description"]:
            lines.append(f"\tdescription: {i['description']}")
        if i["ether"]:
            lines.append(f"\tether {i['ether']}")
        for a in i["addrs"]:
            addr = ipaddress.ip_interface(a)
            if addr.version == 4:
                lines.append(f"\tinet {addr.ip} netmask 0x{int(addr.netmask):08x}")
            else:
                tentative = " tentative" if self._tentative(str(addr.ip)) else ""
                lines.append(f"\tinet6 {addr.ip} prefixlen {addr.network.prefixlen}{tentative}")
        for m in i["members"]:
            flags = "LEARNING,DISCOVER,PRIVATE" if m in i["private"] else "LEARNING,DISCOVER"
            lines.append(f"\tmember: {m} flags=3<{flags}>")
        if i["groups"]:
            lines.append(f"\tgroups: {' '.join(i['groups'])}")
        if i["nd6"]:  # ND6_IFF_* bits of sys/netinet6/nd6.h, as ifconfig prints them
            bits = {"PERFORMNUD": 0x1, "ACCEPT_RTADV": 0x2, "AUTO_LINKLOCAL": 0x20, "NO_DAD": 0x100}
            flags = sorted(i["nd6"], key=bits.get)
            lines.append(f"\tnd6 options={sum(bits[f] for f in flags):x}<{','.join(flags)}>")
        return "\n".join(lines) + "\n"

    def _netstat(self, args, stdin) -> str:
        entries = [{"destination": "default", "gateway": "192.0.2.1", "flags": "UGS",
                    "interface-name": self.state["routes"]["default"]}]
        for name, i in self.state["interfaces"].items():
            for a in i["addrs"]:
                net = ipaddress.ip_interface(a).network
                if net.version == 4 and net.prefixlen < 32:
                    entries.append({"destination": str(net), "gateway": "link#1", "flags": "U",
                                    "interface-name": name})
        return json.dumps({"statistics": {"route-information": {"route-table": {"rt-family": [
            {"address-family": "Internet", "rt-entry": entries}]}}}})

    def _jls(self, args, stdin) -> str:
        jails = [{"jid": k + 1, "name": n, "path": j["params"].get("path", "/"),
                  "hostname": j["params"].get("host.hostname", ""),
                  "ipv4_addrs": [a for a in j["params"].get("ip4.addr", "").split(",") if a],
                  "ipv6_addrs": [a for a in j["params"].get("ip6.addr", "").split(",") if a]}
                 for k, (n, j) in enumerate(self.state["jails"].items())]
        return json.dumps({"__version": "2", "jail-information": {"jail": jails}})

    def _sockstat(self, args, stdin) -> str:
        """sockstat -46l -P PROTOCOL: the listening sockets of the host's stack, as display() in
        usr.bin/sockstat/sockstat.c prints them (ADDRESS:PORT, * for any)."""
        assert args[:2] == ["-46l", "-P"] and len(args) == 3, args
        protocol = args[2]
        lines = ["USER     COMMAND    PID   FD PROTO  LOCAL ADDRESS         FOREIGN ADDRESS"]
        for k, (proto, address, bound) in enumerate(self.state["listening"]):
            if proto == protocol:
                family = "6" if ":" in address else "4"
                lines.append(f"root     daemon     {100 + k:<5} 3  {proto}{family:<3}  {address}:{bound:<15} *:*")
        return "\n".join(lines) + "\n"

    def _sysctl(self, args, stdin) -> str:
        if args[0] == "-n":
            return self.state["sysctl"][args[1]] + "\n"
        key, _, value = args[0].partition("=")
        self.state["sysctl"][key] = value
        return ""

    def _jail(self, args, stdin) -> str:
        jails = self.state["jails"]
        op, args = args[0], args[1:]
        if op == "-r":
            self._jail_of(args[0])
            del jails[args[0]]
            # jail(8) -r: SIGTERM to the jail's processes (then SIGKILL after stop.timeout, and
            # the kernel's prison_remove() kills what is left); sleep(1) dies of the SIGTERM.
            for proc in self.processes.pop(args[0], []):
                proc.send_signal(signal.SIGTERM)
            for name, i in self.state["interfaces"].items():  # vnet interfaces return to the host
                if i["vnet"] == args[0]:  # (vnet_if_return() in sys/net/if.c: if_vmove)
                    self._move(name, i, None)
            return ""
        params = dict(a.partition("=")[::2] for a in args)
        name = params.pop("name")
        if op == "-c":
            if name in jails:
                raise HostError(f'jail: "{name}" already exists')
            if not self.is_directory(params.get("path", "/")):  # kern_jail_set() looks the path up
                raise HostError(f"jail: {name}: {params.get('path')}: No such file or directory")
            jails[name] = {"params": params, "vnet": "vnet" in params, "processes": False, "routes": {}}
        else:
            assert op == "-m"
            jail = self._jail_of(name)
            if any(k.startswith("ip") and jail["params"].get(k.split(".")[0]) in ("inherit", "disable")
                   for k in params):
                raise HostError("jail: ip4.addr: jail is not configured for its own addresses")
            jail["params"].update(params)
        return ""

    def _route(self, args, stdin) -> str:
        assert args[0] == "-j" and args[2] == "add" and args[4] == "default", args
        if int(self.state["sysctl"]["kern.osreldate"]) < 1400000:
            raise HostError("route: illegal option -- j")  # -j came with FreeBSD 14.0
        jail = self._jail_of(args[1])
        family, gw = args[3], ipaddress.ip_address(args[5])
        if family in jail["routes"]:
            raise HostError("route: writing to routing socket: File exists")
        via = [n for n, i in self.state["interfaces"].items() if i["vnet"] == args[1]
               and any(gw in ipaddress.ip_interface(a).network for a in i["addrs"])]
        if not via:
            raise HostError("route: writing to routing socket: Network is unreachable")
        jail["routes"][family] = (str(gw), via[0])
        return ""

    def _mount(self, args, stdin) -> str:
        """mount -p (fstab lines), mount -t nullfs FILE FILE (mount_nullfs(8): both files)."""
        if args == ["-p"]:
            return "".join(f"{src}\t{point}\tnullfs\trw\t0\t0\n" for src, point in self.state["mounts"])
        assert args[:2] == ["-t", "nullfs"], args
        source, point = args[2:]
        if self._resolve(point) not in self.state["files"]:
            raise HostError(f"mount_nullfs: {point}: No such file or directory")
        self.state["mounts"].append([source, point])

    def _umount(self, args, stdin) -> str:
        mounted = [m for m in self.state["mounts"] if m[1] == args[0]]
        if not mounted:
            raise HostError(f"umount: {args[0]}: not a file system root directory")
        self.state["mounts"].remove(mounted[-1])

    def _jexec(self, args, stdin) -> str:
        """jexec JAIL ifconfig|route ...: the jail's own tools (FreeBSD 13 has no -j)."""
        jail, tool, rest = args[0], args[1], args[2:]
        assert tool in ("ifconfig", "route"), tool
        self._jail_of(jail)
        release = self.state["sysctl"]["kern.osreldate"]
        self.state["sysctl"]["kern.osreldate"] = "1400000"  # (-j is how the model says "in the jail")
        try:
            return getattr(self, "_" + tool)(["-j", jail, *rest], stdin)
        finally:
            self.state["sysctl"]["kern.osreldate"] = release

    def _pfctl(self, args, stdin) -> str:
        if args[0] == "-k":
            return self._kill_states(args)
        verbose = "-v" in args
        args = [a for a in args if a != "-v"]
        opts = dict(zip(args[::2], args[1::2])) if "-n" not in args else {}
        if args[:2] == ["-s", "info"]:
            return f"Status: {'Enabled' if self.state['pf_enabled'] else 'Disabled'} for 0 days 00:10:00    Debug: Urgent\n"
        if args[:1] == ["-s"] and args[1] in self.state["main"]:
            return self.state["main"][args[1]]
        if args[:2] == ["-s", "Interfaces"]:
            # print_iface() in sbin/pfctl/pfctl_parser.c: every interface and group pf knows,
            # " (skip)" where a `set skip on` filter covers it.
            ifs = self.state["interfaces"]
            groups = sorted({g for i in ifs.values() for g in i["groups"]})
            known = [(g, []) for g in ["all", *groups]] + [(n, i["groups"]) for n, i in ifs.items() if not i["vnet"]]
            return "".join(f"{n}{' (skip)' if any(_skipped(f, n, g) for f in self.state['skip']) else ''}\n"
                           for n, g in known)
        if args[0] == "-n":
            self._check_ruleset(stdin)
            return ""
        anchor = opts["-a"]
        rulesets = self._rulesets()
        if opts.get("-s") == "Anchors":
            # pfctl_show_anchors(): the rulesets below ANCHOR, full paths, all levels with -v.
            # A ruleset exists while it has rules or children, or a rule refers to it. Below a
            # ruleset that does not exist (no anchor loaded, and pf.conf without kleenenet's
            # lines) FreeBSD 15.0's pfctl exits 1.
            if anchor not in rulesets and not self._main_calls(anchor):
                raise HostError("pfctl: Anchor does not exist.")
            below = [a for a in rulesets if a.startswith(anchor + "/")]
            shown = below if verbose else [a for a in below if "/" not in a[len(anchor) + 1:]]
            return "".join(f"  {a}\n" for a in shown)
        if opts.get("-s") in ("rules", "nat"):
            if anchor not in rulesets:
                raise HostError("pfctl: DIOCGETRULES: Invalid argument")
            kinds = FILTER if opts["-s"] == "rules" else TRANSLATION
            return "".join(f"{line}\n" for line in self.state["anchors"].get(anchor, "").splitlines()
                           if line.split()[:1] and line.split()[0] in kinds)
        if opts.get("-s") == "Tables":
            return "".join(f"{t}\n" for a, t in self.state["tables"] if a == anchor)
        if args[-2:] == ["-T", "show"]:
            return "".join(f"   {a}\n" for a in self.state["tables"].get((anchor, opts["-t"]), []))
        if opts.get("-f") == "-":
            tables = self._check_ruleset(stdin)
            self.state["anchors"][anchor] = stdin
            called = {anchor, *self._called(anchor, stdin)}
            self.state["kept_anchors"] = [a for a in self.state["kept_anchors"] if a not in called]
            old = {k[1]: self.state["tables"].pop(k) for k in [k for k in self.state["tables"] if k[0] == anchor]}
            for table, members in tables.items():
                # `table <t> persist` without { } keeps the members the table had (FreeBSD
                # 15.0); with { } it has those listed
                self.state["tables"][(anchor, table)] = old.get(table, []) if members is None else members
            return ""
        if "-F" in opts:
            return self._flush(anchor, opts["-F"])
        if "-T" in opts:
            key = (anchor, opts["-t"])
            op, addrs = args[args.index("-T") + 1], args[args.index("-T") + 2:]
            members = set(self.state["tables"].setdefault(key, []))
            members = members | set(addrs) if op == "add" else members - set(addrs)
            self.state["tables"][key] = sorted(members)
            return ""
        raise AssertionError(f"simulated pfctl does not know {args}")

    def _flush(self, anchor: str, what: str) -> str:
        """pfctl -a ANCHOR -F rules|nat|all. `all` clears the filter rules, the translation
        rules, then the tables; on an anchor without tables FreeBSD 15.0's pfctl fails there,
        after clearing the rest (exit 1). An anchor that called others stays listed, empty."""
        kinds = {"rules": FILTER, "nat": TRANSLATION, "all": FILTER + TRANSLATION}[what]
        text = self.state["anchors"].get(anchor, "")
        rest = [line for line in text.splitlines() if not (line.split()[:1] and line.split()[0] in kinds)]
        if any(line.split()[:1] and line.split()[0] in FILTER + TRANSLATION for line in rest):
            self.state["anchors"][anchor] = "".join(f"{line}\n" for line in rest)
        elif anchor in self.state["anchors"]:
            del self.state["anchors"][anchor]
            called = self._called(anchor, text)
            if called:
                self.state["kept_anchors"] = sorted({*self.state["kept_anchors"], anchor, *called})
        if what == "all":
            tables = [k for k in self.state["tables"] if k[0] == anchor]
            if not tables:
                raise HostError("pfctl: Operation not supported by device")
            for key in tables:
                del self.state["tables"][key]
        return ""

    @staticmethod
    def _called(path: str, text: str) -> list[str]:
        """The anchors a ruleset's rules call (pf_anchor_setup() in sys/netpfil/pf/pf_ruleset.c
        creates them, relative to the caller)."""
        return [f"{path}/{called}" for called in re.findall(r'^(?:rdr-|nat-)?anchor "([^"/]+)/\*"', text, re.M)]

    def _main_calls(self, path: str) -> bool:
        """Whether the main ruleset calls anchors below `path` (which then exists, empty)."""
        return any(f'anchor "{path}/' in text for text in self.state["main"].values())

    def _rulesets(self) -> list[str]:
        """The anchors pf has: those loaded, their parents, those a loaded rule calls, and those
        kept after a flush."""
        found = set()
        for path in [*self.state["anchors"], *self.state["kept_anchors"]]:
            parts = path.split("/")
            found.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
        for path, text in self.state["anchors"].items():
            found.update(self._called(path, text))
        return sorted(found)

    def _kill_states(self, args: list[str]) -> str:
        """pfctl -k HOST [-k HOST], -k label -k LABEL, and from FreeBSD 15.0 -k nat -k HOST
        (pfctl(8)): states whose source (and destination) lie in the given networks, as they are
        on the wire; or that a rule with that label created; or whose source before NAT
        ("nat_src": a NATed state's wire source is the host's) lies there. A prefix length of 0
        is a wildcard. Prints "killed N states"."""
        values = args[1::2]
        assert args[::2] == ["-k"] * len(values) and len(values) in (1, 2), args
        states = self.state["pf_states"]
        if values[0] == "label":
            gone = [st for st in states if values[1] in st["labels"]]
        elif values[0] == "nat":
            if int(self.state["sysctl"]["kern.osreldate"]) < 1500000:
                raise HostError("pfctl: no IP address found for nat")  # (a host name before 15.0)
            net = ipaddress.ip_network(values[1], strict=False)
            gone = [st for st in states if st.get("nat_src") and ipaddress.ip_address(st["nat_src"]) in net]
        else:
            nets = [ipaddress.ip_network(v, strict=False) for v in values]

            def inside(addr, net):
                addr = ipaddress.ip_address(addr)
                return addr.version == net.version and addr in net
            gone = [st for st in states if inside(st["src"], nets[0]) and (len(nets) == 1 or inside(st["dst"], nets[1]))]
        self.state["pf_states"] = [st for st in states if st not in gone]
        return f"killed {len(gone)} states\n"

    @staticmethod
    def _check_ruleset(text: str) -> dict[str, list[str] | None]:
        """The tables a ruleset defines, with their members (None: no { } given); statements must be of the kinds kleenenet writes, in pf's
        order (tables, translation, filtering), and reference only defined tables."""
        order = {"table": 0, "nat": 1, "rdr": 1, "rdr-anchor": 1, "pass": 2, "block": 2, "anchor": 2}
        # rdr-rule in pf.conf(5)'s grammar, as kleenenet writes it (a port range maps onto a range)
        rdr = re.compile(r"rdr on \S+ inet6? proto (tcp|udp) from any to \(\S+\) port (\d+|\d+:\d+) tag \w+ -> "
                         r"\S+ port (\d+|\d+:\*)")
        tables, last = {}, 0
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            kind = line.split()[0]
            if kind not in order or order[kind] < last:
                raise HostError(f"pfctl: syntax error or statement out of order: {line}")
            last = order[kind]
            if kind == "rdr" and not rdr.fullmatch(line):
                raise HostError(f"pfctl: syntax error: {line}")
            if kind == "table":
                m = re.fullmatch(r"table <(\w+)> persist(?: \{ ?(.*?) ?\})?", line)
                if not m:
                    raise HostError(f"pfctl: syntax error: {line}")
                tables[m[1]] = None if m[2] is None else sorted(m[2].split(", ")) if m[2] else []
            for name in re.findall(r"<(\w+)>", line):
                if name not in tables:
                    raise HostError(f"pfctl: table <{name}> is not defined in this anchor")
        return tables


class _Finished:
    """What start() returns: a command that has already exited with `code` (a foreground one
    leaves its jail without processes when waited for)."""

    def __init__(self, jail: dict | None, code: int = 0):
        self.jail = jail
        self.code = code

    def wait(self) -> int:
        if self.jail is not None:
            self.jail["processes"] = False
        return self.code

    def send_signal(self, signum) -> None:
        pass


class _Sleeping:
    """What start() returns for `sleep N`: it exits 0 after N seconds, or is killed by a signal
    first (sleep(1) keeps no handler for SIGTERM, SIGINT or SIGHUP), its returncode then minus the
    signal's number, as subprocess.Popen reports it. When it ends its jail has no processes left
    (unless another command of the jail still runs)."""

    def __init__(self, host: SimulatedFreeBSD, jail: str, seconds: float):
        self.host, self.jail = host, jail
        self.deadline = time.monotonic() + seconds
        self.returncode: int | None = None
        self._ended = threading.Condition()

    def _end(self, code: int) -> None:
        with self._ended:
            if self.returncode is not None:
                return
            self.returncode = code
            self._ended.notify_all()
        running = self.host.processes.get(self.jail, [])
        if self in running:
            running.remove(self)
        if not running:
            self.host.processes.pop(self.jail, None)
            jail = self.host.state["jails"].get(self.jail)
            if jail is not None:
                jail["processes"] = False

    def send_signal(self, signum) -> None:
        self._end(-int(signum))

    def poll(self) -> int | None:
        if self.returncode is None and time.monotonic() >= self.deadline:
            self._end(0)
        return self.returncode

    def wait(self) -> int:
        with self._ended:
            self._ended.wait_for(lambda: self.returncode is not None,
                                 timeout=max(0.0, self.deadline - time.monotonic()))
        self._end(0)  # (no-op when a signal ended it first)
        return self.returncode
