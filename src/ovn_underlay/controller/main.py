"""The controller process: leader election, informers, and one worker reconciling nodes.

Every replica runs the same :class:`Controller`:

* Informers on Nodes and UnderlayNodes run in every replica, leader or not, so a replica
  that takes over has its caches already.  Their events put the node's name on a work
  queue (a name queued twice is reconciled once).
* A :class:`~ovn_underlay.controller.leader.LeaderElector` contends for the Lease
  ``<namespace>/ovn-underlay-controller``.  Its callbacks only tell the worker thread;
  the worker does the rest.
* When a term begins (epoch *e*) the worker connects to the control plane and calls
  ``fence(e)`` on the connection first, so a deposed leader's transactions fail from the
  moment this one wrote its epoch; then it waits for the caches, makes the cluster router
  (:meth:`NodeReconciler.start_term`), and queues every node (and every node switch of
  ours without a Node: that is how switches of Nodes deleted while no controller ran are
  collected).  Every ``resync`` seconds every node is queued again: that is how a deleted
  Node's VM port going away, which no watch reports, is noticed.
* Before every write the reconciler checks ``still_leader()`` and that the worker's term
  is still the elector's; when a term ends (``on_stopped_leading``) the next check fails
  and the worker closes the control-plane connection.  A write refused with ``Fenced``
  (a later leader's epoch in the control plane) ends the term: the elector is stopped
  (releasing the Lease if it still is ours) and started again, to contend anew.
* A reconcile failing for a transient reason (control plane or API unreachable) is
  retried for that node after a backoff (1 s doubling to 30 s); others go on.
* Services: a :class:`~ovn_underlay.controller.services.ServicesReconciler` with its
  own informers and thread; each term hands it the backend of the term's fenced
  connection (:func:`services_backend`: OVN's load balancers; on Neutron, Octavia's
  with a Service subnet set, else none) and the
  node switches from the UnderlayNodes' ``status.switch`` (looked at on every Node or
  UnderlayNode event); a stop lets it finish its pending sync first (up to
  :data:`STOP_DRAIN` s).  On Neutron with a Service subnet every term starts by
  attaching that subnet to the cluster router (the OVN provider puts each load
  balancer on the VIP's switch, its router and every switch on that router) and by
  making the hairpin group :data:`SERVICES_GROUP` (one ingress rule from the whole
  Service range), which every pool port gets besides its own groups
  (:attr:`~ovn_underlay.control.neutron.NeutronControlPlane.pod_groups`; pool ports
  made before get it added then).  On OVN NB every term starts by making the cluster
  router drop the Service range (``service_cidr``; none set: no policy): a packet for
  an address no Service holds would otherwise leave through the router's gateway
  (:meth:`~ovn_underlay.control.ovn_nb.OvnNbControlPlane.ensure_service_range_dropped`).
* :meth:`Controller.stop` (SIGTERM) stops writing, releases the Lease (a successor
  takes over at its next try) and stops the informers.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lightkube import SingleConfig
from lightkube.resources.core_v1 import Node

from ovn_underlay.control.base import (
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    Fenced,
)
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.ovn_lb import OvnLoadBalancers
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.control.services import ServicesBackend
from ovn_underlay.controller.events import EventRecorder
from ovn_underlay.controller.leader import ElectionConfig, LeaderElector, default_identity
from ovn_underlay.controller.metrics import ControllerMetrics
from ovn_underlay.controller.nodes import Caches, NodeReconciler, NotLeading, Settings, UnderlayNode
from ovn_underlay.controller.services import DEFAULT_WINDOW, ServicesReconciler
from ovn_underlay.controller.subnets import DEFAULT_NODE_PREFIX, SubnetAllocator
from ovn_underlay.kube.client import KubeClient, KubeError, describe
from ovn_underlay.kube.informer import Informer

LOG = logging.getLogger(__name__)
LEASE_NAME = "ovn-underlay-controller"
DEFAULT_NAMESPACE = "ovn-underlay"
DEFAULT_RESYNC = 30.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
SYNC_WAIT = 0.5
"""Seconds between the worker's looks at the caches' first sync (and at the term)."""
STOP_DRAIN = 1.0
"""Seconds a stop waits for the Services' pending sync before the Lease is released."""
SERVICES_GROUP = "ovn-underlay-services"
"""The Neutron security group admitting the Service range on every pool port (hairpin)."""


