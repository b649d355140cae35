"""Every input surface of the CLI fuzzed: bad input gets one line naming the value, a non-zero
exit, no traceback, and leaves host and state exactly as they were.

A CLI process costs ~250 ms, so the CLI runs in this process instead (click's `main`, as
`python -m kleenenet` calls it), for real: the Linux platform, the world's SQLite store, inside the
world's host namespace. The generators stay on the invalid side (each case carries at least one
value that must be refused), because "nothing changed" is what is checked.
"""

from __future__ import annotations

import functools
import gc
import io
import ipaddress
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyroute2 import IPRoute

from kleenenet import cli
from kleenenet.model import IFNAME_RE, NAME_RE
from kleenenet.platform.linux.firewall import Nft
from kleenenet.platform.linux.namespaces import entered_netns
from tests.linux.world import World, comparable_ruleset

# The realistic state every case runs against (see `fuzz_world`).
BR4, BR6 = "10.2.3.0/24", "fd00:3::/64"  # bridge `br`: gateways .1 and ::1; `up` runs on it
LO4, LO6 = "10.2.4.0/24", "fd00:4::/64"  # loopback `lo`: `down` (stopped) holds .1 and ::1
TAKEN = ("10.2.3.1", "fd00:3::1", "10.2.3.2", "fd00:3::2", "10.2.4.1", "fd00:4::1")
USED_SUBNETS = [BR4, BR6, LO4, LO6, "192.0.2.0/24", "2001:db8:1::/64"]  # the last two: the uplink's
NETWORKS, CONTAINERS = ("br", "lo"), ("up", "down", "solo")
FRESH4, FRESH6 = "10.9.0.0/24", "fd00:9::/64"  # what a new network could validly use

CHECK_HOST_EVERY = 50  # cases between in-process host comparisons (each test also ends with one)

settings.register_profile(
    "fuzz", deadline=None, database=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large])
FUZZ = settings.get_profile("fuzz")


# KLEENENET_FUZZ_SCALE=0.1 runs a tenth of the cases (a quick look; the suite runs them all)
SCALE = float(os.environ.get("KLEENENET_FUZZ_SCALE", "1"))


def fuzz(n: int):
    return settings(FUZZ, max_examples=max(1, round(n * SCALE)))


# --- running the CLI in this process ---------------------------------------------------------

@dataclass
class Result:
    code: object
    out: str
    err: str


def _stream() -> io.TextIOWrapper:
    # what a process's stderr is: UTF-8, undecodable argv bytes written as \udcXX escapes
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    return stream.buffer.getvalue().decode("utf-8")


class Cli:
    """`kleenenet ARGV` in this process and thread, inside the world's host namespace. Each call
    builds a fresh Context, hence a fresh platform: every netlink or nft socket kleenenet opens is
    created inside the namespace block."""

    def __init__(self, world: World):
        self.ns = f"/run/netns/{world.host}"
        self.global_args = ["--state-dir", str(world.state_dir)]
        self.calls = 0

    def __call__(self, argv: list[str]) -> Result:
        out, err = _stream(), _stream()
        saved = sys.stdout, sys.stderr, sys.stdin
        code: object = "returned"
        own_ns = os.readlink("/proc/thread-self/ns/net")
        with entered_netns(self.ns):
            sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO()
            try:
                cli.cli.main(args=[*self.global_args, *argv], prog_name="kleenenet")
            except SystemExit as e:
                code = e.code
            except BaseException:  # what an uncaught exception prints: the traceback
                traceback.print_exc()
                code = "traceback"
            finally:
                sys.stdout, sys.stderr, sys.stdin = saved
        assert os.readlink("/proc/thread-self/ns/net") == own_ns  # back in our own namespace
        self.calls += 1
        if self.calls % 200 == 0:
            gc.collect()  # kleenenet leaves closing its sockets to the end of its process
        return Result(code, _text(out), _text(err))


