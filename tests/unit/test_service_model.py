"""controller.service_model: a Service and its EndpointSlices as a ServiceState, one test
per rule, each naming the document (or kube-proxy behaviour) it checks."""

from __future__ import annotations

from typing import Any

from ovn_underlay.control.services import Endpoint, ServicePort, ServiceState
from ovn_underlay.controller.service_model import (
    DEFAULT_AFFINITY_TIMEOUT,
    service_state,
    slices_by_service,
)

Obj = dict[str, Any]
WEB = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}


def service(name: str = "web", namespace: str = "ns", ports: list[Obj] | None = None,
            **spec: Any) -> Obj:
    """A Service as the API returns it (ClusterIP 10.96.0.10 unless ``spec`` says)."""
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("clusterIP", "10.96.0.10")
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [WEB] if ports is None else ports, **spec}}


def endpoint(ip: str, node: str = "", **conditions: bool) -> Obj:
    """An endpoint with ``conditions`` (none given: the field is absent)."""
    item: Obj = {"addresses": [ip]}
    if conditions:
        item["conditions"] = conditions
    if node:
        item["nodeName"] = node
    return item


def slice_(endpoints: list[Obj], ports: list[Obj] | None = None, name: str = "web-a",
           service_name: str = "web", namespace: str = "ns", address_type: str = "IPv4",
           managed_by: str = "endpointslice-controller.k8s.io") -> Obj:
    """An EndpointSlice of ``service_name`` (ports: ``http`` 8080/TCP unless given)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name,
                                    "endpointslice.kubernetes.io/managed-by": managed_by}},
            "addressType": address_type, "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            if ports is None else ports}


def state(svc: Obj, *slices: Obj) -> ServiceState:
    result = service_state(svc, slices)
    assert result is not None
    return result


def ips(result: ServiceState, index: int = 0) -> list[str]:
    return [e.ip for e in result.ports[index].endpoints]


def test_clusterip_service_gives_its_ip_ports_and_endpoints() -> None:
    """service/: a ClusterIP Service's virtual IP and port, its endpoints' address and
    port from the slice; key namespace/name."""
    result = state(service(), slice_([endpoint("10.1.0.5", node="n1")]))
    assert result == ServiceState("ns", "web", ("10.96.0.10",), (
        ServicePort("tcp", 80, "http", (Endpoint("10.1.0.5", 8080, "n1"),)),))
    assert result.key == "ns/web"
    assert result.problems == ()


def test_nodeport_and_loadbalancer_services_give_their_clusterip() -> None:
    """service/#type-nodeport, #loadbalancer: both are allocated a ClusterIP that
    serves as a ClusterIP Service's does."""
    for kind in ("NodePort", "LoadBalancer"):
        result = state(service(type=kind), slice_([endpoint("10.1.0.5")]))
        assert result.cluster_ips == ("10.96.0.10",)
        assert ips(result) == ["10.1.0.5"]


def test_externalname_headless_and_unallocated_services_are_not_ours() -> None:
    """service/#externalname (a DNS name, no proxying), #headless-services
    (clusterIP None: "kube-proxy does not handle these Services"), and a Service without
    its ClusterIP yet."""
    externalname = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "db", "namespace": "ns"},
                    "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert service_state(externalname, []) is None
    assert service_state(service(clusterIP="None", clusterIPs=["None"]),
                         [slice_([endpoint("10.1.0.5")])]) is None
    unallocated = service()
    del unallocated["spec"]["clusterIP"], unallocated["spec"]["clusterIPs"]
    assert service_state(unallocated, []) is None


