"""OvnNbControlPlane against a real ovsdb-server holding an OVN Northbound database.

Every test starts from a "VM network": switch ``vmnet`` (10.0.0.0/24) with the
VMs' ports ``vm1`` and ``vm2``, attached to the pre-existing router ``edge``
which also has an external port on 172.16.0.0/24.  Results are checked with
``ovsdb-client`` (a client of its own), and "nothing written" by comparing
full database dumps.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl

from ovn_underlay.control.base import (
    ChildPort,
    Conflict,
    ControlPlaneError,
    ControlPlaneUnavailable,
    PortOwner,
)
from ovn_underlay.control.ovn_nb import OvnNbControlPlane, address_ips
from ovn_underlay.lab import daemons

SUBNET = "198.19.1.0/24"
Dump = dict[str, list[dict[str, Any]]]


# --- helpers ---------------------------------------------------------------------------

def ovsdb_value(value: Any) -> Any:
    """An OVSDB JSON value as Python: sets -> lists, maps -> dicts, uuids -> strings."""
    if isinstance(value, list):
        kind, data = value
        if kind == "set":
            return [ovsdb_value(v) for v in data]
        if kind == "map":
            return {ovsdb_value(k): ovsdb_value(v) for k, v in data}
        return data
    return value


def as_list(value: Any) -> list[Any]:
    """A set column's value as a list (OVSDB JSON writes a 1-element set bare)."""
    return value if isinstance(value, list) else [value]


def dump(remote: str) -> Dump:
    """Every row of every NB table, decoded and in a stable order."""
    out = subprocess.run(["ovsdb-client", "-f", "json", "dump", remote, "OVN_Northbound"],
                         capture_output=True, text=True, check=True).stdout
    tables: Dump = {}
    for line in out.splitlines():
        table = json.loads(line)
        rows = [{h: ovsdb_value(v) for h, v in zip(table["headings"], row, strict=True)}
                for row in table["data"]]
        tables[table["caption"]] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    return tables


def rows(remote: str, table: str) -> dict[str, dict[str, Any]]:
    """The rows of ``table`` by name."""
    return {r["name"]: r for r in dump(remote)[f"{table} table"]}


def by_uuid(remote: str, table: str) -> dict[str, dict[str, Any]]:
    return {r["_uuid"]: r for r in dump(remote)[f"{table} table"]}


def setup_vm_network(remote: str, extra: Callable[[Any], list[Any]] | None = None) -> None:
    """Create the VM network with plain ovsdbapp (plus ``extra(api)`` commands)."""

    class Api(impl_idl.OvnNbApiIdlImpl):  # type: ignore[misc]
        """ovsdbapp keeps one connection per API class: a class per server."""

    idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
    api = Api(connection.Connection(idl, 5))
    try:
        with api.transaction(check_error=True) as txn:
            txn.add(api.ls_add("vmnet", other_config={"subnet": "10.0.0.0/24"}))
            txn.add(api.lsp_add("vmnet", "vm1", addresses=["52:54:00:00:00:01 10.0.0.11"]))
            txn.add(api.lsp_add("vmnet", "vm2", addresses=["52:54:00:00:00:02 10.0.0.12"]))
            txn.add(api.lr_add("edge"))
            txn.add(api.lrp_add("edge", "edge-vmnet", "52:54:00:00:01:01", ["10.0.0.1/24"]))
            txn.add(api.lrp_add("edge", "edge-ext", "52:54:00:00:01:02", ["172.16.0.1/24"]))
            txn.add(api.lsp_add("vmnet", "vmnet-edge", type="router", addresses=["router"],
                                options={"router-port": "edge-vmnet"}))
            for command in extra(api) if extra else []:
                txn.add(command)
    finally:
        api.ovsdb_connection.stop()


@pytest.fixture
def nb(ovsdb_factory: Callable[[str, Path], str]) -> str:
    """A fresh NB server with the VM network (vmnet: vm1 10.0.0.11, vm2 10.0.0.12, router
    edge); its connection string."""
    remote = ovsdb_factory("nb", daemons.NB_SCHEMA)
    setup_vm_network(remote)
    return remote


@pytest.fixture
def cp(nb: str) -> Iterator[OvnNbControlPlane]:
    """An OvnNbControlPlane on ``nb`` (the requesting module's own, where it has one);
    closed afterwards."""
    plane = OvnNbControlPlane(nb, timeout=5)
    yield plane
    plane.close()


