"""The controller on the Neutron backend, against the lab's neutron-server.

The lab's Neutron answers only inside the lab hypervisor's namespace, so each test runs
there whole: its own test API server, the controller (its threads stay in the namespace)
and the checks.  The Node's VM port is a Neutron port made for the test (no VM behind
it); every object is named ``ctl-...`` and removed at the end.  The controller's
security-group path that OVN cannot take (the groups set) is tested here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Node

from ovn_underlay.control import credentials
from ovn_underlay.control.base import ControlPlane, PortOwner
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.neutron_view import TRUNK
from ovn_underlay.controller.main import DEFAULT_NAMESPACE, Controller, ControllerConfig
from ovn_underlay.controller.nodes import Settings
from ovn_underlay.controller.services import NEUTRON_NOTICE
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.lab.topology import LabState
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION
from ovn_underlay.pods.security_groups import ANNOTATION as POD_GROUPS
from tests.controller.conftest import CRD
from tests.controller.support import add_node, patch_spec, status, underlay, wait_ready
from tests.kube.support import eventually, namespace, pod, write_kubeconfig

ROUTER = "ctl-ctrl-router"
VM_IP = "198.18.0.221"


def plane() -> NeutronControlPlane:
    creds = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                        "OS_NETWORK_ENDPOINT_OVERRIDE": lab_neutron.api_url()},
                                       "the lab's Neutron")
    return NeutronControlPlane(creds, child_ports=TRUNK, timeout=60)


def in_hypervisor(state: LabState, tmp_path: Path,
                  scenario: Callable[[Any, Any, str], None], **services: str) -> None:
    """``scenario(admin, conn, vm_port)`` in the hypervisor's namespace with an API server,
    a started controller on Neutron (``services``: its service_subnet and service_cidr)
    and an openstacksdk connection; everything removed afterwards."""
    import openstack

    def run() -> None:
        conn = openstack.connect(auth_type="none", network_endpoint_override=
                                 lab_neutron.api_url(), load_yaml_config=False,
                                 load_envvars=False, api_timeout=60)
        vm = conn.network.create_port(
            network_id=state.neutron["network"], name="ctl-ctrl-vm",
            fixed_ips=[{"subnet_id": state.neutron["subnet"], "ip_address": VM_IP}])
        group = conn.network.create_security_group(name="ctl-web")
        try:
            with KubeApiServer(bookmark_interval=0.3) as server:
                path = write_kubeconfig(tmp_path / "kubeconfig", server.url)
                admin = KubeClient(load_config(path))
                admin.api.create(CustomResourceDefinition.from_dict(
                    yaml.safe_load(CRD.read_text())))
                admin.api.create(namespace(DEFAULT_NAMESPACE))
                config = ControllerConfig(
                    settings=Settings(router=ROUTER, cluster_subnet="198.19.0.0/16",
                                      pool_size=2, max_pool_ports=4, pool_batch=2),
                    identity="ctl", lease_duration=2, renew_deadline=1.0,
                    renew_interval=0.3, retry_period=0.1, resync=0.5, **services)
                connect: Callable[[], ControlPlane] = plane
                controller = Controller(load_config(path), config, connect)
                controller.start()
                try:
                    scenario(admin.api, conn, vm.id)
                finally:
                    controller.stop()
                    admin.close()
        finally:
            cleanup = plane()
            try:
                for switch in cleanup.node_switches():
                    if switch.startswith("node-ctl"):
                        cleanup.destroy_node_network(switch)
            finally:
                cleanup.close()
            for trunk in conn.network.trunks(port_id=vm.id):
                conn.network.delete_trunk(trunk)
            conn.network.delete_port(vm, ignore_missing=True)
            conn.network.delete_security_group(group)
            for router in conn.network.routers(name=ROUTER):
                conn.network.delete_router(router)
            conn.close()

    lab_neutron.in_netns(state.hv_netns, run)


def test_a_node_on_neutron_its_security_groups_and_its_removal(
        neutron_lab: LabState, tmp_path: Path) -> None:
    def scenario(admin: Any, conn: Any, vm_port: str) -> None:
        add_node(admin, "ctlnode", VM_IP)
        st = wait_ready(admin, "ctlnode", timeout=60)
        routers = [r.id for r in conn.network.routers(name=ROUTER)]
        assert (st["switch"], st["parent"], [st["router"]]) == ("node-ctlnode", vm_port,
                                                                routers)
        assert len(st["ports"]) == 2

        patch_spec(admin, "ctlnode", {"poolPorts": 9})
        eventually(lambda: len(status(admin, "ctlnode")["ports"]) == 4, timeout=60)

        admin.create(namespace("apps", {ALLOWED_ANNOTATION: "ctl-web"}))
        admin.create(pod("web", "apps", node="ctlnode", annotations={POD_GROUPS: "ctl-web"}))
        port = status(admin, "ctlnode")["ports"][0]["name"]
        group = conn.network.find_security_group("ctl-web")
        started = time.monotonic()
        patch_spec(admin, "ctlnode", {"pods": {port: {
            "namespace": "apps", "name": "web", "containerID": "c1",
            "securityGroups": ["ctl-web"]}}})
        eventually(lambda: status(admin, "ctlnode")["securityGroups"] == {port: ["ctl-web"]},
                   timeout=30)
        took = time.monotonic() - started
        assert conn.network.get_port(port).security_group_ids == [group.id]
        assert status(admin, "ctlnode")["refused"] == {}
        direct = plane()  # what a node with credentials does today, for comparison
        try:
            for other in (p["name"] for p in status(admin, "ctlnode")["ports"][1:3]):
                started = time.monotonic()  # the second: on a warm connection
                direct.set_port_security_groups(other, ["ctl-web"],
                                                PortOwner("apps", "web", "c2"))
                today = time.monotonic() - started
                direct.clear_port_security_groups(other)
        finally:
            direct.close()
        print(f"security groups set through the controller on Neutron in {took * 1000:.0f} "
              f"ms; by a node's own NeutronControlPlane {today * 1000:.0f} ms")

        patch_spec(admin, "ctlnode", {"pods": {port: {"securityGroups": None}}})
        eventually(lambda: status(admin, "ctlnode")["securityGroups"] == {}, timeout=30)
        assert conn.network.get_port(port).security_group_ids != [group.id]

        admin.delete(Node, "ctlnode")
        time.sleep(1.5)
        assert underlay(admin, "ctlnode") is not None, "kept while the VM port exists"
        for trunk in conn.network.trunks(port_id=vm_port):
            conn.network.delete_trunk(trunk)
        conn.network.delete_port(vm_port)
        eventually(lambda: underlay(admin, "ctlnode") is None, timeout=60)
        assert list(conn.network.networks(name="node-ctlnode")) == []

    in_hypervisor(neutron_lab, tmp_path, scenario)


def test_an_unusable_service_subnet_is_said_and_the_nodes_are_served(
        neutron_lab: LabState, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--service-subnet naming no subnet: each term says why it programs no Service (and
    not that the setting is missing), and the node gets its network all the same."""
    def scenario(admin: Any, conn: Any, vm_port: str) -> None:
        del conn, vm_port
        add_node(admin, "ctlnode", VM_IP)
        wait_ready(admin, "ctlnode", timeout=60)

    in_hypervisor(neutron_lab, tmp_path, scenario, service_subnet="ctl-nosuch",
                  service_cidr="198.18.128.0/20")
    said = [r.getMessage() for r in caplog.records]
    assert ("Services are not programmed in this term: the Service subnet ctl-nosuch "
            "cannot be used: subnet ctl-nosuch not found in Neutron") in said, said
    assert NEUTRON_NOTICE not in said
