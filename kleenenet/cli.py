"""The kleenenet command line. Options follow klee's where klee has one.

A command imports what it uses when it runs: the state and the service (pydantic), the platform
(pyroute2, nftables), or with --host only the daemon's client (kleenenet.api.client: a socket, and
aiohttp for the WebSocket of run and exec). `--help` loads none of them."""

from __future__ import annotations

import json
import os
import sys
from functools import cached_property

# kleenenet uses no pydantic plugins; looking for them costs every command ~20 ms.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")

import click  # noqa: E402
from click.core import ParameterSource  # noqa: E402

from kleenenet.errors import Conflict, InvalidInput, KleenenetError  # noqa: E402
from kleenenet.vocabulary import AUTO, HOST_GATEWAY, NETWORK_DRIVERS, NETWORK_TYPES  # noqa: E402

# What only acts on this machine; everything else is sent to the daemon with --host.
LOCAL_ONLY = "reconcile, doctor, image add and daemon act on this machine and refuse --host"


class Context:
    def __init__(self, state_dir: str | None, platform: str | None, dry_run: bool, host: str | None = None,
                 host_from_env: bool = False):
        self.state_dir = state_dir
        self.platform_name = platform
        self.dry_run = dry_run
        self.host = host
        self.host_from_env = host_from_env

    def daemon(self, dry_run: bool = False):
        """The daemon to send the command to (--host), or None: the command acts here."""
        if not self.host:
            return None
        if dry_run or self.dry_run:
            raise InvalidInput("--dry-run does not work with --host: the daemon has no dry run")
        return self.remote

    @cached_property
    def remote(self):
        from kleenenet.api.client import Remote

        return Remote(self.host)

    def local(self, command: str) -> None:
        """Refuse --host for a command that only acts on this machine."""
        if self.host:
            where = "KLEENENET_HOST is set" if self.host_from_env else f"--host {self.host} is given"
            raise InvalidInput(f"{command} acts on this machine and takes no --host ({where})")

    @cached_property
    def store(self):
        import sqlite3

        from kleenenet.store import Store, default_state_dir

        path = self.state_dir or default_state_dir()
        try:
            return Store(path)
        except (OSError, sqlite3.Error) as e:
            raise KleenenetError(f"cannot open the state in {path}: {getattr(e, 'strerror', None) or e}") from None

    @cached_property
    def platform(self):
        from kleenenet.platform import get_platform

        return get_platform(self.platform_name)

    def new_service(self):
        """A service with a store connection and platform of its own (one per daemon worker)."""
        from kleenenet.platform import get_platform
        from kleenenet.service import Service
        from kleenenet.store import Store, default_state_dir

        return Service(Store(self.state_dir or default_state_dir()), get_platform(self.platform_name),
                       out=lambda _: None)

    def service(self, dry_run: bool = False):
        from kleenenet.service import Service

        return Service(self.store, _Deferred(lambda: self.platform), dry_run=dry_run or self.dry_run,
                       out=click.echo)


class _Deferred:
    """Creates the platform on first use: read-only commands never load netlink."""

    def __init__(self, factory):
        self._factory = factory

    def __getattr__(self, name):
        return getattr(self._factory(), name)


# A value may hold any character; the message stays on one line whatever it holds.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}
# `kleenenet network` alone shows the group's help, as click does (not in click < 8.2).
_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _fail(message: str, code: int = 1):
    click.echo(f"kleenenet: {message.strip().translate(_LINE_BREAKS)}", err=True)
    sys.exit(code)


def _usage_error(e: click.ClickException):
    """click's usage errors as one line too (click prints usage, a hint and the error on four)."""
    if isinstance(e, _SHOWS_HELP):
        raise e
    message = e.format_message().rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(e, "ctx", None)
    _fail(f"{message} (see '{ctx.command_path} --help')" if ctx else message, e.exit_code)


