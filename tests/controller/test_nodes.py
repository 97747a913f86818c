"""The controller against the test API server and a real NB: networks, subnets, pool, owners,
security groups, garbage collection."""

from __future__ import annotations

import time
from typing import Any

from lightkube import Client
from lightkube.resources.core_v1 import Event, Node, Pod

from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.controller.nodes import Caches, NodeReconciler, Settings, UnderlayNode
from ovn_underlay.controller.subnets import ANNOTATION, SubnetAllocator
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.names import EXT_CONTAINER_ID, EXT_POD_NAME, EXT_POD_NAMESPACE
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION
from ovn_underlay.pods.security_groups import ANNOTATION as POD_GROUPS
from tests.controller.conftest import MakeReplica
from tests.controller.support import (
    add_node,
    annotation,
    eventually,
    nbctl,
    patch_spec,
    ready,
    rows,
    status,
    switch_ports,
    underlay,
    wait_ready,
)
from tests.functional.test_ovn_nb import dump
from tests.kube.support import namespace, pod

OWNER_KEYS = (EXT_POD_NAMESPACE, EXT_POD_NAME, EXT_CONTAINER_ID)


def events(admin: Client, node: str) -> list[tuple[str, str]]:
    """(type, reason) of the Events on Node ``node``, sorted."""
    return sorted((str(e.type), str(e.reason)) for e in admin.list(Event, namespace="default")
                  if e.involvedObject.kind == "Node" and e.involvedObject.name == node)


def test_a_stale_cache_says_ready_once(cluster: Client, kubeconfig: str, nb: str) -> None:
    """Two passes before the informer shows the first pass's status write: one Event."""
    kube = KubeClient(load_config(kubeconfig))
    control = OvnNbControlPlane(nb, timeout=5)
    try:
        add_node(cluster, "n1", "10.0.0.11")
        stale: list[Any] = []

        def underlay_cache(name: str) -> Any:
            return stale[0] if stale else None

        def node_cache(name: str) -> Node:
            return cluster.get(Node, name)

        reconciler = NodeReconciler(kube, control, Settings(cluster_subnet="198.19.0.0/16",
                                                            pool_size=2),
                                    SubnetAllocator("198.19.0.0/16"),
                                    Caches(node_cache, underlay_cache), lambda: True)
        reconciler.start_term([cluster.get(Node, "n1")], [])
        reconciler.reconcile("n1")
        stale.append(UnderlayNode.from_dict({  # as first created, before any status
            "apiVersion": "ovn-underlay.io/v1alpha1", "kind": "UnderlayNode",
            "metadata": {"name": "n1", "generation": 1}, "spec": {}}))
        reconciler.reconcile("n1")

        assert ready(cluster, "n1")["reason"] == "NetworkReady"
        assert events(cluster, "n1") == [("Normal", "NetworkReady"),
                                         ("Normal", "NodeNetworkCreated")]
    finally:
        control.close()
        kube.close()


def test_a_node_gets_its_network_and_a_ready_status(replicas: MakeReplica, cluster: Client,
                                                    nb: str) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11")
    st = wait_ready(cluster, "n1")

    assert st["switch"] == "node-n1"
    assert st["subnet"] == "198.19.0.0/24"
    assert (st["router"], st["parent"], st["gatewayIP"]) == ("ovn-underlay", "vm1",
                                                             "198.19.0.1")
    assert st["mgmt"] == {"name": "node-n1-mgmt", "mac": "0a:58:c6:13:00:02",
                          "ip": "198.19.0.2", "tag": 4094}
    assert [p["tag"] for p in st["ports"]] == [1, 2, 3, 4]
    assert ready(cluster, "n1")["reason"] == "NetworkReady"
    assert "children of VM port vm1" in ready(cluster, "n1")["message"]
    assert annotation(cluster, "n1", ANNOTATION) == "198.19.0.0/24"
    assert st["hostAddresses"] == ["10.0.0.11"]
    assert "10.0.0.11" in nbctl(nb, "get", "Logical_Switch_Port", "node-n1-mgmt",
                                "port_security")

    routers = [r for r in rows(nb, "Logical_Router") if r == "ovn-underlay"]
    assert routers == ["ovn-underlay"]
    assert "node-n1" in rows(nb, "Logical_Switch")
    assert switch_ports(nb, "node-n1") == {"stor-node-n1", "node-n1-mgmt",
                                           *(f"node-n1-p{t}" for t in range(1, 5))}
    assert events(cluster, "n1") == [("Normal", "NetworkReady"),
                                     ("Normal", "NodeNetworkCreated")]


