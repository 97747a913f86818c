"""Item 9: server-side defaults and allocations that matter to the project."""

from __future__ import annotations

import ipaddress

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, pod

SVC = "/api/v1/namespaces/default/services"


def service(name: str, **spec: object) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}


def test_service_defaults_and_cluster_ip_allocation() -> None:
    """type ClusterIP, clusterIP(s) from --service-cluster-ip-range, never a live one
    (https://kubernetes.io/docs/concepts/services-networking/cluster-ip-allocation/),
    ipFamilies/ipFamilyPolicy, ports' protocol TCP and targetPort = port,
    sessionAffinity None, internalTrafficPolicy Cluster; headless kept as None."""
    with KubeApiServer(service_cluster_ip_range="10.99.0.0/29") as small:
        api = Http(small)
        kubernetes = api.get(f"{SVC}/kubernetes")
        assert kubernetes["spec"]["clusterIP"] == "10.99.0.1"
        assert kubernetes["spec"]["ports"][0]["targetPort"] == small.port
        made = [api.create(SVC, service(f"s{i}")) for i in range(4)]
        ips = [m["spec"]["clusterIP"] for m in made]
        assert len(set(ips)) == 4 and "10.99.0.1" not in ips
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.99.0.0/29")
                   for ip in ips)
        spec = made[0]["spec"]
        assert spec["type"] == "ClusterIP" and spec["clusterIPs"] == [spec["clusterIP"]]
        assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
        assert spec["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
        assert (spec["sessionAffinity"], spec["internalTrafficPolicy"]) == ("None", "Cluster")
        status, body = api.request("POST", SVC, service("full"))
        assert status == 201, body  # the sixth and last usable address
        status, body = api.request("POST", SVC, service("over"))
        assert status == 500 and "range is full" in body["message"]
        api.request("DELETE", f"{SVC}/s0")
        again = api.create(SVC, service("reuse"))
        assert again["spec"]["clusterIP"] == ips[0]  # freed only once the Service is gone
        headless = api.create(SVC, service("h", clusterIP="None"))
        assert headless["spec"]["clusterIPs"] == ["None"]


def test_requested_cluster_ip_and_immutability(api: Http) -> None:
    """A requested clusterIP is honoured if free and in range, else 422; it cannot change
    on update (422), and an update that omits it keeps it."""
    made = api.create(SVC, service("fixed", clusterIP="198.18.130.7"))
    assert made["spec"]["clusterIP"] == "198.18.130.7"
    status, body = api.request("POST", SVC, service("dup", clusterIP="198.18.130.7"))
    assert status == 422 and "already allocated" in body["message"]
    status, body = api.request("POST", SVC, service("out", clusterIP="10.0.0.1"))
    assert status == 422 and "not in the valid range" in body["message"]
    made["spec"]["clusterIP"] = "198.18.130.8"
    made["spec"]["clusterIPs"] = ["198.18.130.8"]
    status, body = api.request("PUT", f"{SVC}/fixed", made)
    assert status == 422 and "may not change once set" in body["message"]
    del made["spec"]["clusterIP"], made["spec"]["clusterIPs"]
    status, body = api.request("PUT", f"{SVC}/fixed", made)
    assert status == 200 and body["spec"]["clusterIP"] == "198.18.130.7"


def test_node_ports(api: Http) -> None:
    """NodePort and LoadBalancer Services get nodePorts from --service-node-port-range,
    each unique; a taken one is 422; externalTrafficPolicy defaults to Cluster."""
    first = api.create(SVC, service("np1", type="NodePort"))
    port = first["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767 and first["spec"]["externalTrafficPolicy"] == "Cluster"
    lb = api.create(SVC, service("lb1", type="LoadBalancer"))
    assert lb["spec"]["ports"][0]["nodePort"] not in (None, port)
    status, body = api.request("POST", SVC, {"metadata": {"name": "np2"}, "spec": {
        "type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}})
    assert status == 422 and "already allocated" in body["message"]
    status, body = api.request("POST", SVC, {"metadata": {"name": "np3"}, "spec": {
        "ports": [{"port": 80, "nodePort": 30001}]}})
    assert status == 422  # nodePort on a ClusterIP Service


def test_pod_defaults(api: Http) -> None:
    """Pod status.phase Pending (whatever was sent), restartPolicy Always,
    terminationGracePeriodSeconds 30, dnsPolicy ClusterFirst, container port protocol TCP
    (pkg/apis/core/v1/defaults.go, pod strategy PrepareForCreate)."""
    made = api.create("/api/v1/namespaces/default/pods", pod("d", containers=[
        {"name": "c", "image": "img", "ports": [{"containerPort": 80}]}]) | {
        "status": {"phase": "Running"}})
    assert made["status"]["phase"] == "Pending"
    spec = made["spec"]
    assert (spec["restartPolicy"], spec["terminationGracePeriodSeconds"],
            spec["dnsPolicy"]) == ("Always", 30, "ClusterFirst")
    assert spec["containers"][0]["ports"][0]["protocol"] == "TCP"
    status, body = api.request("POST", "/api/v1/namespaces/default/pods",
                               {"metadata": {"name": "e"}, "spec": {"containers": []}})
    assert status == 422 and "spec.containers: Required value" in body["message"]


def test_initial_objects(api: Http) -> None:
    """Namespaces default, kube-system, kube-public, kube-node-lease; the default/kubernetes
    Service and its EndpointSlice (kubernetes.io/service-name: kubernetes, the advertise
    address, the server's port)."""
    names = {n["metadata"]["name"] for n in api.get("/api/v1/namespaces")["items"]}
    assert names == {"default", "kube-system", "kube-public", "kube-node-lease"}
    eps = api.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes")
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert eps["endpoints"][0]["addresses"] == ["127.0.0.1"]
    assert eps["ports"][0]["port"] == api.server.port
