"""The node reconciler: for each Node, its node network in the control plane and the answer
in its UnderlayNode's status.

One call of :meth:`NodeReconciler.reconcile` brings one node to what is wanted, reading
the Node and UnderlayNode from the informers' caches and writing only what differs, so
a restart with nothing changed writes nothing:

* **VM port.**  The Node's VM port is the control-plane port holding the Node's
  ``InternalIP`` (:meth:`ControlPlane.port_holding`).  Not ``spec.providerID``: it names
  the Nova *instance* (``openstack:///<uuid>``), not its port, and a VM may have several
  ports; it is set only by the OpenStack cloud provider, absent on plain-OVN clusters and
  in the lab, while every Node reports its InternalIP (the kubelet's ``--node-ip``), which
  is the address on the port the pods' ports must be children of.  A Node whose
  InternalIP no port holds gets ``Ready=False``, reason ``NoVMPort``.
* **Subnet**: :mod:`.subnets` (the podCIDR, else an allocation recorded on the Node).
* **Network**: switch :func:`switch_for` (``node-<Node>``) on the cluster router (made
  once per term by :meth:`NodeReconciler.start_term`, never per node), its management
  port and ``pool_size`` pool ports, in one ``create_node_network``.
* **Pool**: at least ``min(spec.poolPorts, max_pool_ports)`` pool ports, added in
  batches of ``pool_batch``, one batch per pass (the caller runs another pass at once,
  after the other nodes' waiting requests); never fewer (ports are not taken back).
* **What a term remembers**: each node's VM port and network as last read or made.
  While this instance leads nothing else writes them (the fence), so a pass triggered
  by an event reads the control plane only when something changed; the periodic resync
  passes are *fresh* and read everything again (a VM port replaced, an operator's
  change).
* **Owners**: every ``spec.pods`` change goes to ``record_owners`` in one request (ports
  without a claim: None).
* **Security groups**: a claim with ``securityGroups`` is checked (:mod:`.claims`), then
  set with ``set_port_security_groups``; ``status.securityGroups[port]`` says it is done,
  ``status.refused[port]`` why not (the check's answer, or the control plane's refusal:
  the OVN backend has no security groups and refuses every request).  A claim gone or
  without groups: ``clear_port_security_groups`` and the port leaves
  ``status.securityGroups``.
* **Deleted Node**: while the VM port still exists, everything is kept (a Node that
  registers again finds its pods' ports), with ``Ready=False`` reason ``NodeDeleted``;
  once the port is gone from the control plane, ``destroy_node_network`` and the
  UnderlayNode is deleted.

Every write is preceded by the ``may_write`` check (the leader's ``still_leader()``);
when it fails :class:`NotLeading` ends the call.  Errors: ``ControlPlaneUnavailable``,
``Fenced`` and ``KubeError`` propagate (the caller retries, or steps down); any other
``ControlPlaneError`` lands in the status (``Ready=False``, reason ``ControlPlaneError``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from ovn_underlay.control.base import (
    ChildPort,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    Fenced,
    NodeNetwork,
    PortOwner,
    Routing,
)
from ovn_underlay.controller.claims import refusal
from ovn_underlay.controller.events import NORMAL, WARNING, EventRecorder
from ovn_underlay.controller.subnets import ANNOTATION, SubnetAllocator, SubnetError
from ovn_underlay.kube import underlay_node as un
from ovn_underlay.kube.client import KubeClient, NotFound, annotations_of, translated

LOG = logging.getLogger(__name__)
UnderlayNode = create_global_resource(un.GROUP, un.VERSION, un.KIND, un.PLURAL)
SWITCH_PREFIX = "node-"
DEFAULT_ROUTER = "ovn-underlay"
DEFAULT_POOL_SIZE = 16
DEFAULT_MAX_POOL_PORTS = 128
DEFAULT_POOL_BATCH = 32


def switch_for(node: str) -> str:
    """The logical switch of ``node``'s network."""
    return SWITCH_PREFIX + node