@dataclass(frozen=True)
class ControllerConfig:
    """Settings of the controller process (the node settings are in ``settings``)."""

    settings: Settings = field(default_factory=Settings)
    node_prefix: int = DEFAULT_NODE_PREFIX
    namespace: str = DEFAULT_NAMESPACE
    lease_name: str = LEASE_NAME
    identity: str = field(default_factory=default_identity)
    lease_duration: int = 15
    renew_deadline: float = 10.0
    renew_interval: float = 5.0
    retry_period: float = 2.0
    resync: float = DEFAULT_RESYNC
    services_window: float = DEFAULT_WINDOW
    """Seconds Service changes are collected before one sync of them."""
    service_subnet: str = ""
    """Neutron: the subnet (name or id) holding the Service range, where Octavia's VIPs
    are ("": no Services on Neutron)."""
    service_cidr: str = ""
    """The Service range (kube-apiserver's --service-cluster-ip-range): the cluster
    router drops it (OVN NB); the hairpin group's one rule admits it (Neutron with
    ``service_subnet``)."""


def service_network_problems(service_cidr: str, cidr: str, gateway: str,
                             pools: Iterable[tuple[str, str]]) -> list[str]:
    """What is wrong with a Service subnet (``cidr``, ``gateway``, allocation ``pools``) for
    the Service range ``service_cidr``: each VIP is a port at its ClusterIP, so the range
    must lie in the subnet and Neutron must never hand out one of its addresses."""
    wanted = ipaddress.IPv4Network(service_cidr)
    subnet = ipaddress.ip_network(cidr)
    if not (isinstance(subnet, ipaddress.IPv4Network) and wanted.subnet_of(subnet)):
        return [f"the Service range {wanted} is not inside the Service subnet's {cidr}: "
                "Octavia cannot make a VIP at a ClusterIP"]
    said = []
    if gateway and ipaddress.ip_address(gateway) in wanted:
        said.append(f"the Service subnet's gateway {gateway} is in the Service range "
                    f"{wanted}: a Service given that ClusterIP cannot get its VIP")
    for start, end in pools:
        first, last = ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)
        if first <= wanted[-1] and last >= wanted[0]:
            said.append(f"the Service subnet's allocation pool {start}-{end} overlaps the "
                        f"Service range {wanted}: Neutron may give a ClusterIP to another "
                        "port (set the pool outside the range)")
    return said


def services_backend(control: ControlPlane, service_subnet: str = "") -> ServicesBackend | None:
    """Where a term's Services go: OVN's load balancers on an OVN NB connection; Octavia's
    (OVN provider) on Neutron with ``service_subnet``, the Neutron subnet of the VIPs;
    else None."""
    if isinstance(control, OvnNbControlPlane):
        return OvnLoadBalancers(control)
    if isinstance(control, NeutronControlPlane) and service_subnet:
        from ovn_underlay.control.octavia_lb import OctaviaLoadBalancers

        return OctaviaLoadBalancers(control, service_subnet)
    return None


