"""Pods reach what a cluster needs, on the OVN lab: the VMs' primary addresses and the outside.

Nodes are set up with the CLI (node-init, lswitch-setup) and pods added through
the installed CNI plugin as a runtime calls it; the outside is the lab's
external namespace behind the cluster router's gateway.  Addresses are checked
with a UDP exchange: the source the far end saw, and the source of its answer.
The NB rows behind it (host routes, gateway port, NAT) are checked on a real
NB server too, where a destroy must leave nothing of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ovn_underlay.control.base import ControlPlaneError
from ovn_underlay.control.ovn_nb import OvnNbControlPlane, gateway_peer_name, gateway_port_name
from ovn_underlay.lab import daemons, external, probe
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, Node, pod_ip
from ovn_underlay.lab.topology import LabState, nbctl
from tests.conftest import PodFactory
from tests.functional.test_ovn_nb import as_list, cp, dump, rows, setup_vm_network

__all__ = ["cp"]
SUBNET = "198.19.1.0/24"


@pytest.fixture
def two_pods(nodes: tuple[Node, Node], pods: PodFactory) -> list[probe.Endpoint]:
    """One pod on each node (deleted through CNI DEL after the test)."""
    made = []
    for node in nodes:
        path, cid, result = pods.add(node)
        made.append(probe.Endpoint(cid, path.rsplit("/", 1)[1], pod_ip(result)))
    return made


def primary(node: Node) -> probe.Endpoint:
    """The node VM's primary address, in the VM's namespace (where host-network servers run)."""
    return probe.Endpoint(node.vm.name, node.vm.netns, node.vm.ip)


def test_pods_reach_every_vms_primary_address_and_the_answer_comes_from_it(
        nodes: tuple[Node, Node], two_pods: list[probe.Endpoint]) -> None:
    checks = [probe.check("pod-node primary", pod, primary(node), expect_seen=pod.ip)
              for pod in two_pods for node in nodes]
    assert len(checks) == 4  # each pod to its own VM and to the other one
    assert [c for c in checks if not c.ok] == [], probe.render(checks)
    assert {(c.seen_as, c.reply_from) for c in checks} == {
        (pod.ip, node.vm.ip) for pod in two_pods for node in nodes}


def test_a_host_network_server_answers_pods_from_the_vms_own_address(
        nodes: tuple[Node, Node], two_pods: list[probe.Endpoint]) -> None:
    """A TCP echo and a UDP server bound to the VM's address in the VM's namespace."""
    server = primary(nodes[1])
    for pod in two_pods:
        assert probe.tcp(pod.netns, server), f"{pod.label} -> {server.ip} over TCP"
        assert probe.addresses(pod.netns, server) == (pod.ip, server.ip)


def test_nodes_reach_pods_from_their_primary_address(
        nodes: tuple[Node, Node], two_pods: list[probe.Endpoint]) -> None:
    for node in nodes:
        for pod in two_pods:
            check = probe.check("node primary-pod", primary(node), pod,
                                expect_seen=node.vm.ip)
            assert check.ok, probe.render([check])


def test_lswitch_setup_routes_the_vms_address_to_its_management_port(
        lab: LabState, nodes: tuple[Node, Node]) -> None:
    routes = nbctl(lab.nb, "lr-route-list", CLUSTER_ROUTER)
    for node in nodes:
        cfg = node.config()
        assert f"{node.vm.ip} {cfg['mgmt_ip']} dst-ip rtr-{node.switch}" in " ".join(
            routes.split()), routes
        security = nbctl(lab.nb, "get", "Logical_Switch_Port", cfg["mgmt_port"],
                         "port_security").strip()
        assert security == f'["{cfg["mgmt_mac"]} {cfg["mgmt_ip"]} {node.vm.ip}"]'


@pytest.fixture
def snat_ip(lab: LabState, nodes: tuple[Node, Node]) -> Iterator[str]:
    """The cluster router's gateway made with ``router-gateway`` on a node (the router
    exists once a node is set up), removed afterwards: the session's lab is shared."""
    out = nodes[0].cli("router-gateway", CLUSTER_ROUTER, external.EXT_SWITCH, "--address",
                       external.NB_GATEWAY, "--next-hop", external.EXT_HOST,
                       "--gateway-chassis", lab.chassis).stdout
    # with the node's own settings: SNAT of the cluster subnet node-init recorded
    assert out.strip() == (f"router {CLUSTER_ROUTER}: gateway 203.0.113.1 on "
                           f"{external.EXT_SWITCH}, SNAT of {CLUSTER_SUBNET}")
    yield "203.0.113.1"
    port = gateway_port_name(CLUSTER_ROUTER)
    nbctl(lab.nb, "--if-exists", "lr-route-del", CLUSTER_ROUTER, "0.0.0.0/0", "--",
          "--if-exists", "lr-nat-del", CLUSTER_ROUTER, "snat", CLUSTER_SUBNET, "--",
          "--if-exists", "lsp-del", gateway_peer_name(CLUSTER_ROUTER), "--",
          "--if-exists", "lrp-del", port)


