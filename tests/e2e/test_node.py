"""node-init, lswitch-setup/destroy and the kubelet verbs, through the CLI, on a fresh lab."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.control.base import NodeNetwork
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CniRuntime, Node
from ovn_underlay.lab.daemons import run
from ovn_underlay.lab.topology import Lab, LabState, vsctl
from tests.conftest import PodFactory, skip_unless_lab_possible

NB_TABLES = ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port")


@pytest.fixture(scope="module")
def fresh_lab(lab_rundir: Path) -> Iterator[LabState]:
    skip_unless_lab_possible()
    the_lab = Lab(f"n{os.getpid() % 10000}", lab_rundir)
    yield the_lab.up(2)
    the_lab.down()


def nb_dump(state: LabState) -> Any:
    return {table: json.loads(run(["ovsdb-client", "dump", "--format=json", state.nb,
                                   "OVN_Northbound", table]))
            for table in NB_TABLES}


def node_view(node: Node) -> dict[str, Any]:
    """The node's local state a failed command must leave as it was."""
    addrs = run(["ip", "-n", node.vm.netns, "-o", "-4", "addr"])
    config = vsctl(node.vm.ovsdb, "get", "Open_vSwitch", ".", "external_ids")
    bridges = vsctl(node.vm.ovsdb, "list-br")
    pool = Path(node.state_dir, "pool.db")
    return {"addrs": addrs, "config": config, "bridges": bridges,
            "pool": pool.exists() and node.cli("pool", "show").stdout}


def test_node_init_dry_run_changes_nothing_then_init_is_idempotent(
        fresh_lab: LabState) -> None:
    vm1, vm2 = (Node(fresh_lab, vm) for vm in fresh_lab.vms)
    before = node_view(vm1)
    dry = vm1.init("--dry-run")
    assert "would add eth1 to br-int as a VLAN trunk port" in dry.stdout
    assert "would move 198.18.0.11/24" in dry.stdout
    assert node_view(vm1) == before
    applied = vm1.init()
    assert "add eth1 to br-int" in applied.stdout
    again = vm1.init()
    assert again.stdout.strip() == "node already initialised: nothing to change"
    cfg = vm1.config()
    assert cfg["parent"] == "vm1" and cfg["datapath"] == "netdev" and cfg["uplink"] == "eth1"
    a = probe.Endpoint("vm1", vm1.vm.netns, vm1.vm.ip)
    b = probe.Endpoint("vm2", vm2.vm.netns, vm2.vm.ip)
    assert probe.ping(a.netns, b.ip) and probe.tcp(a.netns, b) and probe.tcp(b.netns, a)


def test_linux_bridge_uplink_is_refused_without_vlan_filtering(fresh_lab: LabState) -> None:
    vm2 = Node(fresh_lab, fresh_lab.vms[1])
    before = node_view(vm2)
    proc = vm2.init("--uplink-mode", "linux-bridge", "--dry-run", check=False)
    if proc.returncode == 0:
        pytest.skip("this kernel supports bridge vlan_filtering")
    assert "vlan_filtering" in proc.stderr and "--uplink-mode ovs" in proc.stderr
    assert node_view(vm2) == before


def test_node_init_without_a_parent_says_what_is_missing(fresh_lab: LabState) -> None:
    vm2 = Node(fresh_lab, fresh_lab.vms[1])
    proc = vm2.cli("node-init", "--nb", fresh_lab.nb, check=False)
    assert proc.returncode == 1 and "ovn-underlay:parent" in proc.stderr


@pytest.fixture(scope="module")
def node1(fresh_lab: LabState) -> Node:
    node = Node(fresh_lab, fresh_lab.vms[0])
    node.init()
    return node


SETUP_ERRORS = [
    ("subnet larger than the VLAN space", ["node1", "198.19.0.0/19", "cluster"], "VLAN"),
    ("bad subnet", ["node1", "198.19.1.7/24", "cluster"], "invalid subnet"),
    ("router missing", ["node1", "198.19.1.0/24", "nosuch", "--no-create-router"],
     "nosuch"),
]