# --- what must not change ------------------------------------------------------------------

class Host:
    """The host namespace as kleenenet could change it, read in-process (netlink, libnftables)."""

    def __init__(self, world: World):
        self.ns = f"/run/netns/{world.host}"
        with entered_netns(self.ns):
            self.nft = Nft()  # its socket belongs to the host namespace

    def state(self) -> dict:
        with entered_netns(self.ns), IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            links = sorted((link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_GROUP"),
                            names.get(link.get_attr("IFLA_MASTER")), link["flags"] & 1)
                           for link in ipr.get_links())
            addrs = sorted((names[a["index"]], a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr()
                           if not a.get_attr("IFA_ADDRESS").startswith("fe80:"))
            routes = sorted((r["family"], str(r.get_attr("RTA_DST")), r["dst_len"], names.get(r.get_attr("RTA_OIF")),
                             str(r.get_attr("RTA_GATEWAY"))) for r in ipr.get_routes(table=254)
                            if not str(r.get_attr("RTA_DST")).startswith(("fe80:", "ff")))
            nft = comparable_ruleset(self.nft.run("list ruleset"))
            forwarding = [open(f"/proc/sys/net/{k}").read() for k in ("ipv4/ip_forward", "ipv6/conf/all/forwarding")]
        return {"links": links, "addrs": addrs, "routes": routes, "nft": nft, "forwarding": forwarding}


class Checker:
    """Runs a case, checks it was refused properly and that nothing changed."""

    def __init__(self, world: World, ids: dict[str, list[str]]):
        self.world, self.ids = world, ids
        self.run = Cli(world)
        self.host = Host(world)
        self.store_before = world.store_dump()
        self.host_before = self.host.state()
        self.recent: list[list[str]] = []
        self.cases = 0
        self.per_test: dict[str, int] = {}

    def refused(self, argv: list[str], *offending: str) -> None:
        """`argv` must fail with one line that names one of `offending` and change nothing."""
        self.cases += 1
        test = os.environ.get("PYTEST_CURRENT_TEST", "?::?").split("::", 1)[1].split("[")[0].split(" ")[0]
        self.per_test[test] = self.per_test.get(test, 0) + 1
        self.recent = (self.recent + [argv])[-CHECK_HOST_EVERY:]
        r = self.run(argv)
        assert "Traceback" not in r.err, r.err
        assert r.code not in (0, None, "returned"), (r.code, r.out, r.err)
        lines = r.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("kleenenet: ") and r.err.endswith("\n"), r.err
        assert r.out == "", r.out
        assert any(m in lines[0] for value in offending for m in markers(value)), (lines[0], offending)
        assert self.world.store_dump() == self.store_before, argv
        if self.cases % CHECK_HOST_EVERY == 0:
            self.check_host()

    def check_host(self) -> None:
        assert self.host.state() == self.host_before, f"the host changed during one of {self.recent}"

    def resolves(self, ident: str, kind: str) -> bool:
        """Whether kleenenet would find a network/container by this name, id or id prefix."""
        names = NETWORKS if kind == "network" else CONTAINERS
        return ident in names or (ident != "" and any(i.startswith(ident) for i in self.ids[kind]))


def usable_nameserver(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or "%" in value)


def markers(value: str) -> set[str]:
    """The ways an error message may name `value`: as given, quoted, escaped, or normalised."""
    forms = {repr(value), repr(value)[1:-1].replace("\\'", "'")}
    if len(value.strip()) < 3 or not any(ch.isalnum() for ch in value):
        forms = {repr(value), f'"{value}"'}  # too short or too plain to be recognised unquoted
    for parse in (ipaddress.ip_address, lambda v: ipaddress.ip_network(v, strict=False)):
        try:
            forms.add(str(parse(value)))
        except ValueError:
            pass
    return forms


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.fail("the Linux integration tests need root and nftables (see README)")
    world = World(tmp_path_factory.mktemp("fuzz"))
    try:
        world.kn("network", "create", "-t", "bridge", "--subnet", BR4, "--subnet6", BR6, "br")
        world.kn("network", "create", "--subnet", LO4, "--subnet6", LO6, "lo")
        world.kn("run", "-d", "--name", "up", "-n", "br", "--", "sleep", "600")
        world.kn("run", "--name", "down", "-n", "lo", "--", "true")
        world.kn("run", "--name", "solo", "-l", "disabled", "--", "true")
        ids = {"network": [n["id"] for n in world.kn_json("network", "ls", "--json")],
               "container": [c["id"] for c in world.kn_json("ps", "-a", "--json")]}
        full_before = world.snapshot()
        c = Checker(world, ids)
        started = time.monotonic()
        yield c
        c.check_host()
        assert world.snapshot() == full_before
        print(f"\n{c.cases} fuzz cases in {time.monotonic() - started:.1f} s: {c.per_test}")
    finally:
        world.destroy()


# --- strategies ------------------------------------------------------------------------------

ODD = ["", " ", ".", "..", "/", "../..", "a/b", "/etc/passwd", "a b", "a;b", "$(id)", "`id`", "*", "?",
       "a\tb", "a\nb", "a\r", "\x1b[31m", "\x7f", "ü", "名前", "Ⅷ", "٣", "a\u200bb", "a\u2028b", "\ufeff",
       "\udcff\udc80", "x" * 65, "x" * 300, "a" * 16, "-", "--", "-x", "--x=1", "'", '"', "\\", "%s", "{}",
       "<auto>", "<host-gateway>", "0x1", "1e3", "NaN"]
# argv can hold any character but NUL; undecodable bytes arrive as \udc80-\udcff (surrogateescape)
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=70)
odd_bytes = st.binary(min_size=1, max_size=12).filter(lambda b: b"\x00" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape"))
anything = st.one_of(st.sampled_from(ODD), text, odd_bytes, st.from_regex(r"[A-Za-z0-9_.-]{60,80}", fullmatch=True))



@functools.cache  # strategies are built once: building one per draw costs more than the case
def bad_names(in_use: tuple[str, ...]):
    """Names kleenenet must refuse: malformed, or taken."""
    return st.one_of(anything, st.sampled_from(in_use)).filter(lambda s: not NAME_RE.fullmatch(s) or s in in_use)


bad_ifnames = anything.filter(lambda s: s not in ("", "<host-gateway>") and not IFNAME_RE.fullmatch(s))

octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["256", "999", "-1", "01", "1a", "", " 1", "0x1"]))
prefix = st.one_of(st.integers(0, 140).map(str), st.sampled_from(["", "-1", "024", "+24", "2 4", "255.255.255.0",
                                                                  "0.0.0.255", "99999999999999999999", "x"]))
