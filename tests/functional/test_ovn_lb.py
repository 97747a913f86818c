"""OvnLoadBalancers against a real ovsdb-server holding an OVN Northbound database.

Every test starts from two node switches ``sw-a`` and ``sw-b`` (nodes ``a`` and ``b``),
a switch ``other`` that is never given, and a load balancer ``foreign`` made with
ovn-nbctl on ``other``: rows that are not ours and must stay as they are.  Results are
read with ``ovsdb-client``; "nothing written" is a full database dump compared.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.control.base import Fenced
from ovn_underlay.control.ovn_lb import GROUP, OvnLoadBalancers
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.control.services import Endpoint, ServicePort, ServiceState, SyncResult
from ovn_underlay.lab import daemons
from ovn_underlay.lab.cluster import Node, pod_ip
from ovn_underlay.lab.daemons import netns_argv
from ovn_underlay.lab.topology import LabState
from tests.conftest import PodFactory
from tests.functional.test_ovn_nb import as_list, dump

SWITCHES = {"a": "sw-a", "b": "sw-b"}
LB = "Load_Balancer table"


def nbctl(remote: str, *args: str) -> str:
    return subprocess.run(["ovn-nbctl", f"--db={remote}", *args], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture
def nb(ovsdb_factory: Callable[[str, Path], str]) -> str:
    remote = ovsdb_factory("nb", daemons.NB_SCHEMA)
    for switch in ("sw-a", "sw-b", "other"):
        nbctl(remote, "ls-add", switch)
    nbctl(remote, "lb-add", "foreign", "10.96.9.9:80", "10.1.0.9:8080", "tcp")
    nbctl(remote, "ls-lb-add", "other", "foreign")
    return remote


@pytest.fixture
def plane(nb: str) -> Iterator[OvnNbControlPlane]:
    cp = OvnNbControlPlane(nb, timeout=5)
    yield cp
    cp.close()


@pytest.fixture
def lbs(plane: OvnNbControlPlane) -> OvnLoadBalancers:
    return OvnLoadBalancers(plane)


def ep(ip: str, port: int, node: str = "a") -> Endpoint:
    return Endpoint(ip, port, node)


def svc(name: str, ip: str, *ports: ServicePort, **kw: Any) -> ServiceState:
    return ServiceState("ns", name, (ip,), ports, **kw)


WEB = svc("web", "10.96.0.10",
          ServicePort("tcp", 80, "http", (ep("10.1.0.5", 8080), ep("10.1.1.5", 8081, "b"))),
          ServicePort("tcp", 443, "https", (ep("10.1.0.5", 8443),)),
          ServicePort("udp", 53, "dns", (ep("10.1.0.5", 5353),)))


def lb_rows(remote: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in dump(remote)[LB]}


def named(remote: str, table: str, name: str) -> dict[str, Any]:
    return next(r for r in dump(remote)[f"{table} table"] if r["name"] == name)


def not_ours(remote: str) -> dict[str, Any]:
    """The foreign LB and the switch ``other``: what must never change."""
    return {"lb": lb_rows(remote)["foreign"], "other": named(remote, "Logical_Switch", "other")}


def fresh_sync(remote: str, *services: ServiceState,
               switches: dict[str, str] = SWITCHES) -> SyncResult:
    """A complete sync through a new connection, whose replica holds every write made
    before it (the fixture's replica may lag behind ovn-nbctl's writes)."""
    plane = OvnNbControlPlane(remote, timeout=5)
    try:
        return OvnLoadBalancers(plane).sync(services, switches, complete=True)
    finally:
        plane.close()


# --- rows ------------------------------------------------------------------------------

def test_one_row_per_service_and_protocol_in_the_group(nb: str, lbs: OvnLoadBalancers) -> None:
    before = not_ours(nb)
    result = lbs.sync([WEB], SWITCHES, complete=True)
    assert (result.created, result.updated, result.deleted) == (2, 0, 0)

    rows = lb_rows(nb)
    tcp, udp = rows["Service_ns/web_tcp"], rows["Service_ns/web_udp"]
    assert tcp["vips"] == {"10.96.0.10:80": "10.1.0.5:8080,10.1.1.5:8081",
                           "10.96.0.10:443": "10.1.0.5:8443"}
    assert udp["vips"] == {"10.96.0.10:53": "10.1.0.5:5353"}
    assert (tcp["protocol"], udp["protocol"]) == ("tcp", "udp")
    for row in (tcp, udp):
        assert row["external_ids"] == {"ovn-underlay:role": "service",
                                       "ovn-underlay:service": "ns/web"}
        assert as_list(row["selection_fields"]) == []
    assert tcp["options"] == {"reject": "true"}  # established connections drain
    assert udp["options"] == {"ct_flush": "true", "reject": "true"}
    group = named(nb, "Load_Balancer_Group", GROUP)
    assert sorted(as_list(group["load_balancer"])) == sorted([tcp["_uuid"], udp["_uuid"]])
    for switch in SWITCHES.values():
        sw = named(nb, "Logical_Switch", switch)
        assert as_list(sw["load_balancer_group"]) == [group["_uuid"]]
        assert as_list(sw["load_balancer"]) == []
    assert not_ours(nb) == before


def test_sctp_rows_and_several_cluster_ips(nb: str, lbs: OvnLoadBalancers) -> None:
    service = ServiceState("ns", "sig", ("10.96.0.20", "10.96.0.21"),
                           (ServicePort("sctp", 3868, "", (ep("10.1.0.7", 3868),)),))
    lbs.sync([service], SWITCHES, complete=False)
    row = lb_rows(nb)["Service_ns/sig_sctp"]
    assert row["protocol"] == "sctp"
    assert row["vips"] == {"10.96.0.20:3868": "10.1.0.7:3868",
                           "10.96.0.21:3868": "10.1.0.7:3868"}


def test_a_vip_without_endpoints_rejects(nb: str, lbs: OvnLoadBalancers) -> None:
    lbs.sync([svc("empty", "10.96.0.30", ServicePort("tcp", 80))], SWITCHES, complete=False)
    row = lb_rows(nb)["Service_ns/empty_tcp"]
    assert row["vips"] == {"10.96.0.30:80": ""}
    assert row["options"]["reject"] == "true"


def test_local_traffic_policy_makes_one_row_per_node(nb: str, lbs: OvnLoadBalancers) -> None:
    local = svc("loc", "10.96.0.40",
                ServicePort("tcp", 80, "", (ep("10.1.0.8", 80), ep("10.1.0.9", 80))),
                local_only=True)
    lbs.sync([local], SWITCHES, complete=True)
    rows = lb_rows(nb)
    a, b = rows["Service_ns/loc_tcp_node_a"], rows["Service_ns/loc_tcp_node_b"]
    assert "Service_ns/loc_tcp" not in rows
    assert a["vips"] == {"10.96.0.40:80": "10.1.0.8:80,10.1.0.9:80"}
    assert b["vips"] == {"10.96.0.40:80": ""}
    assert a["options"] == b["options"] == {"reject": "false"}
    assert a["external_ids"]["ovn-underlay:node"] == "a"
    assert as_list(named(nb, "Logical_Switch", "sw-a")["load_balancer"]) == [a["_uuid"]]
    assert as_list(named(nb, "Logical_Switch", "sw-b")["load_balancer"]) == [b["_uuid"]]
    assert as_list(named(nb, "Load_Balancer_Group", GROUP)["load_balancer"]) == []


@pytest.mark.parametrize("learned", [False, True])
def test_client_ip_affinity(nb: str, plane: OvnNbControlPlane, learned: bool) -> None:
    lbs = OvnLoadBalancers(plane, learned_affinity=learned)
    port = ServicePort("tcp", 80, "", (ep("10.1.0.5", 80),))
    lbs.sync([svc("short", "10.96.0.50", port, affinity_timeout=10800),
              svc("long", "10.96.0.51", port, affinity_timeout=86400),
              svc("none", "10.96.0.52", port)], SWITCHES, False)
    rows = lb_rows(nb)
    short, long = rows["Service_ns/short_tcp"], rows["Service_ns/long_tcp"]
    if learned:
        assert short["options"]["affinity_timeout"] == "10800"
        assert as_list(short["selection_fields"]) == []
    else:
        assert "affinity_timeout" not in short["options"]
        assert as_list(short["selection_fields"]) == ["ip_src"]
    assert "affinity_timeout" not in long["options"]
    assert as_list(long["selection_fields"]) == ["ip_src"]
    none = rows["Service_ns/none_tcp"]
    assert ("affinity_timeout" not in none["options"]
            and as_list(none["selection_fields"]) == [])


# --- convergence -----------------------------------------------------------------------

def test_sync_again_writes_nothing(nb: str, lbs: OvnLoadBalancers) -> None:
    local = svc("loc", "10.96.0.40", ServicePort("udp", 53, "", (ep("10.1.0.8", 53),)),
                local_only=True)
    lbs.sync([WEB, local], SWITCHES, complete=True)
    before = dump(nb)
    result = lbs.sync([WEB, local], SWITCHES, complete=True)
    assert (result.created, result.updated, result.deleted, result.transactions) == (0, 0, 0, 0)
    assert dump(nb) == before


def test_a_changed_service_rewrites_only_its_changed_row(nb: str, lbs: OvnLoadBalancers
                                                         ) -> None:
    other = svc("other", "10.96.0.60", ServicePort("tcp", 80, "", (ep("10.1.0.6", 80),)))
    lbs.sync([WEB, other], SWITCHES, complete=True)
    before = lb_rows(nb)
    moved = svc("web", "10.96.0.10",
                ServicePort("tcp", 80, "http", (ep("10.1.0.5", 8080),)),
                ServicePort("tcp", 443, "https", (ep("10.1.0.5", 8443),)),
                ServicePort("udp", 53, "dns", (ep("10.1.0.5", 5353),)))
    result = lbs.sync([moved], SWITCHES, complete=False)
    assert (result.created, result.updated, result.deleted, result.transactions) == (0, 1, 0, 1)
    after = lb_rows(nb)
    assert after["Service_ns/web_tcp"]["vips"]["10.96.0.10:80"] == "10.1.0.5:8080"
    assert after["Service_ns/web_tcp"]["_uuid"] == before["Service_ns/web_tcp"]["_uuid"]
    for name in ("Service_ns/web_udp", "Service_ns/other_tcp", "foreign"):
        assert after[name] == before[name]


def test_rows_changed_by_others_are_put_back(nb: str, lbs: OvnLoadBalancers) -> None:
    lbs.sync([WEB], SWITCHES, complete=True)
    before = dump(nb)
    nbctl(nb, "set", "Load_Balancer", "Service_ns/web_udp", "options:reject=false",
          'vips:"10.96.0.10:53"="10.9.9.9:53"')
    nbctl(nb, "remove", "Load_Balancer_Group", GROUP, "load_balancer",
          lb_rows(nb)["Service_ns/web_tcp"]["_uuid"])
    nbctl(nb, "clear", "Logical_Switch", "sw-b", "load_balancer_group")
    result = fresh_sync(nb, WEB)
    assert (result.created, result.updated, result.deleted) == (0, 2, 0)
    assert dump(nb) == before


def test_a_duplicate_row_of_ours_is_removed(nb: str, lbs: OvnLoadBalancers) -> None:
    lbs.sync([WEB], SWITCHES, complete=True)
    nbctl(nb, "create", "Load_Balancer", "name=Service_ns/web_udp", "protocol=udp",
          "external_ids:ovn-underlay\\:role=service",
          'external_ids:ovn-underlay\\:service="ns/web"')
    assert fresh_sync(nb, WEB).deleted == 1
    assert sum(r["name"] == "Service_ns/web_udp" for r in dump(nb)[LB]) == 1


def test_complete_sync_removes_services_not_given(nb: str, lbs: OvnLoadBalancers) -> None:
    before = not_ours(nb)
    gone = svc("gone", "10.96.0.70", ServicePort("tcp", 80, "", (ep("10.1.0.7", 80),)))
    lbs.sync([WEB, gone], SWITCHES, complete=True)
    assert lbs.sync([WEB], SWITCHES, complete=False).deleted == 0
    assert "Service_ns/gone_tcp" in lb_rows(nb)
    assert lbs.sync([WEB], SWITCHES, complete=True).deleted == 1
    assert set(lb_rows(nb)) == {"Service_ns/web_tcp", "Service_ns/web_udp", "foreign"}
    assert not_ours(nb) == before


def test_a_protocol_or_node_no_longer_wanted_goes(nb: str, lbs: OvnLoadBalancers) -> None:
    local = svc("loc", "10.96.0.40", ServicePort("tcp", 80, "", (ep("10.1.0.8", 80),)),
                local_only=True)
    lbs.sync([WEB, local], SWITCHES, complete=True)
    tcp_only = svc("web", "10.96.0.10", *WEB.ports[:2])
    result = lbs.sync([tcp_only, local], {"a": "sw-a"}, complete=False)
    assert result.deleted == 2
    assert set(lb_rows(nb)) == {"Service_ns/web_tcp", "Service_ns/loc_tcp_node_a", "foreign"}
    group = named(nb, "Load_Balancer_Group", GROUP)["_uuid"]
    assert as_list(named(nb, "Logical_Switch", "sw-b")["load_balancer_group"]) == [group]


def crowd(count: int) -> list[ServiceState]:
    """``count`` Services of one TCP port besides WEB, every tenth of them Local."""
    return [svc(f"s{i}", f"10.96.2.{i % 250}", ServicePort("tcp", 80, "", (
        ep(f"10.1.2.{i % 250}", 80), ep(f"10.1.3.{i % 250}", 80, "b"))),
        local_only=i % 10 == 0) for i in range(count)]


def seen(plane: OvnNbControlPlane, check: Callable[[Any], bool]) -> None:
    """Until ``check(api)`` holds on ``plane``'s replica (an ovn-nbctl write arrived)."""
    deadline = time.monotonic() + 5
    while not plane._read(lambda: check(plane._api)):
        assert time.monotonic() < deadline, "the replica did not see the write"
        time.sleep(0.02)


