"""Host isolation on the userspace datapath: the node's kernel takes in nothing OVS carries.

ovs-vswitchd's userspace (netdev) datapath reads the NICs of its bridges with
packet sockets, and the node's kernel still takes every such frame in for
itself as well.  A pod that sends to the MAC of its veth's host end, or to
broadcast, would then reach the node's own addresses, and with IP forwarding on
be routed on by the node, with any source address it likes: around port
security, ACLs and security groups, which apply only to what goes through OVN.
(With the OVS kernel module the port's rx_handler consumes the frame: the
stack never sees it, and nothing here is needed.)

So on a node with a userspace-datapath bridge, one nftables ruleset drops what
the kernel's own stack would take in from, or send out of, every OVS-owned
NIC: the pods' host ends (a wildcard on their name prefix, so no rule changes
per pod) and the other system devices of those bridges (the uplink).  The
bridges' internal ports (``br-int``, the management port) are where the
node's own traffic lives, after OVN: they are left alone.  ovs-vswitchd keeps
every frame: packet sockets get them before netfilter's hooks.

The ruleset (tables ``inet`` and ``arp`` named :data:`TABLE`, each rule with a
counter and a comment carrying the ruleset's digest) is replaced in one nft
transaction, so an update never opens a gap.  It is kernel state: it survives
restarts of the daemon, not a reboot, so it is put in place by node-init, by
the daemon before it serves, and by every ADD before it plugs a pod (a cheap
netlink check per ADD, the whole ruleset only when it is missing).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from typing import Any

from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.dataplane.rtnetlink import NLM_F_REQUEST, NLMSG_ERROR, NLMSGHDR
from ovn_underlay.names import HOST_IFNAME_PREFIX, MGMT_IFNAME, is_host_ifname

TABLE = "ovn_underlay"
MARK = "ovn-underlay host isolation"
SYSTEM_TYPES = ("", "system")
"""Interface types of OVS ports that are kernel NICs (veths, physical NICs)."""
NFT_TIMEOUT = 10.0
_NFT_DIRS = "/usr/sbin:/sbin:/usr/bin:/bin"
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
NFPROTO_INET = 1
_NFGENMSG = struct.Struct("=BBH")


class IsolationError(Exception):
    """The isolation ruleset could not be read or put in place."""


@dataclass(frozen=True)
class HostGuard:
    """What to cut off from the kernel's stack: pods' host ends, and ``devices`` by name."""

    devices: tuple[str, ...]

    def digest(self) -> str:
        """A short fingerprint of the ruleset, recorded in every rule's comment."""
        text = json.dumps([HOST_IFNAME_PREFIX, MGMT_IFNAME, sorted(self.devices)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def commands(self) -> list[dict[str, Any]]:
        """The nft JSON commands replacing both tables in one transaction."""
        comment = f"{MARK} {self.digest()}"
        commands: list[dict[str, Any]] = []
        for family, hooks in (("inet", ("prerouting", "output")), ("arp", ("input", "output"))):
            table = {"family": family, "name": TABLE}
            commands += [{"add": {"table": table}}, {"delete": {"table": table}},
                         {"add": {"table": table}}]
            for hook in hooks:
                commands.append({"add": {"chain": {
                    "family": family, "table": TABLE, "name": hook, "type": "filter",
                    "hook": hook, "prio": -300 if family == "inet" else 0,
                    "policy": "accept"}}})
                key = "oifname" if hook == "output" else "iifname"
                for match in self._matches(key):
                    commands.append({"add": {"rule": {
                        "family": family, "table": TABLE, "chain": hook, "comment": comment,
                        "expr": [*match, {"counter": None}, {"drop": None}]}}})
        return commands

    def _matches(self, key: str) -> list[list[dict[str, Any]]]:
        def name(op: str, value: str) -> dict[str, Any]:
            return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}

        pods = [name("==", f"{HOST_IFNAME_PREFIX}*"), name("!=", MGMT_IFNAME)]
        return [pods, *([name("==", device)] for device in self.devices)]


def wanted(ovs: Ovs, extra: tuple[str, ...] = ()) -> HostGuard:
    """The guard of the node's userspace-datapath bridges now, plus ``extra`` devices
    (node-init's uplink, before it joins br-int)."""
    devices = {name for name, kind in ovs.userspace_interfaces()
               if kind in SYSTEM_TYPES and not is_host_ifname(name)}
    return HostGuard(tuple(sorted(devices | set(extra))))


def applied_digest() -> str | None:
    """The digest of the ruleset in place, None if it is missing or incomplete."""
    digests = set()
    for family in ("inet", "arp"):
        listing = _nft(["-j", "list", "table", family, TABLE], allow_missing=True)
        if listing is None:
            return None
        comments = [item["rule"].get("comment", "")
                    for item in json.loads(listing).get("nftables", []) if "rule" in item]
        if not comments:
            return None
        digests.update(comments)
    if len(digests) != 1:
        return None
    (comment,) = digests
    return comment.removeprefix(f"{MARK} ") if comment.startswith(MARK) else None


def ensure(guard: HostGuard) -> bool:
    """Put ``guard``'s ruleset in place unless it already is; True if it was (re)written."""
    if applied_digest() == guard.digest():
        return False
    _nft(["-j", "-f", "-"], stdin=json.dumps({"nftables": guard.commands()}))
    return True


def remove() -> None:
    """Remove the ruleset (both tables); fine when there is none."""
    for family in ("inet", "arp"):
        _nft(["delete", "table", family, TABLE], allow_missing=True)


def in_place() -> bool:
    """Whether the ruleset's inet table exists in this thread's namespace (one netlink query).

    The cheap check of every ADD; :func:`ensure` compares the whole ruleset.
    """
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_NETFILTER)
    except OSError as exc:
        raise IsolationError(f"cannot open a netfilter netlink socket: {exc}") from exc
    with sock:
        name = TABLE.encode() + b"\0"
        attr = struct.pack("=HH", 4 + len(name), NFTA_TABLE_NAME) + name
        attr += b"\0" * (-len(attr) % 4)
        body = _NFGENMSG.pack(NFPROTO_INET, 0, 0) + attr
        msg_type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
        sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST, 1, 0)
                  + body)
        reply = sock.recv(1 << 16)
    _, kind, _, _, _ = NLMSGHDR.unpack_from(reply)
    if kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE:
        return True
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, NLMSGHDR.size)[0]
        if code == errno.ENOENT:
            return False
        raise IsolationError(f"querying nftables table inet {TABLE}: {os.strerror(code)}")
    raise IsolationError(f"unexpected netlink reply {kind} to a table query")


def _nft(args: list[str], stdin: str | None = None,
         allow_missing: bool = False) -> str | None:
    """Run ``nft ARGS``; its stdout, or None for a missing table when ``allow_missing``."""
    binary = shutil.which("nft", path=f"{os.environ.get('PATH', '')}:{_NFT_DIRS}")
    if binary is None:
        raise IsolationError("nft (the nftables package) is not installed: it is needed to "
                             "keep pods' frames from the node's own stack on the userspace "
                             "datapath")
    try:
        proc = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationError(f"nft {' '.join(args)}: {exc}") from exc
    if proc.returncode == 0:
        return proc.stdout
    if allow_missing and "No such file or directory" in proc.stderr:
        return None
    raise IsolationError(f"nft {' '.join(args)} failed: {proc.stderr.strip()}")