v4ish = st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", octet, octet, octet, octet)
hexgroup = st.one_of(st.from_regex(r"[0-9a-fA-F]{1,4}", fullmatch=True), st.sampled_from(["", "g", "12345", "-1"]))
v6ish = st.one_of(st.lists(hexgroup, min_size=1, max_size=9).map(":".join),
                  st.builds(lambda a, b: f"{a}::{b}", hexgroup, hexgroup),
                  st.builds(lambda a: f"::ffff:{a}", v4ish))
scoped = st.builds(lambda a, z: f"{a}%{z}", st.sampled_from(["fd00:3::9", "fd00:4::9", "fd00:9::", "fe80::1"]),
                   st.sampled_from(["x", "eth0", "1", "", "%"]))


def subnet_is_invalid(text_: str, version: int) -> bool:
    """A cheap, conservative rule: True only when kleenenet must refuse `text_` as a subnet."""
    if "/" not in text_ or "%" in text_:
        return True
    try:
        net = ipaddress.ip_network(text_)  # strict: host bits set raise here
    except ValueError:
        return True
    max_prefix = 30 if version == 4 else 126
    return (net.version != version or net.prefixlen > max_prefix or
            any(net.overlaps(ipaddress.ip_network(u)) for u in USED_SUBNETS if ipaddress.ip_network(u).version == version)
            or net.is_multicast or net.is_loopback or net.is_link_local or net.is_reserved or net.is_unspecified
            or (version == 4 and net.overlaps(ipaddress.ip_network("0.0.0.0/8")))
            or (version == 6 and net.overlaps(ipaddress.ip_network("::ffff:0:0/96"))))


