"""`kleenenet doctor` on FreeBSD: is the host ready for kleenenet's networks? Each check says what
it found and, when something is missing, the exact line to add and where. kleenenet never edits
/etc/pf.conf or /etc/rc.conf itself."""

from __future__ import annotations

import sys
from pathlib import Path

from kleenenet.errors import HostError
from kleenenet.model import Network
from kleenenet.platform import Check
from kleenenet.platform.freebsd import parsers
from kleenenet.platform.freebsd.host import Host, Runner
from kleenenet.platform.freebsd import FORWARDING, JAIL_OPTION_RELEASE, RA_WITH_FORWARDING
from kleenenet.platform.freebsd.pf import ANCHOR_ROOT

REFERENCES = (("nat-anchor", "nat"), ("rdr-anchor", "nat"), ("anchor", "rules"))
FRAGMENT = "share/kleenenet/pf/kleenenet.conf"  # pf/kleenenet.conf, installed below the prefix


def fragment_path() -> Path:
    """pf/kleenenet.conf where it is: installed with kleenenet (pyproject's data-files), or in
    the checkout kleenenet runs from; else where the package would put it."""
    for candidate in (Path(sys.prefix) / FRAGMENT, Path(__file__).resolve().parents[3] / "pf" / "kleenenet.conf"):
        if candidate.is_file():
            return candidate
    return Path("/usr/local") / FRAGMENT


def _module_loaded(runner: Runner, module: str) -> bool:
    return runner.succeeds(["kldstat", "-q", "-m", module])


def checks(runner: Runner, networks: list[Network]) -> list[Check]:
    try:
        return _checks(runner, networks)
    except (HostError, ValueError) as e:
        return [Check(False, f"cannot inspect the host: {e}")]


def _checks(runner: Runner, networks: list[Network]) -> list[Check]:
    found = []
    if not _module_loaded(runner, "pf"):
        return [Check(False, "pf is not loaded", 'load it now with `kldload pf`; at boot: pf_enable="YES" in /etc/rc.conf')]
    found.append(Check(True, "pf is loaded"))
    enabled = parsers.pf_enabled(runner.run(["pfctl", "-s", "info"]))
    found.append(Check(True, "pf is enabled") if enabled else
                 Check(False, "pf is disabled", 'enable it with `pfctl -e`; at boot: pf_enable="YES" in /etc/rc.conf'))

    # The loaded main ruleset, not /etc/pf.conf: what is in effect.
    include = f'`include "{fragment_path()}"` (kleenenet\'s pf fragment: all three anchor lines)'
    for kind, listing in REFERENCES:
        refs = parsers.parse_anchor_references(runner.run(["pfctl", "-s", listing]))
        if (kind, f"{ANCHOR_ROOT}/*") in refs:
            found.append(Check(True, f'the main ruleset has {kind} "{ANCHOR_ROOT}/*"'))
        else:
            found.append(Check(False, f'the main ruleset lacks {kind} "{ANCHOR_ROOT}/*"',
                               f'add {include} to /etc/pf.conf after your translation rules and before your '
                               f'filter rules, or `{kind} "{ANCHOR_ROOT}/*"` with the other '
                               f'{"translation" if kind != "anchor" else "filter"} rules; then `pfctl -f /etc/pf.conf`'))

    found.extend(_skip_checks(runner, networks))
    found.append(_release_check(runner))

    bridges = [n for n in networks if n.type == "bridge"]
    if bridges or _module_loaded(runner, "if_bridge"):
        if _module_loaded(runner, "if_bridge"):
            found.append(Check(True, "if_bridge is loaded"))
            for key in ("pfil_member", "pfil_bridge"):
                value = runner.run(["sysctl", "-n", f"net.link.bridge.{key}"]).strip()
                found.append(Check(True if value == "0" else None, f"net.link.bridge.{key}={value}",
                                   "" if value == "0" else
                                   "kleenenet filters jails' routed traffic on the bridge interface; filtering "
                                   f"on members too applies your rules to traffic between jails: "
                                   f"net.link.bridge.{key}=0 in /etc/sysctl.conf"))
        else:
            found.append(Check(False, "if_bridge is not loaded", 'kldload if_bridge; at boot: kld_list+="if_bridge" in /etc/rc.conf'))

    routed = [n for n in bridges if not n.internal]
    for version, attr, key, rc in ((4, "subnet", "net.inet.ip.forwarding", 'gateway_enable="YES"'),
                                   (6, "subnet6", "net.inet6.ip6.forwarding", 'ipv6_gateway_enable="YES"')):
        if any(getattr(n, attr) for n in routed):
            on = runner.run(["sysctl", "-n", key]).strip() == "1"
            found.append(Check(True if on else None, f"{key}={'1' if on else '0'}",
                               "" if on else f"kleenenet turns it on when it creates the network (and at boot "
                               f"with its rc.d script); to keep it on: {rc} in /etc/rc.conf"))
    if runner.run(["sysctl", "-n", FORWARDING6]).strip() == "1":
        found.extend(_router_advertisement_check(runner))
    return found