def node_of(switch: str) -> str | None:
    """The Node whose network ``switch`` is (None: not one the controller names)."""
    return switch[len(SWITCH_PREFIX):] if switch.startswith(SWITCH_PREFIX) else None


def internal_ip(node: Node) -> str:
    """The Node's first InternalIP ("" if it reports none)."""
    addresses = node.status.addresses if node.status is not None else None
    return next((a.address for a in addresses or () if a.type == "InternalIP"), "")


@dataclass(frozen=True)
class Settings:
    """What the controller makes of each node."""

    router: str = DEFAULT_ROUTER
    cluster_subnet: str = ""
    pool_size: int = DEFAULT_POOL_SIZE
    """Pool ports made with the network."""
    max_pool_ports: int = DEFAULT_MAX_POOL_PORTS
    """The most pool ports a node gets, whatever its spec.poolPorts asks."""
    pool_batch: int = DEFAULT_POOL_BATCH


class NotLeading(Exception):
    """This instance may no longer write: the term ended."""


class Caches:
    """Where the reconciler reads Nodes and UnderlayNodes (the informers' caches)."""

    def __init__(self, node: Callable[[str], Node | None],
                 underlay: Callable[[str], Mapping[str, Any] | None]) -> None:
        self.node = node
        self.underlay = underlay


