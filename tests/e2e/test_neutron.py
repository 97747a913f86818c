"""The Neutron backend against a real neutron-server (``lab up --neutron``).

Everything goes through the entry points users use: ``ovn-k8s-underlay`` inside
the VMs and the installed CNI plugin called as a runtime calls it; Neutron and
the OVN Northbound database are only read, to check what they hold.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, Node, pod_ip
from ovn_underlay.lab.demo import matrix
from ovn_underlay.lab.topology import LabState, nbctl
from tests.conftest import PodFactory

NB_COLUMNS = {
    "Logical_Switch": ("name",),
    "Logical_Switch_Port": ("name", "type", "addresses", "parent_name", "tag", "port_security"),
    "Logical_Router": ("name",),
    "Logical_Router_Port": ("name", "networks"),
    "Port_Group": ("name",),
}


def neutron_view(state: LabState) -> dict[str, Any]:
    """What Neutron holds, without counters and timestamps."""
    def read(conn: Any) -> dict[str, Any]:
        net = conn.network
        return {
            "networks": sorted((n.id, n.name) for n in net.networks()),
            "subnets": sorted((s.id, s.cidr) for s in net.subnets()),
            "ports": sorted((p.id, p.name, p.network_id, p.device_owner, str(p.fixed_ips),
                             tuple(sorted(p.security_group_ids or ())),
                             json.dumps(p.binding_profile, sort_keys=True)) for p in net.ports()),
            "routers": sorted((r.id, r.name) for r in net.routers()),
            "trunks": sorted((t.id, t.port_id, str(t.sub_ports)) for t in net.trunks()),
            "security_groups": sorted((g.id, g.name) for g in net.security_groups()),
        }
    return lab_neutron.call(state, read)


def nb_view(state: LabState) -> dict[str, list[tuple[str, ...]]]:
    """The Northbound rows (selected columns) that Neutron and ovn-underlay write."""
    view = {}
    for table, columns in NB_COLUMNS.items():
        out = nbctl(state.nb, "--format=csv", "--no-headings", "--data=bare",
                    f"--columns={','.join(columns)}", "list", table)
        view[table] = sorted(tuple(line.split(",")) for line in out.splitlines())
    return view


def own_neutron_ports(state: LabState, switch: str) -> dict[str, str]:
    """Port id -> name of the pool ports Neutron has on ``switch``'s network."""
    def read(conn: Any) -> dict[str, str]:
        net = conn.network.find_network(switch)
        if net is None:
            return {}
        return {p.id: p.name for p in conn.network.ports(network_id=net.id)
                if p.name.startswith(f"{switch}-p")}
    return lab_neutron.call(state, read)


def marks(state: LabState, switch: str, parent: str) -> dict[str, Any]:
    """How Neutron reports the objects of ``switch``'s node network: descriptions, owners."""
    def read(conn: Any) -> dict[str, Any]:
        net = conn.network.find_network(switch)
        ports = list(conn.network.ports(network_id=net.id))
        router_ports = [p for p in ports if p.device_owner == "network:router_interface"]
        own = [p for p in ports if p.device_owner != "network:router_interface"]
        router = conn.network.get_router(router_ports[0].device_id)
        trunks = list(conn.network.trunks(port_id=parent))
        return {
            "network": json.loads(net.description)["ovn-underlay"],
            "subnets": [s.description for s in conn.network.subnets(network_id=net.id)],
            "ports": sorted((p.name == f"{switch}-mgmt", p.device_owner, p.description)
                            for p in own),
            "router interface": [p.description for p in router_ports],
            "router": (router.name, router.description),
            "trunks": [(t.name, t.description) for t in trunks],
        }
    return lab_neutron.call(state, read)


