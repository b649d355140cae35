"""The Linux platform: network namespaces, veth pairs, Linux bridges, one nftables table.

bridge network   kleeneN is a Linux bridge holding the gateway; one veth per container, the
                 container end (ethK) moved into the container's namespace.
loopback network L3-routed: kleeneN is an anchor device without traffic; each container gets a veth
                 whose host end carries a /32 (/128) route to it. The container's routes point at
                 a link-local next hop: 169.254.1.1, a permanent neighbour entry resolving to the
                 host end's MAC (no address on the host, no ARP), and fe80::1 on the host end.
                 No L2 segment.
custom network   the LAN's: an existing interface of the host that kleenenet never creates,
                 reconfigures or removes (only its own children come and go), no NAT, no
                 forwarding, no filtering of the LAN's traffic. On a bridge (one holding the LAN
                 NIC): one veth per container as on a bridge network, its port bound to the
                 container's MAC and addresses. On any other Ethernet interface ("direct"): one
                 macvlan child in bridge mode per container, created straight into its namespace.
                 The host cannot reach its own macvlan children through their parent (macvlan
                 passes frames between the children and out of the NIC, never up into the
                 parent); a bridge holding the NIC gives the host that path. A macvlan child has
                 no port on the host to bind: a container root in its namespace can send as any
                 MAC or address on the LAN; a LAN bridge keeps it to its own.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import sys
from functools import cached_property
from pathlib import Path

from kleenenet import ports
from kleenenet.errors import InvalidInput
from kleenenet.model import Container, Endpoint, Network
from kleenenet.plan import Plan
from kleenenet.platform import stable_mac
from kleenenet.ports import Forward, forwards
from kleenenet.platform.linux import conntrack, dns, firewall, process, usermode
from kleenenet.platform.linux.firewall import FirewallState
from kleenenet.platform.linux.namespaces import process_alive, set_sysctls_in
from kleenenet.platform.linux.netlink import KLEENENET_GROUP, Netlink

NEXT_HOP4 = "169.254.1.1"
NEXT_HOP6 = "fe80::1"
INTERFACE_PREFIX = "kleene"
ENDPOINT_PREFIX = "kv"  # + endpoint id: 14 characters, within IFNAMSIZ
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
CONTAINER_FORWARDING = ("net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding")


def endpoint_ifname(ep: Endpoint) -> str:
    return ENDPOINT_PREFIX + ep.id


def container_mac(net: Network, container_id: str) -> str:
    return stable_mac(net.id, container_id)


def _host_mac(net: Network, container_id: str) -> str:
    """The MAC of a container's veth end on the host. On a LAN bridge it begins with fe, the
    highest a unicast MAC can: a Linux bridge whose MAC was never set takes its lowest port's, and
    the LAN's bridge must not change its MAC because a container joined it (libvirt's taps do
    the same)."""
    mac = stable_mac("host", net.id, container_id)
    return "fe" + mac[2:] if net.type == "custom" else mac


def _routed(networks: list[Network]) -> list[Network]:
    """The networks whose traffic the host routes: out of non-internal bridge networks, between
    the containers of a loopback network (an internal bridge keeps its traffic on L2, a custom
    network is the LAN's own)."""
    return [n for n in networks if n.type == "loopback" or (n.type == "bridge" and not n.internal)]


def _fw(networks: list[Network], endpoints: list[Endpoint], containers: list[Container] = (),
        portless: set[str] = frozenset()) -> FirewallState:
    """The firewall's view of the state: networks, the ports of their running containers, and
    where those containers' published ports lead (`containers`: at least the running ones).
    `portless`: the ids of networks whose containers have no port on the host (macvlan)."""
    by_id = {n.id: n for n in networks}
    wired = [ep for ep in endpoints if ep.epair and ep.network_id in by_id]
    fws = []
    for c in containers:
        if c.public_ports:
            fws += forwards(c, [(by_id[ep.network_id], ep) for ep in wired if ep.container_id == c.id])
    return FirewallState(networks, [
        firewall.port_of(ep.epair, by_id[ep.network_id], ep, container_mac(by_id[ep.network_id], ep.container_id))
        for ep in wired if ep.network_id not in portless], fws)


def _wired_others(ep: Endpoint, others: list[Endpoint], wiring) -> list[tuple[Network, Endpoint]]:
    """(network, endpoint) of a container's other wired endpoints (`wiring()`: all networks and
    wired endpoints, read only when there are others)."""
    if not others:
        return []
    by_id = {n.id: n for n in wiring()[0]}
    return [(by_id[e.network_id], e) for e in others if e.id != ep.id]


def _forwards_around(net: Network, ep: Endpoint, c: Container,
                     wired: list[tuple[Network, Endpoint]]) -> tuple[list[Forward], list[Forward]]:
    """Where c's published ports lead without endpoint `ep`, and with it (`wired`: its others)."""
    if not c.public_ports:
        return [], []
    return forwards(c, wired), forwards(c, wired + [(net, ep)])


def _default_hop(net: Network, family: int) -> str:
    """Where a container's default route of `family` points on network `net` ("": nowhere)."""
    if net.type == "loopback":
        return NEXT_HOP4 if family == 4 else NEXT_HOP6
    return net.gateway if family == 4 else net.gateway6


def _proc_net_address(hexa: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in the host's byte order."""
    raw = b"".join(int(hexa[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hexa), 8))
    address = ipaddress.ip_address(raw)
    return getattr(address, "ipv4_mapped", None) or address


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


class LinuxPlatform:
    name = "linux"
    watches_detached = True  # `run -d` leaves a watcher (kleenenet/watch.py: a pidfd) for its command
    command_defaults: dict[str, str] = {}  # a container's command has its starter's environment

    @cached_property
    def nl(self) -> Netlink:
        return Netlink()

    @cached_property
    def nft(self) -> firewall.Nft:
        return firewall.Nft()

    # what is on the host

    def host_networks(self) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        """Subnets in use on the host (not by kleenenet): a new network must not overlap them."""
        used = []
        for ifname, iface in self.nl.addresses():
            if not iface.is_loopback and not iface.is_link_local:
                used.append((f"address {iface} on {ifname}", iface.network))
        for ifname, dst, ours in self.nl.routes():
            if dst.prefixlen and not ours and not dst.is_link_local and not dst.is_multicast:
                used.append((f"route {dst} via {ifname}", dst))
        return used

    def default_route_interface(self) -> str | None:
        return self.nl.default_route_interface()

    def interface_exists(self, name: str) -> bool:
        return self.nl.index(name) is not None

    def interface_mtu(self, name: str) -> int | None:
        """The MTU of interface `name` (None: no such interface)."""
        return self.nl.mtu(name)

    def interface_addresses(self, name: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The addresses on interface `name`, IPv6 link-local ones aside ([]: no such interface)."""
        return self.nl.interface_addresses(name)

    def has_ipv6(self) -> bool:
        """IPv6 is on in kleenenet's namespace and reaches beyond its links: a global address
        (not on kleenenet's own interfaces) or a default route."""
        try:
            if _sysctl_path("net.ipv6.conf.all.disable_ipv6").read_text().strip() != "0":
                return False
        except OSError:  # booted with ipv6.disable=1: no /proc/sys/net/ipv6 at all
            return False
        return self.nl.has_global_ipv6()

    def free_interface_name(self, taken: set[str]) -> str:
        return self.nl.free_name(INTERFACE_PREFIX, taken)

    def doctor(self, networks: list[Network]):
        from kleenenet.platform import Check

        found = []
        try:
            self.nft
            found.append(Check(True, "libnftables is usable"))
        except Exception as e:
            found.append(Check(False, f"libnftables is not usable: {e}", "install nftables (apt install nftables)"))
        for key, attr in (("net.ipv4.ip_forward", "subnet"), ("net.ipv6.conf.all.forwarding", "subnet6")):
            if any(getattr(n, attr) for n in _routed(networks)):
                on = _sysctl_path(key).read_text().strip() == "1"
                found.append(Check(True if on else None, f"{key}={'1' if on else '0'}",
                                   "" if on else "kleenenet turns it on with its networks: run kleenenet reconcile"))
        return found

    @staticmethod
    def ports_in_use(protocol: str) -> set[int]:
        """The TCP ports something of kleenenet's own namespace listens on, or the UDP ports it
        has bound, where a published port would take its connections: at any address but a
        loopback one (as on FreeBSD). One look at /proc/net/PROTOCOL{,6} (each read walks the
        kernel's socket tables: milliseconds)."""
        used = set()
        for table in (protocol, protocol + "6"):
            try:
                lines = Path("/proc/net", table).read_text().splitlines()[1:]
            except FileNotFoundError:  # no IPv6
                continue
            for line in lines:
                _, local, _, state = line.split()[:4]
                address, _, port = local.partition(":")
                if (protocol == "udp" or state == TCP_LISTEN) and not _proc_net_address(address).is_loopback:
                    used.add(int(port, 16))
        return used

    def check_network(self, net: Network) -> None:
        if net.type == "custom" and (refusal := self._custom_refusal(net.interface)):
            raise InvalidInput(f"invalid interface {net.interface!r}: {refusal}")

    def _custom_refusal(self, name: str) -> str | None:
        """Why interface `name` cannot carry a custom network (None: it can). A bridge takes veth
        ports; any other Ethernet interface takes macvlan children, unless it is a port of a
        bridge or bond already: the kernel gives a device one receive handler, which the bridge
        (bond) holds, so macvlan could not attach (EBUSY), and the bridge is where the LAN is."""
        link = self.nl.link(name)
        if link is None:
            return "no such interface (give an existing bridge or NIC of the host)"
        if link["group"] == KLEENENET_GROUP:
            return "it is kleenenet's own (a custom network is on a bridge or NIC kleenenet did not create)"
        if link["loopback"]:
            return "a loopback interface takes no containers (give a bridge or NIC)"
        if link["kind"] == "bridge":
            return None
        if link["master"] is not None:
            master = next((ln["name"] for ln in self.nl.links() if ln["index"] == link["master"]), link["master"])
            return f"it is a port of {master} (give -i {master})"
        if not link["ethernet"]:
            return "not an Ethernet interface (a macvlan child needs one; give a bridge or an Ethernet NIC)"
        return None

    def _custom_mode(self, net: Network) -> str | None:
        """How containers join custom network `net`: "bridge" (a veth port on the LAN's bridge),
        "direct" (a macvlan child of the NIC); None: its interface is gone."""
        link = self.nl.link(net.interface)
        if link is None:
            return None
        return "bridge" if link["kind"] == "bridge" else "direct"

    def _portless(self, networks: list[Network]) -> set[str]:
        """The custom networks whose containers have no port on a bridge of the host: macvlan
        children, and those of a network whose interface is gone (nothing to bind)."""
        return {n.id for n in networks if n.type == "custom" and self._custom_mode(n) != "bridge"}

    def _firewall_state(self, networks: list[Network], endpoints: list[Endpoint],
                        containers: list[Container] = ()) -> FirewallState:
        return _fw(networks, endpoints, containers, self._portless(networks))

    # networks

    def plan_create_network(self, net: Network, before: list[Network], after: list[Network],
                            endpoints: list[Endpoint], containers: list[Container] = ()) -> Plan:
        plan = Plan("network-create")
        if net.type != "custom":  # the LAN's interface is there already, and not kleenenet's
            plan.extend(self._plan_network_interface(net))
        plan.extend(self._plan_forwarding(after))
        plan.extend(self._plan_firewall(self._firewall_state(before, endpoints, containers),
                                        self._firewall_state(after, endpoints, containers)))
        return plan

    def _plan_network_interface(self, net: Network) -> Plan:
        plan = Plan("network-interface")
        name = net.interface
        if net.type == "bridge":
            mac = stable_mac(net.id)
            plan.add(f"ip link add {name} group {KLEENENET_GROUP} address {mac} type bridge; "
                     f"ip link set {name} mtu {net.mtu}",
                     lambda: self.nl.add_link(name, "bridge", mac, net.mtu), lambda: self.nl.delete_link(name))
            for gw, subnet in ((net.gateway, net.subnet), (net.gateway6, net.subnet6)):
                if gw:
                    prefix = ipaddress.ip_network(subnet).prefixlen
                    plan.add(f"ip addr add {gw}/{prefix} dev {name}",
                             lambda gw=gw, prefix=prefix: self.nl.add_address(name, gw, prefix))
        else:
            # The anchor of a routed network carries no traffic. It is a bridge without ports
            # rather than a dummy because not every kernel ships the dummy driver.
            plan.add(f"ip link add {name} group {KLEENENET_GROUP} type bridge; ip link set {name} mtu {net.mtu}",
                     lambda: self.nl.add_link(name, "bridge", mtu=net.mtu), lambda: self.nl.delete_link(name))
        if net.type == "loopback" or not net.subnet6:
            plan.add(f"ip link set {name} addrgenmode none", lambda: self.nl.disable_ipv6_autoconf(name))
        plan.add(f"ip link set {name} up", lambda: self.nl.set_up(name))
        return plan

    def _plan_forwarding(self, networks: list[Network]) -> Plan:
        """Turn forwarding on in kleenenet's own namespace when a network needs it, never off."""
        plan = Plan("forwarding")
        routed = _routed(networks)
        wanted = []
        if any(n.subnet for n in routed):
            wanted.append("net.ipv4.ip_forward")
        if any(n.subnet6 for n in routed):
            wanted.append("net.ipv6.conf.all.forwarding")
        for key in wanted:
            path = _sysctl_path(key)
            before = path.read_text().strip()
            if before != "1":
                if key == "net.ipv6.conf.all.forwarding":
                    plan.extend(self._plan_keep_router_advertisements())
                plan.add(f"sysctl -w {key}=1", lambda path=path: path.write_text("1"),
                         lambda path=path, before=before: path.write_text(before))
        return plan

    def _plan_keep_router_advertisements(self) -> Plan:
        """A router ignores router advertisements, and turning IPv6 forwarding on drops the default
        routes they gave, unless accept_ra=2: an interface that has its IPv6 routes from them keeps
        taking them, or the host would lose its IPv6 default route."""
        plan = Plan("forwarding")
        for ifname in self.nl.ra_interfaces():
            path = Path("/proc/sys/net/ipv6/conf", ifname, "accept_ra")
            if path.read_text().strip() == "1":
                plan.add(f"sysctl -w net.ipv6.conf.{ifname.replace('.', '/')}.accept_ra=2",
                         lambda path=path: path.write_text("2"), lambda path=path: path.write_text("1"))
        return plan

    def _plan_firewall(self, before: FirewallState, after: FirewallState) -> Plan:
        plan = Plan("firewall")
        batch = firewall.render(after)
        plan.add(f"nft -f - <<EOF\n{batch}EOF", lambda: self.nft.run(batch),
                 lambda: self.nft.run(firewall.render(before)))
        return plan

    def plan_remove_network(self, net: Network, before: list[Network], after: list[Network],
                            endpoints: list[Endpoint], containers: list[Container] = ()) -> Plan:
        plan = Plan("network-remove")
        plan.extend(self._plan_firewall(self._firewall_state(before, endpoints, containers),
                                        self._firewall_state(after, endpoints, containers)))
        if net.type != "custom":  # the LAN's interface stays as it was
            plan.add(f"ip link del {net.interface}", lambda: self.nl.delete_link(net.interface))
        return plan

    # endpoints

    def ports_lead_to(self, net: Network, c: Container) -> bool:
        """Whether `c`'s published ports can lead to it on `net`: on any of its networks."""
        return True

    def check_attach(self, net: Network, c: Container) -> None:
        """Any namespace joins any network type; a custom network while its interface is usable."""
        if net.type == "custom" and (refusal := self._custom_refusal(net.interface)):
            raise InvalidInput(f"network {net.name!r} takes no containers now: interface {net.interface!r}: {refusal}")

    def plan_attach(self, net: Network, ep: Endpoint, c: Container, cif: str | None = None,
                    others: list[Endpoint] = (), wiring=None) -> Plan:
        """Wire endpoint `ep` into the running container `c` as interface `cif` (default: the
        container's next free ethK). `others`: the container's endpoints already wired."""
        plan = Plan("connect")
        host = endpoint_ifname(ep)
        mac = container_mac(net, c.id)
        host_mac = _host_mac(net, c.id)
        direct = net.type == "custom" and self._custom_mode(net) == "direct"
        # The port is bound to its container's addresses before it exists, so no packet it
        # ever carries goes unchecked. (A macvlan child has no port on the host.)
        port = firewall.port_of(host, net, ep, mac)
        wired = _wired_others(ep, others, wiring)
        without, with_ep = _forwards_around(net, ep, c, wired)
        add = ("" if direct else firewall.add_port(port)) + firewall.forwards_batch(without, with_ep)
        delete = firewall.forwards_batch(with_ep, without) + ("" if direct else firewall.delete_port(port))
        if add:
            plan.add(f"nft -f - <<EOF\n{add}EOF", lambda: self.nft.run(add), lambda: self.nft.run(delete))
        plan.extend(self._plan_forget_udp_flows(without, with_ep))
        ns = {}  # the container's netlink socket, opened when the plan runs

        def cnl() -> Netlink:
            if "nl" not in ns:
                ns["nl"] = Netlink(f"/proc/{c.pid}/ns/net")
            return ns["nl"]
        plan.cleanups.append(lambda: ns["nl"].close() if "nl" in ns else None)
        if cif is None:
            cif = cnl().free_name("eth")
        if direct:  # it takes its parent's MTU
            plan.add(f"ip link add link {net.interface} name {cif} address {mac} group {KLEENENET_GROUP} "
                     f"netns {c.name} type macvlan mode bridge",
                     lambda: self.nl.add_macvlan(cif, net.interface, mac, c.pid), lambda: cnl().delete_link(cif))
            plan.extend(self._plan_container_side(net, ep, c, cif, host_mac, cnl, self._leads(net, ep, wired)))
            return plan
        # A port of the LAN's bridge takes the bridge's MTU as it is: one below would lower it.
        mtu = (self.nl.mtu(net.interface) or net.mtu) if net.type == "custom" else net.mtu

        def add_veth():
            self.nl.add_veth(host, host_mac, cif, c.pid, mac, mtu)
            self.nl.disable_ipv6_autoconf(host)  # the host end needs no address of its own

        plan.add(f"ip link add {host} address {host_mac} mtu {mtu} group {KLEENENET_GROUP} type veth "
                 f"peer name {cif} address {mac} mtu {mtu} netns {c.name}; ip link set {host} addrgenmode none",
                 add_veth, lambda: self.nl.delete_link(host))  # takes the peer, its addresses, routes along
        if net.type != "loopback":
            plan.extend(self._plan_join_bridge(net, host))
        else:
            if ep.ip_address6:
                plan.add(f"ip addr add {NEXT_HOP6}/64 dev {host}", lambda: self.nl.add_address(host, NEXT_HOP6, 64))
            plan.add(f"ip link set {host} up", lambda: self.nl.set_up(host))
            for addr, plen in ((ep.ip_address, 32), (ep.ip_address6, 128)):
                if addr:
                    plan.add(f"ip route add {addr}/{plen} dev {host}",
                             lambda addr=addr, plen=plen: self.nl.add_route(f"{addr}/{plen}", host))
        plan.extend(self._plan_container_side(net, ep, c, cif, host_mac, cnl, self._leads(net, ep, wired)))
        return plan

    @staticmethod
    def _leads(net: Network, ep: Endpoint, wired: list[tuple[Network, Endpoint]]) -> set[int]:
        """The address families whose default route endpoint `ep` takes. It goes where published
        ports lead (ports.target), or their answers would leave by another network and be
        dropped there as spoofed."""
        return {family for family in (4, 6) if (ports.target(wired + [(net, ep)], family) or (None, None))[1] is ep}

    def _plan_join_bridge(self, net: Network, host: str) -> Plan:
        plan = Plan("connect")
        isolate = "" if net.icc else f"; bridge link set dev {host} isolated on"

        def join_bridge():
            self.nl.set_up(host, master=net.interface)
            if not net.icc:  # icc off: ports may talk to the gateway (the LAN) only, not to each other
                self.nl.set_isolated(host)
        plan.add(f"ip link set {host} master {net.interface} up{isolate}", join_bridge)
        return plan

    def _plan_container_side(self, net: Network, ep: Endpoint, c: Container, cif: str, host_mac: str,
                             cnl, leads: set[int]) -> Plan:
        plan = Plan("connect")
        at = f"ip -n {c.name}"
        for addr, subnet, full in ((ep.ip_address, net.subnet, 32), (ep.ip_address6, net.subnet6, 128)):
            if addr:
                plen = full if net.type == "loopback" else ipaddress.ip_network(subnet).prefixlen
                plan.add(f"{at} addr add {addr}/{plen} dev {cif}",
                         lambda addr=addr, plen=plen: cnl().add_address(cif, addr, plen))
        if not net.subnet6:
            plan.add(f"{at} link set {cif} addrgenmode none", lambda: cnl().disable_ipv6_autoconf(cif))
        else:  # a link-local address derived from its MAC: a bridge port is bound to it
            plan.add(f"{at} link set {cif} addrgenmode eui64", lambda: cnl().set_eui64_autoconf(cif))
        if net.type == "custom" and Path("/proc/sys/net/ipv6").exists():
            # The LAN's router advertisements give it no address or route kleenenet did not
            # (a LAN bridge's port would drop what it sent from a SLAAC address anyway).
            plan.add(f"ip netns exec {c.name} sysctl -w net.ipv6.conf.{cif}.accept_ra=0",
                     lambda: set_sysctls_in(f"/proc/{c.pid}/ns/net", {f"net.ipv6.conf.{cif}.accept_ra": "0"}))
        plan.add(f"{at} link set {cif} up", lambda: cnl().set_up(cif))
        for addr, subnet, gw, hop in ((ep.ip_address, net.subnet, net.gateway, NEXT_HOP4),
                                      (ep.ip_address6, net.subnet6, net.gateway6, NEXT_HOP6)):
            if not addr:
                continue
            if net.type == "loopback":
                if hop == NEXT_HOP4:
                    plan.add(f"{at} neigh replace {hop} lladdr {host_mac} dev {cif} nud permanent",
                             lambda: cnl().add_neighbour(cif, NEXT_HOP4, host_mac))
                plan.add(f"{at} route add {subnet} via {hop} dev {cif} onlink",
                         lambda subnet=subnet, hop=hop: cnl().add_route(subnet, cif, hop))
                gw = hop
            if not gw:
                continue
            version = ipaddress.ip_address(gw).version
            default = "0.0.0.0/0" if version == 4 else "::/0"
            if version in leads:
                plan.add(f"{at} route replace default via {gw} dev {cif}",
                         lambda gw=gw, default=default: cnl().replace_route(default, cif, gw))
            else:  # an internal network's gateway only while there is no other way out
                plan.add(f"{at} route add default via {gw} dev {cif} (unless it has a default route)",
                         lambda gw=gw, version=version, default=default: None if cnl().has_default_route(version)
                         else cnl().add_route(default, cif, gw))
        return plan

    def plan_detach(self, net: Network, ep: Endpoint, c: Container, others: list[Endpoint] = (),
                    wiring=None) -> Plan:
        plan = Plan("disconnect")
        host = endpoint_ifname(ep)
        mode = self._custom_mode(net) if net.type == "custom" else None
        if mode != "direct":
            plan.add(f"ip link del {host}", lambda: self.nl.delete_link(host))
        if net.type == "custom" and mode != "bridge" and c.running:  # a macvlan child: in its namespace only
            plan.add(f"ip -n {c.name} link del <its interface on {net.name}>",
                     lambda: self._delete_in_container(c, container_mac(net, c.id)))
        wired = _wired_others(ep, others, wiring)
        if c.running:  # the default route went with the interface: the next network in line takes it
            for family in (4, 6):
                was, now = ports.target(wired + [(net, ep)], family), ports.target(wired, family)
                if was and was[1] is ep and now and _default_hop(now[0], family):
                    plan.extend(self._plan_default_route(c, now[0], family))
        # unbound only once the port is gone
        without, with_ep = _forwards_around(net, ep, c, wired)
        delete = firewall.forwards_batch(with_ep, without)
        if net.type != "custom" or mode == "bridge":
            delete += firewall.delete_port(firewall.port_of(host, net, ep, container_mac(net, c.id)))
        if delete:
            plan.add(f"nft -f - <<EOF\n{delete}EOF", lambda: self.nft.run(delete))
        plan.extend(self._plan_forget_udp_flows(with_ep, without))
        return plan

    def _plan_forget_udp_flows(self, before: list[Forward], after: list[Forward]) -> Plan:
        """Once published UDP ports lead elsewhere (or nowhere), their flows' entries go: a peer
        that keeps sending would otherwise keep its first packet's NAT (conntrack.py)."""
        plan = Plan("conntrack")
        moved = {f.host_port for f in set(before) ^ set(after) if f.protocol == "udp"}
        if moved:
            plan.add(f"conntrack -D -p udp --orig-port-dst {','.join(firewall.spans(moved))} "
                     "(flows to the host's own addresses)",
                     lambda: conntrack.forget_udp_flows(moved, self.nl.own_addresses()))
        return plan

    @staticmethod
    def _delete_in_container(c: Container, mac: str) -> None:
        """Delete the interface with MAC `mac` in running container `c`'s namespace."""
        if not process_alive(c.pid, c.pid_start):
            return  # its namespace, and the interface, went with it
        cnl = Netlink(f"/proc/{c.pid}/ns/net")
        try:
            if name := cnl.link_with_mac(mac):
                cnl.delete_link(name)
        finally:
            cnl.close()

    def _plan_default_route(self, c: Container, net: Network, family: int) -> Plan:
        plan = Plan("default-route")
        hop, mac = _default_hop(net, family), container_mac(net, c.id)
        default = "0.0.0.0/0" if family == 4 else "::/0"

        def replace():
            if not process_alive(c.pid, c.pid_start):
                return  # its namespace went with it
            cnl = Netlink(f"/proc/{c.pid}/ns/net")
            try:
                cnl.replace_route(default, cnl.link_with_mac(mac), hop)
            finally:
                cnl.close()
        plan.add(f"ip -n {c.name} route replace default via {hop} dev <its interface on {net.name}>", replace)
        return plan

    def plan_new_namespace(self, c: Container, etc: Path | None = None) -> Plan:
        """A container's own namespace starts with lo, up (all a `disabled` container gets), and
        forwarding off whatever a new namespace inherits: a container on two networks is not a
        router between them. (Its process mounts its resolver files, `etc`, itself: spawn.)"""
        plan = Plan("namespace")
        if c.network_driver == "host":
            return plan  # the host's own network namespace
        if self.rootless:  # only a process of its user namespace may: its own did it (spawn)
            return plan
        plan.add(f"ip netns exec {c.name} sysctl -w " + " ".join(f"{k}=0" for k in CONTAINER_FORWARDING),
                 lambda: self._forwarding_off(c))
        plan.add(f"ip -n {c.name} link set lo up", lambda: self._set_lo_up(c))
        return plan

    def _forwarding_off(self, c: Container) -> None:
        set_sysctls_in(f"/proc/{c.pid}/ns/net", dict.fromkeys(CONTAINER_FORWARDING, "0"))

    def _set_lo_up(self, c: Container) -> None:
        cnl = Netlink(f"/proc/{c.pid}/ns/net")
        try:
            cnl.set_up("lo")
        finally:
            cnl.close()

    def replace_firewall(self, networks: list[Network], endpoints: list[Endpoint],
                         containers: list[Container] = ()) -> None:
        self.nft.run(firewall.render(self._firewall_state(networks, endpoints, containers)))

    # reconcile

    def plan_reconcile(self, networks: list[Network], endpoints: list[Endpoint],
                       running: list[Container]) -> Plan:
        """Recreate missing network interfaces, delete kleenenet interfaces nothing owns,
        and rewrite the firewall from the state. A custom network's interface is the LAN's: never
        created nor changed, only its containers' ports joined to it again (a LAN bridge that
        was recreated lost them)."""
        plan = Plan("reconcile")
        links = {link["name"]: link for link in self.nl.links()}
        wanted = {n.interface for n in networks} | {ep.epair for ep in endpoints}
        for name, link in sorted(links.items()):
            if link["group"] == KLEENENET_GROUP and name not in wanted:
                plan.add(f"ip link del {name}  # leftover", lambda name=name: self.nl.delete_link(name))
        present = {(ifname, str(iface)) for ifname, iface in self.nl.addresses()}
        for net in networks:
            link = links.get(net.interface)
            if net.type == "custom":
                if link is None:
                    plan.extend(self._plan_missing_interface(net))
                continue
            if link is None:
                plan.extend(self._plan_network_interface(net))
                continue
            for gw, subnet in ((net.gateway, net.subnet), (net.gateway6, net.subnet6)):
                prefix = ipaddress.ip_network(subnet).prefixlen if gw else None
                if gw and (net.interface, f"{gw}/{prefix}") not in present:
                    plan.add(f"ip addr add {gw}/{prefix} dev {net.interface}",
                             lambda net=net, gw=gw, prefix=prefix: self.nl.add_address(net.interface, gw, prefix))
            if link["mtu"] != net.mtu:
                plan.add(f"ip link set {net.interface} mtu {net.mtu}",
                         lambda net=net: self.nl.set_mtu(net.interface, net.mtu))
            if not link["up"]:
                plan.add(f"ip link set {net.interface} up", lambda net=net: self.nl.set_up(net.interface))
        by_id = {n.id: n for n in networks}
        for ep in endpoints:
            net, port = by_id.get(ep.network_id), links.get(ep.epair)
            bridge = net and net.type == "custom" and links.get(net.interface)
            if port and bridge and bridge["kind"] == "bridge" and port["master"] != bridge["index"]:
                plan.extend(self._plan_join_bridge(net, ep.epair))
        plan.extend(self._plan_forwarding(networks))
        state = self._firewall_state(networks, endpoints, running)
        if not firewall.in_effect(self.nft, state):
            batch = firewall.render(state)
            plan.add(f"nft -f - <<EOF\n{batch}EOF", lambda: self.nft.run(batch))
        return plan

    @staticmethod
    def _plan_missing_interface(net: Network) -> Plan:
        plan = Plan("reconcile")
        plan.add(f"# network {net.name}: its interface {net.interface} is missing (not kleenenet's: not created)",
                 lambda: print(f"kleenenet: network {net.name!r}: interface {net.interface} is missing; its "
                               "containers join it again when it is back and reconcile runs", file=sys.stderr))
        return plan

    def lost_endpoints(self, wired: list[tuple[Network, Endpoint, Container]]) -> list[Endpoint]:
        """The wired endpoints whose interface is gone: the host end of a veth, a macvlan child in
        its container's namespace. Not those of a custom network whose interface is gone: nothing
        can wire them before it is back (plan_reconcile says so)."""
        present = {link["name"] for link in self.nl.links()}
        modes: dict[str, str | None] = {}
        lost = []
        for net, ep, c in wired:
            if net.id not in modes:
                modes[net.id] = self._custom_mode(net) if net.type == "custom" else "veth"
            if modes[net.id] == "direct":
                if not self._has_interface(c, container_mac(net, c.id)):
                    lost.append(ep)
            elif modes[net.id] and endpoint_ifname(ep) not in present:
                lost.append(ep)
        return lost

    @staticmethod
    def _has_interface(c: Container, mac: str) -> bool:
        """Whether running container `c` has an interface with MAC `mac` (True when it died:
        reconcile takes it off its networks)."""
        if not process_alive(c.pid, c.pid_start):
            return True
        try:
            cnl = Netlink(f"/proc/{c.pid}/ns/net")
        except OSError:  # died since
            return True
        try:
            return cnl.link_with_mac(mac) is not None
        finally:
            cnl.close()

    endpoint_ifname = staticmethod(endpoint_ifname)

    # containers

    # Without root a container gets a user namespace of its own, and no network of kleenenet's.
    rootless_drivers = ("pasta", "slirp4netns", "disabled", "host")

    @property
    def rootless(self) -> bool:
        return os.geteuid() != 0

    def check_container(self, c: Container) -> None:
        if c.jail_param:
            raise InvalidInput(f"invalid jail parameter {c.jail_param[0]!r}: jail parameters need FreeBSD")
        if not os.path.isdir(c.root):
            raise InvalidInput(f"invalid root directory {c.root!r}: not a directory")
        if c.network_driver in usermode.DRIVERS:
            usermode.check(c)
        if self.rootless and c.user and process.resolve_user(c.user, c.root)[0] != 0:
            raise InvalidInput(f"invalid user {c.user!r}: without root a container has only your own user, as root")

    def check_snapshot(self, snapshot: str) -> str:
        raise InvalidInput(f"invalid image root {snapshot!r}: ZFS images need FreeBSD; give a directory")

    def spawn(self, c: Container, detach: bool, log: Path | None, etc: Path | None = None) -> process.Spawned:
        """`etc`: the directory of its resolver files (kleenenet/dns.py), mounted over its /etc's."""
        return process.spawn(c.cmd, c.network_driver != "host", detach, log, c.root, c.env, c.user,
                             etc and str(etc), new_userns=self.rootless, sysctls_off=CONTAINER_FORWARDING)

    user_mode_driver = staticmethod(usermode.available)

    def start_helper(self, c: Container) -> tuple[int, int]:
        """Start the user-mode helper (pasta, slirp4netns) of the running container `c`."""
        return usermode.start(c)

    end_helper = staticmethod(usermode.end)

    def host_resolver(self):
        """The host's resolver configuration, with the host's own addresses (a nameserver on
        one of them answers the host only)."""
        return dns.host_resolver(self.nl.own_addresses())

    def start_text(self, c: Container) -> str:
        return f"exec {shlex.join(c.cmd)}  # in the container's namespaces"

    def alive(self, c: Container) -> bool:
        return process_alive(c.pid, c.pid_start)


    def terminate(self, c: Container, timeout: float) -> None:
        process.terminate(c.pid, c.pid_start, timeout)

    def plan_stop(self, c: Container) -> Plan:
        return Plan("stop")  # the namespace went away with the container's last process

    def exec_command(self, c: Container, cmd: list[str], user: str):
        return process.exec_command(c.pid, c.pid_start, cmd, c.network_driver != "host", user or c.user, c.root)