def test_ipv6_clusterip_of_a_dual_stack_service_is_left_out_and_said() -> None:
    """service-v1 clusterIPs: one address per family; IPv4 only here, the IPv6 address is
    named in problems; the IPv6 slice is not read."""
    result = state(service(clusterIPs=["10.96.0.10", "fd00:96::10"],
                           ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack"),
                   slice_([endpoint("10.1.0.5")]),
                   slice_([endpoint("fd00:1::5")], name="web-b", address_type="IPv6"))
    assert result.cluster_ips == ("10.96.0.10",)
    assert ips(result) == ["10.1.0.5"]
    assert result.problems == ("ClusterIP fd00:96::10 is IPv6: not served (IPv4 only)",)


def test_ipv6_primary_dual_stack_service_keeps_its_ipv4_clusterip() -> None:
    """service-v1 clusterIPs: the IPv6 family may come first (ipFamilies [IPv6, IPv4]);
    the IPv4 address of clusterIPs is kept all the same."""
    result = state(service(clusterIP="fd00:96::10", clusterIPs=["fd00:96::10", "10.96.0.10"],
                           ipFamilies=["IPv6", "IPv4"]), slice_([endpoint("10.1.0.5")]))
    assert result.cluster_ips == ("10.96.0.10",)
    assert result.problems == ("ClusterIP fd00:96::10 is IPv6: not served (IPv4 only)",)


def test_ipv6_only_service_gives_no_clusterip_and_says_why() -> None:
    """service-v1 ipFamilies [IPv6]: nothing servable; the state says so in problems."""
    result = state(service(clusterIP="fd00:96::10", ipFamilies=["IPv6"]),
                   slice_([endpoint("fd00:1::5")], address_type="IPv6"))
    assert result.cluster_ips == ()
    assert result.ports[0].endpoints == ()
    assert result.problems == ("ClusterIP fd00:96::10 is IPv6: not served (IPv4 only)",)


def test_tcp_udp_and_sctp_ports_several_per_service() -> None:
    """service/#multi-port-services and #protocol-support: TCP (the default), UDP and
    SCTP, each port named; the Service's order is kept."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "targetPort": 53},
             {"name": "sig", "port": 3868, "protocol": "SCTP", "targetPort": 3868}]
    slice_ports = [{"name": "dns", "port": 5353, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
                   {"name": "sig", "port": 3868, "protocol": "SCTP"}]
    result = state(service(ports=ports), slice_([endpoint("10.1.0.5")], slice_ports))
    assert [(p.protocol, p.port, p.name, [e.port for e in p.endpoints])
            for p in result.ports] == [("udp", 53, "dns", [5353]),
                                       ("tcp", 53, "dns-tcp", [5353]),
                                       ("sctp", 3868, "sig", [3868])]


def test_slice_port_matched_by_name_and_protocol() -> None:
    """kube-proxy (endpointslicecache.go): a slice port serves the Service port of the same
    name and protocol; a same-named port of another protocol does not."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}]
    result = state(service(ports=ports),
                   slice_([endpoint("10.1.0.5")], [{"name": "dns", "port": 53,
                                                    "protocol": "TCP"}]))
    assert result.ports[0].endpoints == ()


def test_named_target_port_resolved_per_endpoint_from_the_slices() -> None:
    """endpoint-slices/: slices group endpoints by their resolved ports, so one name may
    be a different number on different backends."""
    result = state(service(),
                   slice_([endpoint("10.1.0.5")], name="web-a"),
                   slice_([endpoint("10.1.0.6")], name="web-b",
                          ports=[{"name": "http", "port": 9090, "protocol": "TCP"}]))
    assert result.ports[0].endpoints == (Endpoint("10.1.0.5", 8080),
                                         Endpoint("10.1.0.6", 9090))


def test_numeric_target_port_takes_the_slice_port_number() -> None:
    """kube-proxy: the EndpointSlice port's number is used, whatever targetPort says."""
    result = state(service(ports=[{"name": "http", "port": 80, "targetPort": 8000}]),
                   slice_([endpoint("10.1.0.5")]))
    assert result.ports[0].endpoints == (Endpoint("10.1.0.5", 8080),)


def test_unnamed_single_port_matches_the_unnamed_slice_port() -> None:
    """service/#defining-a-service: a single port may be unnamed; its slice port has no
    name either."""
    result = state(service(ports=[{"port": 80, "targetPort": 80}]),
                   slice_([endpoint("10.1.0.5")], [{"port": 80, "protocol": "TCP"}]))
    assert result.ports[0] == ServicePort("tcp", 80, "", (Endpoint("10.1.0.5", 80),))


def test_slices_merged_and_duplicates_made_one() -> None:
    """endpoint-slices/#duplicate-endpoints: an endpoint may be in more than one slice
    (during updates); consumers merge them; the ready copy counts."""
    result = state(service(),
                   slice_([endpoint("10.1.0.5"), endpoint("10.1.0.6", ready=False)],
                          name="web-a"),
                   slice_([endpoint("10.1.0.6"), endpoint("10.1.0.7")], name="web-b"))
    assert ips(result) == ["10.1.0.5", "10.1.0.6", "10.1.0.7"]


def test_fqdn_slices_skipped_and_said() -> None:
    """endpoint-slices/#address-types: FQDN is deprecated and not proxied."""
    result = state(service(),
                   slice_([endpoint("db.example.com")], name="web-f", address_type="FQDN"))
    assert result.ports[0].endpoints == ()
    assert result.problems == ("EndpointSlice web-f has addressType FQDN: skipped",)


def test_ready_absent_means_ready() -> None:
    """endpoint-slice-v1 conditions.ready: "a nil value should be interpreted as true"."""
    result = state(service(), slice_([endpoint("10.1.0.5"), endpoint("10.1.0.6", ready=False),
                                      {"addresses": ["10.1.0.7"], "conditions": {}}]))
    assert ips(result) == ["10.1.0.5", "10.1.0.7"]


def test_only_ready_endpoints_while_any_is_ready() -> None:
    """virtual-ips/#traffic-to-terminating-endpoints: terminating endpoints get traffic
    only when no ready one is there."""
    result = state(service(), slice_([
        endpoint("10.1.0.5", ready=True, serving=True, terminating=False),
        endpoint("10.1.0.6", ready=False, serving=True, terminating=True),
        endpoint("10.1.0.7", ready=False, serving=False, terminating=False)]))
    assert ips(result) == ["10.1.0.5"]


def test_serving_terminating_fallback_when_none_is_ready() -> None:
    """virtual-ips/#traffic-to-terminating-endpoints: none ready: the serving and
    terminating ones; neither serving nor ready ones never."""
    result = state(service(), slice_([
        endpoint("10.1.0.6", ready=False, serving=True, terminating=True),
        endpoint("10.1.0.7", ready=False, serving=False, terminating=True),
        endpoint("10.1.0.8", ready=False, serving=True, terminating=False)]))
    assert ips(result) == ["10.1.0.6"]


def test_fallback_decided_per_port() -> None:
    """kube-proxy categorizes the endpoints of each Service port on its own: one port's
    ready endpoints do not stop another port's fallback."""
    ports = [WEB, {"name": "admin", "port": 81, "targetPort": 81}]
    result = state(service(ports=ports),
                   slice_([endpoint("10.1.0.5")], name="web-a"),
                   slice_([endpoint("10.1.0.6", ready=False, serving=True, terminating=True)],
                          name="web-b", ports=[{"name": "admin", "port": 81,
                                                "protocol": "TCP"}]))
    assert (ips(result, 0), ips(result, 1)) == (["10.1.0.5"], ["10.1.0.6"])


def test_client_ip_affinity_with_its_timeout_and_default() -> None:
    """service/#session-stickiness and service-v1 sessionAffinityConfig: ClientIP,
    timeoutSeconds defaulting to 10800; None: no affinity."""
    config = {"clientIP": {"timeoutSeconds": 300}}
    assert state(service(sessionAffinity="ClientIP",
                         sessionAffinityConfig=config)).affinity_timeout == 300
    assert state(service(sessionAffinity="ClientIP")).affinity_timeout == 10800
    assert DEFAULT_AFFINITY_TIMEOUT == 10800
    assert state(service(sessionAffinity="None")).affinity_timeout == 0


def test_internal_traffic_policy_local_keeps_nodes_and_falls_back_per_node() -> None:
    """service-traffic-policy/: Local means each node's own endpoints; kube-proxy
    (topology.go) falls back to a node's serving and terminating endpoints when that node
    has no ready one, whatever other nodes have."""
    result = state(service(internalTrafficPolicy="Local"), slice_([
        endpoint("10.1.0.5", node="n1"),
        endpoint("10.1.0.6", node="n1", ready=False, serving=True, terminating=True),
        endpoint("10.1.0.7", node="n2", ready=False, serving=True, terminating=True)]))
    assert result.local_only
    assert result.ports[0].endpoints == (Endpoint("10.1.0.5", 8080, "n1"),
                                         Endpoint("10.1.0.7", 8080, "n2"))
    assert not state(service(internalTrafficPolicy="Cluster")).local_only


def test_cluster_policy_falls_back_over_all_nodes() -> None:
    """virtual-ips/: with the Cluster policy a ready endpoint anywhere stops the
    fallback everywhere."""
    result = state(service(), slice_([
        endpoint("10.1.0.5", node="n1"),
        endpoint("10.1.0.7", node="n2", ready=False, serving=True, terminating=True)]))
    assert ips(result) == ["10.1.0.5"]


def test_service_without_selector_uses_user_made_slices() -> None:
    """service/#services-without-selectors: slices a user makes, labelled with the
    Service's name and managed by someone else, serve the same."""
    svc = service()
    del svc["spec"]["type"]
    result = state(svc, slice_([endpoint("192.0.2.42")], name="web-1",
                               managed_by="staff"))
    assert ips(result) == ["192.0.2.42"]


def test_service_without_endpoints_keeps_its_ports_empty() -> None:
    """A Service with no endpoint at all (no slice, or an empty one): its ports are there
    with no endpoints, for the backend to refuse."""
    assert state(service()).ports == (ServicePort("tcp", 80, "http"),)
    assert state(service(), slice_([])).ports == (ServicePort("tcp", 80, "http"),)


def test_slices_of_other_services_and_namespaces_are_not_read() -> None:
    """endpoint-slices/#ownership: the kubernetes.io/service-name label, in the
    Service's namespace, says whose a slice is."""
    result = state(service(), slice_([endpoint("10.1.0.8")], service_name="other"),
                   slice_([endpoint("10.1.0.9")], namespace="elsewhere"))
    assert result.ports[0].endpoints == ()


def test_first_address_of_an_endpoint_is_used() -> None:
    """endpoint-slice-v1 addresses: "consumers ... may choose to only use the first
    element"; an endpoint without address is nothing."""
    result = state(service(), slice_([{"addresses": ["10.1.0.5", "10.1.0.55"]},
                                      {"addresses": []}]))
    assert ips(result) == ["10.1.0.5"]


def test_slices_grouped_by_namespace_and_service_name() -> None:
    """slices_by_service: namespace/service-name, slices without the label left out."""
    a = slice_([], name="web-a")
    b = slice_([], name="web-b")
    other = slice_([], name="db-a", service_name="db", namespace="data")
    stray = slice_([], name="stray")
    stray["metadata"]["labels"] = {}
    assert slices_by_service([a, other, b, stray]) == {"ns/web": [a, b], "data/db": [other]}
