"""Use cases. Each one validates everything first, then changes the store and the host inside one
store transaction; a failing host step rolls the host back (plan.execute) and the store with it
(the transaction). With dry_run the plan is printed and nothing is changed."""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kleenenet import ipam, ports
from kleenenet.dns import Files, hosts_files, hosts_lines, resolv_conf, same_lines
from kleenenet.errors import Conflict, HostError, InvalidInput, KleenenetError
from kleenenet.model import (
    AUTO,
    HOST_GATEWAY,
    NETWORK_DRIVERS,
    NETWORK_TYPES,
    Container,
    Endpoint,
    Image,
    Network,
    check_choice,
    check_env,
    check_ifname,
    check_mtu,
    check_name,
    check_root,
    new_id,
    now,
)
from kleenenet.plan import Plan
from kleenenet.vocabulary import (
    PRIVATE_NETWORK,
    RESERVED_NETWORK_NAMES,
    USER_MODE_DRIVERS,
    check_nameserver,
    check_run,
)
from kleenenet.store import Store


PRIVATE_SUBNETS = ipaddress.ip_network("10.88.0.0/13")  # where the private network's subnet is chosen


class _DryRun(Exception):
    """Raised at the end of a dry run so the store transaction rolls back."""


class Service:
    def __init__(self, store: Store, platform, dry_run: bool = False,
                 out: Callable[[str], None] = print):
        self.store = store
        self.platform = platform
        self.dry_run = dry_run
        self.out = out

    @contextmanager
    def _change(self) -> Iterator[None]:
        """A store transaction around a host change; a dry run rolls it back."""
        try:
            with self.store.write():
                yield
                if self.dry_run:
                    raise _DryRun
        except _DryRun:
            pass

    def _apply(self, plan: Plan) -> None:
        if self.dry_run:
            plan.dry_run(self.out)
        else:
            plan.execute()

    def _wired_endpoints(self) -> list[Endpoint]:
        return [ep for ep in self.store.endpoints() if ep.epair]

    # networks

    def create_network(self, name: str, *args, **kwargs) -> Network:
        """A network (arguments: _create_network's); the names `-n` gives a meaning of its own are
        refused."""
        check_name("network", name)
        if name in RESERVED_NETWORK_NAMES:
            raise InvalidInput(f"invalid network name {name!r}: -n {name} has a meaning of its own"
                               + (" (the network created on first use)" if name == PRIVATE_NETWORK else ""))
        return self._create_network(name, *args, **kwargs)

    def _create_network(self, name: str, type: str = "loopback", subnet: str = "", subnet6: str = "",
                        interface: str = "", gateway: str | None = None, gateway6: str | None = None,
                        nat: str = HOST_GATEWAY, icc: bool = True, internal: bool = False,
                        mtu: int | None = None, nat6: bool = True, ip_range: str = "", ip_range6: str = "",
                        force: bool = False) -> Network:
        """`mtu` None: the egress interface's (a custom network's: its interface's); `subnet6`
        "auto": a free ULA /64 where the host has IPv6. A custom network is on an existing
        interface: its subnet is the LAN's own, one of the interface's (unless `force`)."""
        check_choice("network type", type, NETWORK_TYPES)
        self._check_root("network create")
        if mtu is not None:
            check_mtu(mtu, bool(subnet6))
            if type == "custom":
                raise InvalidInput(f"invalid --mtu {mtu}: a custom network has the MTU of its interface "
                                   f"{interface or 'IFACE'}, which kleenenet does not change")
        net4 = ipam.parse_subnet(subnet, 4)
        net6 = self._auto_subnet6() if subnet6 == "auto" else ipam.parse_subnet(subnet6, 6)
        if net4 is None and net6 is None:
            raise InvalidInput(f"network {name!r} needs a --subnet or a --subnet6")
        range4 = ipam.parse_range(ip_range, net4, "--ip-range")
        range6 = ipam.parse_range(ip_range6, net6, "--ip-range6")
        if type == "loopback":
            for option, value in (("--gw", gateway), ("--gw6", gateway6)):
                if value not in (None, ""):
                    raise InvalidInput(f"invalid {option} {value!r}: loopback networks have no gateway")
            gw4 = gw6 = None
        elif type == "custom":  # the LAN's router, if the operator names it
            gw4 = ipam.resolve_gateway("" if gateway in (None, AUTO) else gateway, net4, "--gw")
            gw6 = ipam.resolve_gateway("" if gateway6 in (None, AUTO) else gateway6, net6, "--gw6")
        else:  # a bridge gets its gateway unless asked otherwise
            gw4 = ipam.resolve_gateway(AUTO if gateway is None and net4 else gateway or "", net4, "--gw")
            gw6 = ipam.resolve_gateway(AUTO if gateway6 is None and net6 else gateway6 or "", net6, "--gw6")
        if interface:
            check_ifname(interface)
        if type == "custom":
            if not interface:
                raise InvalidInput("a custom network needs -i IFACE: the existing bridge or NIC it is on")
            nat = ""  # the containers are on the LAN with their own addresses
        elif internal:
            nat = ""
        elif nat == HOST_GATEWAY:
            nat = self.platform.default_route_interface()
            if nat is None:
                raise InvalidInput("no default route to NAT toward: give --nat-if IFACE or --no-nat")
        elif nat:
            check_ifname(nat)
        if mtu is None:  # a container's packets fit the link they leave by (at most 65535: lo has 65536)
            egress = interface if type == "custom" else nat or self.platform.default_route_interface()
            mtu = min((self.platform.interface_mtu(egress) if egress else None) or 1500, 65535)
            if subnet6 and mtu < 1280:
                raise InvalidInput(f"the MTU of {egress} ({mtu}) is too small for IPv6 (1280): give --mtu")

        with self._change():
            if self.store.find_network(name, prefix=False):
                raise Conflict(f"network name {name!r} is already in use")
            before = self.store.networks()
            taken = self.store.interfaces()
            if type != "custom":
                if interface:
                    if interface in taken or self.platform.interface_exists(interface):
                        raise Conflict(f"interface {interface!r} already exists")
                else:
                    interface = self.platform.free_interface_name(taken)
            net = Network(id=new_id(), name=name, type=type, subnet=subnet and str(net4),
                          subnet6=str(net6 or ""), interface=interface,
                          gateway=str(gw4 or ""), gateway6=str(gw6 or ""), nat=nat or "",
                          icc=icc, internal=internal, mtu=mtu, nat6=nat6,
                          ip_range=str(range4 or ""), ip_range6=str(range6 or ""))
            self.platform.check_network(net)
            for subnet_net in filter(None, (net4, net6)):
                clash = ipam.find_overlap(subnet_net, [(f"network {n.name!r}", ipaddress.ip_network(s))
                                                       for n in before for s in (n.subnet, n.subnet6) if s])
                if type == "custom":
                    self._check_on_interface(subnet_net, interface, force)
                else:
                    clash = clash or ipam.find_overlap(subnet_net, self.platform.host_networks())
                if clash:
                    raise Conflict(f"subnet {subnet_net} overlaps {clash}")
            if type == "custom" and ((net4 and not range4) or (net6 and not range6)):
                print(f"kleenenet: network {name!r} hands out addresses from its whole subnet: give --ip-range "
                      "(--ip-range6) to keep them clear of the LAN's other machines and its DHCP pool", file=sys.stderr)
            self.store.add_network(net)
            self._apply(self.platform.plan_create_network(net, before, before + [net], self._wired_endpoints(),
                                                          self.store.containers()))
        return net

    def _check_on_interface(self, subnet, interface: str, force: bool) -> None:
        """A custom network's subnet is the LAN's: one the interface has an address in, unless
        the interface has none of that family or the operator says --force."""
        mine = [a.network for a in self.platform.interface_addresses(interface) if a.version == subnet.version]
        if mine and subnet not in mine and not force:
            raise InvalidInput(f"invalid subnet {subnet}: interface {interface} is on "
                               f"{', '.join(map(str, mine))}; give one of them, or --force")

    @property
    def rootless(self) -> bool:
        """Without root only some drivers run (their state is the user's); a dry run shows any plan."""
        return self.platform.rootless and not self.dry_run

    def _check_root(self, what: str) -> None:
        if self.rootless:
            drivers = ", ".join(f"-l {d}" for d in self.platform.rootless_drivers)
            raise InvalidInput(f"{what} needs root" + (f": without root, containers run with {drivers}" if drivers else ""))

    def _network(self, ident: str) -> Network:
        """A network by name or id; `private`, the default network, is created on first use: a
        bridge with NAT toward the default route, its subnet clear of the host's."""
        net = self.store.find_network(ident)
        if net is None and ident == PRIVATE_NETWORK:
            net = self._create_network(PRIVATE_NETWORK, "bridge", subnet=str(self._private_subnet()),
                                       subnet6="auto" if self.platform.has_ipv6() else "")
        return net or self.store.network(ident)

    def _private_subnet(self) -> ipaddress.IPv4Network:
        """The first /24 of 10.88.0.0/13 clear of kleenenet's networks and the host's."""
        taken = [(f"network {n.name!r}", ipaddress.ip_network(n.subnet)) for n in self.store.networks() if n.subnet]
        taken += self.platform.host_networks()
        for candidate in PRIVATE_SUBNETS.subnets(new_prefix=24):
            if ipam.find_overlap(candidate, taken) is None:
                return candidate
        raise Conflict(f"no free /24 in {PRIVATE_SUBNETS} for the private network: create a bridge network "
                       "with a --subnet of your choice and give it with -n")

    def _auto_subnet6(self) -> ipaddress.IPv6Network:
        """`--subnet6 auto`: a unique local /64, where the host has IPv6 (the overlap check under
        the store's lock still refuses one a concurrent create took)."""
        if not self.platform.has_ipv6():
            raise InvalidInput("invalid --subnet6 'auto': IPv6 is off on this host; give --subnet6 CIDR to use it anyway")
        return ipam.unique_local64([(f"network {n.name!r}", ipaddress.ip_network(n.subnet6))
                                    for n in self.store.networks() if n.subnet6] + self.platform.host_networks())

    def inspect_network(self, ident: str) -> dict:
        net = self.store.network(ident)
        return {"network": net.model_dump(),
                "network_endpoints": [ep.model_dump() for ep in self.store.endpoints(network_id=net.id)]}

    def remove_network(self, ident: str, disconnect: bool = False) -> str:
        """Remove a network; one with containers only with `disconnect` (as Kleene's API does)."""
        self._check_root("network rm")
        with self._change():
            net = self.store.network(ident)
            users = self.store.endpoints(network_id=net.id)
            if users and not disconnect:
                names = ", ".join(sorted(self.store.container(ep.container_id).name for ep in users))
                raise Conflict(f"network {net.name!r} has connected containers ({names}): disconnect them first")
            for ep in users:
                self.disconnect(ep.container_id, net.id)
            before = self.store.networks()
            self.store.remove_network(net.id)
            after = [n for n in before if n.id != net.id]
            self._apply(self.platform.plan_remove_network(net, before, after, self._wired_endpoints(),
                                                          self.store.containers()))
        return net.id

    def prune_networks(self) -> list[str]:
        unused = [n for n in self.store.networks() if not self.store.endpoints(network_id=n.id)]
        return [self.remove_network(n.id) for n in unused]

    # endpoints

    def connect(self, container: str, network: str, ip: str = AUTO, ip6: str = AUTO) -> Endpoint:
        with self._change():
            c = self._running_state(self.store.container(container))
            self._check_root("network connect")
            if c.network_driver not in ("ipnet", "vnet"):
                raise InvalidInput(f"container {c.name!r} uses driver {c.network_driver!r}: only ipnet "
                                   "and vnet containers can connect to networks")
            net = self._network(network)
            self.platform.check_attach(net, c)
            ep = self._allocate(net, c, ip, ip6)
            if c.running:
                ep = self._wire(net, ep, c)
                self._joined(c, {net.id})
            elif self.dry_run:
                self.out(f"# {c.name} is not running: reserve {ep.ip_address or ep.ip_address6} "
                         f"on {net.name}, wire it when it runs")
        return ep

    def _allocate(self, net: Network, c: Container, ip: str, ip6: str) -> Endpoint:
        """An endpoint for `c` on `net`: on a custom network never an address its interface has."""
        own = ()
        if net.type == "custom":
            own = tuple(str(a.ip) for a in self.platform.interface_addresses(net.interface))
        return self.store.allocate_endpoint(net, c.id, ip, ip6, reserved=own)

    def _wiring(self) -> tuple[list[Network], list[Endpoint]]:
        """All networks and wired endpoints: what a platform renders a whole firewall part from."""
        return self.store.networks(), self._wired_endpoints()

    def _wired_of(self, c: Container, but: Endpoint) -> list[Endpoint]:
        """The container's other endpoints that are wired (a jail's full address list needs them)."""
        return [e for e in self.store.endpoints(container_id=c.id) if e.epair and e.id != but.id]

    def _wire(self, net: Network, ep: Endpoint, c: Container, cif: str | None = None) -> Endpoint:
        self._apply(self.platform.plan_attach(net, ep, c, cif, self._wired_of(c, ep), self._wiring))
        epair = self.platform.endpoint_ifname(ep)
        self.store.set_epair(ep.id, epair)
        return ep.model_copy(update={"epair": epair})

    def disconnect(self, container: str, network: str) -> None:
        with self._change():
            c = self.store.container(container)
            net = self.store.network(network)
            eps = self.store.endpoints(network_id=net.id, container_id=c.id)
            if not eps:
                raise Conflict(f"container {c.name!r} is not connected to network {net.name!r}")
            if eps[0].epair:
                self._apply(self.platform.plan_detach(net, eps[0], c, self._wired_of(c, eps[0]),
                                                        self._wiring))
            self.store.remove_endpoint(eps[0].id)
            self._left(c, [ep for ep in eps[:1] if ep.epair])

    # containers

    def _running_state(self, c: Container) -> Container:
        """The container as it really is: a container whose process died is not running."""
        if c.running and not self.platform.alive(c):
            return c.model_copy(update={"running": False})
        return c

    def is_running(self, ident: str) -> bool:
        return self._running_state(self.store.container(ident)).running

    def containers(self) -> list[Container]:
        return [self._running_state(c) for c in self.store.containers()]

    def kleene_container(self, c: Container) -> dict:
        """A container as Kleene shows it (kleenenet's own fields included): each published port
        with the addresses it leads to."""
        eps = [(self.store.network(ep.network_id), ep) for ep in self.store.endpoints(container_id=c.id)]
        to = {family: ports.target(eps, family) for family in (4, 6)}
        shown = c.model_dump(exclude={"pid", "pid_start"})
        for port in shown["public_ports"]:
            port["ip_address"] = to[4][1].ip_address if to[4] else ""
            port["ip_address6"] = to[6][1].ip_address6 if to[6] else ""
        return shown

    def inspect_container(self, ident: str) -> dict:
        c = self._running_state(self.store.container(ident))
        return {"container": self.kleene_container(c), "container_endpoints":
                [ep.model_dump() for ep in self.store.endpoints(container_id=c.id)],
                "container_mountpoints": []}  # Kleene's shape; kleenenet mounts nothing

    def _new_container(self, cmd: list[str], name: str | None, driver: str | None, image: str | None,
                       path: str | None, **fields) -> tuple[Container, Plan]:
        """Validate and store a new container (in the open transaction); it is not running. The
        plan that makes its root (a ZFS clone), for the caller to run with its own."""
        driver = check_choice("network driver", driver or "host", NETWORK_DRIVERS)
        if driver in USER_MODE_DRIVERS:
            driver, warning = self.platform.user_mode_driver(driver)
            if fields.get("network_options") and driver != "pasta":
                raise InvalidInput(f"pasta options {','.join(fields['network_options'])!r} given, but the "
                                   f"driver is {driver}: install pasta (Debian: passt) or leave them out")
            if warning:
                print(f"kleenenet: {warning}", file=sys.stderr)
        elif fields.get("network_options"):
            raise InvalidInput(f"driver {driver!r} takes no options: only pasta does (-l pasta:OPT,...)")
        if driver not in self.platform.rootless_drivers:
            self._check_root(f"driver {driver!r}")
        cid = new_id()
        name = check_name("container", name) if name else f"c{cid[:8]}"
        if image is not None and path is not None:
            raise InvalidInput("give an image or a --path, not both")
        if self.store.find_container(name, prefix=False):
            raise Conflict(f"container name {name!r} is already in use")
        check_env(fields.get("env", []))
        for addr in fields.get("dns", []):
            check_nameserver(addr)
        img = self.store.image(image) if image is not None else None
        root = img.root if img else check_root(path or "/")
        c = Container(id=cid, name=name, cmd=list(cmd), network_driver=driver, created=now(),
                      image_id=img.id if img else "", root=root, **fields)
        self.platform.check_container(c)
        self._check_published(c)
        root_plan = Plan("root")
        if img and img.snapshot:  # a ZFS image: the container's root is a clone of its snapshot
            c = c.model_copy(update=self.platform.container_dataset(c, img))
            root_plan = self.platform.plan_create_root(c, img)
        self.store.save_container(c)
        return c, root_plan

    @staticmethod
    def _published(c: Container) -> set[tuple[str, int]]:
        return {(pp.protocol, host) for pp in c.public_ports for host, _ in pp.pairs()}

    def _check_published(self, c: Container) -> None:
        seen = set()
        for pp in c.public_ports:
            for interface in pp.interfaces:
                check_ifname(interface)
            for host, _ in pp.pairs():
                if (pp.protocol, host) in seen:
                    raise InvalidInput(f"port {pp.protocol}/{host} is published twice")
                seen.add((pp.protocol, host))
        if seen and c.network_driver not in ("ipnet", "vnet", *USER_MODE_DRIVERS):
            raise InvalidInput(f"driver {c.network_driver!r} cannot publish ports: use -l ipnet or -l vnet with -n")

    def _check_ports_lead_somewhere(self, c: Container, eps: list[Endpoint]) -> None:
        """A published port without an interface arrives on the NAT interface of the network it
        leads to: refused when the container's networks give it none, rather than published
        nowhere. (A container on no network yet may start: its ports lead somewhere once it
        joins one, as in Kleene's create, start, connect.)"""
        if c.network_driver in USER_MODE_DRIVERS or not eps or not c.public_ports:
            return
        networks = [(self.store.network(ep.network_id), ep) for ep in eps]
        wired = [(net, ep) for net, ep in networks if self.platform.ports_lead_to(net, c)]
        chosen = [t for t in (ports.target(wired, 4), ports.target(wired, 6)) if t]
        if not chosen and any(ports.target(networks, family) for family in (4, 6)):
            net = next(net for net, _ in networks if not self.platform.ports_lead_to(net, c))
            raise InvalidInput(f"published ports cannot lead to container {c.name!r} on the custom network "
                               f"{net.name!r}: it is on the LAN, connect to its address directly")
        if all(pp.interfaces for pp in c.public_ports):
            return
        if not any(net.nat for net, _ in chosen):
            pp = next(pp for pp in c.public_ports if not pp.interfaces)
            where = (f"network {chosen[0][0].name!r} has no NAT interface" if chosen else
                     "none of its networks reaches out (--internal)")
            example = self.platform.default_route_interface() or "IFACE"  # (the host's: em0, eth0...)
            raise InvalidInput(f"published port {pp.protocol}/{pp.host_port} leads nowhere: {where}; "
                               f"name the interface it arrives on, e.g. -p {example}:{pp.host_port}")

    def _check_ports_free(self, c: Container) -> None:
        """A host port/protocol has one owner: one running container, not the host itself."""
        mine = self._published(c)
        if not mine:
            return
        for other in self.store.containers():
            clash = sorted(mine & self._published(other)) if other.running and other.id != c.id else None
            if clash:
                raise Conflict(f"port {clash[0][0]}/{clash[0][1]} is already published by container {other.name!r}")
        for protocol in sorted({protocol for protocol, _ in mine}):
            busy = sorted(self.platform.ports_in_use(protocol) & {port for proto, port in mine if proto == protocol})
            if busy:
                raise Conflict(f"port {protocol}/{busy[0]} is already in use on the host")

    def create_container(self, cmd: list[str], name: str | None = None, driver: str | None = None,
                         image: str | None = None, path: str | None = None, **fields) -> Container:
        """A container that is not running yet (Kleene's `container create`)."""
        with self._change():
            c, root_plan = self._new_container(cmd, name, driver, image, path, **fields)
            self._apply(root_plan)
            return c

    def _launch(self, c: Container, detach: bool, cmd: list[str] | None = None, first: Plan | None = None):
        """Start the container's process and wire its endpoints (in the open transaction), after
        the steps of `first`; the running container and its process, which waits to be released."""
        eps = self.store.endpoints(container_id=c.id)
        self._check_ports_lead_somewhere(c, eps)
        self._check_ports_free(c)
        proc = helper = None
        etc = self._write_resolver_files(c)
        if not self.dry_run:
            log = self.log_path(c.id)
            if detach:
                log.parent.mkdir(exist_ok=True)
            proc = self.platform.spawn(c.model_copy(update={"cmd": cmd}) if cmd else c, detach, log, etc)
            c = c.model_copy(update={"running": True, "pid": proc.pid, "pid_start": proc.start})
        try:
            # One plan, so a failure on the last network undoes the first ones too.
            plan = Plan("run")
            if first:
                plan.extend(first)
            plan.extend(self.platform.plan_new_namespace(c, etc))
            wired = []
            for k, ep in enumerate(eps):
                plan.extend(self.platform.plan_attach(self.store.network(ep.network_id), ep, c, f"eth{k}",
                                                      list(wired), self._wiring))
                wired.append(ep.model_copy(update={"epair": self.platform.endpoint_ifname(ep)}))
            self._apply(plan)
            if c.network_driver in USER_MODE_DRIVERS:
                if self.dry_run:
                    self.out(f"# then: start {c.network_driver} for the container's network")
                else:
                    helper = self.platform.start_helper(c)
                    c = c.model_copy(update={"helper_pid": helper[0], "helper_start": helper[1]})
            for ep in wired:
                self.store.set_epair(ep.id, ep.epair)
            self.store.save_container(c)
            self._joined(c, {ep.network_id for ep in eps})
            if self.dry_run:
                self.out(f"# then: {self.platform.start_text(c)}")
        except BaseException:
            if helper:
                self.platform.end_helper(*helper)
            if proc:
                proc.abort()
            if etc and not self.dry_run:
                Files(self.store.state_dir).remove(c.id)
            raise
        return c, proc

    def run(self, cmd: list[str], name: str | None = None, driver: str | None = None,
            networks: tuple[str | tuple[str, str, str], ...] = (), public_ports: list[dict] = (),
            dns: list[str] = (), detach: bool = False, remove: bool = False,
            jail_params: tuple[str, ...] = (), image: str | None = None, path: str | None = None,
            network_options: list[str] = ()) -> int:
        """Create a container and run `cmd` in it; the command's exit code (0 when detached).
        `networks`: the networks it joins, by name or as (name, ip, ip6); `public_ports`: Kleene's
        shape; `network_options`: the user-mode driver's (pasta's)."""
        networks = tuple((n, AUTO, AUTO) if isinstance(n, str) else tuple(n) for n in networks)
        driver = check_run(cmd, networks, driver)

        with self._change():
            c, root_plan = self._new_container(cmd, name, driver, image, path, jail_param=list(jail_params),
                                               auto_remove=remove, public_ports=list(public_ports), dns=list(dns),
                                               network_options=list(network_options))
            for n, ip, ip6 in networks:
                net = self._network(n)
                self.platform.check_attach(net, c)
                self._allocate(net, c, ip, ip6)
            c, proc = self._launch(c, detach, first=root_plan)  # one plan: a failure undoes the root too
            if self.dry_run and not detach:
                self.out("# and when it exits:")
                self._stopped(c)
        if self.dry_run:
            return 0
        proc.release()
        if detach:
            self.out(c.id)
            self._watch(c)
            return 0
        # The terminal's Ctrl-C reaches the container by itself; SIGTERM and SIGHUP sent to us are
        # passed on. Either way we stay to clean up after it.
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, lambda signum, _: proc.signal(signum))
        try:
            code = proc.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.exited(c.id, c.pid)
        return code

    def start(self, ident: str, cmd: list[str] | None = None):
        """Start a stopped container in the background (its output goes to its log); `cmd`
        replaces its command for this run. The running container and its process."""
        with self._change():
            c = self.store.container(ident)
            if self.is_running(c.id):
                raise Conflict(f"container {c.name!r} is already running")
            if c.running:  # its process died on its own: take it off its networks first
                self._stopped(c)
            if not self.dry_run:  # created now, so its output can be followed from the start
                log = self.log_path(c.id)
                log.parent.mkdir(exist_ok=True)
                os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            c, proc = self._launch(self.store.container(c.id), detach=True, cmd=cmd)
        if proc:
            proc.release()
        return c, proc

    def _watch(self, c: Container) -> None:
        """A detached container started here is watched by a process of its own (kleenenet/watch.py),
        which does what `exited` does when the container's command exits. (The daemon watches the
        containers it starts itself; reconcile catches up with any whose watcher was killed.)"""
        if self.dry_run or not self.platform.watches_detached:
            return
        import subprocess

        # /proc/self/exe: this very interpreter, even where the user may not look its path up again
        # (argv[0] still names it, so a virtualenv's packages are found)
        try:
            subprocess.Popen([sys.executable, "-m", "kleenenet.watch", str(self.store.state_dir), self.platform.name,
                              c.id, str(c.pid), str(c.pid_start)], executable="/proc/self/exe",
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        except OSError as e:  # the container runs all the same: say what is missing and what mends it
            print(f"kleenenet: container {c.name!r} runs unwatched ({e.strerror}): when its command exits, "
                  "`kleenenet reconcile` takes it off its networks", file=sys.stderr)

    def exited(self, ident: str, pid: int | None) -> None:
        """The process `pid` of a container has exited: take the container off its networks, and
        remove it if it was started with --rm. Nothing to do if it was stopped or removed meanwhile."""
        with self._change():
            c = self.store.find_container(ident)
            if c is None or not c.running or c.pid != pid:
                return
            self._stopped(c)
            if c.auto_remove:
                self._remove_stopped(c)

    def exec_command(self, ident: str, cmd: list[str], user: str = ""):
        """argv, and file descriptors to pass to it, that run `cmd` inside a running container
        (with the environment it is started with)."""
        if not cmd:
            raise InvalidInput("no command given: kleenenet exec CONTAINER -- CMD [ARGS...]")
        c = self._running_state(self.store.container(ident))
        if not c.running:
            raise Conflict(f"container {c.name!r} is not running")
        return self.platform.exec_command(c, cmd, user)

    def exec_environ(self, ident: str, env: list[str] = ()) -> dict[str, str]:
        """The environment of a command run inside a container: the container's own environment
        (as its command got it: the starter's, the platform's defaults, then the container's env)
        with `env` over it."""
        c = self.store.container(ident)
        return {**os.environ, **self.platform.command_defaults, **dict(e.split("=", 1) for e in [*c.env, *env])}

    def log_path(self, container_id: str):
        """Where a detached container's output goes."""
        return self.store.state_dir / "logs" / f"{container_id}.log"

    def _stopped(self, c: Container) -> None:
        """Take a container whose process is gone off its networks (its addresses stay reserved)."""
        failed = False
        stopping = c.model_copy(update={"running": False})  # only the host side needs undoing
        wired = [ep for ep in self.store.endpoints(container_id=c.id) if ep.epair]
        for ep in wired:
            try:
                self._apply(self.platform.plan_detach(self.store.network(ep.network_id), ep, stopping,
                                                      self._wired_of(c, ep), self._wiring))
            except KleenenetError as e:
                print(f"kleenenet: {e}", file=sys.stderr)
                failed = True
            self.store.set_epair(ep.id, None)
        self._apply(self.platform.plan_stop(c))
        self._end_helper(c)
        self.store.save_container(c.model_copy(update={"running": False, "pid": None, "pid_start": None,
                                                       "helper_pid": None, "helper_start": None}))
        self._left(stopping, wired)
        if failed:  # something outside kleenenet changed our table: rewrite it from the state
            self.platform.replace_firewall(self.store.networks(), self._wired_endpoints(), self.store.containers())

    def _end_helper(self, c: Container) -> None:
        """End the user-mode driver's helper of a container that is not running any more."""
        if c.helper_pid is not None and not self.dry_run:
            self.platform.end_helper(c.helper_pid, c.helper_start)
        elif c.helper_pid is not None:
            self.out(f"kill {c.helper_pid}  # {c.network_driver} of {c.name}")

    def stop(self, ident: str, timeout: float = 10.0) -> str:
        c = self.store.container(ident)
        if not self.dry_run and c.running:
            self.platform.terminate(c, timeout)
        with self._change():
            c = self.store.container(c.id)
            if c.running:
                self._stopped(c)
        return c.id

    def remove(self, ident: str, force: bool = False) -> str:
        c = self._running_state(self.store.container(ident))
        if c.running:
            if not force:
                raise Conflict(f"container {c.name!r} is running: stop it first or use --force")
            self.stop(c.id)
        with self._change():
            c = self.store.container(c.id)
            if c.running:  # its process died on its own
                self._stopped(c)
            self._remove_stopped(c)
        return c.id

    def _remove_stopped(self, c: Container) -> None:
        self.store.remove_container(c.id)
        if c.dataset:
            self._apply(self.platform.plan_remove_root(c))
        if not self.dry_run:
            self.log_path(c.id).unlink(missing_ok=True)
            Files(self.store.state_dir).remove(c.id)

    def prune_containers(self) -> list[str]:
        """Remove every stopped container that is not marked persistent."""
        return [self.remove(c.id) for c in self.containers() if not c.running and not c.persist]

    def exec(self, ident: str, cmd: list[str]) -> None:
        """Replace this process with `cmd` running inside the container."""
        argv, fds = self.exec_command(ident, cmd)
        env = self.exec_environ(ident)
        for fd in fds:
            os.set_inheritable(fd, True)
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            raise HostError(f"cannot run {argv[0]}: {e.strerror}") from None

    # images

    def add_image(self, name: str, source: str) -> Image:
        """An image named NAME[:TAG] whose root is the directory `source` (absolute), or, on
        FreeBSD, a ZFS snapshot POOL/DATASET@SNAPSHOT that each container clones."""
        name, _, tag = name.partition(":")
        check_name("image", name)
        check_name("image tag", tag or "latest")
        if "@" in source:
            img = Image(id=new_id(), name=name, tag=tag or "latest", snapshot=self.platform.check_snapshot(source),
                        created=now())
        else:
            img = Image(id=new_id(), name=name, tag=tag or "latest", root=check_root(source), created=now())
            if not self.dry_run and not os.path.isdir(img.root):
                raise InvalidInput(f"invalid image root {source!r}: not a directory")
        with self._change():
            if self.store.find_image(f"{img.name}:{img.tag}"):
                raise Conflict(f"image {img.name}:{img.tag} already exists")
            self.store.add_image(img)
        return img

    def remove_image(self, ident: str) -> str:
        with self._change():
            img = self.store.image(ident)
            users = [c.name for c in self.store.containers() if c.image_id == img.id]
            if users:
                raise Conflict(f"image {img.name}:{img.tag} is used by containers ({', '.join(users)}): remove them first")
            self.store.remove_image(img.id)
        return img.id

    # reconcile

    def reconcile(self) -> None:
        """Make the host match the store: rebuild what is missing, remove what nothing owns."""
        with self._change():
            for c in self.store.containers():
                if c.running and self._running_state(c).running is False:
                    # Killed behind kleenenet's back: what it had on the host goes, as at a stop
                    # (an alias on a LAN interface, its user-mode helper).
                    self._stopped(c)
            unwired = [] if self.rootless else self._reconcile_networks()  # a user's containers have no networks
            self._reconcile_resolver_files()
        if unwired:
            raise HostError(f"reconcile could not wire {len(unwired)} endpoint(s), and did the rest: " + "; ".join(unwired))

    def _reconcile_networks(self) -> list[str]:
        """What could not be wired again (each also left as it was)."""
        unwired = []
        # Interfaces of running containers that vanished are wired again below.
        wired = [(self.store.network(ep.network_id), ep, self.store.container(ep.container_id))
                 for ep in self._wired_endpoints()]
        for ep in self.platform.lost_endpoints(wired):
            self.store.set_epair(ep.id, None)
        running = [c for c in self.store.containers() if c.running]
        self._apply(self.platform.plan_reconcile(self.store.networks(), self._wired_endpoints(), running))
        rewired = False
        for c in self.store.containers():
            for ep in self.store.endpoints(container_id=c.id) if c.running else ():
                if not ep.epair:
                    try:  # one that cannot be wired now (its plan rolled back) keeps none of the others back
                        self._wire(self.store.network(ep.network_id), ep, c)
                        rewired = True
                    except KleenenetError as e:
                        unwired.append(f"{c.name} on {self.store.network(ep.network_id).name} ({e})")
        if rewired:  # wired again last, as a connect is: what depends on their order is put right
            self._apply(self.platform.plan_reconcile(self.store.networks(), self._wired_endpoints(), running))
        return unwired

    # resolver files (kleenenet/dns.py): each container's resolv.conf and hosts, kept current

    def _write_resolver_files(self, c: Container):
        """Before a container starts: write its resolv.conf and hosts. The directory they are in,
        for the platform to mount (None for driver host: the host's files are its own)."""
        if c.network_driver == "host":
            return None
        files = Files(self.store.state_dir)
        if not self.dry_run:
            text, warning = resolv_conf(c, self.platform.host_resolver(), files.fallback())
            if warning:
                print(f"kleenenet: {warning}", file=sys.stderr)
            files.write(c.id, "resolv.conf", text)
            self._rewrite_hosts({c.id}, self._endpoints_around(c.id))
        return files.dir(c.id)

    def _endpoints_around(self, *container_ids: str) -> list[Endpoint]:
        """The endpoints of these containers' networks (their own among them): what their hosts
        files say. In the order they were made, so each container's own come in the order it
        joined its networks: its name resolves first to its first one."""
        networks = {ep.network_id for cid in container_ids for ep in self.store.endpoints(container_id=cid)}
        return self.store.endpoints(network_ids=networks)

    def _rewrite_hosts(self, ids: set[str], endpoints: list[Endpoint]) -> None:
        files, names = Files(self.store.state_dir), self.store.container_names()
        for cid, text in hosts_files(sorted(ids), endpoints, names).items():
            files.write(cid, "hosts", text)

    def _joined(self, c: Container, network_ids: set[str]) -> None:
        """`c` was wired into these networks: its lines go at the end of the hosts files of the
        running containers there (one write each, whatever their number), its own is rewritten."""
        if self.dry_run or not network_ids:
            return
        files, around = Files(self.store.state_dir), self._endpoints_around(c.id)
        for network_id in sorted(network_ids):
            endpoints = [ep for ep in around if ep.network_id == network_id]
            lines = hosts_lines(c.name, [ep for ep in endpoints if ep.container_id == c.id])
            for ep in endpoints:
                if ep.epair and ep.container_id != c.id:
                    files.append(ep.container_id, "hosts", lines)
        self._rewrite_hosts({c.id}, around)

    def _left(self, c: Container, gone: list[Endpoint]) -> None:
        """`c` was unwired from the endpoints `gone`: its lines there are struck out of the hosts
        files of the running containers on those networks (a byte a line, in place);
        a file mostly struck, and c's own if it still runs, are written anew."""
        if self.dry_run or not gone:
            return
        files, rewrite = Files(self.store.state_dir), set()
        for network_id in sorted({ep.network_id for ep in gone}):
            lines = hosts_lines(c.name, [ep for ep in gone if ep.network_id == network_id])
            for ep in self.store.endpoints(network_id=network_id):
                if ep.epair and ep.container_id != c.id and files.strike(ep.container_id, "hosts", lines):
                    rewrite.add(ep.container_id)
        if c.running:
            rewrite.add(c.id)
        if rewrite:
            self._rewrite_hosts(rewrite, self._endpoints_around(*rewrite))

    def _reconcile_resolver_files(self) -> None:
        """Rewrite the running containers' files that differ from what the state and the host's
        resolver say now; remove those of containers that are gone."""
        files = Files(self.store.state_dir)
        containers = {c.id: c for c in self.store.containers()}
        have = files.ids()
        running = [c for c in containers.values() if c.running and c.id in have]
        wanted = hosts_files([c.id for c in running], self.store.endpoints(), self.store.container_names())
        host, fallback = self.platform.host_resolver(), files.fallback()
        for c in running:
            resolv = resolv_conf(c, host, fallback)[0]
            for name, text, same in (("hosts", wanted[c.id], same_lines), ("resolv.conf", resolv, str.__eq__)):
                if not same(files.read(c.id, name), text):
                    if self.dry_run:
                        self.out(f"rewrite {files.dir(c.id) / name}")
                    else:
                        files.write(c.id, name, text)
        for cid in have:
            if cid not in containers:
                if self.dry_run:
                    self.out(f"rm -r {files.dir(cid)}  # leftover")
                else:
                    files.remove(cid)
