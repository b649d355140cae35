"""rtnetlink through pyroute2, in the namespace kleenenet runs in or in a container's."""

from __future__ import annotations

import ipaddress
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kleenenet.platform import first_free_name
from kleenenet.platform.linux.namespaces import netlink_socket

# Every host interface kleenenet creates carries this link group (set atomically at creation),
# which is how reconcile recognises leftovers; `ip link show group 27502` lists them.
KLEENENET_GROUP = 0x6B6E

IFA_F_NODAD = 0x02  # addresses kleenenet assigns are unique by construction: skip DAD's delay
RTNH_F_ONLINK = 0x04
IN6_ADDR_GEN_MODE_EUI64, IN6_ADDR_GEN_MODE_NONE = 0, 1
NUD_PERMANENT = 0x80
ENOENT, EEXIST, ENODEV = 2, 17, 19


class Netlink:
    def __init__(self, ns_path: str | None = None):
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
        out = []
        for link in self.ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            out.append({
                "index": link["index"],
                "name": link.get_attr("IFLA_IFNAME"),
                "group": link.get_attr("IFLA_GROUP"),
                "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
                "up": bool(link["flags"] & 1),
            })
        return out

    def addresses(self) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
        names = {link["index"]: link["name"] for link in self.links()}
        out = []
        for a in self.ipr.get_addr():
            addr = a.get_attr("IFA_ADDRESS")
            out.append((names.get(a["index"], str(a["index"])), ipaddress.ip_interface(f"{addr}/{a['prefixlen']}")))
        return out

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

    def free_name(self, prefix: str, taken: set[str] = frozenset()) -> str:
        return first_free_name(prefix, {link["name"] for link in self.links()} | set(taken))

    # changes

    def _idx(self, name: str) -> int:
        index = self.index(name)
        if index is None:
            raise LookupError(f"interface {name} does not exist")
        return index

    def add_link(self, name: str, kind: str, mac: str | None = None) -> None:
        extra = {"address": mac} if mac else {}
        self.ipr.link("add", ifname=name, kind=kind, group=KLEENENET_GROUP, **extra)

    def add_veth(self, name: str, mac: str, peer: str, peer_pid: int, peer_mac: str) -> None:
        fd = os.open(f"/proc/{peer_pid}/ns/net", os.O_RDONLY)
        try:
            self.ipr.link("add", ifname=name, kind="veth", group=KLEENENET_GROUP, address=mac,
                          peer={"ifname": peer, "net_ns_fd": fd, "address": peer_mac})
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
        self._set_addr_gen_mode(name, IN6_ADDR_GEN_MODE_NONE)

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