def lb_named(api: Any, name: str) -> Any:
    return next(r for r in api.tables["Load_Balancer"].rows.values() if r.name == name)


def test_an_incremental_sync_among_many_writes_only_its_service(
        nb: str, lbs: OvnLoadBalancers) -> None:
    others = crowd(200)
    lbs.sync([WEB, *others], SWITCHES, complete=True)
    before = dump(nb)
    assert lbs.sync([WEB, others[0], others[1]], SWITCHES, complete=False) == SyncResult()
    assert dump(nb) == before
    moved = svc("web", "10.96.0.10",
                ServicePort("tcp", 80, "http", (ep("10.1.0.6", 8080),)), *WEB.ports[1:])
    result = lbs.sync([moved], SWITCHES, complete=False)
    assert (result.created, result.updated, result.deleted, result.transactions) == (0, 1, 0, 1)
    after = dump(nb)
    old_tcp = next(r for r in before[LB] if r["name"] == "Service_ns/web_tcp")
    new_tcp = next(r for r in after[LB] if r["name"] == "Service_ns/web_tcp")
    assert new_tcp == {**old_tcp, "vips": {"10.96.0.10:80": "10.1.0.6:8080",
                                           "10.96.0.10:443": "10.1.0.5:8443"}}
    assert [r for r in after[LB] if r != new_tcp] == [r for r in before[LB] if r != old_tcp]
    assert {t: rows for t, rows in after.items() if t != LB} == {
        t: rows for t, rows in before.items() if t != LB}


