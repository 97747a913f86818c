"""Hand-made Ethernet frames sent from inside a pod, and raw listeners on a VM's own stack.

Used by the isolation tests: a pod writes frames straight onto its eth0 with an
AF_PACKET socket (any source MAC or address it likes, to any destination MAC),
and raw IP sockets opened in a VM's namespace see every IPv4 or IPv6 packet of
their protocol that the VM's kernel takes in for itself.  Each probe carries a
marker, so the listeners tell probes from the lab's own traffic.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ovn_underlay.dataplane import nsenter

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
BROADCAST = "ff:ff:ff:ff:ff:ff"
IPPROTO_ICMPV6 = 58
IP_PKTINFO = 8  # <linux/in.h>; the socket module lacks it
ICMP_ECHO = 8
ICMPV6_ECHO = 128
ICMPV6_RA = 134
ICMPV6_NS = 135


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _with_checksum(segment: bytes, offset: int, pseudo: bytes) -> bytes:
    value = _checksum(pseudo + segment) or 0xFFFF
    return segment[:offset] + struct.pack("!H", value) + segment[offset + 2:]


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, proto, length)
    return s.packed + d.packed + struct.pack("!IxxxB", length, proto)


def _transport(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    """A UDP datagram, a TCP SYN carrying ``payload``, or an ICMP(v6) echo request."""
    v6 = ipaddress.ip_address(src).version == 6
    if proto == socket.IPPROTO_UDP:
        seg = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
        offset = 6
    elif proto == socket.IPPROTO_TCP:
        seg = struct.pack("!HHIIBBHHH", 40000, 9, 1, 0, 5 << 4, 0x02, 64240, 0, 0) + payload
        offset = 16
    else:
        seg = struct.pack("!BBHHH", ICMPV6_ECHO if v6 else ICMP_ECHO, 0, 0, 1, 1) + payload
        offset = 2
    pseudo = _pseudo(src, dst, proto, len(seg)) if v6 or proto != socket.IPPROTO_ICMP else b""
    return _with_checksum(seg, offset, pseudo)


def ipv4(src: str, dst: str, proto: int, segment: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 1, 0, 64, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return _with_checksum(header, 10, b"") + segment


def ipv6(src: str, dst: str, next_header: int, segment: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), next_header, hop_limit,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + segment


def frame(dst_mac: str, src_mac: str, ethertype: int, packet: bytes) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + packet


def ip_frame(dst_mac: str, src_mac: str, src: str, dst: str, proto: int,
             payload: bytes) -> bytes:
    """An IPv4 or IPv6 frame of ``proto`` (UDP, TCP SYN, ICMP echo) from ``src`` to ``dst``."""
    if ipaddress.ip_address(src).version == 4:
        return frame(dst_mac, src_mac, ETH_P_IP, ipv4(src, dst, proto,
                                                       _transport(proto, src, dst, payload)))
    nh = IPPROTO_ICMPV6 if proto == socket.IPPROTO_ICMP else proto
    return frame(dst_mac, src_mac, ETH_P_IPV6,
                 ipv6(src, dst, nh, _transport(nh, src, dst, payload)))


def multicast_mac(group: str) -> str:
    """The Ethernet address of an IPv6 multicast group (33:33 + its last 4 bytes)."""
    tail = ipaddress.IPv6Address(group).packed[-4:]
    return ":".join(f"{b:02x}" for b in (0x33, 0x33, *tail))


def solicited_node(target: str) -> str:
    tail = ipaddress.IPv6Address(target).packed[-3:]
    return str(ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + tail))


def router_advertisement(src_mac: str, src: str, prefix: str) -> bytes:
    """An RA to all nodes: default router ``src``, on-link autoconf ``prefix``/64."""
    net = ipaddress.IPv6Network(prefix)
    body = struct.pack("!BBHBBHII", ICMPV6_RA, 0, 0, 64, 0, 1800, 0, 0)
    body += struct.pack("!BB6s", 1, 1, mac_bytes(src_mac))
    body += struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0,
                        net.network_address.packed)
    dst = "ff02::1"
    seg = _with_checksum(body, 2, _pseudo(src, dst, IPPROTO_ICMPV6, len(body)))
    return frame(multicast_mac(dst), src_mac, ETH_P_IPV6,
                 ipv6(src, dst, IPPROTO_ICMPV6, seg, hop_limit=255))


def neighbor_solicitation(src_mac: str, src: str, target: str) -> bytes:
    """An NS for ``target`` from ``src`` (which the VM would add as a neighbour)."""
    body = struct.pack("!BBHI16s", ICMPV6_NS, 0, 0, 0, ipaddress.IPv6Address(target).packed)
    body += struct.pack("!BB6s", 1, 1, mac_bytes(src_mac))
    dst = solicited_node(target)
    seg = _with_checksum(body, 2, _pseudo(src, dst, IPPROTO_ICMPV6, len(body)))
    return frame(multicast_mac(dst), src_mac, ETH_P_IPV6,
                 ipv6(src, dst, IPPROTO_ICMPV6, seg, hop_limit=255))


def link_local(mac: str) -> str:
    """The EUI-64 link-local address of ``mac``."""
    raw = bytearray(mac_bytes(mac))
    raw[0] ^= 0x02
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + bytes(raw[:3]) + b"\xff\xfe"
                                     + bytes(raw[3:])))


def send_frames(netns_path: str, ifname: str, frames: list[bytes]) -> None:
    """Write ``frames`` onto ``ifname`` inside the namespace at ``netns_path``."""
    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
            sock.bind((ifname, 0))
            for raw in frames:
                sock.send(raw)
                time.sleep(0.002)

    nsenter.run_in_netns(netns_path, send)


@dataclass(frozen=True)
class Seen:
    """A packet a VM's stack took in: protocol, source, the interface it came in on, marker."""

    family: int
    proto: int
    source: str
    ifindex: int
    icmp_type: int | None
    marked: bool


