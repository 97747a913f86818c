"""The daemon's Prometheus metrics, in a registry of its own, and their HTTP endpoint.

=====================================================  =====================================
``ovn_underlay_cni_request_duration_seconds``          CNI calls by command and result
``ovn_underlay_cni_errors_total``                      failed CNI calls by command and code
``ovn_underlay_pool_ports``                            pool ports by state (read at scrape)
``ovn_underlay_pool_size`` / ``_pool_in_use``          total ports / ports held by pods
``ovn_underlay_pool_refill_ports_total``               ports added, adopted, reclaimed
``ovn_underlay_pool_refill_failures_total``            refill rounds that failed
``ovn_underlay_control_plane_request_duration_seconds`` NB transactions / Neutron calls
``ovn_underlay_host_isolation_writes_total``           host isolation ruleset (re)written
``ovn_underlay_host_isolation_failures_total``         checks of that ruleset that failed
=====================================================  =====================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ovn_underlay.control.base import ControlPlane
from ovn_underlay.metrics_http import serve
from ovn_underlay.pods.pool import PoolStats

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

NAMESPACE = "ovn_underlay"
REQUEST_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTROL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)


class Metrics:
    """Every metric of one daemon."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "cni_request_duration_seconds", "CNI calls served, by command and result",
            ["command", "result"], namespace=NAMESPACE, buckets=REQUEST_BUCKETS,
            registry=self.registry)
        self.errors = Counter(
            "cni_errors", "CNI calls that failed, by command and CNI error code",
            ["command", "code"], namespace=NAMESPACE, registry=self.registry)
        self.refill_ports = Counter(
            "pool_refill_ports", "Pool ports the daemon added, adopted (found in the control "
            "plane only) or reclaimed (their pod is gone)",
            ["action"], namespace=NAMESPACE, registry=self.registry)
        self.refill_failures = Counter(
            "pool_refill_failures", "Pool refill rounds that failed", namespace=NAMESPACE,
            registry=self.registry)
        self.control = Histogram(
            "control_plane_request_duration_seconds", "Control-plane requests (OVN NB "
            "transactions, Neutron API calls), by backend, operation and result",
            ["backend", "operation", "result"], namespace=NAMESPACE, buckets=CONTROL_BUCKETS,
            registry=self.registry)
        self.isolation_writes = Counter(
            "host_isolation_writes", "Times the daemon wrote the host isolation ruleset "
            "(missing, or the node's OVS NICs changed)", namespace=NAMESPACE,
            registry=self.registry)
        self.isolation_failures = Counter(
            "host_isolation_failures", "Checks of the host isolation ruleset that failed "
            "(pods cannot be plugged while it is missing)", namespace=NAMESPACE,
            registry=self.registry)

    def watch_pool(self, pool_stats: Callable[[], PoolStats]) -> None:
        """Export the pool's gauges, read from ``pool_stats`` whenever Prometheus scrapes."""
        self.registry.register(_PoolCollector(pool_stats))

    def observe_request(self, command: str, seconds: float, code: int | None) -> None:
        """Record one CNI call; ``code`` is the CNI error code of a failed one."""
        self.requests.labels(command, "ok" if code is None else "error").observe(seconds)
        if code is not None:
            self.errors.labels(command, str(code)).inc()

    def serve(self, address: str) -> WSGIServer:
        """Serve ``/metrics`` on ``address`` ("HOST:PORT", port 0 picks one) in a thread."""
        return serve(self.registry, address)


class _PoolCollector(Collector):
    """Pool gauges computed from the pool database at scrape time."""

    def __init__(self, pool_stats: Callable[[], PoolStats]) -> None:
        self._pool_stats = pool_stats

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The pool's ports by state, its size and the ports in use."""
        stats = self._pool_stats()
        by_state = GaugeMetricFamily(f"{NAMESPACE}_pool_ports", "Pool ports by state",
                                     labels=["state"])
        for state in ("free", "attaching", "attached"):
            by_state.add_metric([state], getattr(stats, state))
        yield by_state
        yield GaugeMetricFamily(f"{NAMESPACE}_pool_size", "Ports in the pool",
                                value=stats.total)
        yield GaugeMetricFamily(f"{NAMESPACE}_pool_in_use", "Pool ports held by pods",
                                value=stats.attaching + stats.attached)


def timed(control: ControlPlane, backend: str, metrics: Metrics) -> ControlPlane:
    """``control`` with every request (method call but ``close``) timed into ``metrics``."""
    return cast(ControlPlane, _TimedControlPlane(control, backend, metrics))


class _TimedControlPlane:
    """A proxy timing each method of the control plane it wraps, by method name.

    A proxy rather than a subclass: it times whatever the backend-neutral
    interface grows into without listing its methods again.
    """

    def __init__(self, inner: ControlPlane, backend: str, metrics: Metrics) -> None:
        self._inner = inner
        self._backend = backend
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "close" or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = "error"
            try:
                value = attr(*args, **kwargs)
                result = "ok"
                return value
            finally:
                self._metrics.control.labels(self._backend, name, result).observe(
                    time.perf_counter() - started)

        return call
