"""The Services reconciler of the leader: Services and EndpointSlices into a
:class:`~ovn_underlay.control.services.ServicesBackend`.

* Informers on Services (``v1``) and EndpointSlices (``discovery.k8s.io/v1``) of every
  namespace run in every replica, leader or not.  Their events mark Services *dirty*: a
  Service's own events, and a slice's events for the Service its
  ``kubernetes.io/service-name`` label names (before and after a relabelling).
* A term (:meth:`ServicesReconciler.begin_term`) hands over the backend of the term's
  control-plane connection, fenced by the caller.  Its first sync, once both informers
  have their first list, is *complete*: every Service's state, so the backend removes
  the rows of Services gone meanwhile and leaves the unchanged ones alone.  A relist of
  either informer (after a 410 Gone) and a change of the set of node switches ask for a
  complete sync again.
* Otherwise the dirty Services are collected for ``window`` seconds after the first one
  and synced together: one ``sync`` of those that exist (``complete=False``) and one
  ``delete`` of those gone, or no longer programmed (headless, ExternalName): many
  objects changing at once become few transactions.
* The switches are every node switch by Node name, read from ``switches()`` at each
  sync and every :data:`SWITCH_POLL` seconds.
* Every backend call is preceded by ``may_write()`` (the leader's check).  A failure
  keeps the work and retries it after a backoff (1 s doubling to 30 s); a ``Fenced``
  ends writing for the term (a later leader has the control plane; the elector hears
  of it through the Lease).
* A Service whose state has ``problems`` (an IPv6 ClusterIP, an FQDN slice) is logged
  once per change of them, with a Warning Event on the Service (best effort),
  ``ServicePartlyProgrammed``; what the backend cannot do of it (its ``limits``, e.g.
  Octavia's OVN provider and sessionAffinity) likewise, ``ServiceLimitedByBackend``.
* A backend that raises :class:`~ovn_underlay.control.services.ServicesPending` (a
  load balancer stayed PENDING_*, which Octavia lets nobody change) has done the rest:
  the other Services' deletions are still made, the Services pending are logged, get a
  Warning Event each when they become pending (``LoadBalancerPending``) and a Normal one
  once programmed (``LoadBalancerProgrammed``), are counted in the metrics' pending
  gauge, and the work is retried after the backoff as for an unavailable control plane.
* :meth:`ServicesReconciler.nudge` makes it look at the switches at once (a node's
  status changed); :meth:`ServicesReconciler.drain` waits until the pending work is
  done (before a planned stop, so that a successor finds nothing left to write).
* :meth:`ServicesReconciler.end_term` waits for a sync under way, then writes no more.
* With ``metrics`` (:class:`~ovn_underlay.controller.metrics.ControllerMetrics`): each
  committed sync, its transactions, the latency of each Service it carried (from the
  first informer event that marked it in this term to the commit), what is programmed
  after it, and each failure by reason.
* ``begin_term`` with no backend (the Neutron control plane without a Service subnet:
  a tenant cannot write OVN's Northbound, and Octavia needs one) programs nothing and
  says so once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from lightkube import SingleConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import ObjectReference
from lightkube.resources.core_v1 import Service

from ovn_underlay.control.base import ControlPlaneUnavailable, Fenced
from ovn_underlay.control.services import (
    ServicesBackend,
    ServicesPending,
    ServiceState,
    SyncResult,
)
from ovn_underlay.controller.events import NORMAL, WARNING, EventRecorder
from ovn_underlay.controller.metrics import ControllerMetrics
from ovn_underlay.controller.service_model import SERVICE_NAME_LABEL, service_state
from ovn_underlay.kube.client import KubeClient, KubeError, describe
from ovn_underlay.kube.informer import Informer, Key, key_of

LOG = logging.getLogger(__name__)
EndpointSlice = create_namespaced_resource("discovery.k8s.io", "v1", "EndpointSlice",
                                           "endpointslices")
"""EndpointSlices as generic objects: lightkube's model requires ``addressType``, which
the watch's BOOKMARK objects (metadata only) lack, so its watches would fail at every
bookmark."""
DEFAULT_WINDOW = 0.02
"""Seconds the dirty Services are collected after the first before one sync of them."""
SWITCH_POLL = 1.0
"""Seconds between looks at the set of node switches (and at the caches' first list)."""
DRAIN_POLL = 0.01
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
NEUTRON_NOTICE = (
    "Services are not programmed: the control plane is Neutron, where a tenant cannot "
    "write OVN's Northbound, and no --service-subnet is set; ClusterIP Services go "
    "through Octavia's OVN provider with --service-subnet (the Neutron subnet holding "
    "the Service range) and --service-cidr (kube-apiserver's --service-cluster-ip-range), "
    "and do not answer from pods until then")


def service_key(obj: Any) -> str:
    """``namespace/name`` of a Service."""
    namespace, name = key_of(obj)
    return f"{namespace}/{name}"


def slice_service(obj: Any) -> str | None:
    """``namespace/service`` of the Service an EndpointSlice's label names (None: none)."""
    meta = obj.metadata
    name = (meta.labels or {}).get(SERVICE_NAME_LABEL) if meta is not None else None
    return f"{meta.namespace}/{name}" if meta is not None and name else None


class ServicesReconciler:
    """Keeps a term's backend in step with the Services (module docstring)."""

    def __init__(self, config: Callable[[], SingleConfig], kube: KubeClient,
                 may_write: Callable[[], bool], switches: Callable[[], Mapping[str, str]],
                 window: float = DEFAULT_WINDOW, instance: str = "",
                 metrics: ControllerMetrics | None = None) -> None:
        """``kube``: where Events go; ``instance``: the Events' reportingInstance."""
        self.kube = kube
        self.metrics = metrics
        self.window = window
        self.events = EventRecorder(kube, may_write, instance)
        self._may_write = may_write
        self._switches = switches
        self.services: Informer[Service] = Informer(
            config, Service, name="Service informer", on_add=self._service_changed,
            on_update=lambda _old, new: self._service_changed(new),
            on_delete=self._service_changed, on_relist=self.resync)
        self.slices: Informer[Any] = Informer(
            config, EndpointSlice, name="EndpointSlice informer", on_add=self._slice_added,
            on_update=self._slice_updated, on_delete=self._slice_deleted,
            on_relist=self.resync)
        self._cond = threading.Condition()
        self._dirty: set[str] = set()
        self._marked: dict[str, float] = {}
        """When each Service not synced yet was first marked in this term (monotonic)."""
        self._complete = False
        self._backend: ServicesBackend | None = None
        self._epoch: int | None = None
        self._told_neutron = False
        self._index: dict[str, dict[Key, Any]] = {}
        """The EndpointSlices of each Service, by the slice's key."""
        self._index_lock = threading.Lock()
        self._term_lock = threading.Lock()
        """Held by a sync and by end_term: a term ends after its sync under way."""
        self._problems: dict[str, tuple[str, ...]] = {}
        self._limits: dict[str, tuple[str, ...]] = {}
        """What the backend said it cannot do of each Service (said once per change)."""
        self._pending: set[str] = set()
        """Services whose load balancer the backend last found pending (PENDING_*)."""
        self._synced_switches: dict[str, str] | None = None
        self._programmed: dict[str, int] = {}
        """The programmed Services' endpoint counts, by Service (for the metrics)."""
        self._failures = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.results: list[SyncResult] = []
        """What each backend call of this process changed, in order (for tests, logs)."""

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the informers and the syncing thread."""
        self.services.start()
        self.slices.start()
        self._thread = threading.Thread(target=self._run, name="services", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread and the informers (the term too)."""
        self._stopping.set()
        self.end_term()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self.services.stop(timeout)
        self.slices.stop(timeout)

    def begin_term(self, epoch: int, backend: ServicesBackend | None,
                   said: bool = False) -> None:
        """Write to ``backend`` (on a connection fenced at ``epoch``) from now on, starting
        with a complete sync; None: program nothing (said once, unless ``said``: the
        caller said why)."""
        if backend is None:
            if not (self._told_neutron or said):
                LOG.warning(NEUTRON_NOTICE)
                self._told_neutron = True
            return
        with self._term_lock, self._cond:
            self._backend, self._epoch = backend, epoch
            self._dirty.clear()
            self._marked.clear()
            self._complete = True
            self._synced_switches = None
            self._failures = 0
            self._cond.notify()

    def end_term(self) -> None:
        """Write no more (after the sync under way, if any)."""
        with self._term_lock, self._cond:
            self._backend, self._epoch = None, None

    def resync(self) -> None:
        """Ask for a complete sync (an informer listed again)."""
        with self._cond:
            self._complete = True
            self._cond.notify()

    def nudge(self) -> None:
        """Look at the node switches now (a node's status changed)."""
        with self._cond:
            self._cond.notify()

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the term has no work pending (nothing dirty,
        no complete sync asked, the switches synced); True if so (or there is no term)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                idle = self._backend is None or not (
                    self._dirty or self._complete
                    or dict(self._switches()) != self._synced_switches)
            if idle or time.monotonic() >= deadline:
                return idle
            self._stopping.wait(DRAIN_POLL)

    # -- the informers' handlers ----------------------------------------------------------

    def _mark(self, *keys: str | None) -> None:
        now = time.monotonic()
        with self._cond:
            for key in keys:
                if key:
                    self._dirty.add(key)
                    self._marked.setdefault(key, now)
            self._cond.notify()

    def _service_changed(self, obj: Service) -> None:
        self._mark(service_key(obj))

    def _slice_added(self, obj: Any) -> None:
        service = slice_service(obj)
        if service is not None:
            with self._index_lock:
                self._index.setdefault(service, {})[key_of(obj)] = obj
        self._mark(service)

    def _slice_deleted(self, obj: Any) -> None:
        service = slice_service(obj)
        if service is not None:
            with self._index_lock:
                mine = self._index.get(service, {})
                mine.pop(key_of(obj), None)
                if not mine:
                    self._index.pop(service, None)
        self._mark(service)

    def _slice_updated(self, old: Any, new: Any) -> None:
        self._slice_deleted(old)
        self._slice_added(new)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not (self.services.has_synced() and self.slices.has_synced()):
                self.services.wait_for_sync(SWITCH_POLL)
                self.slices.wait_for_sync(SWITCH_POLL)
                continue
            with self._cond:
                if self._backend is None or not (self._dirty or self._complete):
                    self._cond.wait(SWITCH_POLL)
                batching = bool(self._dirty) and not self._complete
            if self._stopping.is_set():
                return
            if batching:
                self._stopping.wait(self.window)
            if not self._pass():
                self._failures += 1
                self._stopping.wait(min(BACKOFF_MAX,
                                        BACKOFF_FIRST * 2 ** (self._failures - 1)))

    def _pass(self) -> bool:
        """One sync of the work there is; False: it failed and is kept for a retry."""
        with self._term_lock:
            backend, epoch = self._backend, self._epoch
            if backend is None or epoch is None:
                return True
            switches = dict(self._switches())
            with self._cond:
                complete = self._complete or switches != self._synced_switches
                if not (complete or self._dirty):
                    return True
                dirty, self._dirty = self._dirty, set()
                marked, self._marked = self._marked, {}
                self._complete = False
            try:
                pending = self._sync(backend, epoch, switches, complete, dirty, marked)
            except Fenced as exc:
                self._failed("fenced")
                LOG.error("epoch %d: Services not synced: %s; writing no more Services in "
                          "this term", epoch, exc)
                self._backend, self._epoch = None, None
                return True
            except (ControlPlaneUnavailable, KubeError) as exc:
                self._keep(complete, dirty, marked)
                self._failed("unavailable")
                LOG.warning("epoch %d: Services not synced: %s; again soon", epoch,
                            describe(exc))
                return False
            except Exception as exc:
                self._keep(complete, dirty, marked)
                self._failed("error")
                LOG.exception("epoch %d: Services not synced: %s", epoch, describe(exc))
                return False
            if pending:
                self._keep(complete, dirty, marked)
                self._failed("pending")
                LOG.warning("epoch %d: %d Service(s) not programmed, their load balancer "
                            "pending (PENDING_*: Octavia refuses changes meanwhile): %s; the "
                            "others are; again soon", epoch, len(pending), ", ".join(pending))
                return False
            self._synced_switches = switches
            self._failures = 0
            return True

    def _keep(self, complete: bool, dirty: set[str], marked: dict[str, float]) -> None:
        with self._cond:
            self._complete = self._complete or complete
            self._dirty |= dirty
            for key, when in marked.items():
                self._marked[key] = min(when, self._marked.get(key, when))

    def _failed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.failed(reason)

    def _sync(self, backend: ServicesBackend, epoch: int, switches: dict[str, str],
              complete: bool, dirty: set[str], marked: dict[str, float]) -> tuple[str, ...]:
        """A complete sync, or one of the ``dirty`` Services; only while ``may_write()``.
        The Services whose load balancer the backend found pending (the rest is done).

        ``marked``: when the Services it carries were first marked (for the latency)."""
        started = time.monotonic()
        keys = ({service_key(s) for s in self.services.list()} if complete else dirty)
        states: list[ServiceState] = []
        gone: list[str] = []
        for key in sorted(keys):
            state = self._state(key)
            if state is None:
                gone.append(key)
            else:
                states.append(state)
        if not self._may_write():
            return ()
        pending: tuple[str, ...] | None = None
        try:
            result = backend.sync(states, switches, complete)
        except ServicesPending as exc:  # the others are done: their deletions too
            pending, result = exc.keys, SyncResult()
        self.results.append(result)
        if gone and not complete:
            if not self._may_write():
                return ()
            try:
                deleted = backend.delete(gone)
            except ServicesPending as exc:
                pending, deleted = (*(pending or ()), *exc.keys), SyncResult()
            self.results.append(deleted)
            result = SyncResult(result.created, result.updated,
                                result.deleted + deleted.deleted,
                                result.transactions + deleted.transactions)
        for state in states:
            self._say_once(self._problems, state.key, state.problems,
                           "ServicePartlyProgrammed")
            self._say_once(self._limits, state.key, backend.limits(state),
                           "ServiceLimitedByBackend")
        for key in gone:
            self._problems.pop(key, None)
            self._limits.pop(key, None)
        carried = {s.key for s in states} | set(gone)
        self._say_pending(states, carried, complete, pending or ())
        if pending is None:
            self._record(states, gone, complete, result, marked)
        level = logging.INFO if complete or result.transactions else logging.DEBUG
        LOG.log(level, "epoch %d: %s sync of %d Service(s) (%d gone) over %d switch(es): "
                "%d row(s) created, %d updated, %d deleted in %d transaction(s), %.0f ms%s",
                epoch, "complete" if complete else "incremental", len(states), len(gone),
                len(switches), result.created, result.updated, result.deleted,
                result.transactions, (time.monotonic() - started) * 1000,
                "" if pending is None else f" ({len(set(pending))} pending)")
        return tuple(sorted(set(pending or ())))

    def _record(self, states: list[ServiceState], gone: list[str], complete: bool,
                result: SyncResult, marked: dict[str, float]) -> None:
        """The metrics of one committed sync (nothing without metrics)."""
        if self.metrics is None:
            return
        if complete:
            self._programmed.clear()
        for key in gone:
            self._programmed.pop(key, None)
        for state in states:
            if state.cluster_ips:
                self._programmed[state.key] = sum(len(p.endpoints) for p in state.ports)
            else:
                self._programmed.pop(state.key, None)
        now = time.monotonic()
        self.metrics.synced(complete, result.transactions,
                            [now - when for when in marked.values()])
        self.metrics.programmed(len(self._programmed), sum(self._programmed.values()))

    def _state(self, key: str) -> ServiceState | None:
        """The state of Service ``key`` from the caches (None: gone or not ours)."""
        namespace, name = key.split("/", 1)
        service = self.services.get(namespace, name)
        if service is None:
            return None
        with self._index_lock:
            slices = list(self._index.get(key, {}).values())
        return service_state(service.to_dict(), [s.to_dict() for s in slices])

    def _say_once(self, said: dict[str, tuple[str, ...]], key: str,
                  lines: tuple[str, ...], reason: str) -> None:
        """Log ``lines`` about Service ``key`` once per change of them (``said`` holds
        what was said last), with a Warning Event ``reason`` on it."""
        if said.get(key, ()) == lines:
            return
        if lines:
            said[key] = lines
            message = "; ".join(lines)
            LOG.warning("Service %s: %s", key, message)
            self._event(key, WARNING, reason, message)
        else:
            said.pop(key, None)

    def _say_pending(self, states: list[ServiceState], carried: set[str], complete: bool,
                     pending: tuple[str, ...]) -> None:
        """The Services whose load balancer is pending after a sync that carried
        ``carried``: an Event on each one that becomes pending, and on each that no
        longer is; the gauge."""
        now = set(pending) | (set() if complete else self._pending - carried)
        programmed = {s.key for s in states}
        for key in sorted(set(pending) - self._pending):
            self._event(key, WARNING, "LoadBalancerPending",
                        "its load balancer stays in a PENDING_* state, in which Octavia "
                        "refuses any change: the Service's latest state is not programmed "
                        "yet; retrying")
        for key in sorted((self._pending - now) & programmed):
            LOG.info("Service %s: its load balancer is no longer pending: programmed", key)
            self._event(key, NORMAL, "LoadBalancerProgrammed",
                        "its load balancer left the PENDING_* state: the Service's state "
                        "is programmed")
        self._pending = now
        if self.metrics is not None:
            self.metrics.pending(len(now))

    def _event(self, key: str, kind: str, reason: str, message: str) -> None:
        """An Event on the Service ``key``, best effort (a failure is logged)."""
        namespace, name = key.split("/", 1)
        service = self.services.get(namespace, name)
        meta = service.metadata if service is not None else None
        if meta is None:
            return
        about = ObjectReference(apiVersion="v1", kind="Service", namespace=namespace,
                                name=name, uid=meta.uid,
                                resourceVersion=meta.resourceVersion)
        self.events.about(about, namespace, kind, reason, message)
