"""The backend-neutral control-plane interface and its pure address planning.

A *node network* is one logical switch per Kubernetes node, attached to a
logical router, whose ports are children of the node VM's own port (each
child tells its traffic apart from the parent's by a VLAN tag).  A backend
(OVN Northbound, Neutron) implements :class:`ControlPlane`; nothing here
depends on a backend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ovn_underlay.config import DEFAULT_MGMT_TAG

VLAN_MIN = 1
VLAN_MAX = 4094
MAX_PREFIX_LEN = 30
"""Longest accepted prefix: network, gateway, one more host, broadcast."""


@dataclass(frozen=True)
class ChildPort:
    """A child port of a node's network: one of its pool, or its management port.

    ``name`` is the logical port's name (OVN NB) or id (Neutron); ``prefixlen``
    and ``gateway`` are the node subnet's, which the pod's interface gets.
    """

    name: str
    mac: str  # "0a:58:.."
    ip: str  # "198.19.1.5"
    prefixlen: int  # 24
    gateway: str  # "198.19.1.1"
    tag: int  # VLAN 1..4094, unique on the parent port


@dataclass(frozen=True)
class PortOwner:
    """The pod (and its container) using a pool port."""

    pod_namespace: str
    pod_name: str
    container_id: str


@dataclass(frozen=True)
class NodeNetwork:
    """A node's logical switch, its gateway on the router and its child ports."""

    switch: str
    subnet: str
    gateway_ip: str
    gateway_mac: str
    router: str
    parent: str
    mgmt: ChildPort | None
    ports: tuple[ChildPort, ...]


class ControlPlaneError(Exception):
    """A control-plane request failed; the message is meant for the user."""


class ControlPlaneUnavailable(ControlPlaneError):
    """The control plane (OVN NB, Neutron API) cannot be reached right now."""


class Conflict(ControlPlaneError):
    """The request clashes with existing state (overlapping subnet, name taken)."""


class ControlPlane(Protocol):
    """What the node agent needs from a control plane."""

    def create_node_network(self, switch: str, subnet: str, router: str, parent: str,
                            pool_size: int, mgmt_tag: int | None = DEFAULT_MGMT_TAG,
                            create_router: bool = True,
                            cluster_subnet: str | None = None) -> NodeNetwork:
        """Create the node's switch, its router attachment, management port and pool.

        All or nothing.  Repeating the call for the same switch, subnet, router
        and parent returns the existing network unchanged.
        """
        ...

    def add_pool_ports(self, switch: str, count: int) -> tuple[ChildPort, ...]:
        """Add ``count`` pool ports on the next free addresses and VLAN tags."""
        ...

    def delete_pool_ports(self, switch: str, names: Iterable[str]) -> None:
        """Delete the named pool ports of ``switch``; names not there are ignored."""
        ...

    def get_node_network(self, switch: str) -> NodeNetwork | None:
        """The node network of ``switch`` as stored, or None if there is none."""
        ...

    def destroy_node_network(self, switch: str) -> None:
        """Remove everything the node network consists of; idempotent."""
        ...

    def record_owners(self, owners: Mapping[str, PortOwner | None]) -> list[str]:
        """Record which pod uses each port (None: none any more), all in one request.

        Idempotent.  Returns the ports given an owner that do not exist or are
        not pool ports (they are skipped, the others recorded).
        """
        ...

    def set_port_security_groups(self, port: str, groups: Sequence[str]) -> None:
        """Give ``port`` exactly these security groups (names or ids) while a pod uses it.

        Backends without security groups refuse: a pod must not run without the
        groups it asked for.
        """
        raise ControlPlaneError(f"port {port}: security groups ({', '.join(groups)}) need "
                                "the neutron backend (node-init --backend neutron)")

    def clear_port_security_groups(self, port: str) -> None:
        """Give ``port`` back the security groups of a fresh pool port; idempotent."""
        del port  # without security groups, every port is as fresh as it gets

    def close(self) -> None:
        """Release the connection to the control plane."""
        ...


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    """``subnet`` as an IPv4 network big enough for a node network."""
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise ControlPlaneError(f"invalid subnet {subnet!r}: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise ControlPlaneError(f"subnet {subnet} is not IPv4 (only IPv4 is supported)")
    if net.prefixlen > MAX_PREFIX_LEN:
        raise ControlPlaneError(
            f"subnet {subnet} is too small: the prefix must be /{MAX_PREFIX_LEN} or shorter")
    return net


def check_request(switch: str, subnet: str, router: str, parent: str, pool_size: int,
                  mgmt_tag: int | None, cluster_subnet: str | None) -> str:
    """Validate a create_node_network request; return the subnet in canonical form."""
    for what, name in (("switch", switch), ("router", router), ("parent port", parent)):
        if not name:
            raise ControlPlaneError(f"the {what} name must not be empty")
    net = parse_subnet(subnet)
    if cluster_subnet is not None:
        check_within(str(net), cluster_subnet)
    if mgmt_tag is not None:
        check_tag(mgmt_tag, "management VLAN tag")
    _check_count(pool_size)
    return str(net)


def check_within(subnet: str, cluster_subnet: str) -> None:
    """Raise ControlPlaneError unless ``subnet`` lies inside ``cluster_subnet``."""
    try:
        cluster = ipaddress.ip_network(cluster_subnet, strict=True)
    except ValueError as exc:
        raise ControlPlaneError(f"invalid cluster subnet {cluster_subnet!r}: {exc}") from exc
    net = parse_subnet(subnet)
    if not isinstance(cluster, ipaddress.IPv4Network) or not net.subnet_of(cluster):
        raise ControlPlaneError(f"subnet {subnet} is not inside the cluster subnet "
                                f"{cluster_subnet}")


def check_tag(tag: int, what: str = "VLAN tag") -> None:
    """Raise ControlPlaneError unless ``tag`` is a usable VLAN tag."""
    if not VLAN_MIN <= tag <= VLAN_MAX:
        raise ControlPlaneError(f"{what} {tag} is out of range {VLAN_MIN}-{VLAN_MAX}")


def gateway_ip(subnet: str) -> str:
    """The router's address on ``subnet``: its first host address."""
    return str(parse_subnet(subnet).network_address + 1)


def mgmt_ip(subnet: str) -> str:
    """The management port's address on ``subnet``: right after the gateway."""
    return str(parse_subnet(subnet).network_address + 2)


def mac_for_ip(ip: str) -> str:
    """A locally administered MAC derived from an IPv4 address (0a:58 + its bytes)."""
    packed = ipaddress.IPv4Address(ip).packed
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *packed))