class StackListener:
    """Raw IPv4 and IPv6 sockets (UDP, TCP, ICMP) in one namespace, seeing what its stack gets."""

    PROTOCOLS = ((socket.AF_INET, socket.IPPROTO_UDP), (socket.AF_INET, socket.IPPROTO_TCP),
                 (socket.AF_INET, socket.IPPROTO_ICMP), (socket.AF_INET6, socket.IPPROTO_UDP),
                 (socket.AF_INET6, socket.IPPROTO_TCP), (socket.AF_INET6, IPPROTO_ICMPV6))

    def __init__(self, netns_path: str, marker: bytes) -> None:
        self.marker = marker
        self.sockets: list[tuple[int, int, socket.socket]] = nsenter.run_in_netns(
            netns_path, self._open)

    def _open(self) -> list[tuple[int, int, socket.socket]]:
        opened = []
        for family, proto in self.PROTOCOLS:
            sock = socket.socket(family, socket.SOCK_RAW, proto)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setblocking(False)
            opened.append((family, proto, sock))
        return opened

    def drain(self) -> list[Seen]:
        """Everything received so far."""
        seen: list[Seen] = []
        for family, proto, sock in self.sockets:
            while select.select([sock], [], [], 0)[0]:
                data, ancillary, _, addr = sock.recvmsg(65535, 256)
                body = data[20:] if family == socket.AF_INET else data
                icmp_type = body[0] if proto in (socket.IPPROTO_ICMP, IPPROTO_ICMPV6) else None
                seen.append(Seen(family, proto, str(addr[0]).split("%")[0],
                                 _ingress(ancillary), icmp_type, self.marker in data))
        return seen

    def close(self) -> None:
        for _, _, sock in self.sockets:
            sock.close()


def _ingress(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The ifindex from IP_PKTINFO (``int`` first) or IPV6_PKTINFO (after the address)."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return int(struct.unpack_from("=i", data)[0])
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            return int(struct.unpack_from("=i", data, 16)[0])
    return 0


@contextmanager
def listening(netns_path: str, marker: bytes) -> Iterator[StackListener]:
    listener = StackListener(netns_path, marker)
    try:
        listener.drain()
        yield listener
    finally:
        listener.close()


def new_marker() -> bytes:
    return b"OULPROBE" + os.urandom(8).hex().encode()
