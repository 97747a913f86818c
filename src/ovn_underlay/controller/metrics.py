"""The controller's Prometheus metrics, in a registry of its own.

=====================================================  =====================================
``ovn_underlay_controller_leading``                    1 while this replica writes (a term)
``ovn_underlay_services_programmed``                   Services whose state the last sync
                                                       wrote (IPv4 ClusterIP, not headless)
``ovn_underlay_service_backends_programmed``           their endpoints, one per address,
                                                       target port and Service port
``ovn_underlay_service_sync_latency_seconds``          a Service's first event (as the
                                                       informer got it) to the commit of
                                                       the sync that carried it, retries
                                                       included
``ovn_underlay_service_syncs_total``                   syncs by kind (complete, incremental)
``ovn_underlay_services_nb_transactions_total``        control-plane transactions they made
``ovn_underlay_service_sync_errors_total``             failed syncs by reason (unavailable:
                                                       the control plane or the API did not
                                                       answer; fenced: a later leader;
                                                       pending: a load balancer stayed
                                                       PENDING_*, the rest done; error:
                                                       anything else, logged)
``ovn_underlay_services_pending``                      Services whose load balancer the
                                                       last sync found pending (Octavia:
                                                       PENDING_* beyond the backend's
                                                       wait), retried until programmed
=====================================================  =====================================

The two ``programmed`` gauges describe what this replica last wrote; a replica that
does not lead keeps its figures of its last term (``controller_leading`` says which).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

NAMESPACE = "ovn_underlay"
SYNC_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0)
ERROR_REASONS = ("unavailable", "fenced", "pending", "error")


class ControllerMetrics:
    """Every metric of one controller process (module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.services = Gauge(
            "services_programmed", "Services whose state the last sync wrote",
            namespace=NAMESPACE, registry=self.registry)
        self.backends = Gauge(
            "service_backends_programmed", "Endpoints of the programmed Services (address, "
            "target port and Service port)", namespace=NAMESPACE, registry=self.registry)
        self.latency = Histogram(
            "service_sync_latency_seconds", "From a Service's first event as the informer "
            "got it to the commit of the sync that carried it (retries included)",
            namespace=NAMESPACE, buckets=SYNC_BUCKETS, registry=self.registry)
        self.syncs = Counter(
            "service_syncs", "Services syncs, by kind", ["kind"], namespace=NAMESPACE,
            registry=self.registry)
        self.transactions = Counter(
            "services_nb_transactions", "Control-plane transactions the Services syncs made",
            namespace=NAMESPACE, registry=self.registry)
        self.errors = Counter(
            "service_sync_errors", "Services syncs that failed, by reason", ["reason"],
            namespace=NAMESPACE, registry=self.registry)
        self.pending_services = Gauge(
            "services_pending", "Services whose load balancer the last sync found pending "
            "(Octavia's PENDING_* states), retried until programmed", namespace=NAMESPACE,
            registry=self.registry)
        for kind in ("complete", "incremental"):
            self.syncs.labels(kind)
        for reason in ERROR_REASONS:
            self.errors.labels(reason)

    def watch_leading(self, leading: Callable[[], bool]) -> None:
        """Export ``controller_leading``, read from ``leading`` whenever Prometheus scrapes."""
        self.registry.register(_LeadingCollector(leading))

    def synced(self, complete: bool, transactions: int, latencies: Iterable[float]) -> None:
        """One sync committed: its kind, its transactions, each carried Service's latency."""
        self.syncs.labels("complete" if complete else "incremental").inc()
        self.transactions.inc(transactions)
        for seconds in latencies:
            self.latency.observe(seconds)

    def programmed(self, services: int, backends: int) -> None:
        """What the control plane holds after a sync."""
        self.services.set(services)
        self.backends.set(backends)

    def pending(self, services: int) -> None:
        """How many Services wait for their load balancer after a sync."""
        self.pending_services.set(services)

    def failed(self, reason: str) -> None:
        """One sync failed (``reason``: one of :data:`ERROR_REASONS`)."""
        self.errors.labels(reason).inc()


class _LeadingCollector(Collector):
    """``controller_leading`` computed at scrape time."""

    def __init__(self, leading: Callable[[], bool]) -> None:
        self._leading = leading

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """1 while this replica runs a term and may write, else 0."""
        yield GaugeMetricFamily(f"{NAMESPACE}_controller_leading", "1 while this replica "
                                "leads and writes, else 0", value=int(self._leading()))