def find_overlap(subnet: str, others: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The first ``(owner, network)`` of ``others`` that overlaps ``subnet``.

    Networks that do not parse or are not IPv4 cannot overlap and are skipped;
    a network may be given with host bits set ("10.0.0.1/24", as on router ports).
    """
    net = parse_subnet(subnet)
    for owner, other in others:
        try:
            other_net = ipaddress.ip_network(other, strict=False)
        except ValueError:
            continue
        if isinstance(other_net, ipaddress.IPv4Network) and net.overlaps(other_net):
            return owner, other
    return None


def _hosts(net: ipaddress.IPv4Network) -> Iterator[ipaddress.IPv4Address]:
    """Host addresses of ``net`` in order, lazily (no network, no broadcast)."""
    first = int(net.network_address) + 1
    for value in range(first, int(net.broadcast_address)):
        yield ipaddress.IPv4Address(value)


def free_address_count(subnet: str, reserved: Collection[str]) -> int:
    """How many host addresses of ``subnet`` are not in ``reserved``."""
    net = parse_subnet(subnet)
    taken = {ipaddress.IPv4Address(ip) for ip in reserved}
    used = sum(1 for ip in taken if ip in net and ip not in (net.network_address,
                                                               net.broadcast_address))
    return net.num_addresses - 2 - used


def free_tag_count(reserved: Collection[int]) -> int:
    """How many VLAN tags are not in ``reserved``."""
    return VLAN_MAX - VLAN_MIN + 1 - len({t for t in reserved if VLAN_MIN <= t <= VLAN_MAX})


def plan_addresses(subnet: str, count: int, reserved: Collection[str]) -> list[str]:
    """The ``count`` lowest host addresses of ``subnet`` that are not ``reserved``."""
    _check_count(count)
    free = free_address_count(subnet, reserved)
    if count > free:
        raise ControlPlaneError(f"cannot allocate {count} addresses on {subnet}: "
                                f"only {free} host addresses are free")
    taken = {ipaddress.IPv4Address(ip) for ip in reserved}
    picked: list[str] = []
    for ip in _hosts(parse_subnet(subnet)):
        if len(picked) == count:
            break
        if ip not in taken:
            picked.append(str(ip))
    return picked


def plan_tags(count: int, reserved: Collection[int]) -> list[int]:
    """The ``count`` lowest VLAN tags that are not ``reserved``."""
    _check_count(count)
    free = free_tag_count(reserved)
    if count > free:
        raise ControlPlaneError(f"cannot allocate {count} VLAN tags: only {free} of "
                                f"{VLAN_MIN}-{VLAN_MAX} are free")
    taken = set(reserved)
    return [t for t in range(VLAN_MIN, VLAN_MAX + 1) if t not in taken][:count]


def plan_pool(subnet: str, count: int, reserved_ips: Collection[str],
              reserved_tags: Collection[int]) -> list[tuple[str, int]]:
    """``(ip, tag)`` pairs for ``count`` new pool ports.

    The pool is bounded both by the free host addresses of the subnet and by
    the free VLAN tags of the parent port; the error names both limits.
    """
    _check_count(count)
    free_ips = free_address_count(subnet, reserved_ips)
    free_tags = free_tag_count(reserved_tags)
    if count > min(free_ips, free_tags):
        raise ControlPlaneError(
            f"cannot allocate {count} pool ports: subnet {subnet} has {free_ips} free host "
            f"addresses and the parent port has {free_tags} free VLAN tags "
            f"({VLAN_MIN}-{VLAN_MAX}), so at most {min(free_ips, free_tags)} more ports fit")
    return list(zip(plan_addresses(subnet, count, reserved_ips),
                    plan_tags(count, reserved_tags), strict=True))


def _check_count(count: int) -> None:
    if count < 0:
        raise ControlPlaneError(f"port count must not be negative (got {count})")
