"""The UnderlayNode custom resource: how a node agent and the cluster controller talk.

In cluster mode a node holds no control-plane credentials (see the README's "Cluster
mode").  Everything a node needs from OVN or Neutron goes through one cluster-scoped
object per Node, ``underlaynodes.ovn-underlay.io`` (``deploy/crd.yaml``), named as the
Node:

* ``spec`` is the node's request, written only by that node's agent (RBAC lets agents
  patch UnderlayNodes; the ValidatingAdmissionPolicy in ``deploy/`` lets an agent touch
  only the one named as the node in its token):

  - ``poolPorts``: how many pool ports the node wants in all, free and in use (the
    controller caps it at its ``max-pool-ports`` setting: a node cannot exhaust a quota);
  - ``pods``: for each pool port in use, the pod using it (``namespace``, ``name``,
    ``containerID``) and, when the pod asked for them, its ``securityGroups``.  An ADD
    merge-patches its port's entry in, a DEL patches it to null.

* ``status`` is the controller's answer (status subresource, written only by the
  controller): the node network (``switch``, ``subnet``, ``router``, ``gatewayIP``,
  ``gatewayMAC``, ``parent``), the management port ``mgmt`` and the pool ``ports``
  (``name``, ``mac``, ``ip``, ``tag``); ``hostAddresses``: the node's own addresses that
  the management port admits and the router routes to it; ``securityGroups``: for each
  port whose groups the controller set for a pod, those groups (a port absent from it has
  the groups of a fresh pool port); ``refused``: for each port whose request the
  controller refused, why (e.g. a group the pod's Namespace does not allow);
  ``conditions`` (``Ready``) and ``observedGeneration``.

The controller creates the object when it sees the Node, and deletes it with the node
network when the Node is gone.  The controller checks every security-group request
against the API itself (the pod exists, is bound to this node, its annotation names
exactly these groups, its Namespace allows them): a node is not trusted with that.

This module is the schema only (plain data, no client): both sides parse and build the
object's parts with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "ovn-underlay.io"
VERSION = "v1alpha1"
KIND = "UnderlayNode"
PLURAL = "underlaynodes"
API_VERSION = f"{GROUP}/{VERSION}"
READY = "Ready"
"""The condition type the controller sets once the node network exists."""


@dataclass(frozen=True)
class Port:
    """A child port as the status lists it (pool ports, the management port)."""

    name: str
    mac: str
    ip: str
    tag: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mac": self.mac, "ip": self.ip, "tag": self.tag}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Port:
        return cls(name=str(data["name"]), mac=str(data["mac"]), ip=str(data["ip"]),
                   tag=int(data["tag"]))


@dataclass(frozen=True)
class PodClaim:
    """One ``spec.pods`` entry: the pod on a port, and the groups it asked for."""

    namespace: str
    name: str
    container_id: str
    security_groups: tuple[str, ...] | None = None
    """None: the pod asked for none (the port keeps a fresh port's groups)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name,
                               "containerID": self.container_id}
        if self.security_groups is not None:
            out["securityGroups"] = list(self.security_groups)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PodClaim:
        groups = data.get("securityGroups")
        return cls(namespace=str(data.get("namespace", "")), name=str(data.get("name", "")),
                   container_id=str(data.get("containerID", "")),
                   security_groups=None if groups is None else tuple(map(str, groups)))


@dataclass(frozen=True)
class Spec:
    """What the node asks for."""

    pool_ports: int = 0
    pods: Mapping[str, PodClaim] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Spec:
        spec = obj.get("spec") or {}
        pods = {str(port): PodClaim.from_dict(claim)
                for port, claim in (spec.get("pods") or {}).items() if claim}
        return cls(pool_ports=int(spec.get("poolPorts") or 0), pods=pods)


@dataclass(frozen=True)
class Status:
    """What the controller made for the node ("" / empty until it made it)."""

    switch: str = ""
    subnet: str = ""
    router: str = ""
    gateway_ip: str = ""
    gateway_mac: str = ""
    parent: str = ""
    mgmt: Port | None = None
    ports: tuple[Port, ...] = ()
    host_addresses: tuple[str, ...] = ()
    """The node's own addresses that its management port admits and the router routes to
    it (pods reach the VM's primary address; the VM answers from it)."""
    security_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    ready: bool = False
    reason: str = ""
    message: str = ""
    observed_generation: int = 0

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Status:
        st = obj.get("status") or {}
        ready: Mapping[str, Any] = next(
            (c for c in st.get("conditions") or [] if c.get("type") == READY), {})
        mgmt = st.get("mgmt")
        return cls(
            switch=str(st.get("switch", "")), subnet=str(st.get("subnet", "")),
            router=str(st.get("router", "")), gateway_ip=str(st.get("gatewayIP", "")),
            gateway_mac=str(st.get("gatewayMAC", "")), parent=str(st.get("parent", "")),
            mgmt=Port.from_dict(mgmt) if mgmt else None,
            ports=tuple(Port.from_dict(p) for p in st.get("ports") or []),
            host_addresses=tuple(map(str, st.get("hostAddresses") or [])),
            security_groups={str(k): tuple(map(str, v))
                             for k, v in (st.get("securityGroups") or {}).items()},
            refused={str(k): str(v) for k, v in (st.get("refused") or {}).items()},
            ready=ready.get("status") == "True", reason=str(ready.get("reason", "")),
            message=str(ready.get("message", "")),
            observed_generation=int(st.get("observedGeneration") or 0))

    def to_dict(self) -> dict[str, Any]:
        """The ``status`` without its conditions (the controller adds those, with times)."""
        out: dict[str, Any] = {
            "switch": self.switch, "subnet": self.subnet, "router": self.router,
            "gatewayIP": self.gateway_ip, "gatewayMAC": self.gateway_mac,
            "parent": self.parent, "ports": [p.to_dict() for p in self.ports],
            "hostAddresses": list(self.host_addresses),
            "securityGroups": {k: list(v) for k, v in self.security_groups.items()},
            "refused": dict(self.refused), "observedGeneration": self.observed_generation}
        if self.mgmt is not None:
            out["mgmt"] = self.mgmt.to_dict()
        return out


def path(name: str = "") -> str:
    """The API path of the UnderlayNodes (or of one)."""
    base = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    return f"{base}/{name}" if name else base