def _near(subnet: str):
    """Subnets overlapping `subnet`: an address inside it with any prefix."""
    net = ipaddress.ip_network(subnet)
    return st.builds(lambda i, p: str(ipaddress.ip_network(f"{net.network_address + i}/{p}", strict=False)),
                     st.integers(0, min(net.num_addresses - 1, 2**32)), st.integers(8 if net.version == 4 else 16,
                                                                                    net.max_prefixlen))


@functools.cache
def subnets(version: int):
    shapes = st.one_of(
        st.builds(lambda a, p: f"{a}/{p}", v4ish, prefix),
        st.builds(lambda a, p: f"{a}/{p}", v6ish, prefix),
        st.one_of(*[_near(s) for s in USED_SUBNETS]),
        v4ish, v6ish, scoped.map(lambda a: a + "/64"), anything,
        st.sampled_from(["0.0.0.0/0", "::/0", "224.0.0.0/24", "127.0.0.0/24", "169.254.1.0/24", "240.0.0.0/24",
                         "ff02::/64", "fe80::/64", "::1/128", "::ffff:10.9.0.0/120", "10.9.0.0/31", "10.9.0.0/32",
                         "fd00:9::/127", "10.9.0.1/24", "fd00:9::1/64", "10.9.0.0/33", "fd00:9::/129",
                         "10.9.0.0/24 ", " 10.9.0.0/24", "10.9.0.0//24", "10.9.0/24", "fd00:9::/64/64"]),
    )
    return shapes.filter(lambda s: subnet_is_invalid(s, version))


@functools.cache
def addresses_not_usable_in(subnet: str, taken: tuple[str, ...] = ()):
    """Address texts that no static --ip/--gw on `subnet` may get: garbage, outside, the network and
    broadcast addresses, taken ones, another family, a %zone."""
    net = ipaddress.ip_network(subnet)
    unusable = [str(net.network_address)] + ([str(net.broadcast_address)] if net.version == 4 else [])
    outside = st.one_of(v4ish, v6ish).filter(lambda a: _outside(a, net))
    return st.one_of(anything.filter(lambda a: _outside(a, net)), outside,
                     st.sampled_from(unusable + [t for t in taken if ipaddress.ip_address(t) in net]),
                     scoped, st.sampled_from(["10.2.3.256", "fd00:3::g", "10.2.3.1/24", "fd00:3::1/64", "::",
                                              "0.0.0.0", "255.255.255.255", "::ffff:10.2.3.9", "10.2.3.9 "]),
                     ).filter(lambda a: a not in ("", "<auto>"))  # no address, the next free one: both valid


def _outside(text_: str, net) -> bool:
    try:
        return ipaddress.ip_address(text_) not in net
    except ValueError:
        return True


def ident(checker_: Checker, kind: str):
    """Names and ids that find nothing."""
    return _idents(checker_.resolves, kind)


@functools.cache
def _idents(resolves, kind: str):
    hexes = st.from_regex(r"[0-9a-f]{1,12}", fullmatch=True)
    return st.one_of(anything, hexes, st.sampled_from(["UP", "up ", " up", "br/", "br\n", "*", "%", "_"])).filter(
        lambda s: not resolves(s, kind))


