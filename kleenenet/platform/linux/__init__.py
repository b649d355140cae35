"""The Linux platform: network namespaces, veth pairs, Linux bridges, one nftables table.

bridge network   kleeneN is a Linux bridge holding the gateway; one veth per container, the
                 container end (ethK) moved into the container's namespace.
loopback network L3-routed: kleeneN is an anchor device without traffic; each container gets a veth
                 whose host end carries a /32 (/128) route to it. The container's routes point at
                 a link-local next hop: 169.254.1.1, a permanent neighbour entry resolving to the
                 host end's MAC (no address on the host, no ARP), and fe80::1 on the host end.
                 No L2 segment.
"""

from __future__ import annotations

import ipaddress
import shlex
from functools import cached_property
from pathlib import Path

from kleenenet.errors import InvalidInput
from kleenenet.model import Container, Endpoint, Network
from kleenenet.plan import Plan
from kleenenet.platform import stable_mac
from kleenenet.platform.linux import firewall, process
from kleenenet.platform.linux.firewall import FirewallState
from kleenenet.platform.linux.namespaces import process_alive, set_sysctls_in
from kleenenet.platform.linux.netlink import KLEENENET_GROUP, Netlink

NEXT_HOP4 = "169.254.1.1"
NEXT_HOP6 = "fe80::1"
INTERFACE_PREFIX = "kleene"
ENDPOINT_PREFIX = "kv"  # + endpoint id: 14 characters, within IFNAMSIZ
CONTAINER_FORWARDING = ("net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding")


def endpoint_ifname(ep: Endpoint) -> str:
    return ENDPOINT_PREFIX + ep.id


def container_mac(net: Network, container_id: str) -> str:
    return stable_mac(net.id, container_id)


def _fw(networks: list[Network], endpoints: list[Endpoint]) -> FirewallState:
    """The firewall's view of the state: networks, and the ports of their running containers."""
    by_id = {n.id: n for n in networks}
    return FirewallState(networks, [
        firewall.port_of(ep.epair, by_id[ep.network_id], ep, container_mac(by_id[ep.network_id], ep.container_id))
        for ep in endpoints if ep.epair and ep.network_id in by_id])


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