@pytest.mark.parametrize(("case", "args", "says"), SETUP_ERRORS, ids=[c[0] for c in SETUP_ERRORS])
def test_lswitch_setup_errors_leave_nothing_behind(node1: Node, case: str, args: list[str],
                                                   says: str) -> None:
    nb_before, node_before = nb_dump(node1.state), node_view(node1)
    proc = node1.cli("lswitch-setup", *args, check=False)
    assert proc.returncode == 1, case
    assert says in proc.stderr, proc.stderr
    assert nb_dump(node1.state) == nb_before
    assert node_view(node1) == node_before


def test_lswitch_setup_with_an_unreachable_nb_fails_clearly(fresh_lab: LabState) -> None:
    node = Node(fresh_lab, fresh_lab.vms[1])
    node.init("--nb", "unix:/nonexistent/nb.sock", "--parent", "vm2")
    try:
        before = node_view(node)
        proc = node.cli("lswitch-setup", "node2", "198.19.2.0/24", "cluster", check=False)
        assert proc.returncode == 1 and "/nonexistent/nb.sock" in proc.stderr
        assert node_view(node) == before
    finally:
        node.init("--nb", fresh_lab.nb)


def test_overlapping_subnet_is_refused(fresh_lab: LabState, node1: Node) -> None:
    nb_before = nb_dump(fresh_lab)
    node1.setup_switch(pool_size=4)
    try:
        other = Node(fresh_lab, fresh_lab.vms[1])
        other.init("--nb", fresh_lab.nb)
        before = nb_dump(fresh_lab), node_view(other)
        proc = other.cli("lswitch-setup", "node2", "198.19.1.128/25", "cluster", check=False)
        assert proc.returncode == 1 and "node1" in proc.stderr, proc.stderr
        assert (nb_dump(fresh_lab), node_view(other)) == before
    finally:
        node1.cli("lswitch-destroy", node1.switch)
    assert nb_dump(fresh_lab) == nb_before


def test_lswitch_destroy_refuses_while_pods_hold_ports_and_leaves_nb_as_found(
        fresh_lab: LabState, node1: Node, pods: PodFactory) -> None:
    nb_before, node_before = nb_dump(fresh_lab), node_view(node1)
    setup = node1.setup_switch(pool_size=4)
    assert "4 pool ports" in setup.stdout
    assert node1.setup_switch(pool_size=4).returncode == 0, "setup again must be a no-op"
    path, cid, _ = pods.add(node1)
    refused = node1.cli("lswitch-destroy", node1.switch, check=False)
    assert refused.returncode == 1 and cid[:12] in refused.stderr
    forced = node1.cli("lswitch-destroy", node1.switch, "--force")
    assert f"detached {cid[:12]}/eth0" in forced.stdout
    assert nb_dump(fresh_lab) == nb_before
    view = node_view(node1)
    assert view["addrs"] == node_before["addrs"] and view["config"] == node_before["config"]
    assert "oul-mgmt" not in vsctl(node1.vm.ovsdb, "list-ports", "br-int")
    assert CniRuntime(node1).delete(cid, path).code == 0


def nb_part_of_setup(node: Node, pool_size: int) -> NodeNetwork:
    """What an lswitch-setup killed right after its NB transaction leaves: the NB rows only.

    The NB part is made as lswitch-setup makes it: the control plane's
    create_node_network with the node's settings; nothing is done on the node.
    """
    cfg = node.config()
    control = OvnNbControlPlane(cfg["nb"])
    try:
        return control.create_node_network(node.switch, node.subnet, CLUSTER_ROUTER,
                                           cfg["parent"], pool_size, cfg["mgmt_tag"],
                                           create_router=True,
                                           cluster_subnet=cfg["cluster_subnet"] or None)
    finally:
        control.close()


def nb_network(node: Node) -> NodeNetwork | None:
    cfg = node.config()
    control = OvnNbControlPlane(cfg["nb"])
    try:
        return control.get_node_network(node.switch)
    finally:
        control.close()