def test_a_node_whose_address_no_port_holds_is_not_ready(replicas: MakeReplica,
                                                         cluster: Client, nb: str) -> None:
    replicas()
    add_node(cluster, "stray", "10.0.0.99")
    eventually(lambda: ready(cluster, "stray").get("reason") == "NoVMPort")
    condition = ready(cluster, "stray")
    assert condition["status"] == "False"
    assert "InternalIP 10.0.0.99" in condition["message"]
    assert "node-stray" not in rows(nb, "Logical_Switch")
    time.sleep(1.2)  # a resync or two: the condition is the same, so no second Event
    assert events(cluster, "stray") == [("Warning", "NoVMPort")]


def test_the_pod_cidr_is_the_subnet_when_set(replicas: MakeReplica, cluster: Client) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11", pod_cidr="198.19.42.0/24")
    assert wait_ready(cluster, "n1")["subnet"] == "198.19.42.0/24"
    assert annotation(cluster, "n1", ANNOTATION) is None


def test_allocations_survive_a_restart_which_writes_nothing(
        replicas: MakeReplica, cluster: Client, nb: str) -> None:
    first = replicas("c1")
    add_node(cluster, "n1", "10.0.0.11")
    add_node(cluster, "n2", "10.0.0.12")
    subnets = {n: wait_ready(cluster, n)["subnet"] for n in ("n1", "n2")}
    assert sorted(subnets.values()) == ["198.19.0.0/24", "198.19.1.0/24"]
    first.controller.stop()
    before = dump(nb)
    versions = {n: (underlay(cluster, n) or {})["metadata"]["resourceVersion"]
                for n in ("n1", "n2")}
    nodes = {n: cluster.get(Node, n).metadata.resourceVersion  # type: ignore[union-attr]
             for n in ("n1", "n2")}

    second = replicas("c2")
    eventually(lambda: second.controller.leading)
    time.sleep(1.5)  # the first reconciles and a resync or two

    def without_epoch(tables: dict[str, list[dict[str, object]]]) -> object:
        return {t: r for t, r in tables.items() if t != "NB_Global table"}
    assert without_epoch(dump(nb)) == without_epoch(before)
    assert {n: (underlay(cluster, n) or {})["metadata"]["resourceVersion"]
            for n in ("n1", "n2")} == versions
    assert {n: cluster.get(Node, n).metadata.resourceVersion  # type: ignore[union-attr]
            for n in ("n1", "n2")} == nodes
    add_node(cluster, "n3", "10.0.0.13")
    nbctl(nb, "lsp-add", "vmnet", "vm3", "--", "lsp-set-addresses", "vm3",
          "52:54:00:00:00:03 10.0.0.13")
    assert wait_ready(cluster, "n3")["subnet"] == "198.19.2.0/24"


def test_the_pool_grows_to_what_the_node_asks_up_to_the_cap(
        replicas: MakeReplica, cluster: Client) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    patch_spec(cluster, "n1", {"poolPorts": 7})
    eventually(lambda: len(status(cluster, "n1")["ports"]) == 7)
    patch_spec(cluster, "n1", {"poolPorts": 50})
    eventually(lambda: len(status(cluster, "n1")["ports"]) == 8)
    time.sleep(0.7)
    assert len(status(cluster, "n1")["ports"]) == 8


def test_the_pods_are_recorded_on_their_ports(replicas: MakeReplica, cluster: Client,
                                              nb: str) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    claim = {"namespace": "default", "name": "web", "containerID": "c0ffee"}
    patch_spec(cluster, "n1", {"pods": {"node-n1-p2": claim}})

    def owner() -> dict[str, str]:
        ids = rows(nb, "Logical_Switch_Port")["node-n1-p2"]["external_ids"]
        return {k: v for k, v in ids.items() if k in OWNER_KEYS}
    eventually(lambda: owner() == {EXT_POD_NAMESPACE: "default", EXT_POD_NAME: "web",
                                   EXT_CONTAINER_ID: "c0ffee"})
    patch_spec(cluster, "n1", {"pods": {"node-n1-p2": None}})
    eventually(lambda: owner() == {})


