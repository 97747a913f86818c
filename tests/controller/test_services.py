"""The Services reconciler in the controller, against the test API server (its stand-in
EndpointSlice controller makes the slices of the Pods) and a real NB: rows made, changed,
removed; a restart that rewrites nothing; a burst in few transactions; a lost watch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.core_v1 import ServicePort as KubeServicePort
from lightkube.models.core_v1 import ServiceSpec
from lightkube.models.discovery_v1 import Endpoint as KubeEndpoint
from lightkube.models.discovery_v1 import EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from ovn_underlay.control import credentials
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.neutron_view import TRUNK
from ovn_underlay.control.ovn_lb import GROUP, OvnLoadBalancers
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.control.services import SyncResult
from ovn_underlay.controller.main import Controller, ControllerConfig, services_backend
from ovn_underlay.controller.metrics import ControllerMetrics
from ovn_underlay.controller.nodes import Settings
from ovn_underlay.controller.services import NEUTRON_NOTICE, ServicesReconciler
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.controller.conftest import CLUSTER_SUBNET, LEASE
from tests.controller.support import add_node, eventually, rows, wait_ready
from tests.controller.test_service_model_api import running_pod
from tests.functional.test_ovn_nb import dump, without_nb_global
from tests.kube.conftest import relay
from tests.kube.support import Relay, write_kubeconfig

__all__ = ["relay"]
MakeController = Callable[..., Controller]


@pytest.fixture
def controllers(cluster: Client, kubeconfig: str, nb: str) -> Iterator[MakeController]:
    """make(kubeconfig=..., window=..., metrics=..., service_cidr=...): a controller
    started on the API server and the NB (the kubeconfig given, else the server's own)."""
    made: list[Controller] = []

    def make(config: str = "", window: float = 0.02,
             metrics: ControllerMetrics | None = None, service_cidr: str = "") -> Controller:
        settings = Settings(cluster_subnet=CLUSTER_SUBNET, pool_size=2, max_pool_ports=4,
                            pool_batch=2)
        controller = Controller(
            load_config(config or kubeconfig),
            ControllerConfig(settings=settings, identity=f"c{len(made)}",
                             lease_duration=LEASE, renew_deadline=1.0, renew_interval=0.3,
                             retry_period=0.1, resync=0.5, services_window=window,
                             service_cidr=service_cidr),
            lambda: OvnNbControlPlane(nb, timeout=5), metrics)
        made.append(controller)
        controller.start()
        return controller

    yield make
    for controller in made:
        controller.stop()


def web_service(admin: Client, name: str = "web") -> str:
    """Service ``name`` over the app=web Pods (port 80 to their port ``web``); its
    ClusterIP."""
    made = admin.create(Service(metadata=ObjectMeta(name=name, namespace="default"),
                                spec=ServiceSpec(selector={"app": "web"}, ports=[
                                    KubeServicePort(name="http", port=80,
                                                    targetPort="web")])))
    assert made.spec is not None and made.spec.clusterIP
    return made.spec.clusterIP


def lb(nb: str, name: str = "web") -> dict[str, Any] | None:
    """The Load_Balancer row of Service default/``name`` (TCP), None if there is none."""
    return rows(nb, "Load_Balancer").get(f"Service_default/{name}_tcp")


def vips(nb: str, name: str = "web") -> dict[str, str] | None:
    row = lb(nb, name)
    return None if row is None else dict(row["vips"])


def two_nodes_with_pods(admin: Client) -> None:
    """Nodes n1 and n2 with their networks; Pods a (n1, port 8080) and b (n2, 9090)."""
    add_node(admin, "n1", "10.0.0.11")
    add_node(admin, "n2", "10.0.0.12")
    wait_ready(admin, "n1")
    wait_ready(admin, "n2")
    running_pod(admin, "a", "198.19.0.5", "n1", 8080)
    running_pod(admin, "b", "198.19.1.5", "n2", 9090)


def settled(controller: Controller) -> list[SyncResult]:
    """The Services reconciler's results, once no call came for half a second."""
    seen = -1
    while seen != len(controller.services.results):
        seen = len(controller.services.results)
        threading.Event().wait(0.5)
    return list(controller.services.results)


def test_a_service_follows_its_pods_and_goes_with_its_deletion(
        controllers: MakeController, cluster: Client, nb: str) -> None:
    controllers()
    two_nodes_with_pods(cluster)
    ip = web_service(cluster)
    both = {f"{ip}:80": "198.19.0.5:8080,198.19.1.5:9090"}
    eventually(lambda: vips(nb) == both)

    row = lb(nb)
    assert row is not None
    assert row["external_ids"]["ovn-underlay:service"] == "default/web"
    group = rows(nb, "Load_Balancer_Group")[GROUP]
    assert row["_uuid"] in group["load_balancer"]
    switches = rows(nb, "Logical_Switch")
    assert all(group["_uuid"] in switches[s]["load_balancer_group"]
               for s in ("node-n1", "node-n2"))
    assert "load_balancer_group" not in switches["vmnet"] or \
        group["_uuid"] not in switches["vmnet"]["load_balancer_group"]

    started = time.monotonic()
    cluster.patch(Pod.Status, "b", {"status": {"conditions": [
        {"type": "Ready", "status": "False"}]}}, namespace="default",
        patch_type=PatchType.MERGE)
    eventually(lambda: vips(nb) == {f"{ip}:80": "198.19.0.5:8080"})
    print(f"Pod not ready to its backend gone from the NB: "
          f"{(time.monotonic() - started) * 1000:.0f} ms (polling the NB every 20 ms)")

    cluster.delete(Service, "web", namespace="default")
    eventually(lambda: lb(nb) is None)
    assert "Service_default/kubernetes_tcp" in rows(nb, "Load_Balancer")


def test_a_node_added_later_gets_the_group_and_its_local_rows(
        controllers: MakeController, cluster: Client, nb: str) -> None:
    """internalTrafficPolicy Local: one row per node switch with that node's endpoints;
    a node added after the Services exist gets the group and its own row."""
    controllers()
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    running_pod(cluster, "a", "198.19.0.5", "n1", 8080)
    made = cluster.create(Service(
        metadata=ObjectMeta(name="local", namespace="default"),
        spec=ServiceSpec(selector={"app": "web"}, internalTrafficPolicy="Local",
                         ports=[KubeServicePort(name="http", port=80, targetPort="web")])))
    assert made.spec is not None
    vip = f"{made.spec.clusterIP}:80"
    eventually(lambda: "Service_default/local_tcp_node_n1" in rows(nb, "Load_Balancer"))
    add_node(cluster, "n2", "10.0.0.12")
    wait_ready(cluster, "n2")
    running_pod(cluster, "b", "198.19.1.5", "n2", 9090)

    def per_node() -> dict[str, dict[str, str]]:
        return {name: dict(row["vips"]) for name, row in rows(nb, "Load_Balancer").items()
                if name.startswith("Service_default/local_tcp")}
    eventually(lambda: per_node() == {
        "Service_default/local_tcp_node_n1": {vip: "198.19.0.5:8080"},
        "Service_default/local_tcp_node_n2": {vip: "198.19.1.5:9090"}})
    group = rows(nb, "Load_Balancer_Group")[GROUP]["_uuid"]
    switches = rows(nb, "Logical_Switch")
    for node in ("n1", "n2"):
        own = rows(nb, "Load_Balancer")[f"Service_default/local_tcp_node_{node}"]["_uuid"]
        assert group in switches[f"node-{node}"]["load_balancer_group"]
        assert own in switches[f"node-{node}"]["load_balancer"]


def test_a_restart_rewrites_nothing(controllers: MakeController, cluster: Client,
                                    nb: str) -> None:
    first = controllers()
    two_nodes_with_pods(cluster)
    ip = web_service(cluster)
    eventually(lambda: vips(nb) == {f"{ip}:80": "198.19.0.5:8080,198.19.1.5:9090"})
    settled(first)
    first.stop()
    before = without_nb_global(dump(nb))

    second = controllers()
    eventually(lambda: second.services.results != [], timeout=10)
    results = settled(second)

    assert results[0] == SyncResult()
    assert sum(r.transactions for r in results) == 0
    assert without_nb_global(dump(nb)) == before


def range_drops(nb: str) -> list[str]:
    """The matches of the router policies marked as the Service range's."""
    return sorted(p["match"] for p in dump(nb)["Logical_Router_Policy table"]
                  if p["external_ids"].get("ovn-underlay:role") == "service-range"
                  and p["action"] == "drop")


def test_each_term_makes_the_router_drop_the_configured_service_range(
        controllers: MakeController, nb: str) -> None:
    first = controllers(service_cidr="10.96.0.0/12")
    eventually(lambda: first.services.results != [], timeout=10)
    assert range_drops(nb) == ["ip4.dst == 10.96.0.0/12"]
    first.stop()
    before = without_nb_global(dump(nb))

    second = controllers(service_cidr="10.96.0.0/12")
    eventually(lambda: second.services.results != [], timeout=10)
    assert without_nb_global(dump(nb)) == before
    second.stop()

    third = controllers()
    eventually(lambda: third.services.results != [], timeout=10)
    assert range_drops(nb) == []


def test_a_burst_of_50_services_in_few_transactions(controllers: MakeController,
                                                    cluster: Client, nb: str) -> None:
    controller = controllers()
    two_nodes_with_pods(cluster)
    eventually(lambda: "Service_default/kubernetes_tcp" in rows(nb, "Load_Balancer"))
    settled(controller)
    start = len(controller.services.results)
    names = [f"s{i}" for i in range(50)]
    threads = [threading.Thread(target=web_service, args=(cluster, n)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def converged() -> bool:
        found = rows(nb, "Load_Balancer")
        return all(found.get(f"Service_default/{n}_tcp", {}).get("vips", {}) and
                   all(v == "198.19.0.5:8080,198.19.1.5:9090"
                       for v in found[f"Service_default/{n}_tcp"]["vips"].values())
                   for n in names)

    eventually(converged, timeout=15)
    burst = settled(controller)[start:]
    transactions = sum(r.transactions for r in burst)
    print(f"50 Services: {len(burst)} backend call(s), {transactions} NB transaction(s)")
    assert sum(r.created for r in burst) == 50
    assert transactions <= 15


def test_a_lost_watch_is_followed_by_a_complete_sync(
        controllers: MakeController, cluster: Client, server: KubeApiServer, relay: Relay,
        nb: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Changes made while the watches are cut and their history compacted (410 Gone on
    the next watch): the informers list again and one complete sync converges, in the
    same term."""
    controller = controllers(write_kubeconfig(tmp_path / "relayed", relay.url))
    two_nodes_with_pods(cluster)
    web_service(cluster, "goes")
    stays = web_service(cluster, "stays")
    eventually(lambda: lb(nb, "goes") is not None and lb(nb, "stays") is not None)
    epoch = controller.elector.epoch
    caplog.set_level(logging.INFO, "ovn_underlay.controller.services")
    lists = len(relay.lists("services"))
    relay.refusing = True
    relay.cut()
    cluster.delete(Service, "goes", namespace="default")
    new = web_service(cluster, "new")
    server.compact()
    relay.refusing = False

    eventually(lambda: lb(nb, "goes") is None and vips(nb, "new") == {
        f"{new}:80": "198.19.0.5:8080,198.19.1.5:9090"}, timeout=10)
    assert vips(nb, "stays") == {f"{stays}:80": "198.19.0.5:8080,198.19.1.5:9090"}
    assert controller.elector.epoch == epoch
    assert len(relay.lists("services")) == lists + 1
    assert any("complete sync of" in r.getMessage() for r in caplog.records)


def test_a_problem_of_a_service_is_said_once(controllers: MakeController,
                                             cluster: Client, nb: str) -> None:
    """A Service without selector whose user's slice is of addressType FQDN (skipped):
    one Warning Event, however often the Service syncs."""
    controller = controllers()
    two_nodes_with_pods(cluster)
    cluster.create(Service(metadata=ObjectMeta(name="ext", namespace="default"),
                           spec=ServiceSpec(ports=[KubeServicePort(name="db", port=5432)])))
    cluster.create(EndpointSlice(
        metadata=ObjectMeta(name="ext-1", namespace="default",
                            labels={"kubernetes.io/service-name": "ext"}),
        addressType="FQDN", ports=[EndpointPort(name="db", port=5432)],
        endpoints=[KubeEndpoint(addresses=["db.example.com"])]))
    eventually(lambda: lb(nb, "ext") is not None)
    settled(controller)
    for touch in ("1", "2"):
        cluster.patch(Service, "ext", {"metadata": {"labels": {"touched": touch}}},
                      namespace="default", patch_type=PatchType.MERGE)
        settled(controller)

    warnings = [e for e in cluster.list(Event, namespace="default")
                if e.involvedObject.kind == "Service" and e.involvedObject.name == "ext"]
    assert [(e.type, e.reason) for e in warnings] == [("Warning", "ServicePartlyProgrammed")]
    assert "FQDN" in str(warnings[0].message)
    assert lb(nb, "ext") is not None


def test_on_neutron_services_are_said_once_and_not_programmed(
        kubeconfig: str, nb: str, caplog: pytest.LogCaptureFixture) -> None:
    """A Neutron connection gives no backend; terms without one say so once."""
    creds = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                        "OS_NETWORK_ENDPOINT_OVERRIDE": "http://127.0.0.1:9"},
                                       "no Neutron")
    neutron = NeutronControlPlane(creds, child_ports=TRUNK, timeout=1)
    ovn = OvnNbControlPlane(nb, timeout=5)
    kube = KubeClient(load_config(kubeconfig))
    try:
        assert services_backend(neutron) is None
        assert isinstance(services_backend(ovn), OvnLoadBalancers)
        reconciler = ServicesReconciler(lambda: load_config(kubeconfig), kube,
                                        lambda: True, dict)
        for epoch in (1, 2):
            reconciler.begin_term(epoch, None)
            reconciler.end_term()
    finally:
        kube.close()
        ovn.close()
        neutron.close()
    said = [r for r in caplog.records if r.getMessage() == NEUTRON_NOTICE]
    assert [r.levelname for r in said] == ["WARNING"]
    assert "Octavia" in NEUTRON_NOTICE


def test_fenced_by_a_later_leader_it_writes_no_services(
        controllers: MakeController, cluster: Client, nb: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Another connection fences the NB with a later epoch: the change that follows is
    not written, and the reconciler says it stopped."""
    metrics = ControllerMetrics()
    controller = controllers(metrics=metrics)
    two_nodes_with_pods(cluster)
    ip = web_service(cluster)
    both = {f"{ip}:80": "198.19.0.5:8080,198.19.1.5:9090"}
    eventually(lambda: vips(nb) == both)
    epoch = controller.elector.epoch
    assert epoch is not None
    later = OvnNbControlPlane(nb, timeout=5)
    try:
        later.fence(epoch + 100)
    finally:
        later.close()
    cluster.patch(Pod.Status, "b", {"status": {"conditions": [
        {"type": "Ready", "status": "False"}]}}, namespace="default",
        patch_type=PatchType.MERGE)
    eventually(lambda: any("writing no more Services" in r.getMessage()
                           for r in caplog.records))
    time.sleep(1.0)
    assert vips(nb) == both
    assert sample(metrics, "service_sync_errors_total", reason="fenced") == 1
    assert sample(metrics, "service_backends_programmed") == 2 + 1  # default/kubernetes


def sample(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
    """The value of ``ovn_underlay_<name>`` in ``metrics``' registry."""
    return metrics.registry.get_sample_value(f"ovn_underlay_{name}", labels)


def test_metrics_follow_what_is_programmed(controllers: MakeController, cluster: Client,
                                           nb: str) -> None:
    """Services and backends programmed, syncs by kind, their transactions, the latency
    of each Service carried, and the leading gauge.  The API server's default/kubernetes
    Service (one endpoint) is programmed as any other."""
    metrics = ControllerMetrics()
    controllers(metrics=metrics)
    two_nodes_with_pods(cluster)
    eventually(lambda: sample(metrics, "controller_leading") == 1)
    eventually(lambda: sample(metrics, "services_programmed") == 1)
    assert sample(metrics, "service_backends_programmed") == 1
    ip = web_service(cluster)
    eventually(lambda: vips(nb) == {f"{ip}:80": "198.19.0.5:8080,198.19.1.5:9090"})
    eventually(lambda: sample(metrics, "service_backends_programmed") == 3)
    assert sample(metrics, "services_programmed") == 2
    assert (sample(metrics, "service_syncs_total", kind="complete") or 0) >= 1
    assert (sample(metrics, "services_nb_transactions_total") or 0) >= 1
    carried = sample(metrics, "service_sync_latency_seconds_count") or 0
    assert carried >= 1
    assert (sample(metrics, "service_sync_latency_seconds_bucket", le="1.0") or 0) >= 1
    cluster.patch(Pod.Status, "b", {"status": {"conditions": [
        {"type": "Ready", "status": "False"}]}}, namespace="default",
        patch_type=PatchType.MERGE)
    eventually(lambda: sample(metrics, "service_backends_programmed") == 2)
    assert (sample(metrics, "service_sync_latency_seconds_count") or 0) > carried
    assert (sample(metrics, "service_syncs_total", kind="incremental") or 0) >= 1
    cluster.delete(Service, "web", namespace="default")
    eventually(lambda: sample(metrics, "services_programmed") == 1)
    assert sample(metrics, "service_backends_programmed") == 1
    assert sample(metrics, "service_sync_errors_total", reason="error") == 0