def test_pods_reach_the_external_host_through_the_routers_snat(
        lab: LabState, snat_ip: str, two_pods: list[probe.Endpoint]) -> None:
    assert snat_ip == external.NB_GATEWAY.split("/")[0]
    before = nbctl(lab.nb, "show", CLUSTER_ROUTER)
    # the lab's path: the control plane named on the command line; nothing changes
    assert external.attach(lab, CLUSTER_ROUTER, [CLUSTER_SUBNET]) == snat_ip
    assert nbctl(lab.nb, "show", CLUSTER_ROUTER) == before
    outside = probe.Endpoint("external host", external.namespace(lab.name), external.EXT_HOST)
    for pod in two_pods:
        check = probe.check("pod-external", pod, outside, expect_seen=snat_ip)
        assert check.ok, probe.render([check])
    # Only answers come back: the outside has no route to a pod (that would take
    # floating IPs or a NodePort), so it cannot open a connection to one.
    for pod in two_pods:
        assert not probe.ping(outside.netns, pod.ip, attempts=1)


# --- the rows behind it, on a real NB server ---------------------------------------------

@pytest.fixture
def nb(ovsdb_factory: Callable[[str, Path], str]) -> str:
    remote = ovsdb_factory("nb", daemons.NB_SCHEMA)
    setup_vm_network(remote, lambda api: [api.ls_add("public")])
    return remote


def static_routes(nb: str) -> list[tuple[str, str, str]]:
    return sorted((r["ip_prefix"], r["nexthop"], r["output_port"] if r["output_port"] else "")
                  for r in dump(nb)["Logical_Router_Static_Route table"])


def test_host_routes_are_made_once_follow_the_parent_and_go_with_the_network(
        nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 2)
    assert cp.ensure_host_routes("node1") == ("10.0.0.11",)
    assert cp.ensure_host_routes("node1") == ("10.0.0.11",)
    assert static_routes(nb) == [("10.0.0.11/32", "198.19.1.2", "rtr-node1")]
    assert rows(nb, "Logical_Switch_Port")["node1-mgmt"]["port_security"] == \
        "0a:58:c6:13:01:02 198.19.1.2 10.0.0.11"

    nbctl(nb, "lsp-set-addresses", "vm1", "52:54:00:00:00:01 10.0.0.21")
    time.sleep(0.2)  # the control plane's replica follows the change
    assert cp.ensure_host_routes("node1") == ("10.0.0.21",)
    assert static_routes(nb) == [("10.0.0.21/32", "198.19.1.2", "rtr-node1")]

    cp.destroy_node_network("node1")
    assert static_routes(nb) == []
    assert "node1-mgmt" not in rows(nb, "Logical_Switch_Port")


def test_router_gateway_rows_are_made_once_and_follow_what_is_asked(
        nb: str, cp: OvnNbControlPlane) -> None:
    def ask(next_hop: str, snat: list[str]) -> str:
        return cp.ensure_router_gateway("edge", "public", snat, address="192.0.2.2/24",
                                        next_hop=next_hop, chassis=["hv1", "hv2"])

    assert ask("192.0.2.1", ["198.19.0.0/16"]) == "192.0.2.2"
    before = dump(nb)
    assert ask("192.0.2.1", ["198.19.0.0/16"]) == "192.0.2.2"
    assert dump(nb) == before

    lrp = rows(nb, "Logical_Router_Port")["gw-edge"]
    assert (lrp["mac"], lrp["networks"]) == ("0a:58:c0:00:02:02", "192.0.2.2/24")
    peer = rows(nb, "Logical_Switch_Port")["gw-edge-peer"]
    assert (peer["type"], peer["options"]) == ("router", {"router-port": "gw-edge"})
    assert as_list(rows(nb, "Logical_Switch")["public"]["ports"]) == [peer["_uuid"]]
    assert sorted((g["chassis_name"], g["priority"])
                  for g in dump(nb)["Gateway_Chassis table"]) == [("hv1", 2), ("hv2", 1)]
    nats = [(n["type"], n["external_ip"], n["logical_ip"]) for n in dump(nb)["NAT table"]]
    assert nats == [("snat", "192.0.2.2", "198.19.0.0/16")]
    assert static_routes(nb) == [("0.0.0.0/0", "192.0.2.1", "gw-edge")]

    ask("192.0.2.254", ["198.19.1.0/24", "198.19.2.0/24"])
    assert static_routes(nb) == [("0.0.0.0/0", "192.0.2.254", "gw-edge")]
    assert sorted(n["logical_ip"] for n in dump(nb)["NAT table"]) == [
        "198.19.1.0/24", "198.19.2.0/24"]


@pytest.mark.parametrize(("address", "external", "match"), [
    ("192.0.2.2", "public", "prefix"),
    ("", "public", "prefix"),
    ("192.0.2.2/24", "nowhere", "external logical switch nowhere not found"),
])
def test_router_gateway_refuses_what_it_cannot_make(nb: str, cp: OvnNbControlPlane,
                                                    address: str, external: str,
                                                    match: str) -> None:
    before = dump(nb)
    with pytest.raises(ControlPlaneError, match=match):
        cp.ensure_router_gateway("edge", external, ["198.19.0.0/16"], address=address)
    assert dump(nb) == before