def assert_unchanged(remote: str, before: Dump, call: Callable[[], object],
                     error: type[Exception], match: str) -> None:
    """``call`` raises ``error`` matching ``match`` and the NB is exactly as before."""
    with pytest.raises(error, match=match):
        call()
    assert dump(remote) == before


# --- create ----------------------------------------------------------------------------

def test_create_node_network_writes_the_rows(nb: str, cp: OvnNbControlPlane) -> None:
    net = cp.create_node_network("node1", SUBNET, "edge", "vm1", 10,
                                 cluster_subnet="198.19.0.0/16")

    lrp = rows(nb, "Logical_Router_Port")["rtr-node1"]
    assert lrp["mac"] == "0a:58:c6:13:01:01"
    assert as_list(lrp["networks"]) == ["198.19.1.1/24"]
    assert lrp["external_ids"] == {"ovn-underlay:role": "gateway", "ovn-underlay:switch": "node1"}
    edge = rows(nb, "Logical_Router")["edge"]
    assert lrp["_uuid"] in as_list(edge["ports"])
    assert edge["external_ids"] == {}

    switch = rows(nb, "Logical_Switch")["node1"]
    assert switch["other_config"] == {"subnet": SUBNET, "exclude_ips": "198.19.1.1 198.19.1.2"}
    assert switch["external_ids"] == {
        "ovn-underlay:role": "node-switch", "ovn-underlay:subnet": SUBNET,
        "ovn-underlay:router": "edge", "ovn-underlay:parent": "vm1",
        "ovn-underlay:cluster-subnet": "198.19.0.0/16"}
    lsps = by_uuid(nb, "Logical_Switch_Port")
    ports = {lsps[u]["name"]: lsps[u] for u in as_list(switch["ports"])}
    assert len(ports) == 12

    stor = ports.pop("stor-node1")
    assert (stor["type"], stor["addresses"], stor["options"]) == (
        "router", "router", {"router-port": "rtr-node1"})

    mgmt = ports.pop("node1-mgmt")
    assert mgmt["addresses"] == mgmt["port_security"] == "0a:58:c6:13:01:02 198.19.1.2"
    assert (mgmt["parent_name"], mgmt["tag"], mgmt["tag_request"]) == ("vm1", 4094, 4094)
    assert mgmt["external_ids"]["ovn-underlay:role"] == "mgmt"

    tags, ips = set(), set()
    for name, port in ports.items():
        assert port["parent_name"] == "vm1"
        assert port["tag"] == port["tag_request"]
        assert name == f"node1-p{port['tag']}"
        assert port["addresses"] == port["port_security"]
        mac, ip = port["addresses"].split()
        assert mac == "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        assert port["external_ids"] == {"ovn-underlay:role": "pool",
                                        "ovn-underlay:switch": "node1"}
        tags.add(port["tag"])
        ips.add(ip)
    assert tags == set(range(1, 11))
    assert ips == {f"198.19.1.{i}" for i in range(3, 13)}

    assert net.gateway_ip == "198.19.1.1"
    assert net.gateway_mac == lrp["mac"]
    assert net.mgmt == ChildPort("node1-mgmt", "0a:58:c6:13:01:02", "198.19.1.2", 24,
                                 "198.19.1.1", 4094)
    assert [p.tag for p in net.ports] == list(range(1, 11))
    assert cp.get_node_network("node1") == net


def test_create_makes_the_router_when_missing(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "pods", "vm1", 2)
    pods = rows(nb, "Logical_Router")["pods"]
    assert pods["external_ids"] == {"ovn-underlay:role": "router"}
    assert len(as_list(pods["ports"])) == 1


def test_create_is_idempotent(nb: str, cp: OvnNbControlPlane) -> None:
    net = cp.create_node_network("node1", SUBNET, "edge", "vm1", 10)
    before = dump(nb)
    assert cp.create_node_network("node1", SUBNET, "edge", "vm1", 10) == net
    assert dump(nb) == before


def test_create_again_with_other_settings_conflicts(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 10)
    before = dump(nb)
    assert_unchanged(nb, before,
                     lambda: cp.create_node_network("node1", "198.19.2.0/24", "edge", "vm1", 10),
                     Conflict, r"subnet 198.19.1.0/24 \(not 198.19.2.0/24\)")
    assert_unchanged(nb, before,
                     lambda: cp.create_node_network("node1", SUBNET, "edge", "vm2", 10),
                     Conflict, r"parent vm1 \(not vm2\)")