def test_an_incremental_sync_drops_a_protocol_and_a_gone_nodes_row_among_many(
        nb: str, lbs: OvnLoadBalancers) -> None:
    others = crowd(200)
    local = others[0]
    lbs.sync([WEB, *others], SWITCHES, complete=True)
    before = lb_rows(nb)
    tcp_only = svc("web", "10.96.0.10", *WEB.ports[:2])
    result = lbs.sync([tcp_only, local], {"a": "sw-a"}, complete=False)
    assert (result.created, result.updated, result.deleted) == (0, 0, 2)
    after = lb_rows(nb)
    assert set(before) - set(after) == {"Service_ns/web_udp", "Service_ns/s0_tcp_node_b"}
    assert all(after[name] == before[name] for name in after)


def test_an_incremental_sync_repairs_its_service_changed_by_hand(
        nb: str, plane: OvnNbControlPlane, lbs: OvnLoadBalancers) -> None:
    """Out-of-band changes after the replica's index exists: the next incremental sync
    of the Services changed puts them back (a duplicate of a row removed, a row renamed
    by hand removed and made again), and only theirs: another Service changed by hand
    waits for its own sync."""
    others = crowd(50)
    local, other = others[0], others[1]
    lbs.sync([WEB, *others], SWITCHES, complete=True)
    lbs.sync([WEB], SWITCHES, complete=False)  # the index is made here
    before = dump(nb)
    rows = lb_rows(nb)
    nbctl(nb, "set", "Load_Balancer", "Service_ns/web_udp", "options:reject=false",
          'vips:"10.96.0.10:53"="10.9.9.9:53"', "--",
          "remove", "Load_Balancer_Group", GROUP, "load_balancer",
          rows["Service_ns/web_tcp"]["_uuid"], "--",
          "remove", "Logical_Switch", "sw-a", "load_balancer",
          rows["Service_ns/s0_tcp_node_a"]["_uuid"], "--",
          "set", "Load_Balancer", "Service_ns/s0_tcp_node_b", "name=renamed-by-hand", "--",
          "set", "Load_Balancer", "Service_ns/s1_tcp", 'vips:"10.96.2.1:80"="10.9.9.9:80"',
          "--", "create", "Load_Balancer", "name=Service_ns/web_udp", "protocol=udp",
          "external_ids:ovn-underlay\\:role=service",
          'external_ids:ovn-underlay\\:service="ns/web"')
    seen(plane, lambda api: lb_named(api, "Service_ns/s1_tcp").vips["10.96.2.1:80"]
         == "10.9.9.9:80")
    result = lbs.sync([WEB, local], SWITCHES, complete=False)
    assert (result.created, result.updated, result.deleted, result.transactions) == (
        1, 3, 2, 1)
    repaired = dump(nb)
    hand = next(r for r in repaired[LB] if r["name"] == "Service_ns/s1_tcp")
    assert hand["vips"] == {"10.96.2.1:80": "10.9.9.9:80"}
    node_b = lb_rows(nb)["Service_ns/s0_tcp_node_b"]
    assert node_b["_uuid"] != rows["Service_ns/s0_tcp_node_b"]["_uuid"]
    assert as_list(named(nb, "Logical_Switch", "sw-b")["load_balancer"]).count(
        node_b["_uuid"]) == 1
    fresh = fresh_sync(nb, WEB, *others)
    assert (fresh.created, fresh.updated, fresh.deleted) == (0, 1, 0)
    assert lbs.sync([other], SWITCHES, complete=False) == SyncResult()
    after, old = lb_rows(nb), {r["name"]: r for r in before[LB]}
    remade = {"Service_ns/s0_tcp_node_b", "Service_ns/web_udp"}  # web_udp: either duplicate
    assert after.keys() == old.keys()
    for name, row in after.items():
        assert row == old[name] if name not in remade else (
            {**row, "_uuid": ""} == {**old[name], "_uuid": ""})


