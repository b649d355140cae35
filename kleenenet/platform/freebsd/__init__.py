"""The FreeBSD platform: jails, cloned interfaces and pf anchors.

loopback network  `ifconfig lo create` renamed kleeneN; each ipnet jail's address is a /32 (/128)
                  alias on it and in the jail's ip4.addr/ip6.addr. No gateway.
bridge network    if_bridge kleeneN with the gateway address. A vnet jail gets an epair: the host
                  end kv<endpoint id>a joins the bridge, the jail end kv<endpoint id>b moves into
                  the jail; an ipnet jail joins by an alias on the bridge, as in Kleene.
jails             created `persist` (named kn<container id>) so the network is wired before the
                  command starts with jexec; a jail whose processes are gone is a stopped
                  container, removed with `jail -r` when kleenenet sees it stopped.
pf                one anchor per network, and one per container's published ports below it (see
                  pf.py); never the user's pf.conf. Disconnecting a container kills its states.
custom network    an existing interface kleenenet did not create: a NIC, or a bridge (e.g. one
                  holding the LAN's NIC). An ipnet jail joins by a /32 (/128) alias on it, as on
                  a loopback network; a vnet jail by an epair whose host end joins the bridge
                  (a plain NIC takes no epair: refused). The interface itself is never created,
                  reconfigured or destroyed; no NAT, no forwarding (the jails are on the LAN).
mtu               a bridge network's MTU is set on the bridge and on both ends of every epair.
roots             the jail's path is the container's root: a directory (the host's / by
                  default), or for an image that is a ZFS snapshot, a clone of it (see zfs.py).

Every interface kleenenet creates is in interface group `kleenenet` from the command that
creates it, under whatever name it has, and has a description naming its network: that is how
reconcile recognises leftovers, also after a crash between creating and renaming. An alias has no
such mark, so an ipnet jail's address list is set before its alias is added and after it is
removed: kleenenet's aliases on an interface it did not create are the host addresses (/32,
/128) that one of its jails lists (reconcile removes those nothing owns, and nothing else).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kleenenet.errors import HostError, InvalidInput
from kleenenet.model import Container, Endpoint, Image, Network
from kleenenet.plan import Plan
from kleenenet.platform import first_free_name, stable_mac
from kleenenet.platform.freebsd import dns, parsers, pf, zfs
from kleenenet.platform.freebsd.host import Host, Runner, command_text, default_runner
from kleenenet.ports import by_network_name, forwards, in_given_order
from kleenenet.vocabulary import USER_MODE_DRIVERS

INTERFACE_PREFIX = "kleene"
ENDPOINT_PREFIX = "kv"  # + endpoint id + a/b: 15 characters, IFNAMSIZ's limit
JAIL_PREFIX = "kn"  # + container id (a jail name must not be a number)
GROUP = "kleenenet"
FORWARDING = {4: "net.inet.ip.forwarding", 6: "net.inet6.ip6.forwarding"}
# With ip6.forwarding=1 the kernel ignores the router lifetime of router advertisements unless
# ip6.rfc6204w3=1 (nd6_ra_input in sys/netinet6/nd6_rtr.c): a SLAAC host would lose its route.
RA_WITH_FORWARDING = "net.inet6.ip6.rfc6204w3"
JAIL_OPTION_RELEASE = 1400000  # `ifconfig -j` and `route -j` appeared in FreeBSD 14.0
# Jail parameters kleenenet sets itself from the container and its networks.
OWN_JAIL_PARAMS = {"name", "jid", "persist", "nopersist", "vnet", "vnet.interface", "ip4", "ip4.addr",
                   "ip6", "ip6.addr", "command", "host.hostname"}
# jail(8)'s pseudo-parameters that act when the jail is created: mounts, commands and
# dependencies that `jail -r NAME`, without the jail.conf that named them, never undoes (a
# mount.devfs stays mounted on the root's /dev after the jail is gone, FreeBSD 15.0).
UNDONE_JAIL_PARAMS = {"exec", "mount", "depend", "ip_hostname", "interface"}  # (and their KEY.*)
JAIL_PARAM_RE = re.compile(r"[a-z][a-z0-9_.]*(=.*)?", re.S)
JAIL_NAME_RE = re.compile(JAIL_PREFIX + "[0-9a-f]{12}")
FREEBSD_DRIVERS = ("ipnet", "vnet", "host", "disabled")
# How long a jail's IPv6 address on a LAN may stay tentative: duplicate address detection takes
# net.inet6.ip6.dad_count (1) neighbour solicitations a second apart (nd6_dad_start).
DAD_TIMEOUT = 10.0
# The least MTU a bridge and an epair take on FreeBSD 15.0 (SIOCSIFMTU refuses less: EINVAL).
MIN_MTU = 72


def endpoint_ifname(ep: Endpoint) -> str:
    """The endpoint's epair base name (ends a and b); for an ipnet endpoint it only marks it wired."""
    return ENDPOINT_PREFIX + ep.id


def jail_name(c: Container) -> str:
    return JAIL_PREFIX + c.id


def jexec(c: Container, cmd: list[str], user: str = "") -> list[str]:
    """`cmd` in the container's jail, as `user` of the jail's own password database (jexec -U)
    when one is given. Without -l, jexec keeps the environment it is started with (jexec(8))."""
    return ["jexec", *(["-U", user] if user else []), jail_name(c), *cmd]


# The PATH of login.conf's default class: jexec without -l keeps its caller's environment, and
# rc.d starts the daemon with /sbin:/bin:/usr/sbin:/usr/bin, where no port's command is found.
COMMAND_DEFAULTS = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"}


def _environment(c: Container) -> dict[str, str]:
    """What a container's command has over its starter's environment: the defaults, then the
    container's own env (which may set PATH)."""
    return {**COMMAND_DEFAULTS, **dict(entry.split("=", 1) for entry in c.env)}


def _family(addr: str) -> int:
    return ipaddress.ip_address(addr).version


def _inet(version: int) -> str:
    return "inet" if version == 4 else "inet6"


def _host_prefix(addr: str) -> str:
    """An alias of a jail's address: a host address, /32 or /128. On a LAN interface it is in the
    subnet of the interface's own address, which alone carries the subnet's netmask (ifconfig(8)
    alias: "a non-conflicting netmask must be given. Usually 0xffffffff"; the Handbook's network
    aliases: all 1s)."""
    return f"{addr}/{32 if _family(addr) == 4 else 128}"