def test_lswitch_setup_killed_after_the_nb_part_heals_when_run_again(
        fresh_lab: LabState, node1: Node, pods: PodFactory) -> None:
    nb_before, node_before = nb_dump(fresh_lab), node_view(node1)
    planted = nb_part_of_setup(node1, pool_size=4)
    try:
        assert nb_dump(fresh_lab) != nb_before
        assert node_view(node1) == node_before, "the kill left nothing on the node"
        setup = node1.setup_switch(pool_size=4)
        assert "4 pool ports" in setup.stdout
        assert nb_network(node1) == planted, "the NB rows are found, not made again"
        assert sorted(p["lport"] for p in node1.pool()["ports"]) == sorted(
            p.name for p in planted.ports)
        cfg = node1.config()
        assert (cfg["switch"], cfg["gateway_ip"]) == (node1.switch, planted.gateway_ip)
        assert planted.mgmt is not None and cfg["mgmt_ip"] == planted.mgmt.ip
        assert "oul-mgmt" in vsctl(node1.vm.ovsdb, "list-ports", "br-int").split()
        path, _, result = pods.add(node1)
        pod = path.rsplit("/", 1)[1]
        assert probe.ping(pod, planted.gateway_ip)
        assert probe.tcp(pod, probe.Endpoint("node", node1.vm.netns, planted.mgmt.ip))
        assert result["ips"][0]["gateway"] == planted.gateway_ip
    finally:
        node1.cli("lswitch-destroy", node1.switch, "--force")
    assert nb_dump(fresh_lab) == nb_before


def test_lswitch_destroy_after_a_killed_setup_removes_the_nb_part(fresh_lab: LabState,
                                                                  node1: Node) -> None:
    nb_before, node_before = nb_dump(fresh_lab), node_view(node1)
    nb_part_of_setup(node1, pool_size=4)
    assert nb_dump(fresh_lab) != nb_before
    destroyed = node1.cli("lswitch-destroy", node1.switch)
    assert f"switch {node1.switch} destroyed" in destroyed.stdout
    assert nb_dump(fresh_lab) == nb_before
    view = node_view(node1)
    assert {key: view[key] for key in ("addrs", "config", "bridges")} == {
        key: node_before[key] for key in ("addrs", "config", "bridges")}
    assert node1.pool()["stats"]["total"] == 0


def test_kubelet_verbs_on_the_same_core(node1: Node, pods: PodFactory) -> None:
    refused = node1.cli("init", check=False)
    assert refused.returncode == 1 and "lswitch-setup" in refused.stderr
    node1.setup_switch(pool_size=4)
    try:
        assert node1.cli("init").returncode == 0
        path, cid = pods.netns(node1)
        node1.cli("setup", "default", "web", cid, "--netns", path)
        status = json.loads(node1.cli("status", "default", "web", cid).stdout)
        gateway = node1.config()["gateway_ip"]
        assert probe.ping(path.rsplit("/", 1)[1], gateway)
        mgmt = probe.Endpoint("node", node1.vm.netns, node1.config()["mgmt_ip"])
        assert probe.tcp(path.rsplit("/", 1)[1], mgmt)
        assert status["ip"].startswith("198.19.1.")
        node1.cli("teardown", "default", "web", cid)
        node1.cli("teardown", "default", "web", cid)
        gone = node1.cli("status", "default", "web", cid, check=False)
        assert gone.returncode == 1
        bad = node1.cli("setup", "default", "web", "../etc", "--netns", path, check=False)
        assert bad.returncode == 1 and "invalid container id" in bad.stderr
    finally:
        node1.cli("lswitch-destroy", node1.switch, "--force")


def test_kubelet_setup_finds_the_netns_through_the_engine_api(node1: Node) -> None:
    proc = node1.cli("setup", "default", "web", "abc", "--engine-socket",
                     "/nonexistent/engine.sock", check=False)
    assert proc.returncode == 1 and "/nonexistent/engine.sock" in proc.stderr
