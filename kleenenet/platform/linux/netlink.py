"""rtnetlink through pyroute2, in the namespace kleenenet runs in or in a container's."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys
import threading

from kleenenet.platform import first_free_name
from kleenenet.platform.linux.namespaces import netlink_socket

# Every host interface kleenenet creates carries this link group (set atomically at creation),
# which is how reconcile recognises leftovers; `ip link show group 27502` lists them.
KLEENENET_GROUP = 0x6B6E

IFA_F_NODAD = 0x02  # addresses kleenenet assigns are unique by construction: skip DAD's delay
RTNH_F_ONLINK = 0x04
IN6_ADDR_GEN_MODE_EUI64, IN6_ADDR_GEN_MODE_NONE = 0, 1
NUD_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
RTPROT_RA = 9
IFF_UP, IFF_LOOPBACK = 0x1, 0x8
ARPHRD_ETHER = 1
ENOENT, EEXIST, ENODEV, EAFNOSUPPORT = 2, 17, 19, 97


# pyroute2's, imported by the first Netlink: commands that only read the state never load them.
IPRoute = NetlinkError = None
_importing = threading.Lock()


def import_pyroute2() -> None:
    """IPRoute and NetlinkError from the modules that define them. `import pyroute2` would run the
    package's __init__, which imports every API pyroute2 has (NDB, IPDB, conntrack, WireGuard,
    nl80211...): ~45 ms of each command that touches the host."""
    global IPRoute, NetlinkError
    with _importing:
        if IPRoute is None:
            _register_without_init("pyroute2")
            from pyroute2.iproute.linux import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError


def _register_without_init(name: str) -> None:
    """Register the package `name` without running its __init__, so that its submodules import
    alone. Asking the package itself for a name it does not have yet (`from pyroute2 import NDB`)
    runs the real __init__ then."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str):
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            raise AttributeError(attr)  # a submodule: the import system loads it
        if package.__dict__.pop("__getattr__", None) is not None:
            spec.loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = __getattr__
    sys.modules[name] = package