def test_create_over_a_foreign_switch_conflicts(nb: str, cp: OvnNbControlPlane) -> None:
    assert_unchanged(nb, dump(nb),
                     lambda: cp.create_node_network("vmnet", SUBNET, "edge", "vm1", 1),
                     Conflict, "vmnet already exists and was not created by ovn-underlay")


@pytest.mark.parametrize(("switch", "router", "match"), [
    ("node1", "node1", "router 'node1' has the name of the switch being created"),
    ("node1", "vmnet", "router 'vmnet' has the name of an existing logical switch"),
    ("edge", "pods", "switch 'edge' has the name of an existing logical router"),
])
def test_a_router_and_a_switch_of_one_name_are_refused_before_anything_is_made(
        nb: str, cp: OvnNbControlPlane, switch: str, router: str, match: str) -> None:
    assert_unchanged(nb, dump(nb),
                     lambda: cp.create_node_network(switch, SUBNET, router, "vm1", 2),
                     Conflict, match + ": a router and a switch must not share a name")


@pytest.mark.parametrize(("subnet", "names"), [
    ("10.0.0.128/25", "logical switch vmnet"),
    ("198.19.0.0/16", "logical switch node1"),
    ("172.16.0.0/25", "router port edge-ext of router edge"),
])
def test_overlapping_subnet_conflicts(nb: str, cp: OvnNbControlPlane, subnet: str,
                                      names: str) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 2)
    assert_unchanged(nb, dump(nb),
                     lambda: cp.create_node_network("node2", subnet, "edge", "vm2", 2),
                     Conflict, f"overlaps .* of {names}")


def test_missing_parent_writes_nothing(nb: str, cp: OvnNbControlPlane) -> None:
    assert_unchanged(nb, dump(nb),
                     lambda: cp.create_node_network("node1", SUBNET, "pods", "nope", 2),
                     ControlPlaneError, "parent port nope not found")


def test_missing_router_without_create_router_writes_nothing(nb: str,
                                                             cp: OvnNbControlPlane) -> None:
    assert_unchanged(nb, dump(nb),
                     lambda: cp.create_node_network("node1", SUBNET, "pods", "vm1", 2,
                                                    create_router=False),
                     ControlPlaneError, "router pods does not exist")


def test_oversize_pool_names_the_limits(nb: str, cp: OvnNbControlPlane) -> None:
    before = dump(nb)
    assert_unchanged(nb, before,
                     lambda: cp.create_node_network("node1", SUBNET, "pods", "vm1", 253),
                     ControlPlaneError, "252 free host addresses and the parent port has "
                                        "4093 free VLAN tags")
    assert_unchanged(nb, before,
                     lambda: cp.create_node_network("node1", "198.19.0.0/19", "pods", "vm1",
                                                    4094),
                     ControlPlaneError, "4093 free VLAN tags .* at most 4093")


def test_subnet_larger_than_the_vlan_space(nb: str, cp: OvnNbControlPlane) -> None:
    net = cp.create_node_network("node1", "198.19.0.0/19", "pods", "vm1", 20, mgmt_tag=None)
    assert net.mgmt is None
    assert [p.ip for p in net.ports[:2]] == ["198.19.0.2", "198.19.0.3"]


def test_tags_used_by_other_children_of_the_parent_are_skipped(
        ovsdb_factory: Callable[[str, Path], str]) -> None:
    remote = ovsdb_factory("nb", daemons.NB_SCHEMA)
    setup_vm_network(remote, lambda api: [
        api.lsp_add("vmnet", "other-a", parent_name="vm1", tag=2),
        api.lsp_add("vmnet", "other-b", parent_name="vm2", tag=4094)])
    plane = OvnNbControlPlane(remote, timeout=5)
    try:
        net = plane.create_node_network("node1", SUBNET, "edge", "vm1", 3)
        assert [p.tag for p in net.ports] == [1, 3, 4]
        assert_unchanged(remote, dump(remote),
                         lambda: plane.create_node_network("node2", "198.19.2.0/24", "edge",
                                                           "vm2", 3),
                         Conflict, "management VLAN tag 4094 is already used on parent port "
                                   "vm2 by port other-b")
        assert plane.create_node_network("node2", "198.19.2.0/24", "edge", "vm2", 1,
                                         mgmt_tag=100).mgmt is not None
    finally:
        plane.close()