def positional(value: str) -> list[str]:
    """A positional argument as a careful user passes it: after `--` if it looks like an option."""
    return ["--", value] if value.startswith("-") else [value]


flags = st.lists(st.sampled_from(["--icc", "--no-icc", "--internal", "--no-nat", "--dry-run"]), max_size=3)


# --- the surfaces ----------------------------------------------------------------------------

@fuzz(1500)
@given(name=bad_names(NETWORKS), type_=st.sampled_from(["loopback", "bridge"]), flags_=flags)
@example(name="a/b", type_="bridge", flags_=[])
def test_network_names(checker, name, type_, flags_):
    checker.refused(["network", "create", "-t", type_, "--subnet", FRESH4, *flags_, *positional(name)], name)


@fuzz(2000)
@given(data=st.data(), type_=st.sampled_from(["loopback", "bridge"]), flags_=flags)
# a %zone was taken into the store as part of the subnet
@example(data=None, type_="bridge", flags_=[]).via("fd00:9::%x/64 in --subnet6")
def test_subnets(checker, data, type_, flags_):
    if data is None:
        bad4, bad6 = "", "fd00:9::%x/64"
    else:
        bad4 = data.draw(st.one_of(subnets(4), st.just("")))
        bad6 = data.draw(subnets(6) if bad4 == "" else st.one_of(subnets(6), st.sampled_from(["", FRESH6])))
    args = (["--subnet", bad4] if bad4 else []) + (["--subnet6", bad6] if bad6 else [])
    checker.refused(["network", "create", "-t", type_, *args, *flags_, "fz"],
                    *[v for v in (bad4, bad6) if v and v != FRESH6], "needs a --subnet")


def test_the_cli_runs_in_the_worlds_host_namespace(checker):
    # only the world's host namespace has an address on `uplink`
    checker.refused(["network", "create", "--subnet", "192.0.2.128/25", "fz"], "on uplink")


@pytest.mark.parametrize("bad", ["169.254.1.0/24", "224.0.0.0/24", "fe80::/64", "::ffff:10.9.0.0/120"])
def test_subnets_containers_cannot_use(checker, bad):
    # 169.254.1.0/24 on a loopback network handed out 169.254.1.1, its own next hop
    option = "--subnet6" if ":" in bad else "--subnet"
    checker.refused(["network", "create", option, bad, "fz"], bad)


@fuzz(1000)
@given(data=st.data(), type_=st.sampled_from(["loopback", "bridge"]), with6=st.booleans(), flags_=flags)
def test_gateways(checker, data, type_, with6, flags_):
    subnets_ = ["--subnet", FRESH4] + (["--subnet6", FRESH6] if with6 else [])
    if type_ == "loopback":  # any gateway is refused on a loopback network
        gw = data.draw(anything.filter(lambda s: s != ""))
        option = data.draw(st.sampled_from(["--gw", "--gw6"]))
        return checker.refused(["network", "create", *subnets_, option, gw, *flags_, "fz"], gw)
    gw = data.draw(st.one_of(addresses_not_usable_in(FRESH4), st.just("<auto>"), st.just("")))
    choices = [addresses_not_usable_in(FRESH6)] if with6 else [anything.filter(lambda s: s not in ("", "<auto>"))]
    gw6 = data.draw(st.one_of(*choices) if gw in ("<auto>", "") else st.one_of(*choices, st.just("<auto>")))
    checker.refused(["network", "create", "-t", "bridge", *subnets_, "--gw", gw, "--gw6", gw6, *flags_, "fz"],
                    *[g for g in (gw, gw6) if g not in ("", "<auto>")], *([] if with6 else ["--gw6"]))


