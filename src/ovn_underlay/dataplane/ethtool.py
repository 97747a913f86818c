"""TX checksum offload through the SIOCETHTOOL ioctl, in the calling thread's namespace.

The userspace datapath does not fill in partial checksums, so veths and the
uplink behind it need TX checksum offload off (``ethtool -K IF tx off``); the
kernel then also drops the features that depend on it (TSO, ...).
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
_IFREQ_SIZE = 40


class _Value(ctypes.Structure):
    """``struct ethtool_value`` of <linux/ethtool.h>."""

    _fields_ = (("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32))




def tx_csum_enabled(ifname: str) -> bool:
    """Whether TX checksum offload is on for ``ifname``; OSError if the ioctl fails."""
    return bool(_ethtool(ifname, ETHTOOL_GTXCSUM, 0))


def set_tx_csum(ifname: str, enabled: bool) -> None:
    """Turn TX checksum offload of ``ifname`` on or off; OSError if the ioctl fails."""
    _ethtool(ifname, ETHTOOL_STXCSUM, int(enabled))


def _ethtool(ifname: str, cmd: int, data: int) -> int:
    """One ``struct ethtool_value`` SIOCETHTOOL request; returns the value's data."""
    value = _Value(cmd, data)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(_IFREQ_SIZE,
                                                                               b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return int(value.data)