def test_pods_on_trunk_and_binding_profile_children_reach_everything(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node], pods: PodFactory) -> None:
    before = (neutron_view(neutron_lab), nb_view(neutron_lab))
    trunk_node, profile_node = neutron_nodes
    trunk_node.init(child_ports="trunk")
    profile_node.init(child_ports="binding-profile")
    endpoints, node_ends = [], []
    for node in neutron_nodes:
        setup = node.setup_switch(pool_size=6)
        assert "6 pool ports" in setup.stdout and "background" not in setup.stdout
        cfg = node.config()
        assert cfg["parent"] == node.vm.port  # OS_VIF_ID of the VM's openrc
        node_ends.append(probe.Endpoint(f"node {node.vm.name}", node.vm.netns, cfg["mgmt_ip"]))
        for _ in range(2):
            path, cid, result = pods.add(node)
            endpoints.append((node, probe.Endpoint(cid, path.rsplit("/", 1)[1],
                                                   pod_ip(result))))
    trunks = {parent: subports for _, parent, subports in neutron_view(neutron_lab)["trunks"]}
    assert set(trunks) == {trunk_node.vm.port}
    pool, mgmt = '{"ovn-underlay": "pool-port"}', '{"ovn-underlay": "mgmt-port"}'
    for node, owner in ((trunk_node, "trunk:subport"), (profile_node, "compute:ovn-underlay")):
        assert marks(neutron_lab, node.switch, node.vm.port) == {
            "network": "node-network", "subnets": ['{"ovn-underlay": "subnet"}'],
            "ports": [(False, owner, pool)] * 6 + [(True, owner, mgmt)],
            "router interface": [""],
            "router": (CLUSTER_ROUTER, '{"ovn-underlay": "router"}'),
            "trunks": [(f"ovn-underlay-{trunk_node.vm.port[:8]}", '{"ovn-underlay": "trunk"}')]
            if node is trunk_node else []}
    assert trunks[trunk_node.vm.port].count("'segmentation_type': 'vlan'") == 7  # 6 + mgmt
    for node in neutron_nodes:
        for alloc_port in node.pool()["ports"]:
            if alloc_port["allocation"] is None:
                continue
            row = nbctl(neutron_lab.nb, "--data=bare", "--no-headings",
                        "--columns=parent_name,tag", "find", "Logical_Switch_Port",
                        f"name={alloc_port['lport']}").split()
            assert row == [node.vm.port, str(alloc_port["tag"])]
    checks = matrix(endpoints, node_ends)
    assert [c for c in checks if not c.ok] == [], probe.render(checks)
    pods.cleanup()
    for node in neutron_nodes:
        node.cli("lswitch-destroy", node.switch)
    assert (neutron_view(neutron_lab), nb_view(neutron_lab)) == before


