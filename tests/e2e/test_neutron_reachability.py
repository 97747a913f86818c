"""Pods reach what a cluster needs, on the Neutron lab: the VMs' primary addresses, the outside.

The same checks as :mod:`tests.e2e.test_reachability`, with every port, route
and gateway made through a real neutron-server: the management port's
allowed_address_pairs and the router's extra routes by lswitch-setup, the
router's external_gateway_info on the lab's external flat network by
``ensure_router_gateway``.  Both child-port modes are used (trunk on vm1,
binding:profile on vm2).
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any

import pytest

from ovn_underlay.lab import external, probe
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, Node, pod_ip
from ovn_underlay.lab.topology import LabState
from tests.conftest import PodFactory


def router_routes(state: LabState) -> list[dict[str, str]]:
    def read(conn: Any) -> list[dict[str, str]]:
        router = conn.network.find_router(CLUSTER_ROUTER)
        return [] if router is None else sorted(router.routes or [],
                                                key=lambda r: r["destination"])
    return lab_neutron.call(state, read)


def mgmt_pairs(state: LabState, port: str) -> list[str]:
    return lab_neutron.call(state, lambda conn: sorted(
        p["ip_address"] for p in conn.network.get_port(port).allowed_address_pairs or ()))


@pytest.fixture
def set_up(neutron_lab: LabState, neutron_nodes: tuple[Node, Node],
           pods: PodFactory) -> Iterator[tuple[list[str], list[probe.Endpoint]]]:
    """Both nodes set up (lswitch-setup's outputs), one pod each; the router's gateway is
    cleared afterwards so that the nodes' teardown can delete the router."""
    outputs = []
    for node, mode in zip(neutron_nodes, ("trunk", "binding-profile"), strict=True):
        node.init(child_ports=mode)
        outputs.append(node.setup_switch(pool_size=4).stdout)
    made = []
    for node in neutron_nodes:
        path, cid, result = pods.add(node)
        made.append(probe.Endpoint(cid, path.rsplit("/", 1)[1], pod_ip(result)))
    yield outputs, made

    def clear_gateway(conn: Any) -> None:
        router = conn.network.find_router(CLUSTER_ROUTER)
        if router is not None and router.external_gateway_info:
            conn.network.update_router(router, external_gateway_info={})

    lab_neutron.call(neutron_lab, clear_gateway)


def test_pods_and_nodes_reach_each_other_by_the_vms_primary_addresses(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node],
        set_up: tuple[list[str], list[probe.Endpoint]]) -> None:
    outputs, pods = set_up
    routes = []
    for node, output in zip(neutron_nodes, outputs, strict=True):
        cfg = node.config()
        assert f"(the node's {node.vm.ip} routed to it)" in output, output
        assert mgmt_pairs(neutron_lab, cfg["mgmt_port"]) == [node.vm.ip]
        routes.append({"destination": f"{node.vm.ip}/32", "nexthop": cfg["mgmt_ip"]})
    assert router_routes(neutron_lab) == routes

    vms = [probe.Endpoint(n.vm.name, n.vm.netns, n.vm.ip) for n in neutron_nodes]
    checks = [probe.check("pod-node primary", pod, vm, expect_seen=pod.ip)
              for pod in pods for vm in vms]
    checks += [probe.check("node primary-pod", vm, pod, expect_seen=vm.ip)
               for vm in vms for pod in pods]
    assert len(checks) == 8
    assert [c for c in checks if not c.ok] == [], probe.render(checks)

    neutron_nodes[0].cli("lswitch-destroy", neutron_nodes[0].switch, "--force")
    assert router_routes(neutron_lab) == routes[1:]


def test_pods_reach_the_external_host_through_the_tenant_routers_snat(
        neutron_lab: LabState, set_up: tuple[list[str], list[probe.Endpoint]]) -> None:
    _, pods = set_up
    snat_ip = external.attach(neutron_lab, CLUSTER_ROUTER, [CLUSTER_SUBNET])
    first, last = (ip_address(a) for a in external.NEUTRON_POOL)
    assert first <= ip_address(snat_ip) <= last  # Neutron's pick from the external subnet
    assert external.attach(neutron_lab, CLUSTER_ROUTER, [CLUSTER_SUBNET]) == snat_ip
    outside = probe.Endpoint("external host", external.namespace(neutron_lab.name),
                             external.EXT_HOST)
    checks = [probe.check("pod-external", pod, outside, expect_seen=snat_ip) for pod in pods]
    assert [c for c in checks if not c.ok] == [], probe.render(checks)
    for pod in pods:  # answers only: nothing outside routes to a pod
        assert not probe.ping(outside.netns, pod.ip, attempts=1)