class Netlink:
    def __init__(self, ns_path: str | None = None):
        import_pyroute2()
        self.ipr = IPRoute(use_socket=netlink_socket(ns_path)) if ns_path else IPRoute()
        # A container's socket lives for one plan and only kleenenet changes its interfaces, so
        # name -> index can be remembered; on the host another process may recreate an interface.
        self._indexes: dict[str, int] | None = {} if ns_path else None

    def close(self) -> None:
        self.ipr.close()

    # queries

    def index(self, name: str) -> int | None:
        if self._indexes is not None and name in self._indexes:
            return self._indexes[name]
        found = self.ipr.link_lookup(ifname=name)
        if found and self._indexes is not None:
            self._indexes[name] = found[0]
        return found[0] if found else None

    def links(self) -> list[dict]:
        return [self._link(link) for link in self.ipr.get_links()]

    def link(self, name: str) -> dict | None:
        """One interface as links() gives it (None: no such interface)."""
        index = self.index(name)
        if index is None:
            return None
        try:
            return self._link(self.ipr.get_links(index)[0])
        except NetlinkError as e:
            if e.code in (ENOENT, ENODEV):  # gone since the lookup
                return None
            raise

    @staticmethod
    def _link(link) -> dict:
        info = link.get_attr("IFLA_LINKINFO")
        return {
            "index": link["index"],
            "name": link.get_attr("IFLA_IFNAME"),
            "group": link.get_attr("IFLA_GROUP"),
            "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
            "up": bool(link["flags"] & IFF_UP),
            "mtu": link.get_attr("IFLA_MTU"),
            "master": link.get_attr("IFLA_MASTER"),  # index of its bridge (bond...), or None
            "loopback": bool(link["flags"] & IFF_LOOPBACK),
            "ethernet": link["ifi_type"] == ARPHRD_ETHER,
            "mac": link.get_attr("IFLA_ADDRESS"),
        }

    def addresses(self) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
        names = {link["index"]: link["name"] for link in self.links()}
        out = []
        for a in self.ipr.get_addr():
            addr = a.get_attr("IFA_ADDRESS")
            out.append((names.get(a["index"], str(a["index"])), ipaddress.ip_interface(f"{addr}/{a['prefixlen']}")))
        return out

    def own_addresses(self) -> frozenset[str]:
        """Every address on the host's interfaces (one dump of addresses, no interface names)."""
        return frozenset(str(a.get_attr("IFA_ADDRESS")) for a in self.ipr.get_addr())

    def interface_addresses(self, name: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """The addresses on interface `name`, IPv6 link-local ones aside."""
        index = self.index(name)
        if index is None:
            return []
        found = (ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                 for a in self.ipr.get_addr(index=index))
        return [a for a in found if not (a.version == 6 and a.is_link_local)]

    def routes(self) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network, bool]]:
        """(interface, destination, device is kleenenet's) for the main table's routes."""
        links = {link["index"]: link for link in self.links()}
        out = []
        for family in (2, 10):
            for r in self.ipr.get_routes(family=family, table=254):
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                link = links.get(r.get_attr("RTA_OIF"), {"name": "?", "group": None})
                out.append((link["name"], ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False),
                            link["group"] == KLEENENET_GROUP))
        return out

    def default_route_interface(self) -> str | None:
        for name, dst, _ in self.routes():
            if dst.prefixlen == 0 and dst.version == 4:
                return name
        for name, dst, _ in self.routes():
            if dst.prefixlen == 0:
                return name
        return None

    def has_default_route(self, version: int) -> bool:
        return any(r["dst_len"] == 0 for r in self.ipr.get_routes(family=2 if version == 4 else 10, table=254))

    def ra_interfaces(self) -> list[str]:
        """The interfaces with IPv6 routes learnt from router advertisements."""
        names = {link["index"]: link["name"] for link in self.links()}
        return sorted({names[r.get_attr("RTA_OIF")] for r in self.ipr.get_routes(family=10, table=254)
                       if r["proto"] == RTPROT_RA and r.get_attr("RTA_OIF") in names})

    def has_global_ipv6(self) -> bool:
        """An IPv6 address of global scope on an interface that is not kleenenet's, or an IPv6
        default route: this namespace has IPv6 beyond its own links."""
        ours = {link["index"] for link in self.links() if link["group"] == KLEENENET_GROUP}
        if any(a["scope"] == RT_SCOPE_UNIVERSE and a["index"] not in ours for a in self.ipr.get_addr(family=10)):
            return True
        return self.has_default_route(6)

    def mtu(self, name: str) -> int | None:
        index = self.index(name)
        if index is None:
            return None
        return self.ipr.get_links(index)[0].get_attr("IFLA_MTU")

    def free_name(self, prefix: str, taken: set[str] = frozenset()) -> str:
        return first_free_name(prefix, {link["name"] for link in self.links()} | set(taken))

    # changes

    def _idx(self, name: str) -> int:
        index = self.index(name)
        if index is None:
            raise LookupError(f"interface {name} does not exist")
        return index

    def add_link(self, name: str, kind: str, mac: str | None = None, mtu: int | None = None) -> None:
        extra = {"address": mac} if mac else {}
        self.ipr.link("add", ifname=name, kind=kind, group=KLEENENET_GROUP, **extra)
        if mtu:
            # Set apart from the creation: a bridge keeps an MTU given this way, while one given
            # at creation follows its ports (1500 again when the last one leaves).
            self.set_mtu(name, mtu)

    def set_mtu(self, name: str, mtu: int) -> None:
        self.ipr.link("set", index=self._idx(name), mtu=mtu)

    def add_veth(self, name: str, mac: str, peer: str, peer_pid: int, peer_mac: str,
                 mtu: int | None = None) -> None:
        fd = os.open(f"/proc/{peer_pid}/ns/net", os.O_RDONLY)
        extra = {"mtu": mtu} if mtu else {}
        try:
            self.ipr.link("add", ifname=name, kind="veth", group=KLEENENET_GROUP, address=mac, **extra,
                          peer={"ifname": peer, "net_ns_fd": fd, "address": peer_mac, **extra})
        finally:
            os.close(fd)

    def add_macvlan(self, name: str, parent: str, mac: str, peer_pid: int) -> None:
        """A macvlan child of `parent` in bridge mode, created straight into the namespace of
        process `peer_pid` as `name` (it never exists on the host's side)."""
        fd = os.open(f"/proc/{peer_pid}/ns/net", os.O_RDONLY)
        try:
            self.ipr.link("add", ifname=name, kind="macvlan", macvlan_mode="bridge", link=self._idx(parent),
                          group=KLEENENET_GROUP, address=mac, net_ns_fd=fd)
        finally:
            os.close(fd)

    def delete_link(self, name: str) -> None:
        index = self.index(name)
        if self._indexes is not None:
            self._indexes.pop(name, None)
        if index is not None:
            try:
                self.ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code not in (ENOENT, ENODEV):  # a veth whose peer's namespace died is gone
                    raise

    def set_up(self, name: str, master: str | None = None) -> None:
        extra = {"master": self._idx(master)} if master else {}
        self.ipr.link("set", index=self._idx(name), state="up", **extra)

    def disable_ipv6_autoconf(self, name: str) -> None:
        """No link-local address, hence no DAD, router solicitations or MLD from this interface.
        Hundreds of chatty ports on one bridge make every later attach slower."""
        try:
            self._set_addr_gen_mode(name, IN6_ADDR_GEN_MODE_NONE)
        except NetlinkError as e:
            if e.code != EAFNOSUPPORT:  # no IPv6 on the link at all (an MTU below 1280)
                raise

    def set_eui64_autoconf(self, name: str) -> None:
        """A link-local address derived from the MAC, whatever the namespace's default mode."""
        self._set_addr_gen_mode(name, IN6_ADDR_GEN_MODE_EUI64)

    def _set_addr_gen_mode(self, name: str, mode: int) -> None:
        self.ipr.link("set", index=self._idx(name), IFLA_AF_SPEC={
            "attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", mode]]}]]})

    def set_isolated(self, name: str) -> None:
        """A bridge port that may only talk to non-isolated ports (the bridge itself)."""
        self.ipr.brport("set", index=self._idx(name), isolated=1)

    def add_address(self, name: str, address: str, prefixlen: int) -> None:
        try:
            self.ipr.addr("add", index=self._idx(name), address=address, prefixlen=prefixlen, flags=IFA_F_NODAD)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise

    def add_neighbour(self, dev: str, address: str, mac: str) -> None:
        self.ipr.neigh("replace", ifindex=self._idx(dev), dst=address, lladdr=mac, state=NUD_PERMANENT)

    def link_with_mac(self, mac: str) -> str | None:
        return next((link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()
                     if link.get_attr("IFLA_ADDRESS") == mac), None)

    def replace_route(self, dst: str, dev: str, gateway: str) -> None:
        self.ipr.route("replace", dst=dst, oif=self._idx(dev), gateway=gateway, flags=RTNH_F_ONLINK)

    def add_route(self, dst: str, dev: str, gateway: str | None = None) -> None:
        kw = {"dst": dst, "oif": self._idx(dev)}
        if gateway:
            kw.update(gateway=gateway, flags=RTNH_F_ONLINK)
        else:
            kw["scope"] = 253  # link
        try:
            self.ipr.route("add", **kw)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise
