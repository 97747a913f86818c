"""Address and VLAN planning of node networks: pure functions, no backend, no I/O.

A node network's router port takes its subnet's first host address, its
management port the second; pool ports get the lowest free addresses and the
lowest free VLAN tags of the parent port, and MACs derived from their
addresses.  Both backends plan with these, from what their control plane holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Iterator

from ovn_underlay.control.base import VLAN_MAX, VLAN_MIN, ControlPlaneError

MAX_PREFIX_LEN = 30
"""Longest accepted prefix: network, gateway, one more host, broadcast."""


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
