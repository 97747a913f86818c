"""The backend-neutral Services interface: what a ClusterIP Service asks of the network.

A :class:`ServiceState` is the desired state of one Kubernetes Service, computed from the
Service and its EndpointSlices by the controller (``controller/service_model.py``) with
every Kubernetes rule already applied (ready endpoints, falling back to serving and
terminating ones; named target ports resolved per endpoint; slices merged and
de-duplicated; IPv4 only).  A :class:`ServicesBackend` (OVN Northbound's load balancers,
later Octavia) makes the network match a set of them; nothing here depends on a backend
or on Kubernetes objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ovn_underlay.control.base import ControlPlaneUnavailable

PROTOCOLS = ("tcp", "udp", "sctp")
MAX_AFFINITY_TIMEOUT = 65535
"""OVN's cap on ``affinity_timeout``; a longer ClientIP timeout is served by source-IP
selection (the backend is chosen by the client's address alone)."""


@dataclass(frozen=True, order=True)
class Endpoint:
    """One backend of one Service port: an address, its target port, where it runs."""

    ip: str
    port: int
    node: str = ""
    """The Node the endpoint runs on ("" when the slice does not say)."""


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service's ClusterIP and the endpoints behind it (sorted, unique)."""

    protocol: str  # one of PROTOCOLS
    port: int
    name: str = ""
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class ServiceState:
    """The desired state of one Service (see the module docstring)."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    affinity_timeout: int = 0
    """sessionAffinity ClientIP: its timeout in seconds (0: no affinity)."""
    local_only: bool = False
    """internalTrafficPolicy Local: a client reaches only the endpoints on its own node,
    and none (dropped) when its node has none."""
    problems: tuple[str, ...] = field(default=(), compare=False)
    """What of the Service cannot be served (e.g. an IPv6 ClusterIP), said once."""

    @property
    def key(self) -> str:
        """``namespace/name``, how rows and logs name the Service."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class SyncResult:
    """What one :meth:`ServicesBackend.sync` changed."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    transactions: int = 0


class ServicesPending(ControlPlaneUnavailable):
    """Raised by a :class:`ServicesBackend` whose load balancers stayed ``PENDING_*``
    (Octavia's, which refuse changes meanwhile) beyond its wait: their Services were left
    for a retry, every other Service was converged."""

    def __init__(self, keys: Iterable[str], timeout: float) -> None:
        self.keys: tuple[str, ...] = tuple(sorted(keys))
        super().__init__(f"the Octavia load balancers of {', '.join(self.keys)} stayed "
                         f"PENDING beyond {timeout:g} s (Octavia refuses changes until "
                         "they are ACTIVE); left for a retry")


class ServicesBackend(Protocol):
    """Makes a control plane's load balancers match the Services given."""

    def sync(self, services: Iterable[ServiceState], switches: Mapping[str, str],
             complete: bool) -> SyncResult:
        """Make the load balancers of ``services`` match them, in few transactions.

        ``switches``: every node switch by the name of its Node (where a Service's rows
        are attached; per-node rows for ``local_only`` Services).  ``complete``: the
        services are all there are, so the rows of any other Service of ours go
        (start-up, after a lost watch, after a leader change); otherwise only the given
        Services are touched.  Rows already right are not written.  Only rows marked as
        ours are read or changed.
        """
        ...

    def delete(self, keys: Iterable[str]) -> SyncResult:
        """Remove the rows of the Services ``namespace/name``; idempotent."""
        ...

    def limits(self, state: ServiceState) -> tuple[str, ...]:
        """What this backend cannot do of ``state``, as plain sentences (() when nothing)."""
        ...