def test_setup_returns_after_a_first_batch_and_the_rest_fills_in_background(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node], pods: PodFactory) -> None:
    node = neutron_nodes[0]
    node.init(child_ports="trunk")
    started = time.monotonic()
    setup = node.cli("lswitch-setup", node.switch, node.subnet, CLUSTER_ROUTER, "--pool-size",
                     "40")
    took = time.monotonic() - started
    assert ": 8 pool ports" in setup.stdout and "other 32 pool ports" in setup.stdout
    assert len(own_neutron_ports(neutron_lab, node.switch)) < 40, took
    _, _, result = pods.add(node)  # the node serves pods while the pool fills
    assert pod_ip(result)
    filled = node.cli("pool", "fill")  # waits for the background filler
    assert "40 ports" in filled.stdout
    log = (node.state_dir / "pool-fill.log").read_text()
    assert "40/40 ports" in log
    ports = node.pool()["ports"]
    assert sorted(p["tag"] for p in ports) == list(range(1, 41))
    assert {p["lport"] for p in ports} == set(own_neutron_ports(neutron_lab, node.switch))
    fillers = [subprocess.Popen(node.cli_argv("pool", "fill", "--size", "56", "--batch", "5"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    assert [f.wait(timeout=120) for f in fillers] == [0, 0]
    ports = node.pool()["ports"]
    assert sorted(p["tag"] for p in ports) == list(range(1, 57))
    assert {p["lport"] for p in ports} == set(own_neutron_ports(neutron_lab, node.switch))


def test_a_failed_create_is_retried_and_leaves_no_port_and_no_tag_behind(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node]) -> None:
    node = neutron_nodes[1]
    node.init(child_ports="binding-profile")
    setup = node.cli("lswitch-setup", node.switch, node.subnet, CLUSTER_ROUTER, "--pool-size",
                     "12", "--wait")
    assert "pool filled: 12 ports" in setup.stdout and "12/12 ports" in setup.stderr

    def squeeze(conn: Any) -> str:
        project = str(conn.network.get_port(node.vm.port).project_id)
        used = sum(1 for _ in conn.network.ports(project_id=project))
        conn.network.update_quota(project, ports=used + 4)
        return project

    project = lab_neutron.call(neutron_lab, squeeze)
    try:
        failed = node.cli("pool", "fill", "--size", "30", "--batch", "3", check=False)
    finally:
        lab_neutron.call(neutron_lab, lambda conn: conn.network.delete_quota(project))
    assert failed.returncode == 1
    assert "retry 2 of 2" in failed.stderr and "quota" in failed.stderr.lower()
    ports = node.pool()["ports"]
    assert sorted(p["tag"] for p in ports) == list(range(1, 16))  # 12 + one batch of 3
    assert {p["lport"] for p in ports} == set(own_neutron_ports(neutron_lab, node.switch))
    node.cli("pool", "fill", "--size", "30", "--batch", "10")
    ports = node.pool()["ports"]
    assert sorted(p["tag"] for p in ports) == list(range(1, 31))
    assert {p["lport"] for p in ports} == set(own_neutron_ports(neutron_lab, node.switch))



def test_destroy_stops_a_filler_half_way_and_leaves_neutron_as_found(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node]) -> None:
    node = neutron_nodes[1]
    node.init(child_ports="binding-profile")
    before = (neutron_view(neutron_lab), nb_view(neutron_lab))
    setup = node.cli("lswitch-setup", node.switch, node.subnet, CLUSTER_ROUTER, "--pool-size",
                     "64")
    assert "other 56 pool ports are being created in the background" in setup.stdout
    time.sleep(1.0)  # the filler is in the middle of a bulk POST
    destroyed = node.cli("lswitch-destroy", node.switch)
    assert "stopped the background pool filler" in destroyed.stdout
    assert (neutron_view(neutron_lab), nb_view(neutron_lab)) == before
    assert node.pool()["stats"]["total"] == 0


def test_a_router_and_a_switch_of_one_name_are_refused_before_anything_is_made(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node]) -> None:
    node = neutron_nodes[0]
    node.init(child_ports="trunk")
    edge = lab_neutron.call(neutron_lab, lambda conn: str(conn.network.create_router(
        name="edge").id))
    try:
        before = (neutron_view(neutron_lab), nb_view(neutron_lab))
        for switch, router, says in (
                (node.switch, node.switch, f"router {node.switch!r} has the name of the "
                                           "switch being created"),
                (node.switch, lab_neutron.VM_NETWORK_NAME,
                 "router 'vmnet' has the name of an existing Neutron network"),
                ("edge", CLUSTER_ROUTER, "switch 'edge' has the name of an existing Neutron "
                                         "router")):
            refused = node.cli("lswitch-setup", switch, node.subnet, router, "--pool-size", "2",
                               check=False)
            assert refused.returncode == 1, refused.stdout
            assert f"{says}: a router and a switch must not share a name" in refused.stderr
            assert (neutron_view(neutron_lab), nb_view(neutron_lab)) == before
        assert node.config()["switch"] == ""
    finally:
        lab_neutron.call(neutron_lab, lambda conn: conn.network.delete_router(edge))
