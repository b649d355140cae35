"""Use cases. Each one validates everything first, then changes the store and the host inside one
store transaction; a failing host step rolls the host back (plan.execute) and the store with it
(the transaction). With dry_run the plan is printed and nothing is changed."""

from __future__ import annotations

import ipaddress
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kleenenet import ipam
from kleenenet.errors import Conflict, InvalidInput, KleenenetError
from kleenenet.model import (
    AUTO,
    HOST_GATEWAY,
    NETWORK_DRIVERS,
    NETWORK_TYPES,
    Container,
    Endpoint,
    Network,
    check_choice,
    check_ifname,
    check_name,
    new_id,
    now,
)
from kleenenet.plan import Plan
from kleenenet.store import Store


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

    def create_network(self, name: str, type: str = "loopback", subnet: str = "", subnet6: str = "",
                       interface: str = "", gateway: str | None = None, gateway6: str | None = None,
                       nat: str = HOST_GATEWAY, icc: bool = True, internal: bool = False) -> Network:
        check_name("network", name)
        check_choice("network type", type, NETWORK_TYPES)
        net4 = ipam.parse_subnet(subnet, 4)
        net6 = ipam.parse_subnet(subnet6, 6)
        if net4 is None and net6 is None:
            raise InvalidInput(f"network {name!r} needs a --subnet or a --subnet6")
        if type == "loopback":
            for option, value in (("--gw", gateway), ("--gw6", gateway6)):
                if value not in (None, ""):
                    raise InvalidInput(f"invalid {option} {value!r}: loopback networks have no gateway")
            gw4 = gw6 = None
        else:  # a bridge gets its gateway unless asked otherwise
            gw4 = ipam.resolve_gateway(AUTO if gateway is None and net4 else gateway or "", net4, "--gw")
            gw6 = ipam.resolve_gateway(AUTO if gateway6 is None and net6 else gateway6 or "", net6, "--gw6")
        if interface:
            check_ifname(interface)
        if internal:
            nat = ""
        elif nat == HOST_GATEWAY:
            nat = self.platform.default_route_interface()
            if nat is None:
                raise InvalidInput("no default route to NAT toward: give --nat-if IFACE or --no-nat")
        elif nat:
            check_ifname(nat)

        with self._change():
            if self.store.find_network(name, prefix=False):
                raise Conflict(f"network name {name!r} is already in use")
            before = self.store.networks()
            for subnet_net in filter(None, (net4, net6)):
                clash = ipam.find_overlap(subnet_net, [(f"network {n.name!r}", ipaddress.ip_network(s))
                                                       for n in before for s in (n.subnet, n.subnet6) if s])
                clash = clash or ipam.find_overlap(subnet_net, self.platform.host_networks())
                if clash:
                    raise Conflict(f"subnet {subnet_net} overlaps {clash}")
            taken = self.store.interfaces()
            if interface:
                if interface in taken or self.platform.interface_exists(interface):
                    raise Conflict(f"interface {interface!r} already exists")
            else:
                interface = self.platform.free_interface_name(taken)
            net = Network(id=new_id(), name=name, type=type, subnet=subnet and str(net4),
                          subnet6=subnet6 and str(net6), interface=interface,
                          gateway=str(gw4 or ""), gateway6=str(gw6 or ""), nat=nat or "",
                          icc=icc, internal=internal)
            self.platform.check_network(net)
            self.store.add_network(net)
            self._apply(self.platform.plan_create_network(net, before, before + [net], self._wired_endpoints()))
        return net

    def inspect_network(self, ident: str) -> dict:
        net = self.store.network(ident)
        return {"network": net.model_dump(),
                "network_endpoints": [ep.model_dump() for ep in self.store.endpoints(network_id=net.id)]}

    def remove_network(self, ident: str) -> str:
        with self._change():
            net = self.store.network(ident)
            users = self.store.endpoints(network_id=net.id)
            if users:
                names = ", ".join(sorted(self.store.container(ep.container_id).name for ep in users))
                raise Conflict(f"network {net.name!r} has connected containers ({names}): disconnect them first")
            before = self.store.networks()
            self.store.remove_network(net.id)
            after = [n for n in before if n.id != net.id]
            self._apply(self.platform.plan_remove_network(net, before, after, self._wired_endpoints()))
        return net.id

    def prune_networks(self) -> list[str]:
        unused = [n for n in self.store.networks() if not self.store.endpoints(network_id=n.id)]
        return [self.remove_network(n.id) for n in unused]

    # endpoints

    def connect(self, container: str, network: str, ip: str = AUTO, ip6: str = AUTO) -> Endpoint:
        with self._change():
            c = self._running_state(self.store.container(container))
            if c.network_driver not in ("ipnet", "vnet"):
                raise InvalidInput(f"container {c.name!r} uses driver {c.network_driver!r}: only ipnet "
                                   "and vnet containers can connect to networks")
            net = self.store.network(network)
            self.platform.check_attach(net, c)
            ep = self.store.allocate_endpoint(net, c.id, ip, ip6)
            if c.running:
                ep = self._wire(net, ep, c)
            elif self.dry_run:
                self.out(f"# {c.name} is not running: reserve {ep.ip_address or ep.ip_address6} "
                         f"on {net.name}, wire it when it runs")
        return ep

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

    # containers

    def _running_state(self, c: Container) -> Container:
        """The container as it really is: a container whose process died is not running."""
        if c.running and not self.platform.alive(c):
            return c.model_copy(update={"running": False})
        return c

    def containers(self) -> list[Container]:
        return [self._running_state(c) for c in self.store.containers()]

    def inspect_container(self, ident: str) -> dict:
        c = self._running_state(self.store.container(ident))
        return {"container": c.model_dump(), "container_endpoints":
                [ep.model_dump() for ep in self.store.endpoints(container_id=c.id)],
                "container_mountpoints": []}  # Kleene's shape; kleenenet mounts nothing

    def run(self, cmd: list[str], name: str | None = None, driver: str | None = None,
            networks: tuple[str, ...] = (), ip: str = AUTO, ip6: str = AUTO,
            detach: bool = False, remove: bool = False, jail_params: tuple[str, ...] = ()) -> int:
        """Create a container and run `cmd` in it; the command's exit code (0 when detached)."""
        if not cmd:
            raise InvalidInput("no command given: kleenenet run [OPTIONS] -- CMD [ARGS...]")
        driver = driver or ("ipnet" if networks else "host")
        check_choice("network driver", driver, NETWORK_DRIVERS)
        cid = new_id()
        name = check_name("container", name) if name else f"c{cid[:8]}"
        if networks and driver not in ("ipnet", "vnet"):
            raise InvalidInput(f"driver {driver!r} takes no networks: use -l ipnet or -l vnet with -n")
        if len(set(networks)) != len(networks):
            raise InvalidInput("a network is given twice with -n")
        if (ip != AUTO or ip6 != AUTO) and len(networks) != 1:
            raise InvalidInput("--ip/--ip6 need exactly one -n NETWORK")
        log = self._log_path(cid)

        with self._change():
            if self.store.find_container(name, prefix=False):
                raise Conflict(f"container name {name!r} is already in use")
            nets = [self.store.network(n) for n in networks]
            c = Container(id=cid, name=name, cmd=list(cmd), network_driver=driver, created=now(),
                          jail_param=list(jail_params))
            self.platform.check_container(c)
            for net in nets:
                self.platform.check_attach(net, c)
            self.store.save_container(c)
            eps = [self.store.allocate_endpoint(net, cid, ip, ip6) for net in nets]
            proc = None
            if not self.dry_run:
                if detach:
                    log.parent.mkdir(exist_ok=True)
                proc = self.platform.spawn(c, detach, log)
                c = c.model_copy(update={"running": True, "pid": proc.pid, "pid_start": proc.start})
            try:
                # One plan, so a failure on the last network undoes the first ones too.
                plan = Plan("run")
                plan.extend(self.platform.plan_new_namespace(c))
                wired = []
                for k, (net, ep) in enumerate(zip(nets, eps)):
                    plan.extend(self.platform.plan_attach(net, ep, c, f"eth{k}", list(wired), self._wiring))
                    wired.append(ep.model_copy(update={"epair": self.platform.endpoint_ifname(ep)}))
                self._apply(plan)
                for ep in wired:
                    self.store.set_epair(ep.id, ep.epair)
                self.store.save_container(c)
                if self.dry_run:
                    self.out(f"# then: {self.platform.start_text(c)}")
                    if not detach:
                        self.out("# and when it exits:")
                        self._stopped(c)
            except BaseException:
                if proc:
                    proc.abort()
                raise
        if self.dry_run:
            return 0
        proc.release()
        if detach:
            self.out(c.id)
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
        with self._change():
            c = self.store.find_container(c.id)
            if c is not None:  # (unless `kleenenet rm -f` removed it meanwhile)
                self._stopped(c)
                if remove:
                    self.store.remove_container(c.id)
        return code

    def _log_path(self, container_id: str):
        """Where a detached container's output goes."""
        return self.store.state_dir / "logs" / f"{container_id}.log"

    def _stopped(self, c: Container) -> None:
        """Take a container whose process is gone off its networks (its addresses stay reserved)."""
        failed = False
        stopping = c.model_copy(update={"running": False})  # only the host side needs undoing
        for ep in self.store.endpoints(container_id=c.id):
            if ep.epair:
                try:
                    self._apply(self.platform.plan_detach(self.store.network(ep.network_id), ep, stopping,
                                                          self._wired_of(c, ep), self._wiring))
                except KleenenetError as e:
                    print(f"kleenenet: {e}", file=sys.stderr)
                    failed = True
                self.store.set_epair(ep.id, None)
        self._apply(self.platform.plan_stop(c))
        self.store.save_container(c.model_copy(update={"running": False, "pid": None, "pid_start": None}))
        if failed:  # something outside kleenenet changed our table: rewrite it from the state
            self.platform.replace_firewall(self.store.networks(), self._wired_endpoints())

    def stop(self, ident: str, timeout: float = 10.0) -> str:
        c = self.store.container(ident)
        if not self.dry_run and c.running:
            self.platform.terminate(c, timeout)
        with self._change():
            self._stopped(self.store.container(c.id))
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
            self.store.remove_container(c.id)
        if not self.dry_run:
            self._log_path(c.id).unlink(missing_ok=True)
        return c.id

    def exec(self, ident: str, cmd: list[str]) -> None:
        if not cmd:
            raise InvalidInput("no command given: kleenenet exec CONTAINER -- CMD [ARGS...]")
        c = self._running_state(self.store.container(ident))
        if not c.running:
            raise Conflict(f"container {c.name!r} is not running")
        self.platform.exec_in(c, cmd)

    # reconcile

    def reconcile(self) -> None:
        """Make the host match the store: rebuild what is missing, remove what nothing owns."""
        with self._change():
            for c in self.store.containers():
                if c.running and self._running_state(c).running is False:
                    for ep in self.store.endpoints(container_id=c.id):
                        self.store.set_epair(ep.id, None)
                    self.store.save_container(c.model_copy(update={"running": False, "pid": None,
                                                                   "pid_start": None}))
            # Interfaces of running containers that vanished are wired again below.
            wired = [(self.store.network(ep.network_id), ep, self.store.container(ep.container_id))
                     for ep in self._wired_endpoints()]
            for ep in self.platform.lost_endpoints(wired):
                self.store.set_epair(ep.id, None)
            running = [c for c in self.store.containers() if c.running]
            self._apply(self.platform.plan_reconcile(self.store.networks(), self._wired_endpoints(), running))
            for c in self.store.containers():
                for ep in self.store.endpoints(container_id=c.id) if c.running else ():
                    if not ep.epair:
                        self._wire(self.store.network(ep.network_id), ep, c)
