"""What the cluster controller needs of OvnNbControlPlane, against a real NB ovsdb-server.

The VM network of test_ovn_nb (switch ``vmnet`` with ports ``vm1`` 10.0.0.11 and ``vm2``
10.0.0.12, router ``edge``) is the starting point.  Races are made deterministic by
running the competing client's whole request from inside a transaction of the other,
after that transaction read its replica and before it reached the server.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.control.base import Conflict, ControlPlaneError, Fenced
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.lab import daemons
from tests.functional.test_ovn_nb import (
    SUBNET,
    as_list,
    by_uuid,
    dump,
    nb,
    rows,
    setup_vm_network,
)
from tests.waiting import eventually

__all__ = ["nb"]
EPOCH = "ovn-underlay:leader-epoch"


@pytest.fixture
def planes(nb: str) -> Iterator[Callable[[], OvnNbControlPlane]]:
    """A factory of connections to ``nb``, all closed afterwards."""
    made: list[OvnNbControlPlane] = []

    def connect() -> OvnNbControlPlane:
        made.append(OvnNbControlPlane(nb, timeout=5))
        return made[-1]

    yield connect
    for plane in made:
        plane.close()


def nb_global(remote: str) -> dict[str, str]:
    """NB_Global's external_ids ({} when there is no row)."""
    table = dump(remote)["NB_Global table"]
    assert len(table) <= 1
    return table[0]["external_ids"] if table else {}


def interleave(plane: OvnNbControlPlane, method: str, competitor: Callable[[], object]
               ) -> list[int]:
    """Make ``plane``'s next ``_api.<method>`` command run ``competitor`` first, once.

    The command runs in ``plane``'s connection thread, after the commands before it
    read the replica and before the transaction is sent, and the replica cannot
    take in the competitor's changes meanwhile.  Returns a list that counts the
    command's runs (a refused transaction is run again).
    """
    api = plane._api
    make = getattr(api, method)
    runs: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        inner = make(*args, **kwargs)
        original = inner.run_idl

        def run_idl(txn: Any) -> None:
            if not runs:
                competitor()
            runs.append(1)
            original(txn)

        inner.run_idl = run_idl
        return inner

    setattr(api, method, wrapped)
    return runs


# --- ensure_router ---------------------------------------------------------------------

def test_ensure_router_creates_it_once(nb: str, planes: Callable[[], OvnNbControlPlane]
                                       ) -> None:
    cp = planes()
    cp.ensure_router("cluster")
    router = rows(nb, "Logical_Router")["cluster"]
    assert router["external_ids"] == {"ovn-underlay:role": "cluster-router"}
    assert as_list(router["ports"]) == []
    assert nb_global(nb) == {"ovn-underlay:routers-created": "1"}
    before = dump(nb)
    cp.ensure_router("cluster")
    cp.ensure_router("edge")
    assert dump(nb) == before


def test_ensure_router_refuses_duplicates_and_switch_names(
        ovsdb_factory: Callable[[str, Path], str]) -> None:
    remote = ovsdb_factory("nb", daemons.NB_SCHEMA)
    setup_vm_network(remote, lambda api: [api.lr_add("dup"), api.lr_add("dup")])
    cp = OvnNbControlPlane(remote, timeout=5)
    try:
        before = dump(remote)
        with pytest.raises(Conflict, match="2 logical routers are named 'dup'"):
            cp.ensure_router("dup")
        with pytest.raises(Conflict, match="2 logical routers are named 'dup'"):
            cp.create_node_network("node1", SUBNET, "dup", "vm1", 2, create_router=False)
        with pytest.raises(Conflict, match="router 'vmnet' has the name of an existing "
                                           "logical switch"):
            cp.ensure_router("vmnet")
        with pytest.raises(ControlPlaneError, match="must not be empty"):
            cp.ensure_router("")
        assert dump(remote) == before
    finally:
        cp.close()


