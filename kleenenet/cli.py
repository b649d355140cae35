"""The kleenenet command line. Options follow klee's where klee has one."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from functools import cached_property

# kleenenet uses no pydantic plugins; looking for them costs every command ~20 ms.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")

import click  # noqa: E402

from kleenenet.errors import KleenenetError
from kleenenet.model import AUTO, HOST_GATEWAY, NETWORK_DRIVERS, NETWORK_TYPES, check_ifname


class Context:
    def __init__(self, state_dir: str | None, platform: str | None, dry_run: bool):
        self.state_dir = state_dir
        self.platform_name = platform
        self.dry_run = dry_run

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
@click.version_option(package_name="kleenenet")
@click.pass_context
def cli(ctx, state_dir, platform, dry_run):
    """Container network manager for FreeBSD jails and Linux network namespaces."""
    ctx.obj = Context(state_dir, platform, dry_run)


# networks

@cli.group()
def network():
    """Manage networks."""


@network.command("create")
@click.argument("name")
@click.option("-t", "--type", "type_", type=click.Choice(NETWORK_TYPES), default="loopback", show_default=True)
@click.option("--subnet", default="", help="IPv4 subnet, e.g. 10.2.3.0/24.")
@click.option("--subnet6", default="", help="IPv6 subnet, e.g. fd00:2:3::/64.")
@click.option("--gw", default=None, help="IPv4 gateway of a bridge network: '<auto>' (default), an address, or ''.")
@click.option("--gw6", default=None, help="IPv6 gateway of a bridge network: '<auto>' (default), an address, or ''.")
@click.option("-i", "--interface", default="", help="Interface name (default: first free kleeneN).")
@click.option("--nat-if", default=HOST_GATEWAY, show_default=True,
              help="Interface to NAT toward; '<host-gateway>' is the default route's interface.")
@click.option("--no-nat", is_flag=True, help="Do not NAT the network's traffic.")
@click.option("--icc/--no-icc", default=True, show_default=True, help="Allow traffic between its containers.")
@click.option("--internal", is_flag=True, help="No traffic out of the network.")
@dry_run_option
@pass_ctx
def network_create(obj, name, type_, subnet, subnet6, gw, gw6, interface, nat_if, no_nat, icc, internal, dry_run):
    """Create a network."""
    if nat_if not in (HOST_GATEWAY, ""):  # refused even where --no-nat or --internal make it moot
        check_ifname(nat_if)
    net = obj.service(dry_run).create_network(
        name, type_, subnet=subnet, subnet6=subnet6, interface=interface, gateway=gw, gateway6=gw6,
        nat="" if no_nat else nat_if, icc=icc, internal=internal)
    if not (dry_run or obj.dry_run):
        click.echo(net.id)


@network.command("ls")
@json_option
@pass_ctx
def network_ls(obj, as_json):
    """List networks."""
    nets = obj.store.networks()
    if as_json:
        return _print_json([n.model_dump() for n in nets])
    _table([[n.id, n.name, n.type, n.subnet or "-", n.subnet6 or "-", n.interface, n.gateway or "-",
             n.nat or "-"] for n in nets], ["ID", "NAME", "TYPE", "SUBNET", "SUBNET6", "INTERFACE", "GATEWAY", "NAT"])


@network.command("inspect")
@click.argument("network", type=UTF8)
@pass_ctx
def network_inspect(obj, network):
    """Show a network and its endpoints as JSON."""
    _print_json(obj.service().inspect_network(network))


@network.command("rm")
@click.argument("networks", nargs=-1, required=True, type=UTF8)
@dry_run_option
@pass_ctx
def network_rm(obj, networks, dry_run):
    """Remove networks that have no containers."""
    for n in networks:
        nid = obj.service(dry_run).remove_network(n)
        if not (dry_run or obj.dry_run):
            click.echo(nid)


@network.command("prune")
@dry_run_option
@pass_ctx
def network_prune(obj, dry_run):
    """Remove every network without containers."""
    for nid in obj.service(dry_run).prune_networks():
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
    obj.service(dry_run).connect(container, network, ip, ip6)


@network.command("disconnect")
@click.argument("network", type=UTF8)
@click.argument("container", type=UTF8)
@dry_run_option
@pass_ctx
def network_disconnect(obj, network, container, dry_run):
    """Disconnect a container from a network (also while it runs)."""
    obj.service(dry_run).disconnect(container, network)


# containers

@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("-l", "--driver", type=click.Choice(NETWORK_DRIVERS), default=None,
              help="Network driver (default: ipnet with -n, else host).")
@click.option("-n", "--network", "networks", multiple=True, type=UTF8, help="Network to connect to (repeatable).")
@click.option("--ip", default=AUTO, help="Static IPv4 address on the network.")
@click.option("--ip6", default=AUTO, help="Static IPv6 address on the network.")
@click.option("--name", default=None, help="Container name (default: c + the id's start).")
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id.")
@click.option("--rm", "remove", is_flag=True, help="Remove the container when its command exits.")
@click.option("-J", "--jail-param", "jail_params", multiple=True,
              help="Extra jail(8) parameter KEY=VALUE or KEY, e.g. allow.raw_sockets (FreeBSD; repeatable).")
@click.option("--path", default=None, help="Root directory of the jail (FreeBSD; default /).")
@dry_run_option
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def run(obj, driver, networks, ip, ip6, name, detach, remove, jail_params, path, dry_run, cmd):
    """Run CMD in a new container: kleenenet run [OPTIONS] -- CMD [ARGS...]"""
    if path is not None:
        jail_params += (f"path={path}",)
    code = obj.service(dry_run).run(_command(cmd), name=name, driver=driver, networks=networks, ip=ip, ip6=ip6,
                                    detach=detach, remove=remove, jail_params=jail_params)
    sys.exit(code)


@cli.command("exec", context_settings={"allow_interspersed_args": False})
@click.argument("container", type=UTF8)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def exec_(obj, container, cmd):
    """Run CMD inside a running container: kleenenet exec CONTAINER -- CMD [ARGS...]"""
    obj.service().exec(container, _command(cmd))


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Also show stopped containers.")
@json_option
@pass_ctx
def ps(obj, all_, as_json):
    """List containers."""
    svc = obj.service()
    shown = [c for c in svc.containers() if all_ or c.running]
    if as_json:
        return _print_json([c.model_dump() for c in shown])
    rows = []
    for c in shown:
        nets = [obj.store.network(ep.network_id).name for ep in obj.store.endpoints(container_id=c.id)]
        rows.append([c.id, c.name, c.network_driver, "running" if c.running else "stopped",
                     ",".join(nets) or "-", textwrap.shorten(shlex.join(c.cmd), 40)])
    _table(rows, ["ID", "NAME", "DRIVER", "STATUS", "NETWORKS", "COMMAND"])


@cli.command()
@click.argument("containers", nargs=-1, required=True, type=UTF8)
@click.option("-t", "--time", "timeout", default=10.0, show_default=True, help="Seconds before SIGKILL.")
@dry_run_option
@pass_ctx
def stop(obj, containers, timeout, dry_run):
    """Stop running containers (SIGTERM, then SIGKILL)."""
    for c in containers:
        cid = obj.service(dry_run).stop(c, timeout)
        if not (dry_run or obj.dry_run):
            click.echo(cid)


@cli.command()
@click.argument("containers", nargs=-1, required=True, type=UTF8)
@click.option("-f", "--force", is_flag=True, help="Stop running containers first.")
@dry_run_option
@pass_ctx
def rm(obj, containers, force, dry_run):
    """Remove containers and release their addresses."""
    for c in containers:
        cid = obj.service(dry_run).remove(c, force)
        if not (dry_run or obj.dry_run):
            click.echo(cid)


@cli.command()
@click.argument("container", type=UTF8)
@pass_ctx
def inspect(obj, container):
    """Show a container and its endpoints as JSON."""
    _print_json(obj.service().inspect_container(container))


@cli.command()
@dry_run_option
@pass_ctx
def reconcile(obj, dry_run):
    """Make the host match the state: recreate what is missing, remove kleenenet's leftovers."""
    obj.service(dry_run).reconcile()


@cli.command()
@pass_ctx
def doctor(obj):
    """Check that the host is ready for kleenenet; print what to change where it is not."""
    found = obj.platform.doctor(obj.store.networks())
    for check in found:
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[check.ok]
        click.echo(f"{mark}  {check.what}")
        if check.advice:
            click.echo(f"      -> {check.advice}")
    sys.exit(1 if any(c.ok is False for c in found) else 0)


def main() -> None:
    cli(prog_name="kleenenet")
