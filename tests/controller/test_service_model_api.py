"""service_model on what an API server produces: Services and Pods made through the test
API server, its stand-in EndpointSlice controller's slices read back with lightkube and
handed over as ``.to_dict()``, as an informer would."""

from __future__ import annotations

from typing import Any

from lightkube import Client
from lightkube.models.core_v1 import (
    Container,
    ContainerPort,
    PodSpec,
    ServiceSpec,
)
from lightkube.models.core_v1 import (
    ServicePort as KubeServicePort,
)
from lightkube.models.discovery_v1 import Endpoint as KubeEndpoint
from lightkube.models.discovery_v1 import EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from ovn_underlay.control.services import Endpoint, ServicePort
from ovn_underlay.controller.service_model import service_state, slices_by_service
from tests.kube.support import eventually


def running_pod(admin: Client, name: str, ip: str, node: str, web_port: int,
                ready: bool = True) -> None:
    """A Pod of app=web on ``node`` whose container port ``web`` is ``web_port``, then
    running at ``ip`` with its Ready condition, as a kubelet reports it."""
    admin.create(Pod(metadata=ObjectMeta(name=name, namespace="default",
                                         labels={"app": "web"}),
                     spec=PodSpec(nodeName=node, containers=[Container(
                         name="c", image="registry.example/app:1",
                         ports=[ContainerPort(containerPort=web_port, name="web")])])))
    admin.patch(Pod.Status, name, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}},
        namespace="default", patch_type=PatchType.MERGE)


def slices(admin: Client) -> dict[str, list[dict[str, Any]]]:
    """Every EndpointSlice of the cluster, as dicts, by Service."""
    return slices_by_service(s.to_dict() for s in admin.list(EndpointSlice, namespace="*"))


def test_selected_service_from_the_api_server(admin: Client) -> None:
    """A two-port Service (a named TCP targetPort resolved to different numbers on two
    Pods, a numeric UDP one), two ready Pods on two nodes and a not-ready one: the
    ready Pods, each with its own number, its node, the Service's ClusterIP."""
    created = admin.create(Service(
        metadata=ObjectMeta(name="web", namespace="default"),
        spec=ServiceSpec(selector={"app": "web"}, ports=[
            KubeServicePort(name="http", port=80, targetPort="web"),
            KubeServicePort(name="dns", port=53, protocol="UDP", targetPort=5353)])))
    assert created.spec is not None and created.spec.clusterIP
    running_pod(admin, "a", "10.1.0.5", "node1", 8080)
    running_pod(admin, "b", "10.1.0.6", "node2", 9090)
    running_pod(admin, "c", "10.1.0.7", "node1", 8080, ready=False)

    def ready_pods() -> bool:
        found = {e.get("addresses", [""])[0]
                 for s in slices(admin).get("default/web", []) for e in s["endpoints"]}
        return found == {"10.1.0.5", "10.1.0.6", "10.1.0.7"}

    eventually(ready_pods)
    service = admin.get(Service, "web", namespace="default").to_dict()
    by_service = slices(admin)
    assert len(by_service["default/web"]) == 2
    result = service_state(service, by_service["default/web"])
    assert result is not None
    assert result.cluster_ips == (created.spec.clusterIP,)
    assert result.ports == (
        ServicePort("tcp", 80, "http", (Endpoint("10.1.0.5", 8080, "node1"),
                                        Endpoint("10.1.0.6", 9090, "node2"))),
        ServicePort("udp", 53, "dns", (Endpoint("10.1.0.5", 5353, "node1"),
                                       Endpoint("10.1.0.6", 5353, "node2"))))
    assert result.problems == ()


def test_selectorless_kubernetes_and_headless_services_from_the_api_server(
        admin: Client) -> None:
    """A Service without selector and the slice its user makes; the seeded
    default/kubernetes Service (the API server's own address); a headless Service: not
    ours."""
    admin.create(Service(metadata=ObjectMeta(name="ext", namespace="default"),
                         spec=ServiceSpec(ports=[KubeServicePort(name="db", port=5432)])))
    admin.create(EndpointSlice(
        metadata=ObjectMeta(name="ext-1", namespace="default",
                            labels={"kubernetes.io/service-name": "ext",
                                    "endpointslice.kubernetes.io/managed-by": "staff"}),
        addressType="IPv4", ports=[EndpointPort(name="db", port=15432)],
        endpoints=[KubeEndpoint(addresses=["192.0.2.42"])]))
    admin.create(Service(metadata=ObjectMeta(name="headless", namespace="default"),
                         spec=ServiceSpec(clusterIP="None", selector={"app": "web"},
                                          ports=[KubeServicePort(port=80)])))
    by_service = slices(admin)
    ext = service_state(admin.get(Service, "ext", namespace="default").to_dict(),
                        by_service["default/ext"])
    assert ext is not None
    assert ext.ports == (ServicePort("tcp", 5432, "db", (Endpoint("192.0.2.42", 15432),)),)
    kubernetes = service_state(
        admin.get(Service, "kubernetes", namespace="default").to_dict(),
        by_service["default/kubernetes"])
    assert kubernetes is not None
    assert kubernetes.ports[0].name == "https" and len(kubernetes.ports[0].endpoints) == 1
    assert service_state(admin.get(Service, "headless", namespace="default").to_dict(),
                         by_service.get("default/headless", [])) is None



def conditions(admin: Client) -> dict[str, dict[str, bool]]:
    """The conditions of default/web's endpoints by address."""
    return {e["addresses"][0]: e["conditions"]
            for s in slices(admin).get("default/web", []) for e in s["endpoints"]}


def test_terminating_pod_served_only_while_none_is_ready(admin: Client) -> None:
    """A bound Pod deleted with a grace period stays, terminating and still serving: the
    only endpoint, it is used (the fallback); once another Pod is ready, that one only."""
    admin.create(Service(metadata=ObjectMeta(name="web", namespace="default"),
                         spec=ServiceSpec(selector={"app": "web"}, ports=[
                             KubeServicePort(name="http", port=80, targetPort="web")])))
    running_pod(admin, "a", "10.1.0.5", "node1", 8080)
    admin.delete(Pod, "a", namespace="default", grace_period=30)
    eventually(lambda: conditions(admin).get("10.1.0.5", {}).get("terminating"))
    service = admin.get(Service, "web", namespace="default").to_dict()
    assert conditions(admin) == {"10.1.0.5": {"ready": False, "serving": True,
                                              "terminating": True}}
    alone = service_state(service, slices(admin)["default/web"])
    assert alone is not None
    assert alone.ports[0].endpoints == (Endpoint("10.1.0.5", 8080, "node1"),)
    running_pod(admin, "b", "10.1.0.6", "node2", 8080)
    eventually(lambda: conditions(admin).get("10.1.0.6", {}).get("ready"))
    both = service_state(service, slices(admin)["default/web"])
    assert both is not None
    assert both.ports[0].endpoints == (Endpoint("10.1.0.6", 8080, "node2"),)
