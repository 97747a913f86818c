"""What the Services reconciler does with a backend's answers beyond rows: the limits it
states (an Event on the Service, once per change) and load balancers left pending
(:class:`~ovn_underlay.control.services.ServicesPending`: a log line, the pending
gauge, an Event on each such Service, the retry until programmed, the rest done
meanwhile).

The API server is the real test one; the backend is a fake that only reacts as Octavia's
would (pending for the Services it is told, limits for affinity), since what is tested
is the reconciler's handling of those reactions, not Octavia.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.models.core_v1 import ServicePort as KubeServicePort
from lightkube.models.core_v1 import ServiceSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Service
from lightkube.types import PatchType

from ovn_underlay.control import credentials
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.neutron_view import TRUNK
from ovn_underlay.control.octavia_lb import OctaviaLoadBalancers
from ovn_underlay.control.services import ServicesPending, ServiceState, SyncResult
from ovn_underlay.controller.main import service_network_problems, services_backend
from ovn_underlay.controller.metrics import ControllerMetrics
from ovn_underlay.controller.services import NEUTRON_NOTICE, ServicesReconciler
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.kube.support import eventually, write_kubeconfig

AFFINITY = "sessionAffinity ClientIP is not applied by this fake"


class FakeBackend:
    """Octavia's reactions only: Services in ``pending`` raise ServicesPending (after the
    others are synced), a Service with affinity has a limit; every call is recorded."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.syncs: list[list[str]] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def sync(self, services: Iterable[ServiceState], switches: Mapping[str, str],
             complete: bool) -> SyncResult:
        del switches, complete
        keys = [s.key for s in services]
        with self.lock:
            self.syncs.append(keys)
            stuck = [k for k in keys if k in self.pending]
        if stuck:
            raise ServicesPending(stuck, 60.0)
        return SyncResult(updated=len(keys), transactions=1)

    def delete(self, keys: Iterable[str]) -> SyncResult:
        gone = list(keys)
        with self.lock:
            self.deleted += gone
        return SyncResult(deleted=len(gone), transactions=1)

    def limits(self, state: ServiceState) -> tuple[str, ...]:
        return (AFFINITY,) if state.affinity_timeout else ()

    def carried(self, key: str) -> int:
        with self.lock:
            return sum(key in keys for keys in self.syncs)


@pytest.fixture
def running(server: KubeApiServer, tmp_path: Path
            ) -> Iterator[tuple[ServicesReconciler, FakeBackend, ControllerMetrics]]:
    """A ServicesReconciler on the test API server writing to a FakeBackend (term 1)."""
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    kube = KubeClient(load_config(path))
    metrics = ControllerMetrics()
    reconciler = ServicesReconciler(lambda: load_config(path), kube, lambda: True, dict,
                                    0.02, "test", metrics)
    backend = FakeBackend()
    reconciler.start()
    reconciler.begin_term(1, backend)
    try:
        yield reconciler, backend, metrics
    finally:
        reconciler.stop()
        kube.close()


def service(admin: Client, name: str, affinity: bool = False) -> None:
    admin.create(Service(metadata=ObjectMeta(name=name, namespace="default"),
                         spec=ServiceSpec(ports=[KubeServicePort(name="http", port=80)],
                                          sessionAffinity="ClientIP" if affinity else None)))