def test_a_row_of_ours_renamed_by_hand_goes_with_its_service(
        nb: str, plane: OvnNbControlPlane, lbs: OvnLoadBalancers) -> None:
    lbs.sync([WEB], SWITCHES, complete=False)
    nbctl(nb, "set", "Load_Balancer", "Service_ns/web_udp", "name=renamed-by-hand")
    seen(plane, lambda api: any(r.name == "renamed-by-hand"
                                for r in api.tables["Load_Balancer"].rows.values()))
    assert lbs.delete(["ns/web"]).deleted == 2
    assert set(lb_rows(nb)) == {"foreign"}


def test_the_index_survives_a_reconnect(nb: str, plane: OvnNbControlPlane,
                                        lbs: OvnLoadBalancers) -> None:
    """A reconnect empties the replica and fills it again (a standalone ovsdb-server
    keeps no history to resume from), the index with it."""
    lbs.sync([WEB, *crowd(20)], SWITCHES, complete=False)
    before = dump(nb)
    idl = plane._api.idl
    seqno = idl.change_seqno
    plane._api.ovsdb_connection.force_reconnect()
    seen(plane, lambda api: idl.change_seqno != seqno)
    assert lbs.sync([WEB], SWITCHES, complete=False) == SyncResult()
    assert lbs.delete(["ns/web"]).deleted == 2
    assert set(lb_rows(nb)) == {r["name"] for r in before[LB]} - {
        "Service_ns/web_tcp", "Service_ns/web_udp"}