@fuzz(1000)
@given(data=st.data(), flags_=flags, type_=st.sampled_from(["loopback", "bridge"]))
@example(data=None, flags_=["--internal"], type_="bridge")  # --nat-if 'bad if' was taken when moot
def test_interface_names(checker, data, flags_, type_):
    if data is None:
        which, value = "--nat-if", "bad if"
    else:
        which = data.draw(st.sampled_from(["-i", "--interface", "--nat-if"]))
        taken = ["uplink", "lo", "kleene0", "kleene1"] if which != "--nat-if" else []
        value = data.draw(st.one_of(bad_ifnames, st.sampled_from(taken or ["-"])))
    checker.refused(["network", "create", "-t", type_, "--subnet", FRESH4, which, value, *flags_, "fz"], value)


COMMANDS = [["network", "create"], ["network", "ls"], ["network", "inspect"], ["network", "rm"],
            ["network", "prune"], ["network", "connect"], ["network", "disconnect"], ["run"], ["exec"], ["ps"],
            ["stop"], ["rm"], ["inspect"], ["reconcile"], ["doctor"], []]


def _options(path: list[str]) -> set[str]:
    cmd = cli.cli
    for word in path:
        cmd = cmd.commands[word]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "--version"}


@functools.cache
def unknown_options(path: tuple[str, ...]):
    known = _options(list(path))
    return st.one_of(
        st.from_regex(r"--[a-z][a-z-]{0,20}", fullmatch=True), st.from_regex(r"-[A-Za-z]", fullmatch=True),
        st.builds(lambda s: "--" + s, text.filter(lambda s: s and not s.startswith("-")))
    ).filter(lambda o: o.split("=")[0] not in known)


@fuzz(1500)
@given(data=st.data(), path=st.sampled_from(COMMANDS))
@example(data=None, path=["run"])  # `run --bogus -- true` ran `--bogus true` as the command
def test_unknown_options_and_bad_choices(checker, data, path):
    if data is None:
        return checker.refused(["run", "--bogus", "--", "true"], "--bogus")
    if data.draw(st.booleans()):
        option = data.draw(unknown_options(tuple(path)))
        # the unknown option comes first, so nothing before it can succeed
        return checker.refused([*path, option, "x", "--", "true"], option.split("=")[0])
    value = data.draw(anything.filter(lambda s: s not in ("loopback", "bridge", "custom", "ipnet", "vnet", "host",
                                                          "disabled", "none", "pasta", "slirp4netns", "linux",
                                                          "freebsd") and not s.startswith("pasta:")))
    where = data.draw(st.sampled_from([["network", "create", "--subnet", FRESH4, "-t", value, "fz"],
                                       ["run", "-l", value, "--", "true"],
                                       ["--platform", value, "ps"],
                                       ["stop", "-t", value, "up"]]))
    if where[0] == "stop":  # any float is a valid timeout
        try:
            float(value)
            return
        except ValueError:
            pass
    checker.refused(where, value)