class LinuxPlatform:
    name = "linux"

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
            if any(getattr(n, attr) for n in networks if n.type == "loopback" or not n.internal):
                on = _sysctl_path(key).read_text().strip() == "1"
                found.append(Check(True if on else None, f"{key}={'1' if on else '0'}",
                                   "" if on else "kleenenet turns it on with its networks: run kleenenet reconcile"))
        return found

    def check_network(self, net: Network) -> None:
        if net.type == "custom":
            raise InvalidInput("network type 'custom' is not supported on Linux yet: use bridge or loopback")

    # networks

    def plan_create_network(self, net: Network, before: list[Network], after: list[Network],
                            endpoints: list[Endpoint]) -> Plan:
        plan = Plan("network-create")
        plan.extend(self._plan_network_interface(net))
        plan.extend(self._plan_forwarding(after))
        plan.extend(self._plan_firewall(_fw(before, endpoints), _fw(after, endpoints)))
        return plan

    def _plan_network_interface(self, net: Network) -> Plan:
        plan = Plan("network-interface")
        name = net.interface
        if net.type == "bridge":
            mac = stable_mac(net.id)
            plan.add(f"ip link add {name} group {KLEENENET_GROUP} address {mac} type bridge",
                     lambda: self.nl.add_link(name, "bridge", mac), lambda: self.nl.delete_link(name))
            for gw, subnet in ((net.gateway, net.subnet), (net.gateway6, net.subnet6)):
                if gw:
                    prefix = ipaddress.ip_network(subnet).prefixlen
                    plan.add(f"ip addr add {gw}/{prefix} dev {name}",
                             lambda gw=gw, prefix=prefix: self.nl.add_address(name, gw, prefix))
        else:
            # The anchor of a routed network carries no traffic. It is a bridge without ports
            # rather than a dummy because not every kernel ships the dummy driver.
            plan.add(f"ip link add {name} group {KLEENENET_GROUP} type bridge",
                     lambda: self.nl.add_link(name, "bridge"), lambda: self.nl.delete_link(name))
        if net.type == "loopback" or not net.subnet6:
            plan.add(f"ip link set {name} addrgenmode none", lambda: self.nl.disable_ipv6_autoconf(name))
        plan.add(f"ip link set {name} up", lambda: self.nl.set_up(name))
        return plan

    def _plan_forwarding(self, networks: list[Network]) -> Plan:
        """Turn forwarding on in kleenenet's own namespace when a network needs it, never off."""
        plan = Plan("forwarding")
        # Traffic is routed out of non-internal networks, and between the containers of a
        # loopback network; an internal bridge keeps its traffic on L2.
        routed = [n for n in networks if n.type == "loopback" or not n.internal]
        wanted = []
        if any(n.subnet for n in routed):
            wanted.append("net.ipv4.ip_forward")
        if any(n.subnet6 for n in routed):
            wanted.append("net.ipv6.conf.all.forwarding")
        for key in wanted:
            path = _sysctl_path(key)
            before = path.read_text().strip()
            if before != "1":
                plan.add(f"sysctl -w {key}=1", lambda path=path: path.write_text("1"),
                         lambda path=path, before=before: path.write_text(before))
        return plan

    def _plan_firewall(self, before: FirewallState, after: FirewallState) -> Plan:
        plan = Plan("firewall")
        batch = firewall.render(after)
        plan.add(f"nft -f - <<EOF\n{batch}EOF", lambda: self.nft.run(batch),
                 lambda: self.nft.run(firewall.render(before)))
        return plan

    def plan_remove_network(self, net: Network, before: list[Network], after: list[Network],
                            endpoints: list[Endpoint]) -> Plan:
        plan = Plan("network-remove")
        plan.extend(self._plan_firewall(_fw(before, endpoints), _fw(after, endpoints)))
        plan.add(f"ip link del {net.interface}", lambda: self.nl.delete_link(net.interface))
        return plan

    # endpoints

    def check_attach(self, net: Network, c: Container) -> None:
        pass  # any namespace joins any network type

    def plan_attach(self, net: Network, ep: Endpoint, c: Container, cif: str | None = None,
                    others: list[Endpoint] = (), wiring=None) -> Plan:
        """Wire endpoint `ep` into the running container `c` as interface `cif` (default: the
        container's next free ethK). `others`: the container's endpoints already wired."""
        plan = Plan("connect")
        host = endpoint_ifname(ep)
        mac = container_mac(net, c.id)
        host_mac = stable_mac("host", net.id, c.id)
        # The port is bound to its container's addresses before it exists, so no packet it
        # ever carries goes unchecked.
        port = firewall.port_of(host, net, ep, mac)
        add, delete = firewall.add_port(port), firewall.delete_port(port)
        plan.add(f"nft -f - <<EOF\n{add}EOF", lambda: self.nft.run(add), lambda: self.nft.run(delete))
        ns = {}  # the container's netlink socket, opened when the plan runs

        def cnl() -> Netlink:
            if "nl" not in ns:
                ns["nl"] = Netlink(f"/proc/{c.pid}/ns/net")
            return ns["nl"]
        plan.cleanups.append(lambda: ns["nl"].close() if "nl" in ns else None)
        if cif is None:
            cif = cnl().free_name("eth")

        def add_veth():
            self.nl.add_veth(host, host_mac, cif, c.pid, mac)
            self.nl.disable_ipv6_autoconf(host)  # the host end needs no address of its own

        plan.add(f"ip link add {host} address {host_mac} group {KLEENENET_GROUP} type veth peer name {cif} "
                 f"address {mac} netns {c.name}; ip link set {host} addrgenmode none",
                 add_veth, lambda: self.nl.delete_link(host))  # takes the peer, its addresses, routes along
        if net.type == "bridge":
            isolate = "" if net.icc else f"; bridge link set dev {host} isolated on"

            def join_bridge():
                self.nl.set_up(host, master=net.interface)
                if not net.icc:  # icc off: ports may talk to the gateway only, not to each other
                    self.nl.set_isolated(host)
            plan.add(f"ip link set {host} master {net.interface} up{isolate}", join_bridge)
        else:
            if ep.ip_address6:
                plan.add(f"ip addr add {NEXT_HOP6}/64 dev {host}", lambda: self.nl.add_address(host, NEXT_HOP6, 64))
            plan.add(f"ip link set {host} up", lambda: self.nl.set_up(host))
            for addr, plen in ((ep.ip_address, 32), (ep.ip_address6, 128)):
                if addr:
                    plan.add(f"ip route add {addr}/{plen} dev {host}",
                             lambda addr=addr, plen=plen: self.nl.add_route(f"{addr}/{plen}", host))
        plan.extend(self._plan_container_side(net, ep, c, cif, host_mac, cnl))
        return plan

    def _plan_container_side(self, net: Network, ep: Endpoint, c: Container, cif: str, host_mac: str,
                             cnl) -> Plan:
        plan = Plan("connect")
        at = f"ip -n {c.name}"
        for addr, subnet, full in ((ep.ip_address, net.subnet, 32), (ep.ip_address6, net.subnet6, 128)):
            if addr:
                plen = ipaddress.ip_network(subnet).prefixlen if net.type == "bridge" else full
                plan.add(f"{at} addr add {addr}/{plen} dev {cif}",
                         lambda addr=addr, plen=plen: cnl().add_address(cif, addr, plen))
        if not net.subnet6:
            plan.add(f"{at} link set {cif} addrgenmode none", lambda: cnl().disable_ipv6_autoconf(cif))
        else:  # a link-local address derived from its MAC: a bridge port is bound to it
            plan.add(f"{at} link set {cif} addrgenmode eui64", lambda: cnl().set_eui64_autoconf(cif))
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
            if gw:
                version = ipaddress.ip_address(gw).version
                plan.add(f"{at} route add default via {gw} dev {cif} (unless it has a default route)",
                         lambda gw=gw, version=version: None if cnl().has_default_route(version)
                         else cnl().add_route("0.0.0.0/0" if version == 4 else "::/0", cif, gw))
        return plan

    def plan_detach(self, net: Network, ep: Endpoint, c: Container, others: list[Endpoint] = (),
                    wiring=None) -> Plan:
        plan = Plan("disconnect")
        host = endpoint_ifname(ep)
        plan.add(f"ip link del {host}", lambda: self.nl.delete_link(host))
        # unbound only once the port is gone
        delete = firewall.delete_port(firewall.port_of(host, net, ep, container_mac(net, c.id)))
        plan.add(f"nft -f - <<EOF\n{delete}EOF", lambda: self.nft.run(delete))
        return plan

    def plan_new_namespace(self, c: Container) -> Plan:
        """A container's own namespace starts with lo, up (all a `disabled` container gets), and
        forwarding off whatever a new namespace inherits: a container on two networks is not a
        router between them."""
        plan = Plan("namespace")
        if c.network_driver == "host":
            return plan  # the host's own network namespace
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

    def replace_firewall(self, networks: list[Network], endpoints: list[Endpoint]) -> None:
        self.nft.run(firewall.render(_fw(networks, endpoints)))

    # reconcile

    def plan_reconcile(self, networks: list[Network], endpoints: list[Endpoint],
                       running: list[Container]) -> Plan:
        """Recreate missing network interfaces, delete kleenenet interfaces nothing owns,
        and rewrite the firewall from the state."""
        plan = Plan("reconcile")
        links = {link["name"]: link for link in self.nl.links()}
        wanted = {n.interface for n in networks} | {ep.epair for ep in endpoints}
        for name, link in sorted(links.items()):
            if link["group"] == KLEENENET_GROUP and name not in wanted:
                plan.add(f"ip link del {name}  # leftover", lambda name=name: self.nl.delete_link(name))
        present = {(ifname, str(iface)) for ifname, iface in self.nl.addresses()}
        for net in networks:
            link = links.get(net.interface)
            if link is None:
                plan.extend(self._plan_network_interface(net))
                continue
            for gw, subnet in ((net.gateway, net.subnet), (net.gateway6, net.subnet6)):
                prefix = ipaddress.ip_network(subnet).prefixlen if gw else None
                if gw and (net.interface, f"{gw}/{prefix}") not in present:
                    plan.add(f"ip addr add {gw}/{prefix} dev {net.interface}",
                             lambda net=net, gw=gw, prefix=prefix: self.nl.add_address(net.interface, gw, prefix))
            if not link["up"]:
                plan.add(f"ip link set {net.interface} up", lambda net=net: self.nl.set_up(net.interface))
        plan.extend(self._plan_forwarding(networks))
        state = _fw(networks, endpoints)
        if not firewall.in_effect(self.nft, state):
            batch = firewall.render(state)
            plan.add(f"nft -f - <<EOF\n{batch}EOF", lambda: self.nft.run(batch))
        return plan

    def lost_endpoints(self, wired: list[tuple[Network, Endpoint, Container]]) -> list[Endpoint]:
        """The wired endpoints whose host interface is gone."""
        present = {link["name"] for link in self.nl.links()}
        return [ep for _, ep, _ in wired if endpoint_ifname(ep) not in present]

    endpoint_ifname = staticmethod(endpoint_ifname)

    # containers

    def check_container(self, c: Container) -> None:
        if c.jail_param:
            raise InvalidInput(f"invalid jail parameter {c.jail_param[0]!r}: jail parameters need FreeBSD")

    def spawn(self, c: Container, detach: bool, log: Path | None) -> process.Spawned:
        return process.spawn(c.cmd, c.network_driver != "host", detach, log)

    def start_text(self, c: Container) -> str:
        return f"exec {shlex.join(c.cmd)}  # in the container's namespaces"

    def alive(self, c: Container) -> bool:
        return process_alive(c.pid, c.pid_start)

    def terminate(self, c: Container, timeout: float) -> None:
        process.terminate(c.pid, c.pid_start, timeout)

    def plan_stop(self, c: Container) -> Plan:
        return Plan("stop")  # the namespace went away with the container's last process

    def exec_in(self, c: Container, cmd: list[str]) -> None:
        process.exec_in(c.pid, c.pid_start, cmd, c.network_driver != "host")