def test_create_250_ports_is_fast(nb: str, cp: OvnNbControlPlane) -> None:
    start = time.perf_counter()
    net = cp.create_node_network("node1", SUBNET, "edge", "vm1", 250)
    elapsed = time.perf_counter() - start
    print(f"create_node_network with 250 ports: {elapsed * 1000:.0f} ms")
    assert len(net.ports) == 250
    assert elapsed < 2.0


def test_two_instances_on_two_servers_stay_apart(
        nb: str, cp: OvnNbControlPlane, ovsdb_factory: Callable[[str, Path], str]) -> None:
    other = ovsdb_factory("nb2", daemons.NB_SCHEMA)
    setup_vm_network(other)
    plane = OvnNbControlPlane(other, timeout=5)
    try:
        plane.create_node_network("node9", SUBNET, "edge", "vm1", 1)
        assert "node9" in rows(other, "Logical_Switch")
        assert "node9" not in rows(nb, "Logical_Switch")
        assert cp.get_node_network("node9") is None
    finally:
        plane.close()


# --- connection ------------------------------------------------------------------------

def test_unreachable_nb_fails_fast(tmp_path: Path) -> None:
    remote = f"unix:{tmp_path / 'nobody.sock'}"
    start = time.perf_counter()
    with pytest.raises(ControlPlaneUnavailable, match=re.escape(str(tmp_path / "nobody.sock"))):
        OvnNbControlPlane(remote, timeout=5)
    assert time.perf_counter() - start < 1.0


