"""Announce a pod on the wire and wait until its gateway answers (stdlib only).

Right after plumbing, a pod's address is unknown to the network and the path to
its gateway (through OVS and OVN) may not be programmed yet.
:func:`announce_and_probe` sends a gratuitous ARP for the pod, then asks for the
gateway's MAC until the gateway replies: a reply proves the datapath between pod
and gateway works in both directions.  The probes back off from PROBE_FIRST to
PROBE_MAX seconds apart: the port usually works within a few milliseconds (a
probe lost while ovs-vswitchd still adds the port must not cost a whole
PROBE_MAX), and a slow one is not flooded.
"""

from __future__ import annotations

import ipaddress
import re
import select
import socket
import struct
import threading
import time

from ovn_underlay.dataplane import nsenter

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2
PROBE_FIRST = 0.002
PROBE_MAX = 0.05
BROADCAST = b"\xff" * 6
_ZERO_MAC = b"\x00" * 6
_ETH_MIN_FRAME = 60
# Ethernet header (dst, src, type), then the ARP body for Ethernet/IPv4.
_FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class ArpError(Exception):
    """The probe could not run (bad argument, missing interface, socket error)."""


def announce_and_probe(netns_path: str, ifname: str, ip: str, mac: str, gateway: str,
                       timeout: float) -> bool:
    """In the namespace at ``netns_path``: announce ``ip``/``mac``, then probe ``gateway``.

    Sends one gratuitous ARP (a request with sender and target ``ip``) out of
    ``ifname``, then ARP requests for ``gateway``, backing off from
    PROBE_FIRST to PROBE_MAX seconds apart.  Returns True as soon as an ARP
    reply from ``gateway`` arrives, False once ``timeout`` seconds have passed
    without one.  Raises ArpError
    for bad arguments or socket failures, nsenter.NetnsUnavailable if the
    namespace does not exist.
    """
    own_ip, own_mac, gw_ip = _parse(ip, mac, gateway)
    return nsenter.run_in_netns(netns_path, _announce_and_probe, ifname, own_ip, own_mac,
                                gw_ip, timeout)


def _parse(ip: str, mac: str, gateway: str) -> tuple[bytes, bytes, bytes]:
    """The packed forms of the pod IP, pod MAC and gateway IP; ArpError if malformed."""
    if not _MAC_RE.match(mac):
        raise ArpError(f"{mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    try:
        own_ip = ipaddress.IPv4Address(ip).packed
        gw_ip = ipaddress.IPv4Address(gateway).packed
    except ValueError as exc:
        raise ArpError(f"ARP needs IPv4 addresses: {exc}") from exc
    return own_ip, bytes.fromhex(mac.replace(":", "")), gw_ip


def _arp_frame(op: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes,
              target_ip: bytes, dst: bytes = BROADCAST) -> bytes:
    """An Ethernet frame carrying one ARP packet, padded to the Ethernet minimum."""
    frame = _FRAME.pack(dst, sender_mac, ETH_P_ARP, 1, ETH_P_IP, 6, 4, op,
                        sender_mac, sender_ip, target_mac, target_ip)
    return frame.ljust(_ETH_MIN_FRAME, b"\0")


def _is_reply_from(frame: bytes, sender_ip: bytes) -> bool:
    """True if ``frame`` is an Ethernet/IPv4 ARP reply sent by ``sender_ip``."""
    if len(frame) < _FRAME.size:
        return False
    fields = _FRAME.unpack_from(frame)
    ethertype, op, spa = fields[2], fields[7], fields[9]
    return bool(ethertype == ETH_P_ARP and op == ARP_REPLY and spa == sender_ip)


def _announce_and_probe(ifname: str, own_ip: bytes, own_mac: bytes, gw_ip: bytes,
                        timeout: float) -> bool:
    """announce_and_probe, run in the pod's namespace.

    The socket is created with protocol 0 and only then bound to ARP: creating
    it with a protocol and re-binding costs an RCU grace period (10-25 ms).
    Closing a packet socket costs one too, so that is left to a helper thread.
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((ifname, ETH_P_ARP))
        sock.setblocking(False)
        sock.send(_arp_frame(ARP_REQUEST, own_mac, own_ip, _ZERO_MAC, own_ip))
        probe = _arp_frame(ARP_REQUEST, own_mac, own_ip, _ZERO_MAC, gw_ip)
        return _probe_until(sock, probe, gw_ip, deadline)
    except OSError as exc:
        raise ArpError(f"ARP on {ifname}: {exc.strerror or exc}") from exc
    finally:
        threading.Thread(target=sock.close, name="arp-close", daemon=True).start()


def _probe_until(sock: socket.socket, probe: bytes, gw_ip: bytes, deadline: float) -> bool:
    """Send ``probe``, backing off, until a reply from ``gw_ip`` or ``deadline``."""
    next_send = time.monotonic()
    interval = PROBE_FIRST
    while True:
        now = time.monotonic()
        if now >= next_send:
            sock.send(probe)
            next_send = now + interval
            interval = min(interval * 2, PROBE_MAX)
        if now >= deadline:
            return False
        readable, _, _ = select.select([sock], [], [], min(next_send, deadline) - now)
        if readable and _drain_for_reply(sock, gw_ip):
            return True


def _drain_for_reply(sock: socket.socket, gw_ip: bytes) -> bool:
    """Read every queued frame; True if one of them is the gateway's ARP reply."""
    while True:
        try:
            frame, addr = sock.recvfrom(2048)
        except BlockingIOError:
            return False
        if addr[2] != socket.PACKET_OUTGOING and _is_reply_from(frame, gw_ip):
            return True