def test_security_groups_refused_reach_the_status(replicas: MakeReplica,
                                                  cluster: Client) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    cluster.create(namespace("apps", {ALLOWED_ANNOTATION: "web"}))
    cluster.create(pod("ok", "apps", node="n1", annotations={POD_GROUPS: "web"}))
    cluster.create(pod("elsewhere", "apps", node="n2", annotations={POD_GROUPS: "web"}))
    cluster.create(pod("greedy", "apps", node="n1", annotations={POD_GROUPS: "db"}))
    claims = {
        "node-n1-p1": {"namespace": "apps", "name": "ok", "containerID": "a",
                       "securityGroups": ["web"]},
        "node-n1-p2": {"namespace": "apps", "name": "elsewhere", "containerID": "b",
                       "securityGroups": ["web"]},
        "node-n1-p3": {"namespace": "apps", "name": "greedy", "containerID": "c",
                       "securityGroups": ["db"]},
        "node-n1-p4": {"namespace": "apps", "name": "ok", "containerID": "d",
                       "securityGroups": ["web", "admin"]},
    }
    patch_spec(cluster, "n1", {"pods": claims})
    eventually(lambda: len(status(cluster, "n1").get("refused") or {}) == 4)
    refused = status(cluster, "n1")["refused"]
    assert "need the neutron backend" in refused["node-n1-p1"]
    assert "bound to node n2, not to node n1" in refused["node-n1-p2"]
    assert "namespace apps does not allow" in refused["node-n1-p3"]
    assert "not for web, admin" in refused["node-n1-p4"]
    assert status(cluster, "n1")["securityGroups"] == {}
    assert cluster.get(Pod, "ok", namespace="apps")

    patch_spec(cluster, "n1", {"pods": {"node-n1-p1": None, "node-n1-p2": None}})
    eventually(lambda: set(status(cluster, "n1")["refused"]) == {"node-n1-p3", "node-n1-p4"})


def test_a_deleted_node_is_kept_while_its_vm_port_exists(replicas: MakeReplica,
                                                         cluster: Client, nb: str) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    cluster.delete(Node, "n1")
    eventually(lambda: ready(cluster, "n1").get("reason") == "NodeDeleted")
    assert "node-n1" in rows(nb, "Logical_Switch")
    assert len(switch_ports(nb, "node-n1")) == 6

    add_node(cluster, "n1", "10.0.0.11")
    st = wait_ready(cluster, "n1")
    assert [p["tag"] for p in st["ports"]] == [1, 2, 3, 4]

    cluster.delete(Node, "n1")
    eventually(lambda: ready(cluster, "n1").get("reason") == "NodeDeleted")
    nbctl(nb, "lsp-del", "vm1")
    eventually(lambda: underlay(cluster, "n1") is None)
    assert "node-n1" not in rows(nb, "Logical_Switch")
    assert switch_ports(nb, "node-n1") == set()
    assert "rtr-node-n1" not in rows(nb, "Logical_Router_Port")
    assert "ovn-underlay" in rows(nb, "Logical_Router")


def test_switches_of_nodes_gone_while_no_controller_ran_are_collected(
        replicas: MakeReplica, cluster: Client, nb: str) -> None:
    first = replicas("c1")
    add_node(cluster, "n1", "10.0.0.11")
    add_node(cluster, "n2", "10.0.0.12")
    wait_ready(cluster, "n1")
    wait_ready(cluster, "n2")
    first.controller.stop()
    cluster.delete(Node, "n2")
    cluster.delete(UnderlayNode, "n2")
    nbctl(nb, "lsp-del", "vm2")

    replicas("c2")
    eventually(lambda: "node-n2" not in rows(nb, "Logical_Switch"))
    assert switch_ports(nb, "node-n2") == set()
    assert "node-n1" in rows(nb, "Logical_Switch")