def _needs_linux(driver: str) -> str:
    """Why a user-mode driver does not run here (a jail's network is the kernel's: no helper)."""
    return f"driver {driver!r} needs Linux: on FreeBSD use {', '.join(FREEBSD_DRIVERS[:-1])} or {FREEBSD_DRIVERS[-1]}"


class _Clone:
    """An interface being created: its kernel name is known once `ifconfig CLONER create` has
    printed it, and it changes with each rename; undoing the creation destroys it by the name
    it has then."""

    def __init__(self):
        self.created: str | None = None  # the name ifconfig printed
        self.name: str | None = None  # the name it has now


@dataclass
class JailProcess:
    """A container's command, started with jexec once its jail is wired."""

    platform: FreeBSDPlatform
    c: Container
    detach: bool
    log: Path | None
    pid: int | None = None
    start: int | None = None
    popen: subprocess.Popen | None = None

    def release(self) -> None:
        argv = jexec(self.c, self.c.cmd, self.c.user)
        self.popen = self.platform.runner.start(argv, self.log if self.detach else None, _environment(self.c))

    def abort(self) -> None:
        pass  # nothing was started: the plan's rollback removed the jail

    def signal(self, signum: int) -> None:
        if self.popen:
            self.popen.send_signal(signum)

    def wait(self) -> int:
        code = self.popen.wait()
        return code if code >= 0 else 128 - code  # killed by a signal: as shells report it