class NodeReconciler:
    """Reconciles one node at a time (module docstring); not thread-safe: one caller."""

    def __init__(self, kube: KubeClient, control: ControlPlane, settings: Settings,
                 allocator: SubnetAllocator, caches: Caches,
                 may_write: Callable[[], bool], events: EventRecorder | None = None) -> None:
        """``events``: where to record Events (default: Events through ``kube``)."""
        self.kube = kube
        self.control = control
        self.settings = settings
        self.allocator = allocator
        self.caches = caches
        self._may_write = may_write
        self.events = events or EventRecorder(kube, may_write)
        self._recorded: dict[str, dict[str, PortOwner | None]] = {}
        """Per node: the owners recorded in this term."""
        self._granted: dict[str, dict[str, un.PodClaim]] = {}
        """Per node: the claims whose groups were checked and set in this term."""
        self._kept: set[str] = set()
        """Deleted Nodes whose network is kept (logged once)."""
        self._parents: dict[str, tuple[str, str]] = {}
        self._networks: dict[str, NodeNetwork] = {}
        self._hosts: dict[str, tuple[str, ...]] = {}
        self._ready_written: dict[str, tuple[str, str]] = {}
        """Per node: the Ready (status, reason) this term last wrote; the informer's copy
        may not show it yet, and an Event is said once per change."""
        """Per node: (InternalIP, VM port) and the network, as this term last read or made
        them: while it leads, nothing else writes them (the fence), so a pass that is not
        fresh needs no control-plane read."""

    # -- the term ---------------------------------------------------------------------

    def start_term(self, nodes: Iterable[Node], underlays: Iterable[Mapping[str, Any]]
                   ) -> list[str]:
        """Make the cluster router, load the subnets in use; the node names to reconcile
        (every Node, every UnderlayNode, every node switch of ours without either)."""
        self._guard()
        self.control.ensure_router(self.settings.router)
        subnets: dict[str, str] = {}
        taken: list[str] = []
        switches = self.control.node_switches()
        for switch in switches:
            net = self.control.get_node_network(switch)
            name = node_of(switch)
            if net is None:
                continue
            if name is None:
                taken.append(net.subnet)
            else:
                subnets[name] = net.subnet
        names = {n for n in map(node_of, switches) if n is not None}
        for obj in underlays:
            name = _name(obj)
            names.add(name)
            subnet = un.Status.from_object(obj).subnet
            if subnet:
                subnets.setdefault(name, subnet)
        for node in nodes:
            name = _name(node)
            names.add(name)
            annotated = annotations_of(node).get(ANNOTATION, "")
            pod_cidr = node.spec.podCIDR if node.spec is not None else None
            if pod_cidr or annotated:
                subnets[name] = pod_cidr or annotated
        self.allocator.load(subnets, taken)
        self._recorded.clear()
        self._granted.clear()
        self._kept.clear()
        self._parents.clear()
        self._networks.clear()
        self._hosts.clear()
        self._ready_written.clear()
        LOG.info("router %s is there; %d node(s) to reconcile, %d subnet(s) in use, %d "
                 "switch(es) of ours in the control plane", self.settings.router, len(names),
                 len(subnets) + len(taken), len(switches))
        return sorted(names)

    # -- one node ---------------------------------------------------------------------

    def reconcile(self, name: str, fresh: bool = False) -> bool:
        """Bring node ``name`` to what is wanted (module docstring); whether it wants another
        pass at once (its pool grows by one batch per pass, so that other nodes' requests
        are not kept waiting behind a long growth).

        ``fresh``: read the node's VM port and network from the control plane again rather
        than from what this term remembers of them (the periodic resync passes are fresh).
        """
        if fresh:
            self.forget(name)
        node = self.caches.node(name)
        obj = self.caches.underlay(name)
        if node is None:
            self.forget(name)
            self._gone(name, obj)
            return False
        self._kept.discard(name)
        if obj is None:
            obj = self._create_underlay(name)
        status = un.Status.from_object(obj)
        spec = un.Spec.from_object(obj)
        try:
            wanted = self._network_status(node, spec, status)
        except (ControlPlaneUnavailable, Fenced):
            self.forget(name)
            raise
        except ControlPlaneError as exc:
            self.forget(name)
            LOG.warning("node %s: %s", name, exc)
            wanted = dataclasses.replace(status, ready=False, reason="ControlPlaneError",
                                         message=str(exc))
        self._write_status(name, obj, dataclasses.replace(
            wanted, observed_generation=_generation(obj)))
        grew = len(wanted.ports) > len(status.ports)
        return grew and len(wanted.ports) < min(spec.pool_ports, self.settings.max_pool_ports)

    def forget(self, name: str) -> None:
        """Drop what this term remembers of the node's VM port and network."""
        self._parents.pop(name, None)
        self._networks.pop(name, None)
        self._hosts.pop(name, None)

    def _network_status(self, node: Node, spec: un.Spec, status: un.Status) -> un.Status:
        name = _name(node)
        ip = internal_ip(node)
        if not ip:
            return _not_ready(status, "NoInternalIP", f"Node {name} reports no InternalIP "
                              "address in status.addresses: the VM port is found by it")
        known = self._parents.get(name)
        parent = known[1] if known is not None and known[0] == ip else (
            self.control.port_holding(ip))
        if parent is None:
            self.forget(name)
            return _not_ready(status, "NoVMPort", f"no port of the control plane holds the "
                              f"Node's InternalIP {ip}: is node {name} a VM on the cloud's "
                              "network, and is its InternalIP the address of that port?")
        pod_cidr = node.spec.podCIDR if node.spec is not None else None
        try:
            subnet = self.allocator.assign(name, pod_cidr or "")
        except SubnetError as exc:
            return _not_ready(status, "NoSubnet", str(exc))
        if not pod_cidr and annotations_of(node).get(ANNOTATION) != subnet:
            self._annotate(name, subnet)
        self._parents[name] = (ip, parent)
        net = self._network(name, subnet, parent)
        if isinstance(net, str):
            self.forget(name)
            return _not_ready(status, "NetworkMismatch", net)
        hosts = self._host_routes(name, net)
        ports = self._pool(name, net, spec.pool_ports)
        self._networks[name] = dataclasses.replace(net, ports=ports)
        self._owners(name, ports, spec.pods)
        groups, refused = self._security_groups(name, {p.name for p in ports}, spec.pods,
                                                status)
        mgmt = net.mgmt
        return un.Status(
            switch=net.switch, subnet=net.subnet, router=net.router, gateway_ip=net.gateway_ip,
            gateway_mac=net.gateway_mac, parent=net.parent,
            mgmt=_port(mgmt) if mgmt is not None else None,
            ports=tuple(_port(p) for p in ports), host_addresses=hosts,
            security_groups=groups, refused=refused, ready=True, reason="NetworkReady",
            message=f"switch {net.switch} ({net.subnet}) on router {net.router}, "
                    f"{len(ports)} pool port(s), children of VM port {net.parent}")

    def _network(self, name: str, subnet: str, parent: str) -> NodeNetwork | str:
        """The node's network, made if missing (a string: why it cannot be used)."""
        switch = switch_for(name)
        net = self._networks.get(name) or self.control.get_node_network(switch)
        if net is not None and net.parent != parent and not self.control.port_exists(
                net.parent):
            LOG.info("node %s: its switch %s hangs off VM port %s, which is gone; the Node's "
                     "InternalIP is now on %s: making the network again", name, switch,
                     net.parent, parent)
            self._guard()
            self.control.destroy_node_network(switch)
            self.events.node(name, NORMAL, "NodeNetworkReplaced", f"switch {switch} was made "
                             f"of children of VM port {net.parent}, which is gone: made anew "
                             f"on {parent}")
            net = None
        if net is None:
            self._guard()
            net = self.control.create_node_network(
                switch, subnet, self.settings.router, parent, self.settings.pool_size,
                create_router=False, cluster_subnet=self.settings.cluster_subnet or None)
            made = (f"made switch {switch} ({net.subnet}) on router {net.router}, management "
                    f"port {net.mgmt.name if net.mgmt else '(none)'} and {len(net.ports)} pool "
                    f"port(s), children of VM port {parent}")
            LOG.info("node %s: %s", name, made)
            self.events.node(name, NORMAL, "NodeNetworkCreated", made)
            return net
        if net.parent != parent:
            return (f"switch {switch} is made of children of VM port {net.parent}, which still "
                    f"exists, but the Node's InternalIP is on port {parent}: delete the old "
                    "VM's port (or the switch) to have it made again")
        if net.subnet != subnet:
            return (f"switch {switch} has subnet {net.subnet}, but the node's subnet is "
                    f"{subnet}: delete the switch to have it made again")
        return net

    def _host_routes(self, name: str, net: NodeNetwork) -> tuple[str, ...]:
        """The node's own addresses, routed to its management port and admitted there.

        ``ensure_host_routes`` once per term and fresh pass (idempotent: it also repairs);
        a backend without a router of its own (none today) routes nothing.
        """
        known = self._hosts.get(name)
        if known is not None:
            return known
        if not isinstance(self.control, Routing):
            return ()
        self._guard()
        hosts = self.control.ensure_host_routes(net.switch)
        self._hosts[name] = hosts
        return hosts

    def _pool(self, name: str, net: NodeNetwork, asked: int) -> tuple[ChildPort, ...]:
        """The pool ports, grown by up to one batch towards what the node asks (capped)."""
        ports = net.ports
        want = min(asked, self.settings.max_pool_ports)
        if len(ports) >= want:
            return ports
        if asked > want:
            LOG.debug("node %s asks for %d pool ports: capped at %d", name, asked, want)
        count = min(self.settings.pool_batch, want - len(ports))
        self._guard()
        ports += self.control.add_pool_ports(net.switch, count)
        LOG.info("node %s: added %d pool port(s) to %s, %d now (asked %d)", name, count,
                 net.switch, len(ports), asked)
        return ports

    def _owners(self, name: str, ports: tuple[ChildPort, ...],
                claims: Mapping[str, un.PodClaim]) -> None:
        """Record the claims' pods on their ports (and no pod on the others)."""
        wanted: dict[str, PortOwner | None] = {p.name: None for p in ports}
        for port, claim in claims.items():
            if port in wanted:
                wanted[port] = PortOwner(claim.namespace, claim.name, claim.container_id)
        recorded = self._recorded.setdefault(name, {})
        changes = {p: o for p, o in wanted.items() if p not in recorded or recorded[p] != o}
        if not changes:
            return
        self._guard()
        skipped = self.control.record_owners(changes)
        recorded.update(changes)
        LOG.debug("node %s: recorded the pods of %d port(s)", name, len(changes))
        if skipped:
            LOG.warning("node %s: the control plane has no pool port(s) %s", name,
                        ", ".join(skipped))

    def _security_groups(self, name: str, pool: set[str], claims: Mapping[str, un.PodClaim],
                         status: un.Status
                         ) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
        """(status.securityGroups, status.refused) after acting on the claims."""
        groups = dict(status.security_groups)
        refused: dict[str, str] = {}
        granted = self._granted.setdefault(name, {})
        for port, claim in claims.items():
            if claim.security_groups is None:
                continue
            if granted.get(port) == claim and groups.get(port) == claim.security_groups:
                continue
            why = self._grant(name, port, claim, pool, groups.get(port))
            if why is None:
                groups[port] = claim.security_groups
                granted[port] = claim
                continue
            if status.refused.get(port) != why:
                LOG.warning("node %s: security groups %s on port %s refused: %s", name,
                            ", ".join(claim.security_groups), port, why)
                self.events.node(name, WARNING, "SecurityGroupsRefused",
                                 f"security groups {', '.join(claim.security_groups)} on port "
                                 f"{port} for pod {claim.namespace}/{claim.name}: {why}")
            refused[port] = why
            granted.pop(port, None)
            if port in groups:
                self._clear(name, port)
                del groups[port]
        for port in list(groups):
            held = claims.get(port)
            if held is None or held.security_groups is None:
                self._clear(name, port)
                del groups[port]
                granted.pop(port, None)
        return groups, refused

    def _grant(self, name: str, port: str, claim: un.PodClaim, pool: set[str],
               has: tuple[str, ...] | None) -> str | None:
        """Check the claim and set its groups; why not (None: done)."""
        if port not in pool:
            return f"port {port} is not a pool port of node {name}"
        why = refusal(self.kube, name, claim)
        if why is not None:
            return why
        if has == claim.security_groups:
            return None
        owner = PortOwner(claim.namespace, claim.name, claim.container_id)
        self._guard()
        try:
            self.control.set_port_security_groups(port, claim.security_groups or (), owner)
        except (ControlPlaneUnavailable, Fenced):
            raise
        except ControlPlaneError as exc:
            return str(exc)
        LOG.info("node %s: port %s has security group(s) %s for pod %s/%s", name, port,
                 ", ".join(claim.security_groups or ()), claim.namespace, claim.name)
        return None

    def _clear(self, name: str, port: str) -> None:
        self._guard()
        self.control.clear_port_security_groups(port)
        LOG.info("node %s: port %s has a fresh port's security groups again", name, port)

    # -- a Node that is gone ------------------------------------------------------------

    def _gone(self, name: str, obj: Mapping[str, Any] | None) -> None:
        switch = switch_for(name)
        net = self.control.get_node_network(switch)
        parent = net.parent if net is not None else (
            un.Status.from_object(obj).parent if obj is not None else "")
        if parent and self.control.port_exists(parent):
            if name not in self._kept:
                LOG.info("Node %s is gone but its VM port %s still exists: keeping switch %s "
                         "and its ports (a Node registering again gets them back)", name,
                         parent, switch)
                self._kept.add(name)
            if obj is not None:
                status = un.Status.from_object(obj)
                self._write_status(name, obj, _not_ready(
                    status, "NodeDeleted", f"Node {name} is deleted; its network is kept "
                    f"while VM port {parent} exists"))
            return
        if net is not None:
            self._guard()
            self.control.destroy_node_network(switch)
            gone = (f"Node {name} and its VM port {parent or '(unknown)'} are gone: destroyed "
                    f"switch {switch}, its ports and pool")
            LOG.info("%s", gone)
            self.events.node(name, NORMAL, "NodeNetworkDeleted", gone)
        if obj is not None:
            self._delete_underlay(name)
        self.allocator.release(name)
        self._recorded.pop(name, None)
        self._granted.pop(name, None)
        self._kept.discard(name)

    # -- Kubernetes writes ------------------------------------------------------------

    def _create_underlay(self, name: str) -> Mapping[str, Any]:
        self._guard()
        fresh = UnderlayNode(apiVersion=un.API_VERSION, kind=un.KIND,
                             metadata=ObjectMeta(name=name), spec={})
        with translated(self.kube.server, f"create UnderlayNode {name}"):
            try:
                created: Mapping[str, Any] = self.kube.api.create(fresh)
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
                created = self.kube.api.get(UnderlayNode, name)
        LOG.info("node %s: UnderlayNode %s is there", name, name)
        return created

    def _delete_underlay(self, name: str) -> None:
        self._guard()
        try:
            with translated(self.kube.server, f"delete UnderlayNode {name}"):
                self.kube.api.delete(UnderlayNode, name)
        except NotFound:
            return
        LOG.info("deleted UnderlayNode %s", name)

    def _annotate(self, name: str, subnet: str) -> None:
        self._guard()
        with translated(self.kube.server, f"annotate Node {name}"):
            self.kube.api.patch(Node, name, {"metadata": {"annotations": {ANNOTATION: subnet}}},
                                patch_type=PatchType.MERGE)
        LOG.info("node %s: recorded its subnet %s on the Node (%s)", name, subnet, ANNOTATION)

    def _write_status(self, name: str, obj: Mapping[str, Any], wanted: un.Status) -> None:
        """Patch the status with what differs from ``obj``'s (nothing: no request)."""
        current = dict(obj.get("status") or {})
        body = wanted.to_dict()
        old_ready: dict[str, Any] = next((c for c in current.get("conditions") or []
                          if c.get("type") == un.READY), {})
        condition = {"type": un.READY, "status": "True" if wanted.ready else "False",
                     "reason": wanted.reason, "message": wanted.message}
        same = all(old_ready.get(k) == v for k, v in condition.items())
        if same and all(current.get(k) == v for k, v in body.items()):
            return
        condition["lastTransitionTime"] = (
            old_ready["lastTransitionTime"]
            if old_ready.get("status") == condition["status"] and "lastTransitionTime"
            in old_ready else _timestamp())
        patch = dict(body, conditions=[condition])
        for key in ("securityGroups", "refused"):
            for gone in set(current.get(key) or {}) - set(body[key]):
                patch[key][gone] = None
        self._guard()
        with translated(self.kube.server, f"update the status of UnderlayNode {name}"):
            self.kube.api.patch(UnderlayNode.Status, name, {"status": patch},
                                patch_type=PatchType.MERGE)
        before = self._ready_written.get(name, (old_ready.get("status"),
                                                old_ready.get("reason")))
        after = (condition["status"], wanted.reason)
        self._ready_written[name] = after
        if before != after:
            LOG.info("node %s: Ready=%s (%s): %s", name, condition["status"], wanted.reason,
                     wanted.message)
            self.events.node(name, NORMAL if wanted.ready else WARNING, wanted.reason,
                             wanted.message)

    def _guard(self) -> None:
        if not self._may_write():
            raise NotLeading("no longer the leader: not writing")


def _name(obj: Any) -> str:
    meta = obj.metadata
    return str(meta.name) if meta is not None else ""


def _generation(obj: Any) -> int:
    meta = obj.metadata
    return int(meta.generation or 0) if meta is not None else 0


def _port(port: ChildPort) -> un.Port:
    return un.Port(name=port.name, mac=port.mac, ip=port.ip, tag=port.tag)


def _not_ready(status: un.Status, reason: str, message: str) -> un.Status:
    return dataclasses.replace(status, ready=False, reason=reason, message=message)


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
