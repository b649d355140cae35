"""Stale connection-tracking entries of published UDP ports, deleted through ctnetlink (pyroute2).

NAT is decided on a flow's first packet, and a UDP peer that keeps sending never lets its entry
expire. Without this, a flow that began before a port was published keeps reaching the host, and
one that began while another container had the port keeps going to that container's old address.
(Docker and the CNI portmap plugin delete the same entries, for the same reason.)"""

from __future__ import annotations

import ipaddress
import socket

from kleenenet.platform.linux import netlink


def forget_udp_flows(host_ports: set[int], own_addresses: frozenset[str]) -> None:
    """Delete the entries of UDP flows to `host_ports` at one of the host's own addresses: those a
    published port's DNAT applies to (its rule matches `fib daddr type local` only). The host's
    own outgoing flows (to a DNS server's port 53, say) are left alone."""
    netlink.import_pyroute2()
    from pyroute2.conntrack import Conntrack, NFCTAttrTuple

    own = {ipaddress.ip_address(a) for a in own_addresses}
    for family in (socket.AF_INET, socket.AF_INET6):
        with Conntrack(nfgen_family=family) as ct:
            udp = NFCTAttrTuple(family=family, proto=socket.IPPROTO_UDP)  # filtered by the kernel
            stale = [e for e in ct.dump_entries(tuple_orig=udp)
                     if e.tuple_orig.dport in host_ports and ipaddress.ip_address(e.tuple_orig.daddr) in own]
            for entry in stale:
                try:
                    ct.delete(entry)
                except netlink.NetlinkError as e:
                    if e.code != netlink.ENOENT:  # it expired meanwhile
                        raise
