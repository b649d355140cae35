"""`kleenenet doctor` on FreeBSD: is the host ready for kleenenet's networks? Each check says what
it found and, when something is missing, the exact line to add and where. kleenenet never edits
/etc/pf.conf or /etc/rc.conf itself."""

from __future__ import annotations

from kleenenet.errors import HostError
from kleenenet.model import Network
from kleenenet.platform import Check
from kleenenet.platform.freebsd import parsers
from kleenenet.platform.freebsd.host import Runner
from kleenenet.platform.freebsd.pf import ANCHOR_ROOT

REFERENCES = (("nat-anchor", "nat"), ("rdr-anchor", "nat"), ("anchor", "rules"))


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

    for kind, listing in REFERENCES:
        refs = parsers.parse_anchor_references(runner.run(["pfctl", "-s", listing]))
        if (kind, f"{ANCHOR_ROOT}/*") in refs:
            found.append(Check(True, f'the main ruleset has {kind} "{ANCHOR_ROOT}/*"'))
        else:
            found.append(Check(False, f'the main ruleset lacks {kind} "{ANCHOR_ROOT}/*"',
                               f'add `{kind} "{ANCHOR_ROOT}/*"` to /etc/pf.conf with the other '
                               f'{"translation" if kind != "anchor" else "filter"} rules, then `pfctl -f /etc/pf.conf`'))

    skipped = parsers.skipped_interfaces(runner.run(["pfctl", "-s", "Interfaces", "-v"]))
    if skipped & {"lo0", "lo"}:
        found.append(Check(None if not any(n.type == "loopback" for n in networks) else False,
                           f"pf skips {', '.join(sorted(skipped & {'lo0', 'lo'}))}: traffic between ipnet jails "
                           "(and from them to the host) passes lo0 unfiltered, so isolation and icc do not hold",
                           "in /etc/pf.conf, replace `set skip on lo0` (or `lo`) by `pass quick on lo0` placed "
                           'after `anchor "kleenenet/*"`'))
    else:
        found.append(Check(True, "pf filters lo0 (traffic between ipnet jails)"))

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
    return found
