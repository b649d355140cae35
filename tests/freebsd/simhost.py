"""A FreeBSD host in memory, for testing the FreeBSD platform where there is no FreeBSD.

It carries out the commands kleenenet runs (ifconfig, jail, route, pfctl, sysctl) on a small
model of interfaces, jails, pf anchors and tables, answers the queries in FreeBSD's own output
formats (so the real parsers read them), and refuses what FreeBSD would refuse (a name taken, an
interface that does not exist, a jail that is not vnet...). `fail_at=k` makes the k-th changing
command fail, to test rollback. It is a model, not FreeBSD: the vagrant/ suite is the real test.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shlex

from kleenenet.errors import HostError
from kleenenet.platform.freebsd.host import Runner

QUERIES = (("ifconfig", "-l"), ("ifconfig", "-a"), ("ifconfig", "-g"), ("netstat",), ("jls",),
           ("sysctl", "-n"), ("pgrep",), ("kldstat",))


def _is_query(argv: list[str]) -> bool:
    return any(tuple(argv[:len(q)]) == q for q in QUERIES) or (argv[0] == "pfctl" and "-s" in argv)


def _iface(kind: str, **kw) -> dict:
    return {"kind": kind, "addrs": [], "groups": [], "description": None, "up": False, "members": [],
            "private": [], "vnet": None, "ether": None, "peer": None, **kw}


class SimulatedFreeBSD(Runner):
    def __init__(self, fail_at: int | None = None, fail_on: str | None = None):
        self.state = {
            "interfaces": {"em0": _iface("ether", addrs=["192.0.2.2/24"], up=True),
                           "lo0": _iface("lo", addrs=["127.0.0.1/8", "::1/128"], groups=["lo"], up=True)},
            "jails": {},
            "anchors": {},  # path -> loaded text
            "tables": {},  # (anchor, table) -> sorted member list
            "sysctl": {"net.inet.ip.forwarding": "0", "net.inet6.ip6.forwarding": "0",
                       "net.link.bridge.pfil_member": "1", "net.link.bridge.pfil_bridge": "0"},
            "routes": {"default": "em0"},
            # what doctor looks at: the user's side of pf, and kernel modules
            "modules": {"pf", "if_bridge"},
            "pf_enabled": True,
            "main": {"nat": 'nat-anchor "kleenenet/*" all\nrdr-anchor "kleenenet/*" all\n',
                     "rules": 'anchor "kleenenet/*" all\npass all flags S/SA keep state\n'},
            "skip": [],
        }
        self.log: list[str] = []  # the changing commands run
        self.started: list[str] = []  # the containers' commands
        self.changes = 0
        self.fail_at = fail_at
        self.fail_on = fail_on  # fail the first changing command whose text contains this
        self.epairs = 0

    def snapshot(self) -> dict:
        return copy.deepcopy(self.state)

    # Runner

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        argv = list(argv)
        if not _is_query(argv):
            self.changes += 1
            self.log.append(shlex.join(argv))
            if self.changes == self.fail_at or (self.fail_on and self.fail_on in shlex.join(argv)):
                raise HostError(f"{shlex.join(argv)}: injected failure")
        handler = getattr(self, "_" + argv[0])
        return handler(argv[1:], stdin) or ""

    def succeeds(self, argv: list[str]) -> bool:
        if argv[:3] == ["kldstat", "-q", "-m"]:
            return argv[3] in self.state["modules"]
        if argv[:2] == ["pgrep", "-j"]:
            jail = self.state["jails"].get(argv[2])
            return bool(jail and jail["processes"])
        raise AssertionError(f"unexpected query {argv}")

    def start(self, argv, log):
        assert argv[0] == "jexec"
        self._jail_of(argv[1])["processes"] = True
        self.started.append(shlex.join(argv))
        return _Finished()

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
        if args == ["-l"]:
            return " ".join(n for n, i in ifs.items() if i["vnet"] is None) + "\n"
        if args == ["-a"]:
            return "".join(self._ifconfig_text(n, i) for n, i in ifs.items() if i["vnet"] is None)
        if args[0] == "-g":
            return "".join(f"{n}\n" for n, i in ifs.items() if args[1] in i["groups"] and i["vnet"] is None)
        jail = None
        if args[0] == "-j":
            jail, args = args[1], args[2:]
            self._jail_of(jail)
        name, args = args[0], args[1:]
        if args[:1] == ["-vnet"]:  # names an interface inside the jail
            jail = args[1]
        if args[:1] == ["create"]:
            if name == "epair":
                n = self.epairs
                self.epairs += 1
                ifs[f"epair{n}a"] = _iface("epair", peer=f"epair{n}b", groups=["epair"])
                ifs[f"epair{n}b"] = _iface("epair", peer=f"epair{n}a", groups=["epair"])
                return f"epair{n}a\n"
            assert name in ("lo", "bridge"), name
            new = args[2] if args[1:2] == ["name"] else f"{name}{len(ifs)}"
            if new in ifs:
                raise HostError(f"ifconfig: SIOCIFCREATE2: File exists ({new})")
            ifs[new] = _iface(name, groups=[name] if name == "lo" else ["bridge"])
            return new + "\n"
        iface = self._get(name, jail)
        while args:
            word, args = args[0], args[1:]
            if word == "destroy":
                del ifs[name]
                if iface["peer"]:
                    del ifs[iface["peer"]]
                for other in ifs.values():
                    if name in other["members"]:
                        other["members"].remove(name)
            elif word == "name":
                new, args = args[0], args[1:]
                if new in ifs:
                    raise HostError(f"ifconfig: ioctl SIOCSIFNAME (set name): File exists ({new})")
                ifs[new] = ifs.pop(name)
                if iface["peer"]:
                    ifs[iface["peer"]]["peer"] = new
                name = new
            elif word in ("inet", "inet6"):
                addr, args = args[0], args[1:]
                op = args.pop(0) if args[:1] in (["alias"], ["-alias"]) else "alias"
                ip = addr.split("/")[0]
                have = [a for a in iface["addrs"] if a.split("/")[0] == ip]
                if op == "alias":
                    if have:
                        raise HostError(f"ifconfig: ioctl (SIOCAIFADDR): File exists ({ip})")
                    assert "/" in addr, "kleenenet always gives a prefix length"
                    iface["addrs"].append(str(ipaddress.ip_interface(addr)))
                    iface["addrs"].sort(key=lambda a: (ipaddress.ip_interface(a).version, ipaddress.ip_interface(a)))  # (order means nothing)
                else:
                    if not have:
                        raise HostError(f"ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address ({ip})")
                    iface["addrs"].remove(have[0])
            elif word in ("group", "description", "ether"):
                value, args = args[0], args[1:]
                if word == "group":
                    iface["groups"].append(value)
                else:
                    iface[word] = value
            elif word in ("up", "down"):
                iface["up"] = word == "up"
            elif word in ("addm", "deletem", "private"):
                member, args = args[0], args[1:]
                assert iface["kind"] == "bridge", f"{word} on a non-bridge {name}"
                self._get(member)
                if word == "addm":
                    if member in iface["members"]:
                        raise HostError(f"ifconfig: BRDGADD {member}: File exists")
                    iface["members"].append(member)
                elif word == "deletem":
                    iface["members"].remove(member)
                    if member in iface["private"]:
                        iface["private"].remove(member)
                else:
                    iface["private"].append(member)
            elif word in ("vnet", "-vnet"):
                target, args = args[0], args[1:]
                if word == "vnet":
                    if not self._jail_of(target)["vnet"]:
                        raise HostError(f"ifconfig: SIOCSIFVNET: Invalid argument (jail {target} is not vnet)")
                    iface["vnet"] = target
                else:
                    iface["vnet"] = None
            else:
                raise AssertionError(f"simulated ifconfig does not know {word!r}")
        return ""

    @staticmethod
    def _ifconfig_text(name: str, i: dict) -> str:
        flags = "UP,RUNNING" if i["up"] else ""
        lines = [f"{name}: flags={8049 if i['up'] else 8008}<{flags}> metric 0 mtu 1500"]
        if i["description"]:
            lines.append(f"\tdescription: {i['description']}")
        if i["ether"]:
            lines.append(f"\tether {i['ether']}")
        for a in i["addrs"]:
            addr = ipaddress.ip_interface(a)
            if addr.version == 4:
                lines.append(f"\tinet {addr.ip} netmask 0x{int(addr.netmask):08x}")
            else:
                lines.append(f"\tinet6 {addr.ip} prefixlen {addr.network.prefixlen}")
        for m in i["members"]:
            flags = "LEARNING,DISCOVER,PRIVATE" if m in i["private"] else "LEARNING,DISCOVER"
            lines.append(f"\tmember: {m} flags=3<{flags}>")
        if i["groups"]:
            lines.append(f"\tgroups: {' '.join(i['groups'])}")
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
            for i in self.state["interfaces"].values():  # vnet interfaces return to the host
                if i["vnet"] == args[0]:
                    i["vnet"] = None
            return ""
        params = dict(a.partition("=")[::2] for a in args)
        name = params.pop("name")
        if op == "-c":
            if name in jails:
                raise HostError(f'jail: "{name}" already exists')
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
        jail = self._jail_of(args[1])
        if args[3] in jail["routes"]:
            raise HostError("route: writing to routing socket: File exists")
        jail["routes"][args[3]] = args[5]
        return ""

    def _pfctl(self, args, stdin) -> str:
        opts = dict(zip(args[::2], args[1::2])) if "-n" not in args else {}
        if args[:2] == ["-s", "info"]:
            return f"Status: {'Enabled' if self.state['pf_enabled'] else 'Disabled'} for 0 days 00:10:00    Debug: Urgent\n"
        if args[:1] == ["-s"] and args[1] in self.state["main"]:
            return self.state["main"][args[1]]
        if args[:2] == ["-s", "Interfaces"]:
            return "".join(f"{i}{' (skip)' if i in self.state['skip'] else ''}\n"
                           for i in ["all", "lo", *self.state["interfaces"]])
        if args[0] == "-n":
            self._check_ruleset(stdin)
            return ""
        anchor = opts["-a"]
        if opts.get("-s") == "Anchors":
            return "".join(f"  {a}\n" for a in sorted(self.state["anchors"]) if a.startswith(anchor + "/"))
        if opts.get("-f") == "-":
            tables = self._check_ruleset(stdin)
            self.state["anchors"][anchor] = stdin
            for key in [k for k in self.state["tables"] if k[0] == anchor]:
                del self.state["tables"][key]
            for table, members in tables.items():
                self.state["tables"][(anchor, table)] = members
            return ""
        if opts.get("-F") == "all":
            self.state["anchors"].pop(anchor, None)
            for key in [k for k in self.state["tables"] if k[0] == anchor]:
                del self.state["tables"][key]
            return ""
        if "-T" in opts:
            key = (anchor, opts["-t"])
            op, addrs = args[args.index("-T") + 1], args[args.index("-T") + 2:]
            members = set(self.state["tables"].setdefault(key, []))
            members = members | set(addrs) if op == "add" else members - set(addrs)
            self.state["tables"][key] = sorted(members)
            return ""
        raise AssertionError(f"simulated pfctl does not know {args}")

    @staticmethod
    def _check_ruleset(text: str) -> dict[str, list[str]]:
        """The tables a ruleset defines; statements must be of the kinds kleenenet writes, in pf's
        order (tables, translation, filtering), and reference only defined tables."""
        order = {"table": 0, "nat": 1, "rdr": 1, "pass": 2, "block": 2}
        tables, last = {}, 0
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            kind = line.split()[0]
            if kind not in order or order[kind] < last:
                raise HostError(f"pfctl: syntax error or statement out of order: {line}")
            last = order[kind]
            if kind == "table":
                m = re.fullmatch(r"table <(\w+)> persist(?: \{ (.*) \})?", line)
                if not m:
                    raise HostError(f"pfctl: syntax error: {line}")
                tables[m[1]] = sorted(m[2].split(", ")) if m[2] else []
            for name in re.findall(r"<(\w+)>", line):
                if name not in tables:
                    raise HostError(f"pfctl: table <{name}> is not defined in this anchor")
        return tables


class _Finished:
    """What start() returns: a command that has already exited 0."""

    def wait(self) -> int:
        return 0

    def send_signal(self, signum) -> None:
        pass