def events(admin: Client, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events on Service default/``name``, in order."""
    found = [e for e in admin.list(Event, namespace="default")
             if e.involvedObject.kind == "Service" and e.involvedObject.name == name]
    found.sort(key=lambda e: str(e.metadata.name if e.metadata else ""))
    found.sort(key=lambda e: e.firstTimestamp or e.lastTimestamp or "")
    return [(str(e.type), str(e.reason), str(e.message)) for e in found]


def sample(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"ovn_underlay_{name}", labels)


def settle(backend: FakeBackend) -> None:
    """Until no backend call came for 0.3 s."""
    seen = -1
    while seen != len(backend.syncs):
        seen = len(backend.syncs)
        threading.Event().wait(0.3)


def test_a_backend_limit_is_said_once_per_change_as_a_warning_event(
        running: tuple[ServicesReconciler, FakeBackend, ControllerMetrics],
        admin: Client) -> None:
    _, backend, _ = running
    service(admin, "sticky", affinity=True)
    service(admin, "plain")
    eventually(lambda: backend.carried("default/sticky") and backend.carried("default/plain"))
    for touch in ("1", "2"):
        admin.patch(Service, "sticky", {"metadata": {"labels": {"touched": touch}}},
                    namespace="default", patch_type=PatchType.MERGE)
        eventually(lambda t=touch: backend.carried("default/sticky") >= 1 + int(t))
    settle(backend)
    assert events(admin, "sticky") == [("Warning", "ServiceLimitedByBackend", AFFINITY)]
    assert events(admin, "plain") == []

    # the limit goes with the affinity, and comes back with it: said again
    admin.patch(Service, "sticky", {"spec": {"sessionAffinity": "None"}},
                namespace="default", patch_type=PatchType.MERGE)
    eventually(lambda: backend.carried("default/sticky") >= 4)
    admin.patch(Service, "sticky", {"spec": {"sessionAffinity": "ClientIP"}},
                namespace="default", patch_type=PatchType.MERGE)
    eventually(lambda: len(events(admin, "sticky")) == 2)
    settle(backend)
    assert [r for _, r, _ in events(admin, "sticky")] == ["ServiceLimitedByBackend"] * 2


def test_a_pending_load_balancer_is_alerted_and_retried_and_the_rest_goes_on(
        running: tuple[ServicesReconciler, FakeBackend, ControllerMetrics], admin: Client,
        caplog: pytest.LogCaptureFixture) -> None:
    """Octavia keeps web's load balancer PENDING_*: a warning line, the gauge at 1, one
    LoadBalancerPending Event however many retries, a deletion asked meanwhile still
    made; once it is ACTIVE again the retry programs it: gauge 0, a Normal Event."""
    caplog.set_level(logging.WARNING, "ovn_underlay.controller.services")
    _, backend, metrics = running
    service(admin, "old")
    eventually(lambda: backend.carried("default/old"))
    backend.pending.add("default/web")
    service(admin, "web")
    eventually(lambda: sample(metrics, "services_pending") == 1)
    eventually(lambda: backend.carried("default/web") >= 2, timeout=10)  # retried (1 s)
    admin.delete(Service, "old", namespace="default")
    eventually(lambda: "default/old" in backend.deleted, timeout=10)
    assert sample(metrics, "services_pending") == 1
    assert (sample(metrics, "service_sync_errors_total", reason="pending") or 0) >= 2
    assert events(admin, "web") == [
        ("Warning", "LoadBalancerPending", "its load balancer stays in a PENDING_* state, in "
         "which Octavia refuses any change: the Service's latest state is not programmed "
         "yet; retrying")]
    said = [r.getMessage() for r in caplog.records if "pending (PENDING_*" in r.getMessage()]
    assert said and "default/web" in said[0], said

    backend.pending.clear()
    eventually(lambda: sample(metrics, "services_pending") == 0, timeout=15)
    eventually(lambda: len(events(admin, "web")) == 2)
    assert events(admin, "web")[1][:2] == ("Normal", "LoadBalancerProgrammed")
    assert sample(metrics, "services_programmed") == 2  # web and default/kubernetes
    carried = backend.carried("default/web")
    settle(backend)
    assert backend.carried("default/web") == carried, "no retry once programmed"


def test_on_neutron_a_service_subnet_gives_octavias_backend() -> None:
    creds = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                        "OS_NETWORK_ENDPOINT_OVERRIDE": "http://127.0.0.1:9"},
                                       "no Neutron")
    neutron = NeutronControlPlane(creds, child_ports=TRUNK, timeout=1)
    try:
        assert services_backend(neutron) is None
        assert isinstance(services_backend(neutron, "services"), OctaviaLoadBalancers)
    finally:
        neutron.close()


def test_a_service_subnet_is_checked_against_the_service_range() -> None:
    """The lab's layout is right; a range outside the subnet, a gateway or a pool inside
    the range are said (each VIP is a port at its ClusterIP)."""
    lab = ("198.18.128.0/19", "198.18.144.1", (("198.18.144.2", "198.18.159.254"),))
    assert service_network_problems("198.18.128.0/20", *lab) == []
    assert service_network_problems("10.96.0.0/12", *lab) == [
        "the Service range 10.96.0.0/12 is not inside the Service subnet's 198.18.128.0/19: "
        "Octavia cannot make a VIP at a ClusterIP"]
    said = service_network_problems("198.18.128.0/20", "198.18.128.0/19", "198.18.128.1",
                                    (("198.18.128.2", "198.18.159.254"),))
    assert [p.split(" is ")[0].split(" overlaps ")[0] for p in said] == [
        "the Service subnet's gateway 198.18.128.1",
        "the Service subnet's allocation pool 198.18.128.2-198.18.159.254"]


def test_a_term_without_backend_for_a_reason_said_adds_no_notice(
        server: KubeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The controller logged why the Service subnet cannot be used: the reconciler does
    not add that no --service-subnet is set."""
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    kube = KubeClient(load_config(path))
    try:
        reconciler = ServicesReconciler(lambda: load_config(path), kube, lambda: True, dict)
        reconciler.begin_term(1, None, said=True)
        reconciler.end_term()
    finally:
        kube.close()
    assert not [r for r in caplog.records if r.getMessage() == NEUTRON_NOTICE]