def test_a_service_changing_policy_changes_in_one_transaction(
        nb: str, plane: OvnNbControlPlane) -> None:
    lbs = OvnLoadBalancers(plane, batch=1)
    port = ServicePort("tcp", 80, "", (ep("10.1.0.8", 80),))
    lbs.sync([svc("loc", "10.96.0.40", port)], SWITCHES, complete=True)
    result = lbs.sync([svc("loc", "10.96.0.40", port, local_only=True)], SWITCHES,
                      complete=True)
    assert (result.created, result.deleted, result.transactions) == (2, 1, 1)
    assert set(lb_rows(nb)) == {"Service_ns/loc_tcp_node_a", "Service_ns/loc_tcp_node_b",
                                "foreign"}


def test_delete(nb: str, lbs: OvnLoadBalancers) -> None:
    before = not_ours(nb)
    lbs.sync([WEB], SWITCHES, complete=True)
    assert lbs.delete(["ns/web", "ns/absent"]).deleted == 2
    assert set(lb_rows(nb)) == {"foreign"}
    assert lbs.delete(["ns/web"]).transactions == 0
    assert not_ours(nb) == before


def test_a_switch_added_later_gets_the_group(nb: str, lbs: OvnLoadBalancers) -> None:
    local = svc("loc", "10.96.0.40", ServicePort("tcp", 80, "", (ep("10.1.0.8", 80, "c"),)),
                local_only=True)
    lbs.sync([WEB, local], SWITCHES, complete=True)
    nbctl(nb, "ls-add", "sw-c")
    result = fresh_sync(nb, WEB, local, switches={**SWITCHES, "c": "sw-c"})
    assert (result.created, result.updated, result.deleted) == (1, 0, 0)
    sw = named(nb, "Logical_Switch", "sw-c")
    assert as_list(sw["load_balancer_group"]) == [named(nb, "Load_Balancer_Group",
                                                        GROUP)["_uuid"]]
    assert as_list(sw["load_balancer"]) == [lb_rows(nb)["Service_ns/loc_tcp_node_c"]["_uuid"]]


def test_a_switch_the_nb_lacks_is_skipped(nb: str, lbs: OvnLoadBalancers) -> None:
    local = svc("loc", "10.96.0.40", ServicePort("tcp", 80), local_only=True)
    lbs.sync([local], {**SWITCHES, "z": "sw-missing"}, complete=True)
    assert "Service_ns/loc_tcp_node_z" not in lb_rows(nb)
    assert "Service_ns/loc_tcp_node_a" in lb_rows(nb)


