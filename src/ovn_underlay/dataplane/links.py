"""Pod links: a veth pair between the node (the VM) and a pod's network namespace.

The host end stays in the caller's network namespace (the node's) under a name
derived from the container id (:func:`ovn_underlay.names.host_ifname`), ready to become an OVS
access port; the pod end is created directly inside the pod's namespace under
its final name (``eth0``), so it never collides with the node's own interfaces.

Every function that touches a pod's namespace takes it by *path* (a bind mount
such as ``/var/run/netns/NAME`` or ``/proc/PID/ns/net``) and works in it from a
short-lived thread (:mod:`ovn_underlay.dataplane.nsenter`): the process stays where
it is.  IPv4 only.

:func:`plumb_pod`'s usual path (nothing there yet) speaks rtnetlink directly
(:mod:`.rtnetlink`, one request per step): a pyroute2 ``IPRoute`` costs ~0.4 ms to
open and ~0.2 ms per request, several times the kernel's own work.  The rarer
paths (a retried or interrupted call, DEL, inspection) use pyroute2.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ovn_underlay.dataplane import ethtool, nsenter
from ovn_underlay.dataplane.rtnetlink import (
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    IFINFOMSG,
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_GATEWAY,
    RTA_OIF,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMSG,
    RTN_UNICAST,
    RTPROT_BOOT,
    VETH_INFO_PEER,
    Rtnl,
    rtattr,
    u32,
)
from ovn_underlay.names import ifname_problem

IFF_UP = 0x1
IFF_NOARP = 0x80
IFF_PROMISC = 0x100
HOST_END_FLAGS = IFF_UP | IFF_NOARP | IFF_PROMISC
"""The node's end of a pod veth is only a port of br-int.  NOARP: with the
userspace datapath the node's kernel sees the pod's frames on it too, and would
answer the pod's ARP for the node's own addresses (the management port's)
there, so the pod's traffic to its node would bypass OVN and its security
groups.  PROMISC: OVS sets it when it adds the port; set at creation, that is
not one more link change."""
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class PodLinkState:
    """What a pod's interface looks like from inside its namespace."""

    ifname: str
    mac: str
    mtu: int
    addresses: tuple[str, ...]
    """Global-scope addresses as "ip/prefix" (IPv6 link-local ones left out)."""
    default_gateway: str | None
    """Gateway of the main table's IPv4 default route through this interface."""
    up: bool


class LinkError(Exception):
    """A pod link could not be made, inspected or removed."""


class NetnsNotFound(LinkError):
    """The network namespace path is missing or is not a network namespace."""


@dataclass(frozen=True)
class _PodSpec:
    """Validated arguments of :func:`plumb_pod`."""

    ifname: str
    host_if: str
    mac: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    mtu: int


def plumb_pod(netns_path: str, ifname: str, host_if: str, mac: str, ip_cidr: str,
              gateway: str, mtu: int, tx_offload_off: bool) -> bool:
    """Connect the pod namespace at ``netns_path`` to the node with a veth pair.

    The pod end is ``ifname`` with ``mac``, ``mtu`` (0: the kernel's default,
    1500), the address ``ip_cidr`` and a default route via ``gateway``; the
    host end ``host_if`` stays in the caller's namespace with the same MTU.
    Both ends end up up.  With ``tx_offload_off`` TX checksum offload is
    disabled on both ends (required behind OVS's userspace datapath, which does
    not fill in partial checksums).

    Returns True if it made the pair, False if a retried call found it done
    already (the namespace has ``ifname`` with ``mac``, fully configured, and
    the host end is up): then nothing was changed, and undoing this call must
    not remove it.  An incomplete pair left by an interrupted call is removed
    (through its host end) and made again.  ``ifname`` taken in the namespace
    by another interface (another MAC, or with no host end ``host_if`` beside
    it) raises LinkError and is left alone.  A leftover veth named ``host_if``
    is replaced.  On any failure after the veth was made it is deleted again
    before LinkError is raised; NetnsNotFound if the namespace does not exist.
    """
    spec = _validate(ifname, host_if, mac, ip_cidr, gateway, mtu)
    with _netns(netns_path) as ns, _rtnl() as rtnl:
        if not _create_veth(rtnl, spec, ns, netns_path):
            with _netlink() as ipr:
                if _keep_or_clear(ipr, spec, ns, netns_path):
                    return False
            if not _create_veth(rtnl, spec, ns, netns_path):
                raise LinkError(f"creating veth {host_if} <-> {ifname}@{netns_path}: "
                                f"{_strerror(errno.EEXIST)}")
        try:
            nsenter.run_in_netns(ns, _configure_pod_end, spec, tx_offload_off)
            _configure_host_end(host_if, tx_offload_off)
        except Exception as exc:
            _undo(host_if, exc)
            if isinstance(exc, LinkError):
                raise
            raise LinkError(f"plumbing {ifname} in {netns_path} failed: {exc}") from exc
    return True


def unplumb_pod(host_if: str) -> bool:
    """Remove a pod's veth pair by its host end ``host_if`` (in the caller's namespace).

    Deleting one end of a veth deletes both, so once the host end is gone
    nothing that plumb_pod made is left in the pod: its namespace is never
    entered (the path may name another pod's namespace by now).  Returns
    whether there was a pair to remove; only a veth is ever deleted.
    """
    with _netlink() as ipr:
        return _remove_veth(ipr, host_if)


def host_end_exists(host_if: str) -> bool:
    """Whether the host end ``host_if`` of a pod veth exists in the caller's namespace."""
    with _netlink() as ipr:
        return _get_link(ipr, host_if) is not None


def inspect_pod(netns_path: str, ifname: str) -> PodLinkState | None:
    """The state of ``ifname`` inside the namespace at ``netns_path``, None if absent."""
    with _netns(netns_path) as ns:
        return nsenter.run_in_netns(ns, _inspect, ifname)


def set_tx_offload(ifname: str, enabled: bool, netns_path: str | None = None) -> None:
    """Turn TX checksum offload of ``ifname`` on or off (``ethtool -K IF tx on|off``).

    Works in the caller's namespace, or in the one at ``netns_path``.  The
    kernel also drops the features that depend on it (TSO, ...) when it is off.
    """
    if netns_path is None:
        _ethtool_set_tx_csum(ifname, enabled)
        return
    with _netns(netns_path) as ns:
        nsenter.run_in_netns(ns, _ethtool_set_tx_csum, ifname, enabled)


def _validate(ifname: str, host_if: str, mac: str, ip_cidr: str, gateway: str,
              mtu: int) -> _PodSpec:
    """Check plumb_pod's arguments before anything is made; LinkError if one is bad."""
    for name in (ifname, host_if):
        _check_ifname(name)
    mac = mac.lower()
    if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise LinkError(f"{mac!r} is not a unicast MAC address (xx:xx:xx:xx:xx:xx)")
    try:
        address = ipaddress.IPv4Interface(ip_cidr)
        gw = ipaddress.IPv4Address(gateway)
    except ValueError as exc:
        raise LinkError(f"bad IPv4 address for the pod: {exc}") from exc
    if "/" not in ip_cidr:
        raise LinkError(f"{ip_cidr!r} has no prefix length (expected ip/prefix)")
    if mtu != 0 and not 68 <= mtu <= 65535:
        raise LinkError(f"MTU {mtu} is outside 68..65535 (or 0 for the default)")
    return _PodSpec(ifname, host_if, mac, address, gw, mtu)


def _check_ifname(name: str) -> None:
    """Raise LinkError unless ``name`` is a valid Linux interface name."""
    problem = ifname_problem(name)
    if problem is not None:
        raise LinkError(f"{name!r} is not a valid interface name: {problem}")


@contextlib.contextmanager
def _netns(path: str) -> Iterator[int]:
    """nsenter.open_netns, raising NetnsNotFound instead of NetnsUnavailable."""
    try:
        with nsenter.open_netns(path) as fd:
            yield fd
    except nsenter.NetnsUnavailable as exc:
        raise NetnsNotFound(exc.strerror or str(exc)) from exc


@contextlib.contextmanager
def _netlink() -> Iterator[Any]:
    """An rtnetlink socket in the calling thread's namespace, without multicast groups."""
    try:
        ipr = IPRoute(groups=0)
    except OSError as exc:
        raise LinkError(f"cannot open rtnetlink: {exc}") from exc
    try:
        yield ipr
    finally:
        ipr.close()


@contextlib.contextmanager
def _rtnl() -> Iterator[Rtnl]:
    """A bare rtnetlink socket in the calling thread's namespace (LinkError if none opens)."""
    try:
        rtnl = Rtnl()
    except OSError as exc:
        raise LinkError(f"cannot open rtnetlink: {exc}") from exc
    with rtnl:
        yield rtnl


def _ifindex(ifname: str) -> int:
    """The index of ``ifname`` in the current thread's namespace; LinkError if absent."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise LinkError(f"looking up {ifname}: {exc.strerror or exc}") from exc


def _set_flags(rtnl: Rtnl, what: str, index: int, flags: int) -> None:
    """Set ``flags`` (ifi_flags, leaving the others) on the link ``index``."""
    _nl(what, rtnl.request, RTM_NEWLINK, 0,
        IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, flags))


def _nl(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one netlink request; turn its failure into LinkError("{what}: reason")."""
    try:
        return call(*args, **kwargs)
    except NetlinkError as exc:
        raise LinkError(f"{what}: {_strerror(exc.code)}") from exc
    except OSError as exc:
        raise LinkError(f"{what}: {exc}") from exc


def _strerror(code: int) -> str:
    """errno ``code`` as text (netlink error codes are errnos)."""
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


def _get_link(ipr: Any, ifname: str) -> Any | None:
    """The RTM_NEWLINK message of ``ifname`` in ``ipr``'s namespace, None if absent."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise LinkError(f"looking up {ifname}: {_strerror(exc.code)}") from exc


def _link_kind(msg: Any) -> str | None:
    """The rtnl_link kind ("veth", ...) of a link message."""
    info = msg.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def _create_veth(rtnl: Rtnl, spec: _PodSpec, ns_fd: int, netns_path: str) -> bool:
    """Create the pair: ``host_if`` here, ``ifname`` directly in the namespace ``ns_fd``.

    The host end gets every flag it will have at once (:data:`HOST_END_FLAGS`;
    the pod end cannot be made up before its peer exists): each later change
    of a link in the node's namespace makes ovs-vswitchd reconfigure its
    bridges, which costs CPU in proportion to their ports.

    False (nothing made) if either name is taken already.
    """
    mtu = rtattr(IFLA_MTU, u32(spec.mtu)) if spec.mtu else b""
    peer = (IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + rtattr(IFLA_IFNAME, spec.ifname.encode() + b"\0")
            + rtattr(IFLA_ADDRESS, bytes.fromhex(spec.mac.replace(":", "")))
            + mtu + rtattr(IFLA_NET_NS_FD, u32(ns_fd)))
    linkinfo = (rtattr(IFLA_INFO_KIND, b"veth\0")
                + rtattr(IFLA_INFO_DATA, rtattr(VETH_INFO_PEER, peer)))
    body = (IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, HOST_END_FLAGS, HOST_END_FLAGS)
            + rtattr(IFLA_IFNAME, spec.host_if.encode() + b"\0") + mtu
            + rtattr(IFLA_LINKINFO, linkinfo))
    what = f"creating veth {spec.host_if} <-> {spec.ifname}@{netns_path}"
    try:
        rtnl.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            return False
        raise LinkError(f"{what}: {_strerror(exc.code)}") from exc
    except OSError as exc:
        raise LinkError(f"{what}: {exc}") from exc
    return True


def _keep_or_clear(ipr: Any, spec: _PodSpec, ns_fd: int, netns_path: str) -> bool:
    """After creating the pair met an existing name: True if a retried call finds it done.

    Otherwise removes what is in the way, through the host end only (a
    leftover veth ``host_if``, or our incomplete pair: the pod end of the
    right MAC beside an existing host end); LinkError, touching nothing, if
    the pod's ``ifname`` has another MAC or has no host end ``host_if`` (then
    it is not ours), or if ``host_if`` is not a veth.
    """
    existing = nsenter.run_in_netns(ns_fd, _inspect, spec.ifname)
    host = _get_link(ipr, spec.host_if)
    if existing is not None:
        if existing.mac != spec.mac:
            raise LinkError(f"{netns_path} already has {spec.ifname} with MAC "
                            f"{existing.mac}, not {spec.mac}")
        if host is None:
            raise LinkError(f"{netns_path} already has {spec.ifname} (MAC {existing.mac}) "
                            f"without our host end {spec.host_if}: it is not ours; leaving "
                            "it alone")
        if _is_complete(existing, spec) and _is_up(host):
            return True
    _remove_veth(ipr, spec.host_if)
    return False


def _is_complete(state: PodLinkState, spec: _PodSpec) -> bool:
    """Whether the pod end ``state`` is configured as ``spec`` asks (up, address, route)."""
    return (state.up and str(spec.address) in state.addresses
            and state.default_gateway == str(spec.gateway)
            and spec.mtu in (0, state.mtu))


def _is_up(msg: Any | None) -> bool:
    """Whether a link message exists and says the link is administratively up."""
    return msg is not None and bool(msg["flags"] & IFF_UP)


def _undo(host_if: str, exc: Exception) -> None:
    """Delete the veth made by a failing plumb_pod; note on ``exc`` if that fails too."""
    try:
        with _netlink() as ipr:
            _remove_veth(ipr, host_if)
    except LinkError as cleanup:
        exc.add_note(f"removing {host_if} again failed too: {cleanup}")


def _configure_pod_end(spec: _PodSpec, tx_offload_off: bool) -> None:
    """In the pod's namespace: offload, address, up, default route."""
    index = _ifindex(spec.ifname)
    if tx_offload_off:
        _ethtool_set_tx_csum(spec.ifname, False)
    ip = spec.address.ip.packed
    with _rtnl() as rtnl:
        _nl(f"adding {spec.address} to {spec.ifname}", rtnl.request, RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            IFADDRMSG.pack(socket.AF_INET, spec.address.network.prefixlen, 0,
                            RT_SCOPE_UNIVERSE, index)
            + rtattr(IFA_LOCAL, ip) + rtattr(IFA_ADDRESS, ip))
        _set_flags(rtnl, f"setting {spec.ifname} up", index, IFF_UP)
        _nl(f"adding the default route via {spec.gateway} (is it inside "
            f"{spec.address.network}?)", rtnl.request, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
            RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                        RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
            + rtattr(RTA_GATEWAY, spec.gateway.packed) + rtattr(RTA_OIF, u32(index)))