@fuzz(1500)
@given(data=st.data(), verb=st.sampled_from(["connect", "disconnect", "rm", "inspect"]), dry=st.booleans())
@example(data=None, verb="connect", dry=False)  # fd00:3::9%x was stored beside fd00:3::9
@example(data=None, verb="inspect", dry=False)  # bytes that are not UTF-8: a traceback from SQLite
def test_network_endpoints(checker, data, verb, dry):
    d = ["--dry-run"] if dry and verb != "inspect" else []
    if data is None:
        return checker.refused(*{"connect": (["network", "connect", "--ip6", "fd00:3::9%x", "br", "down"], "fd00:3::9%x"),
                                 "inspect": (["network", "inspect", "\udc80"], "\udc80")}[verb])
    bogus_net, bogus_ctr = ident(checker, "network"), ident(checker, "container")
    if verb in ("rm", "inspect"):
        names = data.draw(st.lists(bogus_net, min_size=1, max_size=3) if verb == "rm" else bogus_net.map(lambda s: [s]))
        if verb == "rm" and data.draw(st.booleans()):
            names = [data.draw(st.sampled_from(NETWORKS))] + names  # in use: refused first
        return checker.refused(["network", verb, *d, "--", *names], *names)
    if verb == "disconnect":  # `up` is on br only, `down` on lo only
        net, ctr = data.draw(st.one_of(st.tuples(bogus_net, st.sampled_from(CONTAINERS + ("",))),
                                       st.tuples(st.sampled_from(NETWORKS), bogus_ctr),
                                       st.sampled_from([("lo", "up"), ("br", "down"), ("br", "solo")])))
        return checker.refused(["network", "disconnect", *d, "--", net, ctr], net, ctr)
    net, ctr = data.draw(st.one_of(st.tuples(bogus_net, st.sampled_from(CONTAINERS[:2])),
                                   st.tuples(st.sampled_from(NETWORKS), bogus_ctr),
                                   st.tuples(st.sampled_from(NETWORKS), st.just("solo")),  # driver disabled
                                   st.sampled_from([("br", "up"), ("lo", "down"),  # already connected
                                                    ("lo", "up"), ("br", "down")])))
    subnet4, subnet6 = (BR4, BR6) if net == "br" else (LO4, LO6)
    ip = data.draw(st.one_of(addresses_not_usable_in(subnet4, TAKEN), st.sampled_from(["<auto>", ""])))
    bad6 = addresses_not_usable_in(subnet6, TAKEN)
    ip6 = data.draw(st.one_of(bad6, st.sampled_from(["<auto>", ""])) if ip not in ("<auto>", "") else bad6)
    if (net, ctr) in (("lo", "up"), ("br", "down")) and {ip, ip6} <= {"<auto>", ""}:
        return  # a valid connect (unreachable: one of them is drawn bad)
    checker.refused(["network", "connect", *d, "--ip", ip, "--ip6", ip6, "--", net, ctr],
                    net, ctr, ip, ip6, "already connected", "only ipnet and vnet")