def test_writes_are_batched(nb: str, plane: OvnNbControlPlane) -> None:
    lbs = OvnLoadBalancers(plane, batch=10)
    many = [svc(f"s{i}", f"10.96.1.{i}", ServicePort("tcp", 80, "", (ep("10.1.0.5", 80),)))
            for i in range(25)]
    result = lbs.sync(many, SWITCHES, complete=True)
    assert (result.created, result.transactions) == (25, 1 + 3)  # the group, then 10+10+5
    assert lbs.delete([s.key for s in many]).transactions == 3
    with pytest.raises(ValueError, match="at least 1"):
        OvnLoadBalancers(plane, batch=0)


def test_a_fenced_writer_writes_no_services(nb: str, plane: OvnNbControlPlane,
                                            lbs: OvnLoadBalancers) -> None:
    plane.fence(1)
    lbs.sync([WEB], SWITCHES, complete=True)
    later = OvnNbControlPlane(nb, timeout=5)
    try:
        later.fence(2)
    finally:
        later.close()
    before = dump(nb)
    with pytest.raises(Fenced):
        lbs.delete(["ns/web"])
    assert dump(nb) == before


# --- what ovn-northd makes of the rows -------------------------------------------------

def test_what_northd_makes_of_the_rows(ovsdb_factory: Callable[[str, Path], str], nb: str,
                                       lbs: OvnLoadBalancers, tmp_path: Path) -> None:
    """An empty VIP rejects with reject=true and drops without; a UDP row's ct_flush
    reaches the SB (ovn-controller reads it there); hairpin needs no option: SNAT to the
    VIP."""
    sb = ovsdb_factory("sb", daemons.SB_SCHEMA)
    (tmp_path / "northd").mkdir()
    northd = daemons.start_northd("northd", tmp_path / "northd", nb, sb, None)
    try:
        lbs.sync([svc("empty", "10.96.0.30", ServicePort("tcp", 80), ServicePort("udp", 53)),
                  svc("loc", "10.96.0.40", ServicePort("tcp", 80), local_only=True)],
                 SWITCHES, complete=True)
        flows = _lflows_with(sb, "10.96.0.40", "10.96.0.30", "ct_snat_to_vip")
        sb_lbs = subprocess.run(["ovn-sbctl", f"--db={sb}", "--columns=name,options",
                                 "list", "Load_Balancer"], capture_output=True, text=True,
                                check=True).stdout
    finally:
        pid = northd.pid()
        if pid is not None:
            daemons.stop_pid(pid)
    reject = [f for f in flows if "10.96.0.30" in f and "ls_in_lb " in f]
    drop = [f for f in flows if "10.96.0.40" in f and "ls_in_lb " in f]
    assert reject and all("reject {" in f for f in reject)
    assert drop and all("action=(drop;)" in f for f in drop)
    assert any("ls_in_nat_hairpin" in f and "ct.new" in f for f in flows
               if "ct_snat_to_vip" in f)
    assert sb_lbs.count('ct_flush="true"') == 1


def _lflows_with(sb: str, *needles: str) -> list[str]:
    """The logical flows naming any of ``needles``, once each is named (or 10 s passed)."""
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["ovn-sbctl", f"--db={sb}", "lflow-list"], capture_output=True,
                             text=True, check=True).stdout
        flows = [line for line in out.splitlines() if any(n in line for n in needles)]
        if all(any(n in f for f in flows) for n in needles) or time.monotonic() > deadline:
            return flows
        time.sleep(0.1)


# --- the data path on the lab ----------------------------------------------------------