def _configure_host_end(host_if: str, tx_offload_off: bool) -> None:
    """In the node's namespace: TX checksum offload off if asked (the rest is set at creation)."""
    if tx_offload_off:
        _ethtool_set_tx_csum(host_if, False)


def _remove_veth(ipr: Any, name: str) -> bool:
    """Delete the veth ``name`` (and so its peer) if it exists; True if one was deleted.

    Refuses (LinkError) to delete an interface of another kind.
    """
    msg = _get_link(ipr, name)
    if msg is None:
        return False
    kind = _link_kind(msg)
    if kind != "veth":
        raise LinkError(f"{name} exists and is a {kind or 'physical'} interface, not a veth; "
                        "leaving it alone")
    try:
        ipr.link("del", index=msg["index"])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise LinkError(f"deleting {name}: {_strerror(exc.code)}") from exc
    return True


def _inspect(ifname: str) -> PodLinkState | None:
    """PodLinkState of ``ifname`` in the current thread's namespace."""
    with _netlink() as ipr:
        msg = _get_link(ipr, ifname)
        if msg is None:
            return None
        index = msg["index"]
        addresses = tuple(
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in _nl(f"listing addresses of {ifname}", ipr.addr, "dump", index=index)
            if a["scope"] == RT_SCOPE_UNIVERSE)
        gateways = [
            r.get_attr("RTA_GATEWAY")
            for r in _nl("listing routes", ipr.route, "dump", family=socket.AF_INET)
            if r["dst_len"] == 0 and r.get_attr("RTA_OIF") == index
            and r.get_attr("RTA_TABLE") == RT_TABLE_MAIN and r.get_attr("RTA_GATEWAY")]
    return PodLinkState(ifname=ifname, mac=str(msg.get_attr("IFLA_ADDRESS")),
                        mtu=int(msg.get_attr("IFLA_MTU")), addresses=addresses,
                        default_gateway=gateways[0] if gateways else None,
                        up=_is_up(msg))


def tx_offload_enabled(ifname: str) -> bool:
    """Whether TX checksum offload is on for ``ifname`` (``ethtool -k IF``), here."""
    try:
        return ethtool.tx_csum_enabled(ifname)
    except OSError as exc:
        raise LinkError(f"reading TX checksum offload on {ifname}: "
                        f"{_strerror(exc.errno or 0)}") from exc


def _ethtool_set_tx_csum(ifname: str, enabled: bool) -> None:
    """TX checksum offload of ``ifname`` on or off, in the current thread's namespace."""
    try:
        ethtool.set_tx_csum(ifname, enabled)
    except OSError as exc:
        raise LinkError(f"turning TX checksum offload {'on' if enabled else 'off'} on "
                        f"{ifname}: {_strerror(exc.errno or 0)}") from exc