def test_silent_nb_times_out(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        start = time.perf_counter()
        with pytest.raises(ControlPlaneUnavailable, match=re.escape(str(path))):
            OvnNbControlPlane(f"unix:{path}", timeout=0.5)
        assert 0.4 < time.perf_counter() - start < 1.5


def test_stopped_nb_is_unavailable(nb: str) -> None:
    plane = OvnNbControlPlane(nb, timeout=1)
    try:
        pid = daemons.read_live_pid(Path(nb.removeprefix("unix:")).with_name("nb.pid"))
        assert pid is not None
        daemons.stop_pid(pid)
        with pytest.raises(ControlPlaneUnavailable, match=re.escape(nb.removeprefix("unix:"))):
            plane.create_node_network("node1", SUBNET, "edge", "vm1", 2)
    finally:
        plane.close()


# --- pool ------------------------------------------------------------------------------

def test_add_pool_ports_continues_numbering(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 10)
    added = cp.add_pool_ports("node1", 5)
    assert [(p.name, p.ip, p.tag) for p in added] == [
        (f"node1-p{t}", f"198.19.1.{t + 2}", t) for t in range(11, 16)]
    lsps = rows(nb, "Logical_Switch_Port")
    assert lsps["node1-p15"]["parent_name"] == "vm1"
    assert lsps["node1-p15"]["tag"] == 15
    assert lsps["node1-p15"]["port_security"] == f"{added[-1].mac} 198.19.1.17"
    net = cp.get_node_network("node1")
    assert net is not None
    assert len(net.ports) == 15


def test_freed_pool_slots_are_reused(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 10)
    cp.delete_pool_ports("node1", ["node1-p3", "node1-p7", "not-there"])
    lsps = rows(nb, "Logical_Switch_Port")
    assert "node1-p3" not in lsps
    assert "node1-p7" not in lsps
    assert len(as_list(rows(nb, "Logical_Switch")["node1"]["ports"])) == 10
    again = cp.add_pool_ports("node1", 2)
    assert [(p.tag, p.ip) for p in again] == [(3, "198.19.1.5"), (7, "198.19.1.9")]


def test_delete_pool_ports_refuses_other_ports(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 2)
    assert_unchanged(nb, dump(nb),
                     lambda: cp.delete_pool_ports("node1", ["node1-p1", "node1-mgmt"]),
                     ControlPlaneError, "not deleting node1-mgmt")
    cp.delete_pool_ports("absent", ["x"])


def test_add_pool_ports_beyond_the_subnet(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", "198.19.1.0/29", "edge", "vm1", 3)
    assert_unchanged(nb, dump(nb), lambda: cp.add_pool_ports("node1", 2),
                     ControlPlaneError, "1 free host addresses")
    with pytest.raises(ControlPlaneError, match="no node network absent"):
        cp.add_pool_ports("absent", 1)


# --- destroy ---------------------------------------------------------------------------

def without_nb_global(tables: Dump) -> Dump:
    """Every table but NB_Global (where the routers-created counter stays)."""
    return {name: table for name, table in tables.items() if name != "NB_Global table"}


def test_destroy_restores_the_nb_exactly(nb: str, cp: OvnNbControlPlane) -> None:
    before = dump(nb)
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 10)
    cp.create_node_network("node2", "198.19.2.0/24", "pods", "vm2", 10)
    cp.create_node_network("node3", "198.19.3.0/24", "pods", "vm2", 10, mgmt_tag=4000)
    cp.add_pool_ports("node1", 3)
    cp.record_owners({"node1-p1": PortOwner("default", "web-0", "c0ffee")})

    cp.destroy_node_network("node1")
    cp.destroy_node_network("node2")
    assert "pods" in rows(nb, "Logical_Router"), "router still used by node3"
    cp.destroy_node_network("node3")
    after = dump(nb)
    assert [r["external_ids"] for r in after["NB_Global table"]] == [
        {"ovn-underlay:routers-created": "1"}]
    assert without_nb_global(after) == without_nb_global(before)
    cp.destroy_node_network("node3")
    assert dump(nb) == after


def test_destroy_refuses_a_foreign_switch(nb: str, cp: OvnNbControlPlane) -> None:
    assert_unchanged(nb, dump(nb), lambda: cp.destroy_node_network("vmnet"),
                     Conflict, "vmnet was not created by ovn-underlay")


def test_get_node_network(nb: str, cp: OvnNbControlPlane) -> None:
    assert cp.get_node_network("absent") is None
    with pytest.raises(Conflict, match="vmnet was not created by ovn-underlay"):
        cp.get_node_network("vmnet")


# --- owner -----------------------------------------------------------------------------

def test_port_owners_set_and_clear(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 3)
    web0 = PortOwner("default", "web-0", "c0ffee")
    assert cp.record_owners({"node1-p1": web0, "node1-p2": web0}) == []
    unchanged = dump(nb)
    assert cp.record_owners({"node1-p1": web0}) == []
    assert dump(nb) == unchanged
    ids = rows(nb, "Logical_Switch_Port")["node1-p1"]["external_ids"]
    assert ids == {"ovn-underlay:role": "pool", "ovn-underlay:switch": "node1",
                   "ovn-underlay:pod-namespace": "default", "ovn-underlay:pod-name": "web-0",
                   "ovn-underlay:container-id": "c0ffee"}
    cp.record_owners({"node1-p1": PortOwner("default", "web-1", "beef"), "node1-p2": None,
                      "node1-p3": None, "absent": None})
    ports = rows(nb, "Logical_Switch_Port")
    ids = ports["node1-p1"]["external_ids"]
    assert (ids["ovn-underlay:pod-name"], ids["ovn-underlay:container-id"]) == ("web-1", "beef")
    for name in ("node1-p2", "node1-p3"):
        assert ports[name]["external_ids"] == {"ovn-underlay:role": "pool",
                                               "ovn-underlay:switch": "node1"}


def test_port_owners_skip_unknown_and_foreign_ports(nb: str, cp: OvnNbControlPlane) -> None:
    cp.create_node_network("node1", SUBNET, "edge", "vm1", 1)
    owner = PortOwner("ns", "pod", "cid")
    before = dump(nb)
    assert cp.record_owners({"absent": owner, "vm1": owner, "vm1-gone": None}) == [
        "absent", "vm1"]
    assert dump(nb) == before
    assert cp.record_owners({"absent": owner, "node1-p1": owner}) == ["absent"]
    assert rows(nb, "Logical_Switch_Port")["node1-p1"]["external_ids"][
        "ovn-underlay:pod-name"] == "pod"


# --- pure helpers of the backend -------------------------------------------------------

def test_address_ips() -> None:
    assert address_ips(["router", "unknown", "0a:58:c6:13:01:03 198.19.1.3",
                        "0a:58:c6:13:01:04 198.19.1.4/24 fd00::4"]) == {"198.19.1.3",
                                                                        "198.19.1.4"}