@pytest.mark.parametrize("initialized", [True, False], ids=["NB_Global", "no-NB_Global"])
def test_racing_ensure_router_makes_one_router(
        nb: str, planes: Callable[[], OvnNbControlPlane], initialized: bool) -> None:
    if initialized:
        subprocess.run(["ovn-nbctl", f"--db={nb}", "init"], check=True)
    a, b = planes(), planes()
    runs = interleave(b, "lr_add", lambda: a.ensure_router("cluster"))
    b.ensure_router("cluster")
    assert len(runs) == 2, "b's first transaction was refused and run again"
    routers = [r for r in dump(nb)["Logical_Router table"] if r["name"] == "cluster"]
    assert len(routers) == 1
    assert nb_global(nb) == {"ovn-underlay:routers-created": "2"}


def test_racing_node_setups_share_one_new_router(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    a, b = planes(), planes()
    interleave(b, "lr_add", lambda: a.create_node_network("node1", SUBNET, "pods", "vm1", 2))
    b.create_node_network("node2", "198.19.2.0/24", "pods", "vm2", 2)
    routers = [r for r in dump(nb)["Logical_Router table"] if r["name"] == "pods"]
    assert len(routers) == 1
    ports = {p["name"] for p in dump(nb)["Logical_Router_Port table"]
             if p["_uuid"] in as_list(routers[0]["ports"])}
    assert ports == {"rtr-node1", "rtr-node2"}


def test_node_networks_attach_to_the_cluster_router_which_stays(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    cp = planes()
    cp.ensure_router("cluster")
    cp.create_node_network("node1", SUBNET, "cluster", "vm1", 2, create_router=False)
    router = rows(nb, "Logical_Router")["cluster"]
    assert [rows(nb, "Logical_Router_Port")["rtr-node1"]["_uuid"]] == as_list(router["ports"])
    cp.destroy_node_network("node1")
    assert as_list(rows(nb, "Logical_Router")["cluster"]["ports"]) == []


# --- port_holding, node_switches, port_exists ------------------------------------------

def test_port_holding_finds_the_one_vm_port(ovsdb_factory: Callable[[str, Path], str]) -> None:
    remote = ovsdb_factory("nb", daemons.NB_SCHEMA)
    setup_vm_network(remote, lambda api: [
        api.lsp_add("vmnet", "vm3", addresses=["dynamic"],
                    dynamic_addresses="52:54:00:00:00:03 10.0.0.13"),
        api.lsp_add("vmnet", "twin-a", addresses=["52:54:00:00:00:04 10.0.0.14"]),
        api.lsp_add("vmnet", "twin-b", addresses=["52:54:00:00:00:05 10.0.0.14"]),
        api.lsp_add("vmnet", "kid", parent_name="vm1", tag=7,
                    addresses=["52:54:00:00:00:06 10.0.0.15"]),
        api.lsp_add("vmnet", "uplink", type="localnet", addresses=["52:54:00:00:00:07 "
                                                                   "10.0.0.16"])])
    cp = OvnNbControlPlane(remote, timeout=5)
    try:
        cp.create_node_network("node1", SUBNET, "edge", "vm1", 2)
        assert cp.port_holding("10.0.0.11") == "vm1"
        assert cp.port_holding("10.0.0.12") == "vm2"
        assert cp.port_holding("10.0.0.13") == "vm3"
        assert cp.port_holding("10.0.0.14") is None, "two ports hold it"
        assert cp.port_holding("10.0.0.15") is None, "a child port is no VM's port"
        assert cp.port_holding("10.0.0.16") is None, "a localnet port is no VM's port"
        assert cp.port_holding("198.19.1.2") is None, "our management port"
        assert cp.port_holding("198.19.1.3") is None, "our pool port"
        assert cp.port_holding("10.9.9.9") is None
        with pytest.raises(ControlPlaneError, match="invalid IPv4 address 'vm1'"):
            cp.port_holding("vm1")
    finally:
        cp.close()


def test_node_switches_and_port_exists(nb: str, planes: Callable[[], OvnNbControlPlane]
                                       ) -> None:
    cp = planes()
    assert cp.node_switches() == []
    cp.create_node_network("node2", "198.19.2.0/24", "edge", "vm2", 1)
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 1)
    assert cp.node_switches() == ["node1", "node2"]
    assert cp.port_exists("vm1")
    assert cp.port_exists("node1-p1")
    assert not cp.port_exists("nope")
    cp.destroy_node_network("node2")
    assert cp.node_switches() == ["node1"]


def test_destroy_after_the_vm_port_is_gone(nb: str, planes: Callable[[], OvnNbControlPlane]
                                           ) -> None:
    cp = planes()
    cp.ensure_router("cluster")
    before = dump(nb)
    cp.create_node_network("node1", SUBNET, "cluster", "vm1", 3, create_router=False)
    cp.create_node_network("node2", "198.19.2.0/24", "cluster", "vm2", 3,
                           create_router=False)
    subprocess.run(["ovn-nbctl", f"--db={nb}", "lsp-del", "vm1"], check=True)
    eventually(lambda: not cp.port_exists("vm1"))
    cp.destroy_node_network("node1")
    cp.destroy_node_network("node2")
    after = dump(nb)
    assert not any(p["name"].startswith(("node1", "node2", "stor-node"))
                   for p in after["Logical_Switch_Port table"])
    assert after["Logical_Router_Port table"] == before["Logical_Router_Port table"]
    assert {s["name"] for s in after["Logical_Switch table"]} == {"vmnet"}
    assert cp.node_switches() == []


# --- fence -----------------------------------------------------------------------------

def test_fencing_deposes_the_older_leader(nb: str, planes: Callable[[], OvnNbControlPlane]
                                          ) -> None:
    a, b, standalone = planes(), planes(), planes()
    a.fence(1)
    assert nb_global(nb)[EPOCH] == "1"
    a.ensure_router("cluster")
    a.create_node_network("node1", SUBNET, "cluster", "vm1", 2, create_router=False)

    b.fence(2)
    assert nb_global(nb)[EPOCH] == "2"
    before = dump(nb)
    with pytest.raises(Fenced, match="holds leader epoch 2, this writer's is 1"):
        a.add_pool_ports("node1", 1)
    with pytest.raises(Fenced):
        a.destroy_node_network("node1")
    assert dump(nb) == before

    b.add_pool_ports("node1", 1)
    assert "node1-p3" in rows(nb, "Logical_Switch_Port")
    with pytest.raises(Fenced, match="holds leader epoch 2, this writer's is 1"):
        a.fence(1)
    with pytest.raises(Fenced):
        b.fence(1)
    b.add_pool_ports("node1", 1)
    eventually(lambda: standalone.port_exists("node1-p4"))
    standalone.add_pool_ports("node1", 1)
    assert {"node1-p4", "node1-p5"} <= set(rows(nb, "Logical_Switch_Port"))
    assert nb_global(nb) == {EPOCH: "2", "ovn-underlay:routers-created": "1"}


def test_a_deposed_transaction_in_flight_is_refused_by_the_server(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    a, b = planes(), planes()
    a.fence(1)
    a.create_node_network("node1", SUBNET, "edge", "vm1", 1)
    before: list[Any] = []

    def successor() -> None:
        b.fence(2)
        before.append(dump(nb))

    runs = interleave(a, "lsp_add", successor)
    with pytest.raises(Fenced, match="holds leader epoch 2, this writer's is 1"):
        a.add_pool_ports("node1", 1)
    assert len(runs) == 1, "the second run stopped at the epoch check"
    assert dump(nb) == before[0]


def test_fence_again_and_higher(nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    cp = planes()
    cp.fence(3)
    cp.fence(3)
    cp.fence(5)
    assert nb_global(nb)[EPOCH] == "5"
    cp.ensure_router("cluster")
    assert "cluster" in rows(nb, "Logical_Router")


def test_another_key_changed_meanwhile_only_reruns_the_transaction(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    cp = planes()
    cp.fence(1)
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 1)
    runs = interleave(cp, "lsp_add", lambda: subprocess.run(
        ["ovn-nbctl", f"--db={nb}", "set", "NB_Global", ".",
         "external_ids:neutron\\:liveness_check_at=now"], check=True))
    cp.add_pool_ports("node1", 1)
    assert len(runs) == 2, "refused once (the column changed), then committed"
    assert "node1-p2" in rows(nb, "Logical_Switch_Port")
    assert nb_global(nb) == {EPOCH: "1", "neutron:liveness_check_at": "now"}


def test_a_replaced_nb_global_fences_and_a_garbled_epoch_is_refused(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    cp, other = planes(), planes()
    cp.fence(1)
    subprocess.run(["ovn-nbctl", f"--db={nb}", "destroy", "NB_Global", "."], check=True)
    subprocess.run(["ovn-nbctl", f"--db={nb}", "init"], check=True)
    with pytest.raises(Fenced, match="holds no leader epoch, this writer's is 1"):
        cp.ensure_router("cluster")
    subprocess.run(["ovn-nbctl", f"--db={nb}", "set", "NB_Global", ".",
                    f"external_ids:{EPOCH.replace(':', chr(92) + ':')}=two"], check=True)
    with pytest.raises(ControlPlaneError, match="leader-epoch='two' is not an integer"):
        other.fence(3)
    assert nb_global(nb) == {EPOCH: "two"}


def policies(remote: str) -> dict[str, tuple[int, str, str, dict[str, str]]]:
    """The cluster router's policies by uuid: (priority, match, action, external_ids)."""
    router = rows(remote, "Logical_Router")["cluster"]
    found = by_uuid(remote, "Logical_Router_Policy")
    assert set(found) == set(as_list(router["policies"]))  # none left dangling
    return {u: (p["priority"], p["match"], p["action"], p["external_ids"])
            for u, p in found.items()}


def test_the_router_drops_the_service_range_and_only_our_policy_changes(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    cp = planes()
    cp.ensure_router("cluster")
    subprocess.run(["ovn-nbctl", f"--db={nb}", "lr-policy-add", "cluster", "30000",
                    "ip4.dst == 10.0.0.0/8", "allow"], check=True, capture_output=True)
    (theirs,) = policies(nb).values()
    ours = {"ovn-underlay:role": "service-range", "ovn-underlay:router": "cluster"}

    assert cp.ensure_service_range_dropped("cluster", "10.96.0.0/12")
    assert sorted(policies(nb).values()) == sorted(
        [theirs, (30000, "ip4.dst == 10.96.0.0/12", "drop", ours)])
    before = dump(nb)
    assert not cp.ensure_service_range_dropped("cluster", "10.96.0.0/12")
    assert dump(nb) == before

    assert cp.ensure_service_range_dropped("cluster", "10.100.0.0/16")
    assert sorted(policies(nb).values()) == sorted(
        [theirs, (30000, "ip4.dst == 10.100.0.0/16", "drop", ours)])
    assert cp.ensure_service_range_dropped("cluster", "")
    assert list(policies(nb).values()) == [theirs]
    assert not cp.ensure_service_range_dropped("cluster", "")


def test_dropping_the_service_range_needs_one_router_and_the_leader(
        nb: str, planes: Callable[[], OvnNbControlPlane]) -> None:
    a, b = planes(), planes()
    with pytest.raises(ControlPlaneError, match="0 logical routers are named cluster"):
        a.ensure_service_range_dropped("cluster", "10.96.0.0/12")
    a.fence(1)
    a.ensure_router("cluster")
    b.fence(2)
    before = dump(nb)
    with pytest.raises(Fenced):
        a.ensure_service_range_dropped("cluster", "10.96.0.0/12")
    assert dump(nb) == before