class FreeBSDPlatform:
    name = "freebsd"
    # A detached jail whose command exits keeps its wiring until the daemon's sweep (rc.d's
    # kleenenet_daemon), a later command on it, or reconcile sees it: no watcher process here.
    watches_detached = False
    command_defaults = COMMAND_DEFAULTS  # (an exec's environment has them too: Service.exec_environ)
    rootless_drivers = ()  # a jail is root's to make

    @property
    def rootless(self) -> bool:
        return os.geteuid() != 0

    def __init__(self, runner: Runner | None = None):
        self.runner = runner = runner or default_runner()
        self.host = Host(runner)
        self.zfs = zfs.ZFS(runner.libzfs)  # py-libzfs is loaded when a ZFS image is used
        self._release: int | None = None

    def release(self) -> int:
        if self._release is None:
            self._release = self.host.osreldate()
        return self._release

    def _in_jail(self, jail: str, tool: str, *args: str) -> list[str]:
        """ifconfig/route acting in a vnet jail: `-j` from FreeBSD 14, `jexec` before (it needs
        the tool inside the jail's path)."""
        if self.release() >= JAIL_OPTION_RELEASE:
            return [tool, "-j", jail, *args]
        return ["jexec", jail, tool, *args]

    # steps: a command, and the command that undoes it

    def _step(self, plan: Plan, argv: list[str], undo: list[str] | None = None, stdin: str | None = None,
              note: str = "") -> None:
        plan.add(command_text(argv, stdin) + (f"  # {note}" if note else ""),
                 lambda: self.runner.run(argv, stdin),
                 (lambda: self.runner.run(undo)) if undo else None)

    def _flush(self, path: str) -> None:
        for argv in pf.flush(path):
            self.runner.run(argv)

    def _anchor_holds_anything(self, path: str) -> bool:
        """Whether an anchor has rules, translation rules or tables. An anchor is judged by
        these, not by being listed: pf keeps listing an emptied anchor that called others
        (`anchor "ports/*"`), and flushing it again would change nothing."""
        return any(parsers.parse_entries(self.runner.run(["pfctl", "-a", path, "-s", what]), f"-s {what}")
                   for what in ("rules", "nat", "Tables"))

    def _plan_flush(self, plan: Plan, path: str, undo=None, note: str = "") -> None:
        """Empty anchor `path` (pf.flush says how); `undo` (loading what it had) goes with the
        first command, which the others only complete."""
        for k, argv in enumerate(pf.flush(path)):
            plan.add(command_text(argv) + (f"  # {note}" if note else ""),
                     lambda argv=argv: self.runner.run(argv), None if k else undo)

    # what is on the host

    def host_networks(self):
        used = []
        for name, iface in self.host.interfaces().items():
            for addr in (*iface.inet, *iface.inet6):
                if not addr.is_loopback and not addr.is_link_local:
                    used.append((f"address {addr} on {name}", addr.network))
        for ifname, dst, _flags in self.host.routes():
            if dst.prefixlen and not dst.is_loopback and not dst.is_link_local and not dst.is_multicast:
                used.append((f"route {dst} via {ifname}", dst))
        return used

    def default_route_interface(self) -> str | None:
        return self.host.default_route_interface()

    def interface_exists(self, name: str) -> bool:
        return name in self.host.interface_names()

    def free_interface_name(self, taken: set[str]) -> str:
        return first_free_name(INTERFACE_PREFIX, taken | self.host.interface_names())

    def interface_mtu(self, name: str) -> int | None:
        """The MTU of interface `name` (None: no such interface)."""
        iface = self.host.interfaces().get(name)
        return iface.mtu if iface else None

    def has_ipv6(self) -> bool:
        """The host has IPv6 beyond its links: an address that is neither link-local nor
        loopback on an interface that is not kleenenet's, or an IPv6 default route."""
        ours = self.host.group_members(GROUP)
        if any(not (a.is_link_local or a.is_loopback)
               for name, iface in self.host.interfaces().items() if name not in ours for a in iface.inet6):
            return True
        return any(dst.version == 6 and dst.prefixlen == 0 for _ifname, dst, _flags in self.host.routes())

    def ports_in_use(self, protocol: str) -> set[int]:
        """The ports something of the host's listens on where a published port would take its
        connections: at the wildcard address, or at an address of an interface that is neither a
        loopback (lo0, loopback networks, other tools' lo clones) nor kleenenet's (ipnet jails'
        addresses). One `sockstat -46l -P PROTOCOL` (ifconfig only when needed)."""
        listeners = self.host.listening(protocol)
        if all(s.address is None for s in listeners):
            return {s.port for s in listeners}
        ours = self.host.group_members(GROUP)
        taken = {a.ip for name, iface in self.host.interfaces().items()
                 if name not in ours and "LOOPBACK" not in iface.flags for a in (*iface.inet, *iface.inet6)}
        return {s.port for s in listeners if s.address is None or s.address in taken}

    def doctor(self, networks: list[Network]):
        from kleenenet.platform.freebsd.doctor import checks

        return checks(self.runner, networks)

    def check_network(self, net: Network) -> None:
        if len(net.name) > 63:  # an anchor path component holds 63 characters
            raise InvalidInput(f"invalid network name {net.name!r}: at most 63 characters on FreeBSD (pf anchor)")
        if net.type == "custom":
            self._foreign_interface(net.interface, f"custom network {net.name!r}")
        if net.type == "bridge" and net.mtu < MIN_MTU:  # (a loopback network keeps lo's own MTU)
            raise InvalidInput(f"invalid MTU {net.mtu}: give {MIN_MTU}-65535 on FreeBSD (the least a bridge "
                               "and an epair take)")

    def _foreign_interface(self, name: str, what: str):
        """Interface `name` of a custom network: one of the host's own, not kleenenet's, not a
        loopback (lo0, or an `ifconfig lo create` clone: group lo)."""
        iface = self.host.interfaces().get(name)
        if iface is None:
            raise InvalidInput(f"invalid interface {name!r} for {what}: no such interface on this host")
        if GROUP in iface.groups or (iface.description or "").startswith(f"{GROUP}:"):
            raise InvalidInput(f"invalid interface {name!r} for {what}: it is kleenenet's own; give the "
                               "host's bridge or NIC")
        if "LOOPBACK" in iface.flags or "lo" in iface.groups:
            raise InvalidInput(f"invalid interface {name!r} for {what}: a loopback interface is on no LAN "
                               "(for jails on the host alone: -t loopback)")
        return iface

    def interface_addresses(self, name: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The addresses on interface `name`, without IPv6 link-local ones ([] when it is not there)."""
        iface = self.host.interfaces().get(name)
        return parsers.addresses(iface) if iface else []

    def _jail_addresses(self) -> set[str]:
        """The addresses kleenenet's jails list (running, stopping or left over)."""
        return {a for name, j in self.host.jails().items() if JAIL_NAME_RE.fullmatch(name) for a in (*j.ipv4, *j.ipv6)}

    def _foreign_addresses(self, net: Network, interfaces=None) -> set[str]:
        """The addresses on a custom network's interface that are not kleenenet's: the interface's
        own, never added or removed by kleenenet."""
        iface = (interfaces if interfaces is not None else self.host.interfaces()).get(net.interface)
        if iface is None:
            return set()
        ours = self._jail_addresses()
        return {str(a.ip) for a in (*iface.inet, *iface.inet6)
                if str(a.ip) not in ours or a.network.prefixlen != a.max_prefixlen}

    # networks

    def plan_create_network(self, net: Network, before: list[Network], after: list[Network],
                            endpoints: list[Endpoint], containers: list[Container] = ()) -> Plan:
        plan = Plan("network-create")
        if net.type != "custom":  # (a custom network's interface is the host's: left as it is)
            plan.extend(self._plan_network_interface(net))
        plan.extend(self._plan_forwarding(after))
        plan.extend(self._plan_anchors(after, endpoints, [net, *before], before))
        return plan

    def _plan_clone(self, plan: Plan, cloner: str, params: list[str], shown: str) -> _Clone:
        """`ifconfig CLONER create PARAMS` (group kleenenet among them), undone by destroying the
        new interface by its name at that time. PARAMS are those that cannot be refused: after
        one that fails ifconfig exits without printing the name, and the interface stays."""
        clone = _Clone()
        argv = ["ifconfig", cloner, "create", *params]

        def create():
            clone.created = clone.name = self.runner.run(argv).strip()  # ifconfig prints the kernel's name
        plan.add(command_text(argv) + f"  # prints {shown}", create,
                 lambda: self.runner.run(["ifconfig", clone.name, "destroy"]))
        return clone

    def _plan_rename(self, plan: Plan, clone: _Clone, shown: str, new: str, params=(), peer: bool = False) -> None:
        """Rename the clone (or, with peer, the b end of the epair whose a end it is)."""
        def rename():
            old = clone.created[:-1] + "b" if peer else clone.name  # epairNa's peer is epairNb
            self.runner.run(["ifconfig", old, "name", new, *params])
            if not peer:
                clone.name = new
        plan.add(command_text(["ifconfig", shown, "name", new, *params]), rename)

    def _plan_network_interface(self, net: Network) -> Plan:
        plan = Plan("network-interface")
        name = net.interface
        cloner = "bridge" if net.type == "bridge" else "lo"
        # Created in group kleenenet and renamed after: a crash in between leaves a loN/bridgeN
        # that reconcile recognises (a failed `create name X` would leave it unrecognisable).
        clone = self._plan_clone(plan, cloner, ["group", GROUP, "description", f"kleenenet:{net.name}", "up"],
                                 f"{cloner}N")
        self._plan_rename(plan, clone, f"{cloner}N", name)
        # A bridge carries the network's MTU (a loopback network only carries the host's own
        # traffic, which leaves by the egress interface). Set once it has its name: a parameter
        # `create` refuses leaves the new interface behind, before ifconfig prints its name
        # (ifclonecreate() in sbin/ifconfig/ifclone.c), with nothing to destroy it by.
        if net.type == "bridge":
            self._step(plan, ["ifconfig", name, "mtu", str(net.mtu)])
            if net.subnet6:  # usable at once: no DAD on a link of kleenenet's own (a cloned lo does none)
                self._step(plan, ["ifconfig", name, "inet6", "no_dad"])
        for gw, subnet in ((net.gateway, net.subnet), (net.gateway6, net.subnet6)):
            if gw:
                prefix = ipaddress.ip_network(subnet).prefixlen
                self._step(plan, ["ifconfig", name, _inet(_family(gw)), f"{gw}/{prefix}", "alias"])
        return plan

    def _plan_forwarding(self, networks: list[Network]) -> Plan:
        """Bridge networks route their jails' traffic: turn forwarding on when one needs it, never
        off. (ipnet jails' traffic is the host's own and needs no forwarding.)"""
        plan = Plan("forwarding")
        routed = [n for n in networks if n.type == "bridge" and not n.internal]
        for version, attr in ((4, "subnet"), (6, "subnet6")):
            key = FORWARDING[version]
            if any(getattr(n, attr) for n in routed):
                before = self.host.sysctl(key)
                if before != "1":
                    self._step(plan, ["sysctl", f"{key}=1"], ["sysctl", f"{key}={before}"])
                    if version == 6 and self.host.autoconfiguring_interfaces():
                        ra = self.host.sysctl(RA_WITH_FORWARDING)
                        if ra != "1":
                            self._step(plan, ["sysctl", f"{RA_WITH_FORWARDING}=1"],
                                       ["sysctl", f"{RA_WITH_FORWARDING}={ra}"],
                                       note="keep accepting router advertisements")
        return plan

    def _members(self, net: Network, endpoints: list[Endpoint]) -> list[str]:
        return [a for ep in endpoints if ep.epair and ep.network_id == net.id
                for a in (ep.ip_address, ep.ip_address6) if a]

    def _plan_anchors(self, after: list[Network], endpoints: list[Endpoint], changed: list[Network],
                      before: list[Network] | None = None) -> Plan:
        """Load the anchors of `changed` networks: all checked with `pfctl -n` first, then loaded;
        undone by loading what was there before (or flushing an anchor that was new)."""
        plan = Plan("pf")
        loads = []
        before_ids = {n.id for n in before} if before is not None else None
        for net in changed:
            text = pf.render(net, after, self._members(net, endpoints))
            if before_ids is not None and net.id in before_ids:
                old = pf.render(net, before, self._members(net, endpoints))
                undo = lambda net=net, old=old: self.runner.run(["pfctl", "-a", pf.anchor(net), "-f", "-"], old)
            else:
                undo = lambda net=net: self._flush(pf.anchor(net))
            self._step(plan, ["pfctl", "-n", "-a", pf.anchor(net), "-f", "-"], stdin=text)
            loads.append((net, text, undo))
        for net, text, undo in loads:
            argv = ["pfctl", "-a", pf.anchor(net), "-f", "-"]
            plan.add(command_text(argv, text), lambda argv=argv, text=text: self.runner.run(argv, text), undo)
        return plan

    def plan_remove_network(self, net: Network, before: list[Network], after: list[Network],
                            endpoints: list[Endpoint], containers: list[Container] = ()) -> Plan:
        plan = Plan("network-remove")
        old = pf.render(net, before, [])
        self._plan_flush(plan, pf.anchor(net), lambda: self.runner.run(["pfctl", "-a", pf.anchor(net), "-f", "-"], old))
        plan.extend(self._plan_anchors(after, endpoints, after, before))
        if net.type != "custom":  # (never the host's own interface)
            self._step(plan, ["ifconfig", net.interface, "destroy"])  # last: nothing after it can fail
        return plan

    # endpoints

    def ports_lead_to(self, net: Network, c: Container) -> bool:
        """Whether `c`'s published ports can lead to it on `net`. Not to a vnet jail on a custom
        network: it is on the LAN, and answers a client directly or by the LAN's router, never
        through the host, so the rdr is never undone on its answers."""
        return not (c.network_driver == "vnet" and net.type == "custom")

    def check_attach(self, net: Network, c: Container) -> None:
        if net.type == "custom":
            iface = self._foreign_interface(net.interface, f"network {net.name!r}")
            if c.network_driver == "vnet" and "bridge" not in iface.groups:  # (if_clone's group)
                raise InvalidInput(
                    f"container {c.name!r} is a vnet jail and network {net.name!r} is on {net.interface}, a NIC "
                    f"that takes no epair: create a bridge holding it (ifconfig bridge create addm {net.interface} "
                    "up) and a custom network on the bridge with -i, or use -l ipnet")
        elif c.network_driver == "vnet" and net.type != "bridge":
            raise InvalidInput(f"container {c.name!r} is a vnet jail: it can join bridge networks only, "
                               f"not the {net.type} network {net.name!r} (use -l ipnet)")

    def plan_attach(self, net: Network, ep: Endpoint, c: Container, cif: str | None = None,
                    others: list[Endpoint] = (), wiring=None) -> Plan:
        """Wire endpoint `ep` into the running jail of `c`. `others`: its endpoints already wired;
        `wiring()`: all networks and wired endpoints (read only when an anchor must be rendered)."""
        self.check_attach(net, c)
        plan = Plan("connect")
        if c.network_driver == "vnet":
            plan.extend(self._plan_epair(net, ep, c, others))
        else:
            aliases, jail_list = self._plan_aliases(net, ep, c), self._plan_jail_addresses(c, others, [], [ep])
            # On a custom network the jail lists an address before it is on the interface (see
            # the module's docstring).
            for part in (jail_list, aliases) if net.type == "custom" else (aliases, jail_list):
                plan.extend(part)
        plan.extend(self._plan_members(net, ep, wiring, add=True))
        if c.public_ports:
            networks = {n.id: n for n in [*(wiring()[0] if wiring else ()), net]}
            before = [(networks[e.network_id], e) for e in others]
            ports, _kills = self._plan_ports(self._port_anchors(c, before),
                                             self._port_anchors(c, [*before, (net, ep)]))
            plan.extend(ports)
        return plan

    def _plan_aliases(self, net: Network, ep: Endpoint, c: Container) -> Plan:
        """The endpoint's addresses as aliases on the network's interface. On a custom network,
        never one of the interface's own (an alias of it would replace it, and go with the jail),
        and not one a jail of kleenenet's has there already (reconcile rewiring a jail that lost
        only its other address)."""
        plan, present = Plan("aliases"), set()
        if net.type == "custom":
            interfaces = self.host.interfaces()
            foreign = self._foreign_addresses(net, interfaces)
            for addr in (ep.ip_address, ep.ip_address6):
                if addr in foreign:
                    raise InvalidInput(f"invalid address {addr} for container {c.name!r}: {net.interface} "
                                       "has it as its own")
            iface = interfaces.get(net.interface)
            present = {str(a) for a in (*iface.inet, *iface.inet6)} if iface else set()
        for addr in (ep.ip_address, ep.ip_address6):
            if addr and _host_prefix(addr) not in present:
                self._step(plan, ["ifconfig", net.interface, _inet(_family(addr)), _host_prefix(addr), "alias"],
                           ["ifconfig", net.interface, _inet(_family(addr)), addr, "-alias"])
                if net.type == "custom" and _family(addr) == 6:  # on the LAN, DAD must run
                    plan.add(f"ifconfig {net.interface}  # until {addr} is no longer tentative (DAD)",
                             lambda addr=addr: self._wait_for_dad(net.interface, addr))
        return plan

    def _wait_for_dad(self, ifname: str, addr: str) -> None:
        """Wait until duplicate address detection has ended for `addr` on `ifname`: a tentative
        address cannot be bound yet (the jail's command would fail with "Can't assign requested
        address"), a duplicated one never."""
        ip, deadline = ipaddress.ip_address(addr), time.monotonic() + DAD_TIMEOUT
        while True:
            iface = self.host.interface(ifname)
            if iface is None:
                raise HostError(f"interface {ifname} is gone")
            if ip in iface.duplicated:
                raise HostError(f"address {addr} is already in use on the LAN of {ifname} (duplicate address "
                                "detection): give the container another with --ip6")
            if ip not in iface.tentative:
                return
            if time.monotonic() >= deadline:
                raise HostError(f"address {addr} on {ifname} is still tentative after {DAD_TIMEOUT:g} s of duplicate "
                                "address detection")
            time.sleep(0.05)

    def _port_anchors(self, c: Container, wired: list[tuple[Network, Endpoint]]) -> dict[str, str]:
        """The anchors of a container's published ports, path -> text, given its wired endpoints
        in the order they were made (ports.forwards says where each leads). An ipnet jail's lead
        to the address it has had longest, not to its first network by name: a wildcard bind in
        a jail with one address is bound to that address (prison_local_ip4() in
        sys/netinet/in_jail.c), so a server started before a `network connect` listens there only."""
        by_network: dict[str, list] = {}
        rank = in_given_order(wired) if c.network_driver == "ipnet" else by_network_name
        for f in forwards(c, [(net, ep) for net, ep in wired if self.ports_lead_to(net, c)], rank):
            by_network.setdefault(f.network_id, []).append(f)
        networks = {n.id: n for n, _ in wired}
        return {pf.ports_anchor(networks[nid], c.id): pf.render_ports(networks[nid], c.name, c.id, fw,
                                                                      c.network_driver == "ipnet")
                for nid, fw in by_network.items()}

    def _plan_ports(self, before: dict[str, str], after: dict[str, str]) -> tuple[Plan, list[list[str]]]:
        """Load the port anchors that change, flush those that go; the commands that kill the
        states of the rules flushed, for the caller to run last. (An anchor that is replaced
        leads to an address the container keeps: its flows go on.)"""
        plan, kills = Plan("ports"), []
        for path in sorted(before.keys() | after.keys()):
            old, new = before.get(path), after.get(path)
            if old == new:
                continue
            load = ["pfctl", "-a", path, "-f", "-"]
            if new is not None:
                plan.add(command_text(load, new), lambda load=load, new=new: self.runner.run(load, new),
                         (lambda load=load, old=old: self.runner.run(load, old)) if old
                         else (lambda path=path: self._flush(path)))
            else:
                self._plan_flush(plan, path, lambda load=load, old=old: self.runner.run(load, old))
            if old is not None and new is None:
                kills.append(pf.kill_label(old))
        return plan, kills

    def _plan_epair(self, net: Network, ep: Endpoint, c: Container, others: list[Endpoint]) -> Plan:
        plan = Plan("epair")
        base = endpoint_ifname(ep)
        host_end, jail_end, jail = base + "a", base + "b", jail_name(c)
        # The a end is in group kleenenet from its creation and the b end from its rename:
        # whenever kleenenet dies, reconcile finds the pair (destroying the a end destroys both).
        clone = self._plan_clone(plan, "epair", ["group", GROUP, "description", f"kleenenet:{net.name}:{c.name}"],
                                 "epairNa")
        # Both ends get the network's MTU before the a end joins the bridge: the first member
        # of an empty bridge sets the bridge's MTU (bridge_ioctl_add in sys/net/if_bridge.c).
        mtu = ["mtu", str(net.mtu)]
        self._plan_rename(plan, clone, "epairNa", host_end, mtu)
        self._plan_rename(plan, clone, "epairNb", jail_end, ["group", GROUP, *mtu], peer=True)
        self._step(plan, ["ifconfig", jail_end, "ether", stable_mac(net.id, c.id)])
        # Into the bridge before it comes up: up outside a bridge it would get an fe80::
        # address, and FreeBSD 15 refuses a member with an address (if_bridge(4)).
        self._step(plan, self._addm(net, host_end), ["ifconfig", net.interface, "deletem", host_end])
        self._step(plan, ["ifconfig", host_end, "up"])
        self._step(plan, ["ifconfig", jail_end, "vnet", jail], ["ifconfig", jail_end, "-vnet", jail])
        if ep.ip_address6 and net.type != "custom":  # usable at once: no DAD on a link of kleenenet's own
            self._step(plan, self._in_jail(jail, "ifconfig", jail_end, "inet6", "no_dad"))
        for addr, subnet in ((ep.ip_address, net.subnet), (ep.ip_address6, net.subnet6)):
            if addr:
                prefix = ipaddress.ip_network(subnet).prefixlen
                self._step(plan, self._in_jail(jail, "ifconfig", jail_end, _inet(_family(addr)), f"{addr}/{prefix}", "alias"))
        self._step(plan, self._in_jail(jail, "ifconfig", jail_end, "up"))
        has_default = {_family(a) for e in others for a in (e.ip_address, e.ip_address6) if a and e.epair}
        for gw in (net.gateway, net.gateway6):
            if gw and _family(gw) not in has_default:  # the first network with a gateway routes
                self._step(plan, self._in_jail(jail, "route", "add", f"-{_inet(_family(gw))}", "default", gw))
        return plan

    @staticmethod
    def _addm(net: Network, member: str) -> list[str]:
        argv = ["ifconfig", net.interface, "addm", member]
        if not net.icc:
            argv += ["private", member]  # members reach the gateway, not each other
        return argv

    def _plan_jail_addresses(self, c: Container, others: list[Endpoint], removed: list[Endpoint],
                             added: list[Endpoint]) -> Plan:
        """An ipnet jail's address lists are set whole with `jail -m`, keeping their order (the
        first address is the one 127.0.0.1 maps to)."""
        plan = Plan("jail-addresses")
        jail = jail_name(c)
        current = self.host.jails().get(jail)
        for version, param in ((4, "ip4.addr"), (6, "ip6.addr")):
            if current is not None:  # the kernel's list
                old = current.ipv4 if version == 4 else current.ipv6
            else:  # a jail this plan creates: the endpoints wired before this one
                old = [a for e in others for a in (e.ip_address, e.ip_address6) if a and _family(a) == version]
            gone = {a for e in removed for a in (e.ip_address, e.ip_address6)}
            new = [a for a in old if a not in gone] + [a for e in added for a in (e.ip_address, e.ip_address6)
                                                       if a and _family(a) == version and a not in old]
            if old != new:
                self._step(plan, ["jail", "-m", f"name={jail}", f"{param}={','.join(new)}"],
                           ["jail", "-m", f"name={jail}", f"{param}={','.join(old)}"])
        return plan

    def _plan_members(self, net: Network, ep: Endpoint, wiring, add: bool) -> Plan:
        plan = Plan("pf-members")
        addrs = [a for a in (ep.ip_address, ep.ip_address6) if a]
        if pf.needs_reload_per_member(net):
            networks, endpoints = wiring()
            rest = [e for e in endpoints if e.id != ep.id]
            wired = ep.model_copy(update={"epair": endpoint_ifname(ep)})
            old = pf.render(net, networks, self._members(net, rest if add else rest + [wired]))
            new = pf.render(net, networks, self._members(net, rest + [wired] if add else rest))
            argv = ["pfctl", "-a", pf.anchor(net), "-f", "-"]
            plan.add(command_text(argv, new), lambda: self.runner.run(argv, new), lambda: self.runner.run(argv, old))
            return plan
        base = ["pfctl", "-a", pf.anchor(net), "-t", pf.table(net), "-T"]
        self._step(plan, base + ["add" if add else "delete", *addrs], base + ["delete" if add else "add", *addrs])
        return plan

    def plan_detach(self, net: Network, ep: Endpoint, c: Container, others: list[Endpoint] = (),
                    wiring=None) -> Plan:
        """Take endpoint `ep` off the jail of `c`; last, kill the pf states of its addresses and
        of its published ports there, so that no established flow outlives it."""
        plan = Plan("disconnect")
        kills = []
        if c.public_ports:
            ports, kills = self._plan_ports_detach(net, ep, c, others, wiring)
            plan.extend(ports)
        plan.extend(self._plan_members(net, ep, wiring, add=False))
        kills += [k for a in (ep.ip_address, ep.ip_address6) if a for k in pf.kill_states(a, self.release())]
        if c.network_driver == "vnet":
            # Its addresses are out of the network's table, and no published port leads there:
            # kill the states before the destroy, which cannot be undone and so comes last.
            for argv in kills:
                self._step(plan, argv)
            self._step(plan, ["ifconfig", endpoint_ifname(ep) + "a", "destroy"], note="takes the jail's end along")
            return plan
        aliases = Plan("aliases")
        for addr in (ep.ip_address, ep.ip_address6):
            if addr:
                self._step(aliases, ["ifconfig", net.interface, _inet(_family(addr)), addr, "-alias"],
                           ["ifconfig", net.interface, _inet(_family(addr)), _host_prefix(addr), "alias"])
        jail_list = Plan("jail-addresses")
        if c.running and jail_name(c) in self.host.jails():  # (a stopping jail is removed anyway)
            jail_list = self._plan_jail_addresses(c, others, [ep], [])
        # On a custom network the jail lists an address until it is off the interface.
        for part in (aliases, jail_list) if net.type == "custom" else (jail_list, aliases):
            plan.extend(part)
        for argv in kills:  # the addresses are gone: no new state can use them (no undo: gone)
            self._step(plan, argv)
        return plan

    def _plan_ports_detach(self, net: Network, ep: Endpoint, c: Container, others: list[Endpoint],
                           wiring) -> tuple[Plan, list[list[str]]]:
        """A running container's ports move to its next network that reaches out. A stopping
        one's endpoints are taken off one by one, and in the state the ones left would take
        its ports over: what pf has on this network goes, and nothing moves."""
        networks = {n.id: n for n in [*(wiring()[0] if wiring else ()), net]}
        made = {e.id: k for k, e in enumerate(wiring()[1] if wiring else [])}  # the store's order
        mine = sorted([*others, ep], key=lambda e: made.get(e.id, len(made)))
        wired = [(networks[e.network_id], e) for e in mine]
        before = self._port_anchors(c, wired)
        if c.running:
            return self._plan_ports(before, self._port_anchors(c, [w for w in wired if w[1].id != ep.id]))
        plan, path = Plan("ports"), pf.ports_anchor(net, c.id)
        if path not in self.host.anchors(pf.anchor(net)):
            return plan, []
        labels = sorted(set(self.host.rule_labels(path)))
        old, load = before.get(path), ["pfctl", "-a", path, "-f", "-"]
        self._plan_flush(plan, path, (lambda: self.runner.run(load, old)) if old and pf.label(old) in labels else None)
        return plan, [["pfctl", "-k", "label", "-k", label] for label in labels]

    def lost_endpoints(self, wired: list[tuple[Network, Endpoint, Container]]) -> list[Endpoint]:
        """The wired endpoints whose epair (vnet) or alias (ipnet) is gone: one `ifconfig -a`. Not
        those of a custom network whose interface is gone: they cannot be wired again until the
        host has it back."""
        interfaces = self.host.interfaces()
        lost = []
        for net, ep, c in wired:
            if net.type == "custom" and net.interface not in interfaces:
                continue
            if c.network_driver == "vnet":
                if endpoint_ifname(ep) + "a" not in interfaces:
                    lost.append(ep)
                continue
            iface = interfaces.get(net.interface)
            present = {str(a.ip) for a in (*iface.inet, *iface.inet6)} if iface else set()
            if not all(a in present for a in (ep.ip_address, ep.ip_address6) if a):
                lost.append(ep)
        return lost

    endpoint_ifname = staticmethod(endpoint_ifname)

    def replace_firewall(self, networks: list[Network], endpoints: list[Endpoint],
                         containers: list[Container] = ()) -> None:
        for net in networks:
            self.runner.run(["pfctl", "-a", pf.anchor(net), "-f", "-"], pf.render(net, networks, self._members(net, endpoints)))
        by_id = {n.id: n for n in networks}
        for c in containers:
            if c.running and c.public_ports:
                mine = [(by_id[e.network_id], e) for e in endpoints if e.container_id == c.id]
                for path, text in self._port_anchors(c, mine).items():
                    self.runner.run(["pfctl", "-a", path, "-f", "-"], text)

    # containers

    def user_mode_driver(self, driver: str) -> tuple[str, str | None]:
        raise InvalidInput(_needs_linux(driver))

    def check_container(self, c: Container) -> None:
        if c.network_driver in USER_MODE_DRIVERS:
            raise InvalidInput(_needs_linux(c.network_driver))
        for param in c.jail_param:
            if not JAIL_PARAM_RE.fullmatch(param):
                raise InvalidInput(f"invalid jail parameter {param!r}: use KEY=VALUE or KEY, e.g. allow.raw_sockets")
            key = param.partition("=")[0]
            if key in OWN_JAIL_PARAMS or key.startswith("vnet."):
                raise InvalidInput(f"invalid jail parameter {param!r}: kleenenet sets {key} from the "
                                   "container's name, driver and networks")
            if key.partition(".")[0] in UNDONE_JAIL_PARAMS:
                raise InvalidInput(f"invalid jail parameter {param!r}: jail(8) acts on {key} when it creates a "
                                   "jail and `jail -r` never undoes it; set it up on the host (e.g. mount devfs "
                                   "in the root with an fstab entry)")
        # A ZFS image's container has no root yet: its clone's mountpoint becomes it.
        if c.root and not c.dataset and not self.runner.is_directory(c.root):
            raise InvalidInput(f"invalid root directory {c.root!r}: not a directory")

    def check_snapshot(self, snapshot: str) -> str:
        """An image's ZFS snapshot POOL/DATASET@SNAPSHOT, which must exist."""
        zfs.check_snapshot_name(snapshot)
        if not self.zfs.snapshot_exists(snapshot):
            raise InvalidInput(f"invalid image snapshot {snapshot!r}: no such ZFS snapshot")
        return snapshot

    def container_dataset(self, c: Container, img: Image) -> dict[str, str]:
        """The clone of the image's snapshot that is the container's root: `dataset`
        POOL/kleenenet/containers/<container id>, mounted at `root` /<dataset> (zfs.py)."""
        return zfs.clone_of(c.id, img.snapshot)

    def plan_create_root(self, c: Container, img: Image) -> Plan:
        return self.zfs.plan_create_root(c.dataset, c.root, img.snapshot)

    def plan_remove_root(self, c: Container) -> Plan:
        return self.zfs.plan_remove_root(c.dataset)

    def plan_new_namespace(self, c: Container, etc: Path | None = None) -> Plan:
        """The jail, created persistent so it can be wired before its command starts; `etc`
        holds the container's resolver files, mounted in its root where it may (dns.py)."""
        plan = Plan("jail")
        jail = jail_name(c)
        params = {"ipnet": ["ip4=new", "ip6=new"], "vnet": ["vnet"], "host": ["ip4=inherit", "ip6=inherit"],
                  "disabled": ["ip4=disable", "ip6=disable"]}[c.network_driver]
        if c.dataset:
            plan.extend(self.zfs.plan_mount(c.dataset))
        plan.extend(dns.plan_mount(self, c, etc))
        path = [] if any(p.startswith("path=") for p in c.jail_param) else [f"path={c.root}"]
        self._step(plan, ["jail", "-c", f"name={jail}", *path, f"host.hostname={c.name}", "persist",
                          *params, *c.jail_param], ["jail", "-r", jail])
        if c.network_driver == "vnet":
            self._step(plan, self._in_jail(jail, "ifconfig", "lo0", "inet", "127.0.0.1/8", "up"))
        return plan

    def spawn(self, c: Container, detach: bool, log: Path | None, etc: Path | None = None) -> JailProcess:
        return JailProcess(self, c, detach, log)  # (`etc` is mounted by plan_new_namespace)

    def host_resolver(self):
        """The host's resolver configuration, with the host's own addresses (a nameserver on
        one of them answers the host only)."""
        return dns.host_resolver(frozenset(str(a.ip) for iface in self.host.interfaces().values()
                                           for a in (*iface.inet, *iface.inet6)))

    def start_text(self, c: Container) -> str:
        env = [f"{key}={value}" for key, value in _environment(c).items()]
        return command_text((["env", *env] if env else []) + jexec(c, c.cmd, c.user))

    def alive(self, c: Container) -> bool:
        return self.host.jail_has_processes(jail_name(c))


    def terminate(self, c: Container, timeout: float) -> None:
        """jail -r: the jail's stop hooks, SIGTERM, and SIGKILL after stop.timeout."""
        if jail_name(c) in self.host.jails():
            self.runner.run(["jail", "-r", jail_name(c)])

    def plan_stop(self, c: Container) -> Plan:
        """Remove the jail (kept by `persist` after its command exited), if it is still there, and
        unmount the container's resolver files from its root."""
        plan = Plan("stop")
        jail = jail_name(c)
        plan.add(command_text(["jail", "-r", jail]),
                 lambda: self.runner.run(["jail", "-r", jail]) if jail in self.host.jails() else None)
        plan.extend(dns.plan_unmount(self, c))
        return plan

    def exec_command(self, c: Container, cmd: list[str], user: str = "") -> tuple[list[str], list[int]]:
        """The argv that runs `cmd` in the container's running jail (as `user`, by default the
        container's), and the descriptors it needs: none."""
        return self.runner.wrap(jexec(c, cmd, user or c.user), _environment(c)), []

    # reconcile

    def plan_reconcile(self, networks: list[Network], endpoints: list[Endpoint],
                       running: list[Container]) -> Plan:
        """Recreate missing network interfaces, gateway addresses and bridge members; reset running
        jails' address lists; remove the jails, interfaces, aliases and anchors of kleenenet that
        nothing owns; load the anchors pf does not have as they should be. When host and store
        agree, the plan is empty."""
        plan = Plan("reconcile")
        owned = {jail_name(c): c for c in running}
        jails = self.host.jails()
        interfaces = self.host.interfaces()
        for net in networks:  # first: while the jails that list them are there
            if net.type == "custom":
                plan.extend(self._plan_custom_leftovers(net, interfaces, endpoints))
        for name in sorted(jails):
            if name not in owned and JAIL_NAME_RE.fullmatch(name):
                self._step(plan, ["jail", "-r", name], note="leftover")
        plan.extend(dns.plan_unmount_leftovers(self, running))
        wanted = {n.interface for n in networks} | {ep.epair + end for ep in endpoints if ep.epair for end in "ab"}
        for name in sorted(self.host.group_members(GROUP) - wanted):
            if self._epair_b_end(name, interfaces):
                continue  # destroying its a end destroys it (epair_clone_destroy in if_epair.c)
            self._step(plan, ["ifconfig", name, "destroy"], note="leftover")
        for net in networks:
            iface = interfaces.get(net.interface)
            if net.type == "custom":
                if iface is None:
                    continue  # the host's interface is gone: its jails are wired again when it is back
                # (its own addresses, MTU and state are not kleenenet's to repair)
            elif iface is None:
                plan.extend(self._plan_network_interface(net))
            else:
                plan.extend(self._plan_repair_interface(net, iface, endpoints))
            members = iface.members if iface else []
            for ep in endpoints:
                host_end = f"{ep.epair}a"
                if ep.network_id == net.id and host_end in interfaces and host_end not in members:
                    self._step(plan, self._addm(net, host_end), ["ifconfig", net.interface, "deletem", host_end])
        for name, c in owned.items():
            if c.network_driver == "ipnet" and name in jails:
                wired = [ep for ep in endpoints if ep.container_id == c.id]
                plan.extend(self._plan_jail_list_reset(c, jails[name], wired))
        names = {n.name for n in networks}
        loaded = self.host.anchors(pf.ANCHOR_ROOT)  # kleenenet/<network>[/ports[/<container id>]]
        by_id = {n.id: n for n in networks}
        ports = {}  # the running containers' port anchors: path -> text
        for c in running:
            mine = [(by_id[ep.network_id], ep) for ep in endpoints if ep.container_id == c.id]
            ports.update(self._port_anchors(c, mine) if c.public_ports else {})
        for path in sorted(loaded, key=lambda p: -p.count("/")):  # children before their network
            parts = path.split("/")
            if (((len(parts) == 2 and parts[1] not in names) or (len(parts) == 4 and path not in ports))
                    and self._anchor_holds_anything(path)):
                self._plan_flush(plan, path, note="leftover")
                if len(parts) == 4:  # a container's ports: what they let in goes with them
                    for old in sorted(set(self.host.rule_labels(path))):
                        self._step(plan, ["pfctl", "-k", "label", "-k", old])
        plan.extend(self._plan_forwarding(networks))
        for net in networks:
            members = self._members(net, endpoints)
            text = pf.render(net, networks, members)
            if not self._anchor_is_loaded(net, text, members, loaded):
                argv = ["pfctl", "-a", pf.anchor(net), "-f", "-"]
                plan.add(command_text(argv, text), lambda argv=argv, text=text: self.runner.run(argv, text))
        for path, text in sorted(ports.items()):
            if path not in loaded or pf.label(text) not in self.host.rule_labels(path):
                argv = ["pfctl", "-a", path, "-f", "-"]
                plan.add(command_text(argv, text), lambda argv=argv, text=text: self.runner.run(argv, text))
        return plan

    @staticmethod
    def _epair_b_end(name: str, interfaces) -> bool:
        """Whether `name` is the b end of an epair whose a end is on the host too."""
        iface = interfaces.get(name)
        return (name.endswith("b") and iface is not None and "epair" in iface.groups
                and name[:-1] + "a" in interfaces)

    def _anchor_is_loaded(self, net: Network, text: str, members: list[str], loaded: list[str]) -> bool:
        """pf has the anchor's rules (by their label) and the table's members."""
        path = pf.anchor(net)
        if path not in loaded or pf.label(text) not in self.host.rule_labels(path):
            return False
        have = {ipaddress.ip_network(a.lstrip("!"), strict=False) for a in self.host.table(path, pf.table(net))}
        return have == {ipaddress.ip_network(a) for a in members}

    def _plan_repair_interface(self, net: Network, iface, endpoints: list[Endpoint]) -> Plan:
        """Aliases nothing owns go, a lost gateway address comes back, the interface is up."""
        plan = Plan("repair")
        if net.type == "bridge" and net.subnet6 and "NO_DAD" not in iface.nd6:
            self._step(plan, ["ifconfig", net.interface, "inet6", "no_dad"])
        present = {str(a) for a in (*iface.inet, *iface.inet6)}
        keep = {net.gateway, net.gateway6} | {a for ep in endpoints if ep.network_id == net.id
                                              for a in (ep.ip_address, ep.ip_address6)}
        for addr in (*iface.inet, *iface.inet6):
            if str(addr.ip) not in keep and not addr.is_link_local:
                self._step(plan, ["ifconfig", net.interface, _inet(addr.version), str(addr.ip), "-alias"],
                           note="leftover")
        for gw, subnet in ((net.gateway, net.subnet), (net.gateway6, net.subnet6)):
            prefix = ipaddress.ip_network(subnet).prefixlen if gw else None
            if gw and f"{gw}/{prefix}" not in present:
                self._step(plan, ["ifconfig", net.interface, _inet(_family(gw)), f"{gw}/{prefix}", "alias"])
        if net.type == "bridge" and iface.mtu != net.mtu:  # (its members follow: if_bridge.c)
            self._step(plan, ["ifconfig", net.interface, "mtu", str(net.mtu)])
        if not iface.up:
            self._step(plan, ["ifconfig", net.interface, "up"])
        return plan

    def _plan_custom_leftovers(self, net: Network, interfaces, endpoints: list[Endpoint]) -> Plan:
        """The aliases kleenenet added to a custom network's interface that no wired endpoint
        owns any more: host addresses of the network's subnets that one of kleenenet's jails lists
        (running, or left over by a crash). The interface's own addresses are never touched."""
        plan = Plan("custom-leftovers")
        iface = interfaces.get(net.interface)
        if iface is None:
            return plan
        keep = {a for ep in endpoints if ep.network_id == net.id for a in (ep.ip_address, ep.ip_address6) if a}
        subnets = [ipaddress.ip_network(s) for s in (net.subnet, net.subnet6) if s]
        foreign = self._foreign_addresses(net, interfaces)
        for addr in (*iface.inet, *iface.inet6):
            ip = str(addr.ip)
            if ip not in keep and ip not in foreign and any(addr.ip in subnet for subnet in subnets):
                self._step(plan, ["ifconfig", net.interface, _inet(addr.version), ip, "-alias"], note="leftover")
        return plan

    def _plan_jail_list_reset(self, c: Container, jail, wired: list[Endpoint]) -> Plan:
        """A running ipnet jail's addresses are exactly its wired endpoints' (a crash may have left
        one more, or one less); the kernel's order is kept, missing ones go last, as a connect
        adds them."""
        plan = Plan("jail-addresses")
        for version, param, current in ((4, "ip4.addr", jail.ipv4), (6, "ip6.addr", jail.ipv6)):
            mine = [a for e in wired for a in (e.ip_address, e.ip_address6) if a and _family(a) == version]
            new = [a for a in current if a in mine] + [a for a in mine if a not in current]
            if new != current:
                self._step(plan, ["jail", "-m", f"name={jail_name(c)}", f"{param}={','.join(new)}"])
        return plan