@fuzz(1500)
@given(data=st.data())
def test_run(checker, data):
    bogus_net = ident(checker, "network")
    poison = data.draw(st.sampled_from(["network", "name", "jail", "path", "ip", "driver", "command", "twice",
                                        "publish", "dns"]))
    driver = data.draw(st.sampled_from([None, "ipnet", "vnet"]))
    nets = [data.draw(st.sampled_from(NETWORKS))]
    name, ip, ip6, jail, path, cmd, offending = None, None, None, [], None, ["true"], []
    publish, dns = [], []
    if poison == "network":
        nets = data.draw(st.lists(bogus_net, min_size=1, max_size=2))
        offending = [*nets, "given twice"]
    elif poison == "name":
        name = data.draw(bad_names(CONTAINERS).filter(lambda s: s != ""))  # --name "" means the default
        offending = [name]
    elif poison == "jail":  # jail parameters need FreeBSD, whatever they are: '=' edge cases too
        jail = data.draw(st.lists(st.one_of(anything, st.sampled_from(
            ["=", "==", "a=", "=b", "a==b", "a=b=c", "allow.raw_sockets", "ip4.addr=10.2.3.9", "path=/",
             "vnet", "persist", "host.hostname=x y", "exec.start=/bin/sh -c 'id'", "a\n=b"])), min_size=1, max_size=3))
        offending = [jail[0]]
    elif poison == "path":
        # a root directory must be absolute, without '..', and a directory that exists
        path = data.draw(st.one_of(anything.filter(lambda s: s and not s.startswith("/")), st.sampled_from(
            ["relative", "/nonexistent", "/etc/hostname", "/tmp/../etc", "/dev/null", "//nonexistent/x"])))
        offending = [path]
    elif poison == "ip":
        subnet4, subnet6 = (BR4, BR6) if nets[0] == "br" else (LO4, LO6)
        option = data.draw(st.sampled_from(["--ip", "--ip6"]))
        bad = data.draw(addresses_not_usable_in(subnet4 if option == "--ip" else subnet6, TAKEN))
        ip, ip6 = (bad, None) if option == "--ip" else (None, bad)
        other = "lo" if nets[0] == "br" else "br"
        # --ip needs a -n, and belongs to the -n before it (here: the last one)
        nets = data.draw(st.sampled_from([nets, [], [other, nets[0]]]))
        offending = [bad, "need a -n"]
    elif poison == "publish":  # [IFACE:]HOST[:CTR][/tcp|udp], ports 1-65535, ranges of equal length
        spec = data.draw(st.one_of(anything.filter(lambda s: s.strip()), st.sampled_from(
            ["0", "65536", "80/sctp", "80/", ":80", "80:", "a:b:c:d", "9000-8999", "9000-9001:80", "1-2-3",
             "-1", "80:80:80:80", "eth0:80", "+80", " 80", "80 ", "0x50", "٨٠", "toolonginterfacename:80:80"])))
        if spec == "toolonginterfacename:80:80" or data.draw(st.booleans()):
            publish = [spec]
        else:  # the same host port twice
            spec = "8080"
            publish = ["8080:80", "8080:81"]
        offending = [spec, "toolonginterfacename", "tcp/8080 is published twice"]
    elif poison == "dns":
        dns = [data.draw(st.one_of(anything.filter(lambda s: not usable_nameserver(s)), st.sampled_from(
            ["", "dns.example", "10.0.0.256", "fe80::1%eth0", "10.0.0.1:53", "::ffff:1.2.3.4.5", "::", "0.0.0.0",
             "224.0.0.251"])))]
        offending = dns
    elif poison == "driver":  # host and disabled take no networks
        driver = data.draw(st.sampled_from(["host", "disabled"]))
        offending = [f"driver {driver!r}"]
    elif poison == "command":
        cmd = data.draw(st.sampled_from([[], ["--"]]))
        offending = ["no command given"]
    else:
        nets = nets * 2
        offending = ["given twice"]
    argv = ["run", *(["-d"] if data.draw(st.booleans()) else []), *(["--dry-run"] if data.draw(st.booleans()) else [])]
    argv += ["-l", driver] if driver else []
    for n in nets:
        argv += ["-n", n]
    argv += ["--name", name] if name is not None else []
    argv += ["--ip", ip] if ip is not None else []
    argv += ["--ip6", ip6] if ip6 is not None else []
    for j in jail:
        argv += ["-J", j]
    argv += ["--path", path] if path is not None else []
    for spec in publish:
        argv += ["-p", spec]
    for addr in dns:
        argv += ["--dns", addr]
    argv += ["--", *cmd] if cmd and cmd != ["--"] else cmd
    checker.refused(argv, *offending)


@fuzz(1000)
@given(data=st.data(), verb=st.sampled_from(["exec", "stop", "rm", "inspect"]))
def test_container_identifiers(checker, data, verb):
    bogus = ident(checker, "container")
    if verb == "exec":
        target = data.draw(st.one_of(bogus, st.sampled_from(["down", "solo"])))  # stopped
        cmd = data.draw(st.sampled_from([["--", "true"], ["--", "sh", "-c", "exit 0"], []]))
        if target not in ("down", "solo") and data.draw(st.booleans()):
            target, cmd = "up", []  # running, but no command
        return checker.refused(["exec", *positional(target), *cmd], target, "no command given")
    targets = data.draw(st.lists(bogus, min_size=1, max_size=3))
    if verb == "rm" and data.draw(st.booleans()):
        targets = ["up"] + targets  # running, without -f: refused first
    opts = data.draw(st.sampled_from([[], ["--dry-run"]])) if verb != "inspect" else []
    if verb == "stop":
        opts += data.draw(st.sampled_from([[], ["-t", "0"], ["-t", "0.5"]]))
    checker.refused([verb, *opts, "--", *targets] if verb != "inspect" else [verb, "--", targets[0]], *targets)
