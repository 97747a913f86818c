"""containerd as kubelet's runtime: Pods from the API server -> CRI -> libcni -> the plugin.

A fresh lab with 2 VMs, each a node (node-init + lswitch-setup through the
CLI) with its own containerd (:mod:`ovn_underlay.lab.containerd`) and a
kubelet stand-in (:mod:`ovn_underlay.lab.kubelet`) running in this process:
it talks to the test API server (in-process, 127.0.0.1) and to containerd's
unix socket.  Pods created through the API get sandboxes, pool ports, status
IPs and reach each other across the VMs; deleting them frees every port.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.lab.cluster import Node
from ovn_underlay.lab.containerd import Containerd
from ovn_underlay.lab.topology import Lab
from tests.conftest import skip_unless_containerd_possible, skip_unless_lab_possible
from tests.waiting import eventually

PORT = 8080
WAIT = 60.0


@dataclass
class KubeNode:
    node: Node
    containerd: Containerd
    kubelet: Any


@dataclass
class Cluster:
    api_url: str
    nodes: list[KubeNode]

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as reply:
            return json.loads(reply.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    return eventually(check, timeout, what, 0.2)


@pytest.fixture(scope="module")
def cluster(lab_rundir: Path) -> Iterator[Cluster]:
    """A fresh 2-VM lab, the API server, containerd + a kubelet stand-in per VM."""
    skip_unless_lab_possible()
    skip_unless_containerd_possible()
    from ovn_underlay.lab.kubeapi import KubeApiServer
    from ovn_underlay.lab.kubelet import KubeletStandIn

    the_lab = Lab(f"cd{os.getpid() % 10000}", lab_rundir)
    state = the_lab.up(2)
    server = KubeApiServer().start()
    nodes: list[KubeNode] = []
    try:
        for vm in state.vms:
            node = Node(state, vm)
            node.init()
            node.setup_switch(pool_size=4)
            engine = Containerd(node)
            nodes.append(KubeNode(node, engine, None))
            sock = engine.start()
            nodes[-1].kubelet = KubeletStandIn(server.url, vm.name, str(sock),
                                               node_ip=vm.ip).start()
        yield Cluster(server.url, nodes)
    finally:
        try:
            for kube_node in nodes:
                try:
                    if kube_node.kubelet is not None:
                        kube_node.kubelet.stop()
                finally:
                    kube_node.containerd.close()
        finally:
            server.stop()
            the_lab.down()


def pod_manifest(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [
                {"name": "web", "image": "oul-busybox:lab",
                 "ports": [{"containerPort": PORT, "protocol": "TCP"}]}]}}


def http_get(netns_path: str, ip: str) -> Any:
    """The HTTP answer of the pod at ``ip`` to a GET from ``netns_path``, or None."""
    from ovn_underlay.lab.kubelet import tcp_probe
    reply = tcp_probe(netns_path, ip, PORT, http=True)
    return reply if reply.returncode == 0 and "ovn-underlay lab pod" in reply.stdout else None


def cni_calls(node: Node, container_id: str) -> list[str]:
    """The CNI commands the plugin logged for ``container_id``, in order."""
    log = (Path(node.vm.rundir) / "cni.log").read_text().splitlines()
    return [line.split("CNI ", 1)[1].split()[0] for line in log
            if f" container={container_id} " in line]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def test_pods_through_containerd_get_ports_reach_each_other_and_give_them_back(
        cluster: Cluster) -> None:
    before = {k.node.vm.name: k.node.pool()["stats"] for k in cluster.nodes}
    names = {f"web-{k.node.index}-{i}": k for k in cluster.nodes for i in range(2)}
    for name, kube_node in names.items():
        cluster.request("POST", "/api/v1/namespaces/default/pods",
                        pod_manifest(name, kube_node.node.vm.name))

    def all_ready() -> dict[str, dict[str, Any]] | None:
        pods = {p["metadata"]["name"]: p for p in cluster.request(
            "GET", "/api/v1/namespaces/default/pods")["items"]}
        errors = [e for k in cluster.nodes for e in k.kubelet.errors]
        assert not errors, errors
        return pods if all(ready(pods.get(n, {})) for n in names) else None

    pods = wait_for("4 Ready pods", all_ready)
    ips = {name: pod["status"]["podIP"] for name, pod in pods.items()}
    assert len(set(ips.values())) == 4
    sandboxes = {}
    for name, kube_node in names.items():
        uid = pods[name]["metadata"]["uid"]
        sandboxes[name] = kube_node.kubelet.sandboxes[uid]
        port = [p for p in kube_node.node.pool()["ports"] if p["ip"] == ips[name]]
        assert len(port) == 1 and port[0]["allocation"]["state"] == "attached", port
        attachment = port[0]["allocation"]["attachment"]
        # containerd derived CNI_ARGS from the sandbox metadata; CNI_CONTAINERID is the sandbox
        assert (attachment["pod_namespace"], attachment["pod_name"]) == ("default", name)
        assert attachment["container_id"] == sandboxes[name]
        assert attachment["netns"] == kube_node.kubelet.netns[uid]
        assert pods[name]["spec"]["nodeName"] == kube_node.node.vm.name
        assert pods[name]["status"]["phase"] == "Running"

    for name, kube_node in names.items():
        uid = pods[name]["metadata"]["uid"]
        client_netns = kube_node.kubelet.netns[uid]
        for other, other_node in names.items():
            if other_node is kube_node:
                continue
            reply = wait_for(f"{name} -> {other} over HTTP",
                             functools.partial(http_get, client_netns, ips[other]), timeout=15)
            assert "200 OK" in reply.stdout

    for name in names:
        cluster.request("DELETE", f"/api/v1/namespaces/default/pods/{name}")

    def all_gone() -> bool:
        left = cluster.request("GET", "/api/v1/namespaces/default/pods")["items"]
        return not left
    wait_for("the pods to be deleted", all_gone)
    for kube_node in cluster.nodes:
        assert not kube_node.kubelet.sandboxes
        assert not kube_node.kubelet.errors
        assert not kube_node.kubelet.cri.list_pod_sandbox()
        for name, owner in names.items():
            if owner is kube_node:  # ADD at RunPodSandbox, DEL at Stop and at Remove
                assert cni_calls(kube_node.node, sandboxes[name]) == ["ADD", "DEL", "DEL"]
        stats = kube_node.node.pool()["stats"]
        assert stats == before[kube_node.node.vm.name], stats
        assert stats["free"] == stats["total"]


def test_a_pod_beyond_the_pool_fails_its_sandbox_and_its_deletion_still_completes(
        cluster: Cluster) -> None:
    kube_node = cluster.nodes[0]
    free = kube_node.node.pool()["stats"]["free"]
    names = [f"fill-{i}" for i in range(free + 1)]
    for name in names:
        cluster.request("POST", "/api/v1/namespaces/default/pods",
                        pod_manifest(name, kube_node.node.vm.name))
    try:
        def settled() -> tuple[list[str], list[dict[str, Any]]] | None:
            pods = cluster.request("GET", "/api/v1/namespaces/default/pods")["items"]
            errors = list(kube_node.kubelet.errors)
            done = sum(ready(p) for p in pods) + len(errors)
            return (errors, pods) if done == len(names) else None
        errors, pods = wait_for(f"{len(names)} pods Ready or failed", settled)
        assert sum(ready(p) for p in pods) == free
        assert len(errors) == 1 and "exhausted" in errors[0], errors
        assert kube_node.node.pool()["stats"]["free"] == 0
    finally:
        for name in names:
            cluster.request("DELETE", f"/api/v1/namespaces/default/pods/{name}")
        wait_for("the pods to be deleted", lambda: not cluster.request(
            "GET", "/api/v1/namespaces/default/pods")["items"])
        kube_node.kubelet.errors.clear()
    assert not kube_node.kubelet.cri.list_pod_sandbox()
    stats = kube_node.node.pool()["stats"]
    assert stats["free"] == stats["total"] == free, stats
