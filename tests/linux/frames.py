"""Raw Ethernet frames from inside a container (which has CAP_NET_RAW in its own namespace):
`send IFACE HEX...` puts frames on the wire as they are, `sniff IFACE` prints every frame it
receives as hex, one per line. The security tests build forged frames with the helpers below."""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

ETH_P_ALL = 0x0003
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload  # unpadded: br_netfilter trims padding


def arp_announce(src_mac: str, sender_mac: str, sender_ip: str) -> bytes:
    """A gratuitous ARP reply: `sender_ip is at sender_mac`, broadcast."""
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac_bytes(sender_mac) + \
        ipaddress.IPv4Address(sender_ip).packed + mac_bytes(BROADCAST) + ipaddress.IPv4Address(sender_ip).packed
    return ether(BROADCAST, src_mac, 0x0806, body)


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4_broadcast(src_mac: str, src_ip: str, marker: bytes) -> bytes:
    udp = struct.pack("!HHHH", 9999, 9999, 8 + len(marker), 0) + marker  # UDP checksum 0: none
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src_ip).packed, b"\xff\xff\xff\xff")
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]  # br_netfilter checks it
    return ether(BROADCAST, src_mac, 0x0800, header + udp)


def icmp6_all_nodes(src_mac: str, src_ip: str, icmp: bytes) -> bytes:
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + ipaddress.IPv6Address(src_ip).packed + \
        ipaddress.IPv6Address("ff02::1").packed
    return ether("33:33:00:00:00:01", src_mac, 0x86DD, ip6 + icmp)


def neighbour_advert(src_mac: str, src_ip: str, target: str) -> bytes:
    """An unsolicited neighbour advertisement: `target is at src_mac` (override flag set)."""
    icmp = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ipaddress.IPv6Address(target).packed + \
        bytes([2, 1]) + mac_bytes(src_mac)
    return icmp6_all_nodes(src_mac, src_ip, icmp)


def router_advert(src_mac: str, src_ip: str) -> bytes:
    return icmp6_all_nodes(src_mac, src_ip, struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0))


def vlan_tagged(frame: bytes, vid: int = 5) -> bytes:
    return frame[:12] + struct.pack("!HH", 0x8100, vid) + frame[12:]


def main() -> None:
    cmd, iface, *frames = sys.argv[1:]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    if cmd == "send":
        for frame in frames:
            s.send(bytes.fromhex(frame))
        return
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            print(data.hex(), flush=True)


if __name__ == "__main__":
    main()
