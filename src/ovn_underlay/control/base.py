"""The backend-neutral control-plane interface: node networks, their child ports, errors.

A *node network* is one logical switch per Kubernetes node, attached to a
logical router, whose ports are children of the node VM's own port (each
child tells its traffic apart from the parent's by a VLAN tag).  A backend
(OVN Northbound, Neutron) implements :class:`ControlPlane`; nothing here
depends on a backend.  Address planning is :mod:`.planning`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ovn_underlay.config import DEFAULT_MGMT_TAG

VLAN_MIN = 1
VLAN_MAX = 4094


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


class Fenced(ControlPlaneError):
    """A later leader's epoch holds the control plane: this writer was deposed."""


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

    def set_port_security_groups(self, port: str, groups: Sequence[str],
                                 owner: PortOwner) -> None:
        """Give ``port`` exactly these security groups (names or ids) while ``owner`` uses it.

        Backends without security groups refuse: a pod must not run without the
        groups it asked for.  ``owner`` is the pod that asked (the cluster mode's
        controller checks the request against it).
        """
        del owner
        raise ControlPlaneError(f"port {port}: security groups ({', '.join(groups)}) need "
                                "the neutron backend (node-init --backend neutron)")

    def clear_port_security_groups(self, port: str) -> None:
        """Give ``port`` back the security groups of a fresh pool port; idempotent."""
        del port  # without security groups, every port is as fresh as it gets

    # -- what the cluster controller needs besides the above ---------------------------

    def ensure_router(self, router: str) -> None:
        """Create the cluster router ``router`` unless it exists (idempotent).

        Refuses (:class:`Conflict`) when more than one router has that name: OVN names
        are not unique, so two nodes setting up at once could make two.
        """
        ...

    def port_holding(self, ip: str) -> str | None:
        """The VM port (NB name, Neutron id) whose addresses include ``ip``, if exactly one.

        How the controller maps a Node to its VM's port: from the Node's InternalIP.
        Ports this project made (pool and management ports) never count.
        """
        ...

    def node_switches(self) -> list[str]:
        """The switches of every node network this project made (for garbage collection)."""
        ...

    def port_exists(self, port: str) -> bool:
        """Whether the logical port (NB name, Neutron id) exists."""
        ...

    def fence(self, epoch: int) -> None:
        """Make every later write of this connection conditional on leader ``epoch``.

        Raises the stored epoch to ``epoch`` (never lowers it) and from then on each
        transaction fails with :class:`Fenced` once a later epoch was stored.  Backends
        that cannot condition writes leave them unconditional (the README says what
        window that leaves).
        """
        del epoch

    def close(self) -> None:
        """Release the connection to the control plane."""
        ...


@runtime_checkable
class Routing(Protocol):
    """What the backends with a router of their own (OVN NB, Neutron) do besides
    :class:`ControlPlane`: the node's own addresses to its pods, the router's gateway.

    A node in cluster mode has no such connection (its controller routes).
    """

    def ensure_host_routes(self, switch: str) -> tuple[str, ...]:
        """Let the node's own addresses (its parent port's) talk to pods through its
        management port; idempotent; returns those addresses.

        The management port admits them as sources (NB port_security, Neutron
        allowed_address_pairs) and the router routes each one (/32) to the
        management port's address, so that a pod reaching the VM's primary address
        and the VM's answer from that address both take the management port.
        A network without a management port is left alone (returns nothing).
        """
        ...

    def ensure_router_gateway(self, router: str, external: str, snat: Sequence[str],
                              address: str = "", next_hop: str = "",
                              chassis: Sequence[str] = ()) -> str:
        """Give ``router`` a gateway on the network ``external`` that SNATs ``snat``.

        Returns the gateway's (SNAT) address.  OVN NB: a distributed gateway port
        ``gw-<router>`` with ``address`` (CIDR) on the switch ``external``, bound to
        the ``chassis`` (highest priority first), a default route via ``next_hop``
        and one snat row per subnet of ``snat``.  Neutron: the router's
        external_gateway_info with enable_snat, as a tenant router has; Neutron
        picks the address (unless ``address`` names one), the next hop (the
        external subnet's gateway) and the chassis, and SNATs every subnet on the
        router.  Idempotent.
        """
        ...