FORWARDING6 = FORWARDING[6]
LOOPBACK_FIX = ('in /etc/pf.conf, drop `set skip on` for {what} and add `pass quick on lo0` after '
                '`anchor "kleenenet/*"` (kleenenet\'s rules come first; then lo0 passes: pf/kleenenet.conf has both), '
                'then `pfctl -f /etc/pf.conf`')
# The host's own connections to its own addresses cross lo0: a published port's `rdr on lo0`
# acts only where pf sees lo0 (pf.conf(5): translation applies to packets passing the interface).
PUBLISHED_PORTS = ("; and the host's own connections to a published port at its own address are not "
                   "redirected to the container")


def _skip_checks(runner: Runner, networks: list[Network]) -> list[Check]:
    """Which loopback traffic pf skips. An ipnet jail's traffic to the host's addresses crosses
    lo0, and so does all traffic of ipnet jails on a bridge network (a /32 alias on a
    non-loopback interface gets a loopback route: netinet/in.c); between ipnet jails of a
    loopback network it crosses that network's kleeneN, which, cloned from lo, is in interface
    group lo: `set skip on lo` skips it too (pfi_skip_if in sys/netpfil/pf/pf_if.c matches
    groups), `set skip on lo0` does not."""
    skipped = parsers.skipped_interfaces(runner.run(["pfctl", "-s", "Interfaces", "-v"]))
    bad = False if networks else None  # with no network yet, a warning
    loopbacks = [n for n in networks if n.type == "loopback"]
    found = []
    if "lo" in skipped:
        names = ", ".join(f"{n.interface} ({n.name})" for n in loopbacks) or "none yet"
        found.append(Check(bad, "pf skips interface group lo (`set skip on lo`): lo0 and every loopback network's "
                           f"interface (cloned from lo: {names}); traffic between ipnet jails of loopback networks, "
                           "from ipnet jails to the host, and between ipnet jails on bridge networks is not "
                           "filtered: isolation, --no-icc and the block of the host's services do not hold"
                           + PUBLISHED_PORTS,
                           LOOPBACK_FIX.format(what="lo")))
    elif "lo0" in skipped:
        found.append(Check(bad, "pf skips lo0 (`set skip on lo0`): traffic from ipnet jails to the host's own "
                           "addresses, and all traffic of ipnet jails on bridge networks (their addresses are "
                           "reached over lo0), is not filtered: those jails reach the host's services, and "
                           "--no-icc and isolation do not hold between ipnet jails on bridge networks (between "
                           "ipnet jails of loopback networks they hold: that traffic crosses kleeneN)"
                           + PUBLISHED_PORTS,
                           LOOPBACK_FIX.format(what="lo0")))
    for net in networks:
        if net.interface in skipped and "lo" not in skipped:
            found.append(Check(False, f"pf skips {net.interface}, the interface of network {net.name!r}: traffic "
                               "between its jails is not filtered", LOOPBACK_FIX.format(what=net.interface)))
    if not found:
        found.append(Check(True, "pf filters lo0 and kleenenet's loopback interfaces (the host reaches published "
                                 "ports of ipnet jails at its own addresses)"))
    return found


def _release_check(runner: Runner) -> Check:
    version = Host(runner).osreldate()
    release = f"FreeBSD {version // 100000}.{version // 1000 % 100} (kern.osreldate {version})"
    if version >= JAIL_OPTION_RELEASE:
        return Check(True, f"{release}: vnet jails are configured with `ifconfig -j` and `route -j`")
    return Check(None, f"{release} has no `ifconfig -j` / `route -j` (FreeBSD 14): vnet jails are configured "
                       "with `jexec JAIL ifconfig|route`", "a vnet jail's path must hold /sbin/ifconfig and "
                       "/sbin/route (the default path=/ does)")


def _router_advertisement_check(runner: Runner) -> list[Check]:
    """With ip6.forwarding=1 the kernel ignores the router lifetime of router advertisements
    unless ip6.rfc6204w3=1 (nd6_ra_input in sys/netinet6/nd6_rtr.c)."""
    slaac = Host(runner).autoconfiguring_interfaces()
    if not slaac:
        return []
    on = runner.run(["sysctl", "-n", RA_WITH_FORWARDING]).strip() == "1"
    if on:
        return [Check(True, f"{RA_WITH_FORWARDING}=1: {', '.join(slaac)} keep(s) the IPv6 default route from "
                            "router advertisements with forwarding on")]
    return [Check(False, f"{FORWARDING6}=1 and {RA_WITH_FORWARDING}=0 while {', '.join(slaac)} take(s) IPv6 "
                         "settings from router advertisements (ACCEPT_RTADV): the kernel ignores their router "
                         "lifetime, so the host loses its IPv6 default route",
                  f"sysctl {RA_WITH_FORWARDING}=1, and {RA_WITH_FORWARDING}=1 in /etc/sysctl.conf "
                  "(kleenenet sets it when it turns IPv6 forwarding on itself)")]