def _ask(module: str, server: tuple[str, str], client_netns: str, vip: str,
         port: int) -> str:
    """One exchange of ``ovn_underlay.lab.<module>`` (echo: TCP, whoami: UDP) from
    ``client_netns`` to ``vip:port``, served at ``server`` (netns, ip); the client's output
    ("" when it failed)."""
    run = [sys.executable, "-m", f"ovn_underlay.lab.{module}"]
    proc = subprocess.Popen(netns_argv(server[0], [*run, "serve", server[1], str(port), "5"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        verb = "connect" if module == "echo" else "ask"
        client = subprocess.run(netns_argv(client_netns, [*run, verb, vip, str(port), "3"]),
                                capture_output=True, text=True, check=False, timeout=10)
        return client.stdout.strip() or "ok" if client.returncode == 0 else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_pods_reach_a_cluster_ip_through_the_group(lab: LabState, nodes: tuple[Node, Node],
                                                  pods: PodFactory) -> None:
    """TCP and UDP from a pod on the other VM, and a pod reaching itself (hairpin)."""
    made = []
    for node in nodes:
        path, _, result = pods.add(node)
        made.append((path.rsplit("/", 1)[1], pod_ip(result)))
    (client_ns, client_ip), backend = made
    vip = "10.96.200.10"
    service = svc("lab", vip, ServicePort("tcp", 7777, "", (ep(backend[1], 7777),)),
                  ServicePort("udp", 7778, "", (ep(backend[1], 7778),)))
    plane = OvnNbControlPlane(lab.nb, timeout=10)
    lbs = OvnLoadBalancers(plane)
    try:
        lbs.sync([service], {n.vm.name: n.switch for n in nodes}, complete=False)
        deadline = time.monotonic() + 10
        while not _ask("echo", backend, client_ns, vip, 7777):
            assert time.monotonic() < deadline, "TCP to the ClusterIP never answered"
        assert _ask("whoami", backend, client_ns, vip, 7778) == f"{client_ip} {vip}"
        assert _ask("whoami", backend, backend[0], vip, 7778) == f"{vip} {vip}"
        assert _ask("echo", backend, backend[0], vip, 7777)
    finally:
        lbs.delete([service.key])
        plane.close()


UDP_NAMER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(30)
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(64)
    sock.sendto(sys.argv[1].encode(), peer)
"""
UDP_FLOW = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 40000))
sock.settimeout(0.3)
for line in sys.stdin:
    sock.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
    try:
        print(sock.recvfrom(64)[0].decode(), flush=True)
    except TimeoutError:
        print("-", flush=True)
"""


def test_a_udp_flow_leaves_a_removed_backend(lab: LabState, nodes: tuple[Node, Node],
                                             pods: PodFactory) -> None:
    """One UDP 5-tuple reaches a backend; the backend is replaced: once the chassis has
    the change, the flow's next datagram reaches the new backend, not the old one its
    conntrack entry pointed to.

    Measured besides (OVN 23.03.1, OVS 3.1): a flow that sends all through the change
    stayed on the old backend in 8 of 14 runs (its entry re-created before the new flows
    were in, and kept alive by the flow); after a pause the entry is gone with ct_flush
    true or false.
    """
    client_ns = pods.add(nodes[0])[0].rsplit("/", 1)[1]
    backends = []
    for _ in range(2):
        path, _, result = pods.add(nodes[1])
        backends.append((path.rsplit("/", 1)[1], pod_ip(result)))
    vip, port = "10.96.200.20", 7790
    servers = [subprocess.Popen(netns_argv(ns, [sys.executable, "-c", UDP_NAMER, ip,
                                                str(port)]),
                                stdout=subprocess.PIPE, text=True) for ns, ip in backends]
    flow = subprocess.Popen(netns_argv(client_ns, [sys.executable, "-c", UDP_FLOW, vip,
                                                   str(port)]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    plane = OvnNbControlPlane(lab.nb, timeout=10)
    lbs = OvnLoadBalancers(plane)
    switches = {n.vm.name: n.switch for n in nodes}

    def answers_until(wanted: str, seconds: float) -> list[str]:
        assert flow.stdin is not None and flow.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + seconds
        while not seen or (seen[-1] != wanted and time.monotonic() < deadline):
            flow.stdin.write("\n")
            flow.stdin.flush()
            seen.append(flow.stdout.readline().strip())
        return seen

    try:
        for server in servers:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        first, second = (ServicePort("udp", port, "", (ep(ip, port),)) for _, ip in backends)
        lbs.sync([svc("flow", vip, first)], switches, complete=False)
        assert answers_until(backends[0][1], 10)[-1] == backends[0][1]
        lbs.sync([svc("flow", vip, second)], switches, complete=False)
        nbctl(lab.nb, "--wait=hv", "--timeout=10", "sync")
        assert answers_until(backends[1][1], 0) == [backends[1][1]]
    finally:
        lbs.delete(["ns/flow"])
        plane.close()
        for proc in (flow, *servers):
            proc.kill()
            proc.wait()

TCP_TRY = """
import socket, sys, time
start = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    outcome = "connected"
except OSError as exc:
    outcome = type(exc).__name__
print(outcome, round(time.monotonic() - start, 3), flush=True)
"""


def _tcp_try(netns: str, vip: str, port: int) -> tuple[str, float]:
    """How a TCP connect from ``netns`` to ``vip:port`` ended, and after how long."""
    out = subprocess.run(netns_argv(netns, [sys.executable, "-c", TCP_TRY, vip, str(port)]),
                         capture_output=True, text=True, check=True, timeout=10).stdout.split()
    return out[0], float(out[1])


def test_no_endpoints_refuses_at_once_and_local_without_any_drops(
        lab: LabState, nodes: tuple[Node, Node], pods: PodFactory) -> None:
    """A Service without endpoints refuses; a Local one with none on the client's node
    drops (the connect times out) while a pod on the endpoint's node gets through."""
    made = []
    for node in nodes:
        path, _, result = pods.add(node)
        made.append((path.rsplit("/", 1)[1], pod_ip(result)))
    (ns1, ip1), (ns2, _) = made
    empty = svc("none", "10.96.200.30", ServicePort("tcp", 7791))
    local = svc("here", "10.96.200.31",
                ServicePort("tcp", 7792, "", (ep(ip1, 7792, nodes[0].vm.name),)),
                local_only=True)
    server = subprocess.Popen(netns_argv(ns1, [sys.executable, "-m", "ovn_underlay.lab.echo",
                                               "serve", ip1, "7792", "10"]),
                              stdout=subprocess.PIPE, text=True)
    plane = OvnNbControlPlane(lab.nb, timeout=10)
    lbs = OvnLoadBalancers(plane)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lbs.sync([empty, local], {n.vm.name: n.switch for n in nodes}, complete=False)
        nbctl(lab.nb, "--wait=hv", "--timeout=10", "sync")
        outcome, seconds = _tcp_try(ns2, "10.96.200.30", 7791)
        assert outcome == "ConnectionRefusedError" and seconds < 0.5
        assert _tcp_try(ns2, "10.96.200.31", 7792)[0] == "TimeoutError"
        assert _tcp_try(ns1, "10.96.200.31", 7792)[0] == "connected"
    finally:
        lbs.delete([empty.key, local.key])
        plane.close()
        server.kill()
        server.wait()


UDP_MANY = """
import socket, sys
seen = set()
for _ in range(int(sys.argv[3])):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        sock.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
        seen.add(sock.recvfrom(64)[0].decode())
print(" ".join(sorted(seen)), flush=True)
"""


@pytest.mark.parametrize(("timeout", "spread"), [(0, 2), (100, 1)])
def test_client_ip_affinity_keeps_a_client_on_one_backend(
        lab: LabState, nodes: tuple[Node, Node], pods: PodFactory, timeout: int,
        spread: int) -> None:
    """20 flows (fresh source ports) from one pod over two backends: both without
    affinity, one with it (source-IP selection), every datagram answered."""
    client_ns = pods.add(nodes[0])[0].rsplit("/", 1)[1]
    backends = []
    for node in nodes:
        path, _, result = pods.add(node)
        backends.append((path.rsplit("/", 1)[1], pod_ip(result)))
    vip, port = "10.96.200.40", 7793
    servers = [subprocess.Popen(netns_argv(ns, [sys.executable, "-c", UDP_NAMER, ip,
                                                str(port)]),
                                stdout=subprocess.PIPE, text=True) for ns, ip in backends]
    plane = OvnNbControlPlane(lab.nb, timeout=10)
    lbs = OvnLoadBalancers(plane)
    service = svc("sticky", vip, ServicePort("udp", port, "", tuple(
        sorted(ep(ip, port, n.vm.name) for (_, ip), n in zip(backends, nodes, strict=True)))),
        affinity_timeout=timeout)
    try:
        for server in servers:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lbs.sync([service], {n.vm.name: n.switch for n in nodes}, complete=False)
        nbctl(lab.nb, "--wait=hv", "--timeout=10", "sync")
        seen = subprocess.run(netns_argv(client_ns, [sys.executable, "-c", UDP_MANY, vip,
                                                     str(port), "20"]),
                              capture_output=True, text=True, check=True,
                              timeout=30).stdout.split()
        assert len(seen) == spread, seen
    finally:
        lbs.delete([service.key])
        plane.close()
        for server in servers:
            server.kill()
            server.wait()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "OVN 23.03.1, OVS 3.1 userspace datapath (this lab): with options:affinity_timeout a "
    "client's first connection to the VIP never completes (its SYNs are dropped; later "
    "connections succeed at once): why ClientIP affinity is source-IP selection by default"))
def test_learned_affinity_answers_the_first_connection(
        lab: LabState, nodes: tuple[Node, Node], pods: PodFactory) -> None:
    client_ns = pods.add(nodes[0])[0].rsplit("/", 1)[1]
    path, _, result = pods.add(nodes[1])
    backend_ns, backend_ip = path.rsplit("/", 1)[1], pod_ip(result)
    vip, port = "10.96.200.50", 7794
    service = svc("learned", vip, ServicePort("tcp", port, "", (ep(backend_ip, port),)),
                  affinity_timeout=100)
    server = subprocess.Popen(netns_argv(backend_ns, [
        sys.executable, "-m", "ovn_underlay.lab.echo", "serve", backend_ip, str(port), "10"]),
        stdout=subprocess.PIPE, text=True)
    plane = OvnNbControlPlane(lab.nb, timeout=10)
    lbs = OvnLoadBalancers(plane, learned_affinity=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lbs.sync([service], {n.vm.name: n.switch for n in nodes}, complete=False)
        nbctl(lab.nb, "--wait=hv", "--timeout=10", "sync")
        assert _tcp_try(client_ns, vip, port)[0] == "connected"
    finally:
        lbs.delete([service.key])
        plane.close()
        server.kill()
        server.wait()