class KleenenetGroup(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:
            _usage_error(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)  # parses the subcommand's arguments, too
        except KleenenetError as e:
            _fail(str(e))
        except click.ClickException as e:
            _usage_error(e)


class _Utf8(click.ParamType):
    """The name or id of something in the state. argv may carry bytes that are not UTF-8 (Python
    keeps them as lone surrogates); nothing kleenenet stores is named so, and SQLite refuses them."""

    name = "text"

    def convert(self, value, param, ctx):
        try:
            value.encode()
        except UnicodeEncodeError:
            self.fail(f"{value!r} is not valid UTF-8", param, ctx)
        return value


UTF8 = _Utf8()
pass_ctx = click.make_pass_decorator(Context)
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _command(args: tuple[str, ...]) -> list[str]:
    """The command after an optional `--` separator."""
    return list(args[1:] if args[:1] == ("--",) else args)


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def _path(*parts: str) -> str:
    from kleenenet.api.client import path_of

    return path_of(*parts)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _exit_with(code: int | None) -> None:
    """The exit code of a command that ran through the daemon; 1 when the daemon did not learn it."""
    sys.exit(1 if code is None else code)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


@click.group(cls=KleenenetGroup)
@click.option("--state-dir", envvar="KLEENENET_STATE_DIR", type=click.Path(file_okay=False),
              help="State directory [env KLEENENET_STATE_DIR; /var/lib/kleenenet on Linux].")
@click.option("--platform", type=click.Choice(["linux", "freebsd"]), default=None,
              help="Platform to plan for (default: this machine's).")
@click.option("--dry-run", is_flag=True, help="Print the plan of a changing command; change nothing.")
@click.option("-H", "--host", envvar="KLEENENET_HOST", default=None, metavar="URL",
              help="Send the command to the daemon at URL: unix:///run/kleenenet.sock, http:///PATH (a "
                   f"socket, as klee writes it) or http://127.0.0.1:PORT [env KLEENENET_HOST]. {LOCAL_ONLY}.")
@click.version_option(package_name="kleenenet")
@click.pass_context
def cli(ctx, state_dir, platform, dry_run, host):
    """Container network manager for FreeBSD jails and Linux network namespaces."""
    if host:
        for name in ("state_dir", "platform"):
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                raise InvalidInput(f"--{name.replace('_', '-')} does not work with --host: the daemon has its own")
    ctx.obj = Context(state_dir, platform, dry_run, host or None,
                      ctx.get_parameter_source("host") is ParameterSource.ENVIRONMENT)


# networks

@cli.group()
def network():
    """Manage networks."""


@network.command("create")
@click.argument("name")
@click.option("-t", "--type", "type_", type=click.Choice(NETWORK_TYPES), default="loopback", show_default=True)
@click.option("--subnet", default="", help="IPv4 subnet, e.g. 10.2.3.0/24.")
@click.option("--subnet6", default="", help="IPv6 subnet, e.g. fd00:2:3::/64, or 'auto': a unique local /64 "
              "(only where the host has IPv6).")
@click.option("--gw", default=None, help="IPv4 gateway: of a bridge network '<auto>' (default), an address, or ''; "
              "of a custom network the LAN's router (default: none).")
@click.option("--gw6", default=None, help="IPv6 gateway, as --gw.")
@click.option("-i", "--interface", default="", help="Interface name (default: first free kleeneN); of a custom "
              "network the existing bridge or NIC it is on.")
@click.option("--ip-range", default="", metavar="CIDR", help="Hand out IPv4 addresses only inside this part of "
              "the subnet (on a LAN: clear of its DHCP pool).")
@click.option("--ip-range6", default="", metavar="CIDR", help="The same for IPv6.")
@click.option("--force", is_flag=True, help="Custom network: take the subnet even if the interface has no "
              "address in it.")
@click.option("--nat-if", default=HOST_GATEWAY, show_default=True,
              help="Interface to NAT toward; '<host-gateway>' is the default route's interface.")
@click.option("--no-nat", is_flag=True, help="Do not NAT the network's traffic.")
@click.option("--icc/--no-icc", default=True, show_default=True, help="Allow traffic between its containers.")
@click.option("--internal", is_flag=True, help="No traffic out of the network.")
@click.option("--ipv6-nat/--no-ipv6-nat", "nat6", default=True, show_default=True,
              help="Masquerade IPv6 toward the NAT interface too; without, the subnet6 is routed (the "
                   "upstream must route it to this host).")
@click.option("--mtu", type=int, default=None, help="MTU of the network's interfaces (default: the egress interface's).")
@dry_run_option
@pass_ctx
def network_create(obj, name, type_, subnet, subnet6, gw, gw6, interface, ip_range, ip_range6, force, nat_if,
                   no_nat, icc, internal, nat6, mtu, dry_run):
    """Create a network."""
    if nat_if not in (HOST_GATEWAY, ""):  # refused even where --no-nat or --internal make it moot
        from kleenenet.model import check_ifname

        check_ifname(nat_if)
    nat = "" if no_nat else nat_if
    daemon = obj.daemon(dry_run)
    if daemon:
        def gateway(value, subnet):  # the API says '<auto>' where the command line leaves it out
            return value if value is not None else AUTO if type_ == "bridge" and subnet else ""
        click.echo(daemon.call("POST", "/networks/create", {
            "name": name, "type": type_, "subnet": subnet, "subnet6": subnet6, "interface": interface,
            "gateway": gateway(gw, subnet), "gateway6": gateway(gw6, subnet6), "nat": nat, "icc": icc,
            "internal": internal, "mtu": mtu, "nat6": nat6, "ip_range": ip_range, "ip_range6": ip_range6,
            "force": force})["id"])
        return
    net = obj.service(dry_run).create_network(
        name, type_, subnet=subnet, subnet6=subnet6, interface=interface, gateway=gw, gateway6=gw6,
        nat=nat, icc=icc, internal=internal, mtu=mtu, nat6=nat6, ip_range=ip_range, ip_range6=ip_range6,
        force=force)
    if not (dry_run or obj.dry_run):
        click.echo(net.id)


@network.command("ls")
@json_option
@pass_ctx
def network_ls(obj, as_json):
    """List networks."""
    daemon = obj.daemon()
    nets = daemon.call("GET", "/networks/list") if daemon else [n.model_dump() for n in obj.store.networks()]
    if as_json:
        return _print_json(nets)
    _table([[n["id"], n["name"], n["type"], n["subnet"] or "-", n["subnet6"] or "-", n["interface"],
             n["gateway"] or "-", n["nat"] or "-"] for n in nets],
           ["ID", "NAME", "TYPE", "SUBNET", "SUBNET6", "INTERFACE", "GATEWAY", "NAT"])


@network.command("inspect")
@click.argument("network", type=UTF8)
@pass_ctx
def network_inspect(obj, network):
    """Show a network and its endpoints as JSON."""
    daemon = obj.daemon()
    _print_json(daemon.call("GET", _path("networks", network, "inspect")) if daemon
                else obj.service().inspect_network(network))


@network.command("rm")
@click.argument("networks", nargs=-1, required=True, type=UTF8)
@dry_run_option
@pass_ctx
def network_rm(obj, networks, dry_run):
    """Remove networks that have no containers."""
    daemon = obj.daemon(dry_run)
    for n in networks:
        nid = _remove_network(daemon, n) if daemon else obj.service(dry_run).remove_network(n)
        if not (dry_run or obj.dry_run):
            click.echo(nid)


def _remove_network(daemon, ident: str) -> str:
    """The API disconnects a network's containers before removing it (as Kleene's does); the
    command line refuses a network with containers, through the daemon too."""
    found = daemon.call("GET", _path("networks", ident, "inspect"))
    net, users = found["network"], found["network_endpoints"]
    if users:
        names = {c["id"]: c["name"] for c in daemon.call("GET", "/containers/list?all=true")}
        listed = ", ".join(sorted(names.get(ep["container_id"], ep["container_id"]) for ep in users))
        raise Conflict(f"network {net['name']!r} has connected containers ({listed}): disconnect them first")
    return daemon.call("DELETE", _path("networks", net["id"]))["id"]


@network.command("prune")
@dry_run_option
@pass_ctx
def network_prune(obj, dry_run):
    """Remove every network without containers."""
    daemon = obj.daemon(dry_run)
    for nid in daemon.call("POST", "/networks/prune") if daemon else obj.service(dry_run).prune_networks():
        if not (dry_run or obj.dry_run):
            click.echo(nid)


@network.command("connect")
@click.argument("network", type=UTF8)
@click.argument("container", type=UTF8)
@click.option("--ip", default=AUTO, help="Static IPv4 address (default: next free).")
@click.option("--ip6", default=AUTO, help="Static IPv6 address (default: next free).")
@dry_run_option
@pass_ctx
def network_connect(obj, network, container, ip, ip6, dry_run):
    """Connect a container to a network (also while it runs)."""
    daemon = obj.daemon(dry_run)
    if daemon:
        daemon.call("POST", "/networks/connect", {"container": container, "network": network,
                                                  "ip_address": ip, "ip_address6": ip6})
    else:
        obj.service(dry_run).connect(container, network, ip, ip6)


@network.command("disconnect")
@click.argument("network", type=UTF8)
@click.argument("container", type=UTF8)
@dry_run_option
@pass_ctx
def network_disconnect(obj, network, container, dry_run):
    """Disconnect a container from a network (also while it runs)."""
    daemon = obj.daemon(dry_run)
    if daemon:
        daemon.call("POST", _path("networks", network, "disconnect", container))
    else:
        obj.service(dry_run).disconnect(container, network)


# containers

class OrderedOptions(click.Command):
    """A command that also records the order its options were given in (ctx.meta["order"]):
    `run`'s --ip and --ip6 apply to the -n before them."""

    def parse_args(self, ctx, args):
        _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        ctx.meta["order"] = [param.name for param in order]
        return super().parse_args(ctx, args)


def _per_network(order: list[str], networks: tuple[str, ...], ips: tuple[str, ...],
                 ip6s: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """(network, ip, ip6) for each -n: each --ip/--ip6 belongs to the -n before it (with one -n,
    wherever it is given)."""
    if not networks and (ips or ip6s):
        raise InvalidInput("--ip/--ip6 need a -n NETWORK")
    chosen = [[n, AUTO, AUTO] for n in networks]
    values = {"ips": ("--ip", 1, iter(ips)), "ip6s": ("--ip6", 2, iter(ip6s))}
    seen = -1
    for name in order:
        if name == "networks":
            seen += 1
        elif name in values:
            option, column, given = values[name]
            value = next(given)
            at = 0 if len(networks) == 1 else seen
            if at < 0:
                raise InvalidInput(f"{option} {value!r} comes before any -n: give it after the -n it is for")
            if chosen[at][column] != AUTO:
                raise InvalidInput(f"{option} is given twice for network {networks[at]!r}")
            chosen[at][column] = value
    return tuple(map(tuple, chosen))


@cli.command(cls=OrderedOptions, context_settings={"allow_interspersed_args": False})
@click.option("-l", "--driver", default=None, metavar="DRIVER",
              help=f"Network driver: {', '.join(NETWORK_DRIVERS)}, none (= disabled), or pasta:OPT,OPT... "
                   "(default: vnet on the private network without -n, ipnet with -n).")
@click.option("-n", "--network", "networks", multiple=True, type=UTF8,
              help="Network to connect to (repeatable); 'private': the default network, created on first "
                   "use; 'host' and 'none': the host and disabled drivers.")
@click.option("--ip", "ips", multiple=True, help="Static IPv4 address on the -n before it (default: next free).")
@click.option("--ip6", "ip6s", multiple=True, help="Static IPv6 address on the -n before it (default: next free).")
@click.option("-p", "--publish", multiple=True, metavar="[IFACE:]HOST[:CTR][/tcp|udp]",
              help="Publish a port or a range LOW-HIGH (repeatable); no IFACE: the network's NAT interface.")
@click.option("--dns", multiple=True, metavar="ADDR", help="Nameserver for the container (repeatable; default: the host's).")
@click.option("--name", default=None, help="Container name (default: c + the id's start).")
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id.")
@click.option("--rm", "remove", is_flag=True, help="Remove the container when its command exits.")
@click.option("-J", "--jail-param", "jail_params", multiple=True,
              help="Extra jail(8) parameter KEY=VALUE or KEY, e.g. allow.raw_sockets (FreeBSD; repeatable).")
@click.option("--image", default=None, type=UTF8,
              help="Image whose root the container has (see 'image ls'; with --host the default is FreeBSD, "
                   "the host's root).")
@click.option("--path", default=None, help="Root directory of the container (default /: the host's; not with --host).")
@dry_run_option
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def run(obj, driver, networks, ips, ip6s, publish, dns, name, detach, remove, jail_params, image, path, dry_run, cmd):
    """Run CMD in a new container: kleenenet run [OPTIONS] -- CMD [ARGS...]

    With --host the output comes through the daemon (stdout and stderr together, no input), and
    Ctrl-C leaves the container running (a --rm one is removed)."""
    from kleenenet.vocabulary import check_nameserver, command_line_networks, parse_driver, parse_publish

    driver, options = parse_driver(driver) if driver is not None else (None, [])
    networks = _per_network(click.get_current_context().meta["order"], networks, ips, ip6s)
    daemon = obj.daemon(dry_run)
    service = None if daemon else obj.service(dry_run)
    # Without root, the private default is user-mode networking where the platform has it.
    driver, networks = command_line_networks(driver, networks, service is not None and service.rootless
                                             and "pasta" in service.platform.rootless_drivers)
    ports = [parse_publish(spec) for spec in publish]
    dns = [check_nameserver(addr) for addr in dns]
    if daemon:
        if path is not None:
            raise InvalidInput("--path does not work with --host: give an --image")
        try:
            cid, code = daemon.run(_command(cmd), name, driver, networks, ports, dns, detach, remove, jail_params,
                                   image, out=_write, network_options=options)
        except KeyboardInterrupt:
            sys.exit(130)
        if detach:
            click.echo(cid)
            sys.exit(0)
        _exit_with(code)
    code = service.run(_command(cmd), name=name, driver=driver, networks=networks, public_ports=ports, dns=dns,
                       detach=detach, remove=remove, jail_params=jail_params, image=image, path=path,
                       network_options=options)
    sys.exit(code)


@cli.command("exec", context_settings={"allow_interspersed_args": False})
@click.argument("container", type=UTF8)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def exec_(obj, container, cmd):
    """Run CMD inside a running container: kleenenet exec CONTAINER -- CMD [ARGS...]

    With --host the output comes through the daemon (stdout and stderr together, no input)."""
    daemon = obj.daemon()
    if daemon:
        try:
            code = daemon.exec(container, _command(cmd), out=_write)
        except KeyboardInterrupt:
            sys.exit(130)
        _exit_with(code)
    obj.service().exec(container, _command(cmd))


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Also show stopped containers.")
@json_option
@pass_ctx
def ps(obj, all_, as_json):
    """List containers. With --host, --json shows the daemon's list (Kleene's fields)."""
    import shlex
    import textwrap

    daemon = obj.daemon()
    if daemon:
        shown = daemon.call("GET", f"/containers/list?all={'true' if all_ else 'false'}")
        if as_json:
            return _print_json(shown)
        names = {n["id"]: n["name"] for n in daemon.call("GET", "/networks/list")}
        nets = {}
        for c in shown:
            try:
                eps = daemon.call("GET", _path("containers", c["id"], "inspect"))["container_endpoints"]
            except KleenenetError:  # removed meanwhile
                eps = []
            nets[c["id"]] = [names.get(ep["network_id"], ep["network_id"]) for ep in eps]
    else:
        containers = [c for c in obj.service().containers() if all_ or c.running]
        if as_json:
            return _print_json([c.model_dump() for c in containers])
        shown = [c.model_dump() for c in containers]
        nets = {c.id: [obj.store.network(ep.network_id).name for ep in obj.store.endpoints(container_id=c.id)]
                for c in containers}
    def ports(c):  # as -p takes them: [IFACE:]HOST:CTR/PROTO
        return ",".join(":".join([*p["interfaces"][:1], p["host_port"], p["container_port"]]) + "/" + p["protocol"]
                        for p in c.get("public_ports", [])) or "-"

    _table([[c["id"], c["name"], c["network_driver"], "running" if c["running"] else "stopped",
             ",".join(nets[c["id"]]) or "-", ports(c), textwrap.shorten(shlex.join(c["cmd"]), 40)] for c in shown],
           ["ID", "NAME", "DRIVER", "STATUS", "NETWORKS", "PORTS", "COMMAND"])


@cli.command()
@click.argument("containers", nargs=-1, required=True, type=UTF8)
@click.option("-t", "--time", "timeout", default=10.0, show_default=True,
              help="Seconds before SIGKILL (not with --host: the daemon waits 10).")
@dry_run_option
@pass_ctx
def stop(obj, containers, timeout, dry_run):
    """Stop running containers (SIGTERM, then SIGKILL)."""
    daemon = obj.daemon(dry_run)
    if daemon and click.get_current_context().get_parameter_source("timeout") is not ParameterSource.DEFAULT:
        raise InvalidInput("-t does not work with --host: the daemon gives a container 10 seconds")
    for c in containers:
        cid = daemon.call("POST", _path("containers", c, "stop"))["id"] if daemon else obj.service(dry_run).stop(c, timeout)
        if not (dry_run or obj.dry_run):
            click.echo(cid)


@cli.command()
@click.argument("containers", nargs=-1, required=True, type=UTF8)
@click.option("-f", "--force", is_flag=True, help="Stop running containers first.")
@dry_run_option
@pass_ctx
def rm(obj, containers, force, dry_run):
    """Remove containers and release their addresses."""
    daemon = obj.daemon(dry_run)
    for c in containers:
        if daemon:
            if force:
                daemon.call("POST", _path("containers", c, "stop"))
            cid = daemon.call("DELETE", _path("containers", c))["id"]
        else:
            cid = obj.service(dry_run).remove(c, force)
        if not (dry_run or obj.dry_run):
            click.echo(cid)


@cli.command()
@click.argument("container", type=UTF8)
@pass_ctx
def inspect(obj, container):
    """Show a container and its endpoints as JSON."""
    daemon = obj.daemon()
    _print_json(daemon.call("GET", _path("containers", container, "inspect")) if daemon
                else obj.service().inspect_container(container))


@cli.command()
@dry_run_option
@pass_ctx
def reconcile(obj, dry_run):
    """Make the host match the state: recreate what is missing, remove kleenenet's leftovers."""
    obj.local("reconcile")
    obj.service(dry_run).reconcile()


# images

@cli.group()
def image():
    """Manage images: the roots containers are made from."""


@image.command("add")
@click.argument("name", type=UTF8)
@click.argument("source", type=UTF8)
@dry_run_option
@pass_ctx
def image_add(obj, name, source, dry_run):
    """Add image NAME[:TAG] whose root is the directory SOURCE (FreeBSD: or a ZFS snapshot
    POOL/DATASET@SNAPSHOT, cloned for each container)."""
    obj.local("image add")
    img = obj.service(dry_run).add_image(name, source)
    if not (dry_run or obj.dry_run):
        click.echo(img.id)


@image.command("ls")
@json_option
@pass_ctx
def image_ls(obj, as_json):
    """List images. With --host, --json shows the daemon's list (Kleene's fields)."""
    daemon = obj.daemon()
    if daemon:
        images = [{**img, "snapshot": img["dataset"]} for img in daemon.call("GET", "/images/list")]
    else:
        images = [img.model_dump() for img in obj.store.images()]
    if as_json:
        return _print_json(images)
    _table([[img["id"], img["name"], img["tag"], img["root"] or img["snapshot"], img["created"]] for img in images],
           ["ID", "NAME", "TAG", "ROOT", "CREATED"])


@image.command("rm")
@click.argument("images", nargs=-1, required=True, type=UTF8)
@dry_run_option
@pass_ctx
def image_rm(obj, images, dry_run):
    """Remove images no container uses."""
    daemon = obj.daemon(dry_run)
    for ident in images:
        image_id = daemon.call("DELETE", _path("images", ident))["id"] if daemon else obj.service(dry_run).remove_image(ident)
        if not (dry_run or obj.dry_run):
            click.echo(image_id)


# the daemon

@cli.command()
@click.option("--socket", "socket_path", default=None,
              help="Unix socket to serve [default /run/kleenenet.sock; FreeBSD /var/run/kleened.sock].")
@click.option("--listen", default=None, help="Also serve on a loopback TCP address, e.g. 127.0.0.1:8085.")
@pass_ctx
def daemon(obj, socket_path, listen):
    """Serve Kleene's API (klee works against it); reconcile first. SIGTERM stops serving and
    leaves running containers alone."""
    import asyncio

    from kleenenet.api.daemon import default_socket, serve

    obj.local("daemon")
    if obj.dry_run:
        raise KleenenetError("the daemon has no --dry-run")
    path = socket_path or default_socket()
    obj.store  # a state that cannot be opened is said here, once
    asyncio.run(serve(obj.new_service, path, listen,
                      ready=lambda: click.echo(f"kleenenet: serving {path}", err=True)))


@cli.command()
@pass_ctx
def doctor(obj):
    """Check that the host is ready for kleenenet; print what to change where it is not."""
    obj.local("doctor")
    found = obj.platform.doctor(obj.store.networks())
    for check in found:
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[check.ok]
        click.echo(f"{mark}  {check.what}")
        if check.advice:
            click.echo(f"      -> {check.advice}")
    sys.exit(1 if any(c.ok is False for c in found) else 0)


def main() -> None:
    cli(prog_name="kleenenet")