class WorkQueue:
    """Node names to reconcile, each at most once, each not before its due time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._woken = False

    def add(self, name: str, delay: float = 0.0) -> None:
        """Queue ``name`` (``delay`` seconds from now; an earlier due time is kept)."""
        when = time.monotonic() + delay
        with self._cond:
            if name not in self._due or self._due[name] > when:
                self._due[name] = when
            self._cond.notify()

    def wake(self) -> None:
        """Make the waiting :meth:`take` return None now."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._due.clear()

    def take(self, timeout: float) -> str | None:
        """The next name due, waiting up to ``timeout`` s (None: timeout, or woken)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._woken:
                    self._woken = False
                    return None
                now = time.monotonic()
                due = min(self._due.items(), key=lambda item: item[1], default=None)
                if due is not None and due[1] <= now:
                    del self._due[due[0]]
                    return due[0]
                if now >= end:
                    return None
                self._cond.wait(min(end, due[1] if due is not None else end) - now)


class Controller:
    """One replica of the cluster controller (module docstring)."""

    def __init__(self, kube_config: SingleConfig, config: ControllerConfig,
                 connect: Callable[[], ControlPlane],
                 metrics: ControllerMetrics | None = None) -> None:
        """``connect``: a new connection to the control plane (one per term);
        ``metrics``: where the controller's figures go (None: nowhere)."""
        self.config = config
        self._connect = connect
        self.kube = KubeClient(kube_config)
        self.elector = LeaderElector(
            self.kube,
            ElectionConfig(config.namespace, config.lease_name, identity=config.identity,
                           lease_duration=config.lease_duration,
                           renew_deadline=config.renew_deadline,
                           renew_interval=config.renew_interval,
                           retry_period=config.retry_period),
            on_started_leading=self._started, on_stopped_leading=self._stopped)
        self.queue = WorkQueue()
        self.nodes: Informer[Node] = Informer(
            lambda: kube_config, Node, name="Node informer",
            on_add=self._queue_node, on_update=lambda _old, new: self._queue_node(new),
            on_delete=self._queue_node)
        self.underlays: Informer[Any] = Informer(
            lambda: kube_config, UnderlayNode, name="UnderlayNode informer",
            on_add=self._queue_node, on_update=lambda _old, new: self._queue_node(new),
            on_delete=self._queue_node)
        self.allocator = SubnetAllocator(config.settings.cluster_subnet, config.node_prefix)
        self.services = ServicesReconciler(lambda: kube_config, self.kube, self._may_write,
                                           self._node_switches, config.services_window,
                                           config.identity, metrics)
        if metrics is not None:
            metrics.watch_leading(lambda: self.leading)
        self._lock = threading.Lock()
        self._election = threading.Lock()
        """Held while the elector is stopped (and started again): a stop() racing a
        deposed term's restart neither joins a thread not started nor is undone by it."""
        self._wanted: int | None = None
        """The epoch the elector says we lead in (None: not leading)."""
        self._epoch: int | None = None
        """The epoch of the term the worker runs (its control-plane connection's)."""
        self._control: ControlPlane | None = None
        self._reconciler: NodeReconciler | None = None
        self._failures: dict[str, int] = {}
        self._fresh: set[str] = set()
        """Nodes queued by the resync: their next pass reads the control plane again."""
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the informers, the worker and the election."""
        LOG.info("controller %s starting: Lease %s/%s, router %s, cluster subnet %s",
                 self.config.identity, self.config.namespace, self.config.lease_name,
                 self.config.settings.router, self.config.settings.cluster_subnet or "(none: "
                 "every Node needs spec.podCIDR)")
        self.nodes.start()
        self.underlays.start()
        self.services.start()
        self._worker = threading.Thread(target=self._work, name="reconciler", daemon=True)
        self._worker.start()
        self.elector.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop writing, release the Lease, end the worker and the informers."""
        LOG.info("controller %s stopping", self.config.identity)
        self.services.drain(min(timeout, STOP_DRAIN))
        with self._election:
            self._stopping.set()
            self.elector.stop(timeout)
        self.queue.wake()
        if self._worker is not None:
            self._worker.join(timeout)
        self._end_term()
        self.services.stop(timeout)
        self.nodes.stop(timeout)
        self.underlays.stop(timeout)
        self.kube.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until stopped (True) or ``timeout`` passed (False)."""
        return self._stopping.wait(timeout)

    @property
    def leading(self) -> bool:
        """Whether this replica's worker runs a term and may still write."""
        return self._may_write()

    # -- the elector's callbacks (its thread: no blocking) -------------------------------

    def _started(self, epoch: int) -> None:
        with self._lock:
            self._wanted = epoch
        self.queue.wake()

    def _stopped(self) -> None:
        with self._lock:
            self._wanted = None
        self.queue.wake()

    def _may_write(self) -> bool:
        epoch = self._epoch
        return (epoch is not None and self.elector.still_leader()
                and self.elector.epoch == epoch and not self._stopping.is_set())

    def _node_switches(self) -> dict[str, str]:
        """Every node switch made, by Node name (the UnderlayNodes' ``status.switch``)."""
        found = {}
        for obj in self.underlays.list():
            switch = (obj.get("status") or {}).get("switch")
            if switch and obj.metadata is not None and obj.metadata.name:
                found[obj.metadata.name] = str(switch)
        return found

    def _queue_node(self, obj: Any) -> None:
        meta = obj.metadata
        if meta is not None and meta.name:
            self.queue.add(meta.name)
        self.services.nudge()

    # -- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        next_resync = 0.0
        while not self._stopping.is_set():
            with self._lock:
                wanted = self._wanted
            if wanted != self._epoch:
                self._end_term()
                if wanted is not None and not self._begin_term(wanted):
                    self._stopping.wait(SYNC_WAIT)
                    continue
                next_resync = time.monotonic() + self.config.resync
                continue
            if self._reconciler is None:
                self.queue.take(self.config.resync)
                continue
            if time.monotonic() >= next_resync:
                self._queue_all()
                next_resync = time.monotonic() + self.config.resync
            name = self.queue.take(max(0.0, next_resync - time.monotonic()))
            if name is not None:
                self._reconcile(name)
        self._end_term()

    def _begin_term(self, epoch: int) -> bool:
        """Connect, fence, wait for the caches, start the term; False: try again soon."""
        LOG.info("epoch %d: taking over as the leader", epoch)
        self.queue.clear()
        try:
            control = self._connect()
        except Exception as exc:
            LOG.warning("epoch %d: cannot connect to the control plane: %s; again in %.1f s",
                        epoch, describe(exc), SYNC_WAIT)
            return False
        self._control, self._epoch = control, epoch
        try:
            if not self._may_write():
                raise NotLeading("the term ended before it began")
            control.fence(epoch)
            LOG.info("epoch %d: control plane fenced: writes of earlier leaders fail", epoch)
            while not (self.nodes.has_synced() and self.underlays.has_synced()):
                if not self._may_write():
                    raise NotLeading("the term ended while waiting for the caches")
                self.nodes.wait_for_sync(SYNC_WAIT)
                self.underlays.wait_for_sync(SYNC_WAIT)
            reconciler = NodeReconciler(
                self.kube, control, self.config.settings, self.allocator,
                Caches(lambda name: self.nodes.get("", name),
                       lambda name: self.underlays.get("", name)), self._may_write,
                EventRecorder(self.kube, self._may_write, self.config.identity))
            names = reconciler.start_term(self.nodes.list(), self.underlays.list())
            services_ready = self._prepare_services(control)
        except NotLeading as exc:
            LOG.info("epoch %d: %s", epoch, exc)
            self._end_term()
            return True
        except Fenced as exc:
            self._end_term()
            self._resign(epoch, exc)
            return True
        except Exception as exc:
            LOG.warning("epoch %d: cannot start the term: %s; again in %.1f s", epoch,
                        describe(exc), SYNC_WAIT, exc_info=not isinstance(
                            exc, ControlPlaneUnavailable | KubeError))
            self._end_term()
            return False
        self._reconciler = reconciler
        self.services.begin_term(epoch, services_backend(control, self.config.service_subnet)
                                 if services_ready else None, said=not services_ready)
        self._failures.clear()
        self._fresh.clear()
        for name in names:
            self.queue.add(name)
        LOG.info("epoch %d: leading; %d node(s) queued", epoch, len(names))
        return True

    def _prepare_services(self, control: ControlPlane) -> bool:
        """OVN NB: the Service range dropped by the cluster router.  Neutron with a Service
        subnet: the subnet on the cluster router, the hairpin group made and on every
        pool port (module docstring).  Idempotent.  False (said): the Service network
        cannot be made, so the term programs no Service (its nodes are served all the
        same)."""
        config = self.config
        if isinstance(control, OvnNbControlPlane):
            self._drop_service_range(control)
            return True
        if not (isinstance(control, NeutronControlPlane) and config.service_subnet):
            return True
        if not self._may_write():
            raise NotLeading("the term ended before the Service network was checked")
        try:
            if control.ensure_router_interface(config.settings.router, config.service_subnet):
                LOG.info("attached the Service subnet %s to router %s",
                         config.service_subnet, config.settings.router)
            if config.service_cidr:
                for problem in service_network_problems(
                        config.service_cidr, *control.subnet_layout(config.service_subnet)):
                    LOG.error("Service subnet %s: %s", config.service_subnet, problem)
            group = (control.ensure_services_group(SERVICES_GROUP, config.service_cidr)
                     if config.service_cidr else "")
        except (ControlPlaneUnavailable, Fenced):
            raise
        except ControlPlaneError as exc:
            LOG.error("Services are not programmed in this term: the Service subnet %s "
                      "cannot be used: %s", config.service_subnet, exc)
            return False
        if not group:
            return True
        control.pod_groups = (group,)
        updated = control.ensure_pod_groups(config.settings.router)
        LOG.info("security group %s (%s) admits the Service range %s on every pool port "
                 "(hairpin)%s", SERVICES_GROUP, group, config.service_cidr,
                 f"; added to {updated} pool port(s) made before" if updated else "")
        return True

    def _drop_service_range(self, control: OvnNbControlPlane) -> None:
        """The cluster router's policy dropping the Service range, as configured; a
        router that cannot take it is said and the term goes on (its Services work, an
        unused ClusterIP is routed as before)."""
        cidr, router = self.config.service_cidr, self.config.settings.router
        if not self._may_write():
            raise NotLeading("the term ended before the Service range was checked")
        try:
            wrote = control.ensure_service_range_dropped(router, cidr)
        except (ControlPlaneUnavailable, Fenced):
            raise
        except ControlPlaneError as exc:
            LOG.error("router %s cannot drop the Service range %s: %s", router, cidr or "-",
                      exc)
            return
        if cidr and wrote:
            LOG.info("router %s drops the Service range %s (an address no Service holds "
                     "is not routed out)", router, cidr)
        elif wrote:
            LOG.info("router %s: the policy dropping a Service range removed (no "
                     "service-cidr set)", router)
        elif not cidr:
            LOG.info("no service-cidr set: router %s routes a packet for an unused "
                     "ClusterIP like any other (out through its gateway, if it has one)",
                     router)

    def _end_term(self) -> None:
        self.services.end_term()
        control, self._control = self._control, None
        epoch, self._epoch = self._epoch, None
        self._reconciler = None
        if control is None:
            return
        try:
            control.close()
        except Exception as exc:
            LOG.warning("closing the control-plane connection: %s", describe(exc))
        LOG.info("epoch %d: stopped writing", epoch)

    def _queue_all(self) -> None:
        """Queue every node for a fresh pass, spread over half the resync period so that
        the requests that events queue meanwhile go first."""
        names: set[str] = set()
        for informer in (self.nodes, self.underlays):
            for obj in informer.list():
                if obj.metadata is not None and obj.metadata.name:
                    names.add(obj.metadata.name)
        self._fresh |= names
        step = self.config.resync / 2 / max(1, len(names))
        for i, name in enumerate(sorted(names)):
            self.queue.add(name, i * step)

    def _reconcile(self, name: str) -> None:
        reconciler, epoch = self._reconciler, self._epoch
        assert reconciler is not None and epoch is not None
        fresh = name in self._fresh
        self._fresh.discard(name)
        try:
            again = reconciler.reconcile(name, fresh)
        except NotLeading:
            LOG.info("epoch %d: node %s not reconciled: no longer the leader", epoch, name)
        except Fenced as exc:
            self._end_term()
            self._resign(epoch, exc)
        except (ControlPlaneUnavailable, KubeError) as exc:
            self._retry(name, describe(exc))
        except Exception as exc:
            LOG.exception("node %s: reconcile failed", name)
            self._retry(name, describe(exc))
        else:
            self._failures.pop(name, None)
            if again:
                self.queue.add(name)

    def _retry(self, name: str, why: str) -> None:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
        LOG.warning("node %s: %s; again in %.0f s", name, why, delay)
        self.queue.add(name, delay)

    def _resign(self, epoch: int, exc: Exception) -> None:
        """A later leader fenced the control plane: end the term and contend anew."""
        LOG.error("epoch %d: deposed: %s; stepping down", epoch, exc)
        with self._election:
            self.elector.stop()
            if not self._stopping.is_set():
                self.elector.start()
