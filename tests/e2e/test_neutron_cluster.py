"""What the cluster controller needs of NeutronControlPlane, against the lab's neutron-server.

The control plane runs in the test process (in the hypervisor's namespace, where the
lab's Neutron listens, without authentication), as the controller runs it; Neutron is
checked with a connection of its own.  Every object a test makes is named ``ctl-...``
and removed at its end.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from ovn_underlay.control import credentials
from ovn_underlay.control.base import Conflict, ControlPlaneError, PortOwner
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.neutron_view import BINDING_PROFILE, TRUNK, mark
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.topology import LabState

_T = TypeVar("_T")
ROUTER = "ctl-cluster"


def with_plane(state: LabState, func: Callable[[NeutronControlPlane], _T],
               mode: str = TRUNK) -> _T:
    """``func(plane)`` with a NeutronControlPlane on the lab's Neutron, closed afterwards."""
    creds = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                        "OS_NETWORK_ENDPOINT_OVERRIDE": lab_neutron.api_url()},
                                       "the lab's Neutron")

    def run() -> _T:
        plane = NeutronControlPlane(creds, child_ports=mode, timeout=60)
        try:
            return func(plane)
        finally:
            plane.close()

    return lab_neutron.in_netns(state.hv_netns, run)


def routers_named(state: LabState, name: str) -> list[Any]:
    return lab_neutron.call(state, lambda conn: list(conn.network.routers(name=name)))


@pytest.fixture
def cleanup(neutron_lab: LabState) -> Iterator[None]:
    """Remove every ctl-* network (through the control plane), port and router afterwards."""
    yield

    def destroy(plane: NeutronControlPlane) -> None:
        for switch in plane.node_switches():
            if switch.startswith("ctl-"):
                plane.destroy_node_network(switch)

    with_plane(neutron_lab, destroy)

    def remove(conn: Any) -> None:
        for trunk in conn.network.trunks():
            port = conn.network.get_port(trunk.port_id)
            if str(port.name).startswith("ctl-"):
                conn.network.delete_trunk(trunk)
        for port in conn.network.ports():
            if str(port.name).startswith("ctl-"):
                conn.network.delete_port(port)
        for router in conn.network.routers():
            if str(router.name).startswith("ctl-"):
                conn.network.delete_router(router)

    lab_neutron.call(neutron_lab, remove)


def vm_port(state: LabState, name: str, ip: str) -> str:
    """A port on the VMs' network standing for a VM's port (no VM behind it)."""
    def create(conn: Any) -> str:
        return str(conn.network.create_port(
            network_id=state.neutron["network"], name=name,
            fixed_ips=[{"subnet_id": state.neutron["subnet"], "ip_address": ip}]).id)
    return lab_neutron.call(state, create)


def test_ensure_router_creates_it_once_and_refuses_duplicates(
        neutron_lab: LabState, cleanup: None) -> None:
    with_plane(neutron_lab, lambda plane: plane.ensure_router(ROUTER))
    made = routers_named(neutron_lab, ROUTER)
    assert [r.description for r in made] == [mark("cluster-router")]
    with_plane(neutron_lab, lambda plane: plane.ensure_router(ROUTER))
    assert [r.id for r in routers_named(neutron_lab, ROUTER)] == [made[0].id]
    with_plane(neutron_lab, lambda plane: plane.ensure_router(made[0].id))
    assert routers_named(neutron_lab, made[0].id) == [], "a router's id names it too"

    def twice(conn: Any) -> None:
        conn.network.create_router(name="ctl-dup")
        conn.network.create_router(name="ctl-dup")

    lab_neutron.call(neutron_lab, twice)
    with pytest.raises(Conflict, match="2 Neutron routers are named 'ctl-dup'"):
        with_plane(neutron_lab, lambda plane: plane.ensure_router("ctl-dup"))
    with pytest.raises(Conflict, match="2 Neutron routers are named 'ctl-dup'"):
        with_plane(neutron_lab, lambda plane: plane.create_node_network(
            "ctl-n0", "198.19.209.0/24", "ctl-dup", neutron_lab.vms[0].port, 1,
            create_router=False))
    assert len(routers_named(neutron_lab, "ctl-dup")) == 2


def test_a_router_created_twice_at_once_is_kept_once(
        neutron_lab: LabState, cleanup: None) -> None:
    older = lab_neutron.call(neutron_lab, lambda conn: conn.network.create_router(
        name="ctl-race", description=mark("cluster-router")))
    kept, ours = with_plane(neutron_lab, lambda plane: plane._make_router("ctl-race",
                                                                          "cluster-router"))
    # created_at has whole seconds: within one second the tie goes by id, so which one is
    # kept is not always the older; every creator keeps the same one, and only one stays.
    first = min((older, kept), key=lambda r: (str(r.created_at), str(r.id)))
    assert kept.id == first.id
    assert ours == (kept.id != older.id)
    assert [r.id for r in routers_named(neutron_lab, "ctl-race")] == [kept.id]


def test_racing_ensure_router_calls_leave_one_router(
        neutron_lab: LabState, cleanup: None) -> None:
    for round_ in range(3):
        name = f"ctl-race{round_}"
        start = threading.Barrier(2)
        errors: list[BaseException] = []
        unexpected: list[BaseException] = []

        def racer(plane: NeutronControlPlane, router: str = name,
                  barrier: threading.Barrier = start, failed: list[BaseException] = errors,
                  wrong: list[BaseException] = unexpected) -> None:
            barrier.wait()
            try:
                plane.ensure_router(router)
            except Conflict as exc:  # saw the other's router before it was deleted
                failed.append(exc)
            except Exception as exc:  # e.g. its create answered 404: its router deleted
                wrong.append(exc)

        threads = [threading.Thread(target=with_plane, args=(neutron_lab, racer))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(routers_named(neutron_lab, name)) == 1, errors
        assert unexpected == []


@pytest.mark.parametrize("mode", [TRUNK, BINDING_PROFILE])
def test_port_holding_node_switches_port_exists_and_destroy_without_the_vm(
        neutron_lab: LabState, cleanup: None, mode: str) -> None:
    parent = vm_port(neutron_lab, "ctl-vm", "198.18.0.201")
    other = vm_port(neutron_lab, "ctl-vm-other", "198.18.0.202")
    switch = f"ctl-{mode}"

    def setup(plane: NeutronControlPlane) -> Any:
        plane.ensure_router(ROUTER)
        return plane.create_node_network(switch, "198.19.210.0/24", ROUTER, parent, 3,
                                         create_router=False)

    net = with_plane(neutron_lab, setup, mode)
    assert net.mgmt is not None

    def look(plane: NeutronControlPlane) -> dict[str, Any]:
        return {"vm": plane.port_holding("198.18.0.201"),
                "other": plane.port_holding("198.18.0.202"),
                "lab vm": plane.port_holding(neutron_lab.vms[0].ip),
                "gateway": plane.port_holding(net.gateway_ip),
                "mgmt": plane.port_holding(net.mgmt.ip),
                "pool": [plane.port_holding(p.ip) for p in net.ports],
                "nobody": plane.port_holding("198.18.0.250"),
                "switches": [s for s in plane.node_switches() if s.startswith("ctl-")],
                "exists": [plane.port_exists(p) for p in (parent, net.ports[0].name,
                                                           str(uuid.uuid4()))]}

    assert with_plane(neutron_lab, look) == {
        "vm": parent, "other": other, "lab vm": neutron_lab.vms[0].port, "gateway": None,
        "mgmt": None, "pool": [None] * 3, "nobody": None, "switches": [switch],
        "exists": [True, True, False]}
    with pytest.raises(ControlPlaneError, match="invalid IPv4 address"):
        with_plane(neutron_lab, lambda plane: plane.port_holding("ctl-vm"))

    def the_vm_goes(conn: Any) -> None:
        for trunk in conn.network.trunks(port_id=parent):
            conn.network.delete_trunk(trunk)
        conn.network.delete_port(parent)

    lab_neutron.call(neutron_lab, the_vm_goes)
    assert not with_plane(neutron_lab, lambda plane: plane.port_exists(parent))
    with_plane(neutron_lab, lambda plane: plane.destroy_node_network(switch))

    def left(conn: Any) -> dict[str, Any]:
        return {"networks": [n.name for n in conn.network.networks(name=switch)],
                "ports": sorted(p.name for p in conn.network.ports()
                                if str(p.name).startswith(switch)),
                "router": [(r.description, r.id) for r in conn.network.routers(name=ROUTER)]}

    after = lab_neutron.call(neutron_lab, left)
    assert (after["networks"], after["ports"]) == ([], [])
    assert [d for d, _ in after["router"]] == [mark("cluster-router")], "the router stays"
    assert with_plane(neutron_lab, lambda plane: [
        s for s in plane.node_switches() if s.startswith("ctl-")]) == []


def test_ensure_router_interface_attaches_a_subnet_once(
        neutron_lab: LabState, cleanup: None) -> None:
    """The Service subnet on the cluster router (Octavia's OVN provider needs it there):
    attached once, by name or id, and a missing router or subnet is an error."""
    def subnet(conn: Any) -> str:
        net = conn.network.create_network(name="ctl-services")
        return str(conn.network.create_subnet(
            network_id=net.id, name="ctl-services", cidr="198.19.224.0/20", ip_version=4,
            enable_dhcp=False, gateway_ip="198.19.232.1",
            allocation_pools=[{"start": "198.19.232.2", "end": "198.19.239.254"}]).id)

    def interfaces(conn: Any, sub: str) -> list[str]:
        router = conn.network.find_router(ROUTER)
        return [str(p.id) for p in conn.network.ports(device_id=router.id)
                if any(f["subnet_id"] == sub for f in p.fixed_ips or ())]

    sub = lab_neutron.call(neutron_lab, subnet)
    try:
        with_plane(neutron_lab, lambda plane: plane.ensure_router(ROUTER))
        assert with_plane(neutron_lab, lambda plane: plane.ensure_router_interface(
            ROUTER, "ctl-services")) is True
        first = lab_neutron.call(neutron_lab, lambda conn: interfaces(conn, sub))
        assert len(first) == 1
        assert with_plane(neutron_lab, lambda plane: [
            plane.ensure_router_interface(ROUTER, "ctl-services"),
            plane.ensure_router_interface(ROUTER, sub)]) == [False, False]
        assert lab_neutron.call(neutron_lab, lambda conn: interfaces(conn, sub)) == first
        assert with_plane(neutron_lab, lambda plane: plane.subnet_layout("ctl-services")) == (
            "198.19.224.0/20", "198.19.232.1", (("198.19.232.2", "198.19.239.254"),))
        with pytest.raises(ControlPlaneError, match="subnet ctl-nothing not found"):
            with_plane(neutron_lab, lambda plane: plane.ensure_router_interface(
                ROUTER, "ctl-nothing"))
        with pytest.raises(ControlPlaneError, match="router ctl-norouter does not exist"):
            with_plane(neutron_lab, lambda plane: plane.ensure_router_interface(
                "ctl-norouter", sub))
    finally:
        def detach(conn: Any) -> None:
            router = conn.network.find_router(ROUTER)
            if router is not None and interfaces(conn, sub):
                conn.network.remove_interface_from_router(router, subnet=sub)
            conn.network.delete_network(conn.network.find_network("ctl-services"))
        lab_neutron.call(neutron_lab, detach)


def group_rules(conn: Any, group: str) -> list[tuple[str, str, Any, Any]]:
    return sorted((r.direction, r.ether_type, r.protocol, r.remote_ip_prefix)
                  for r in conn.network.security_group_rules(security_group_id=group))


def port_groups(conn: Any, port: str) -> list[str]:
    return sorted(conn.network.get_security_group(g).name
                  for g in conn.network.get_port(port).security_group_ids)


def test_the_services_group_has_one_rule_and_every_pool_port_keeps_it(
        neutron_lab: LabState, cleanup: None) -> None:
    """The hairpin group: one ingress rule from the Service range and nothing else (not the
    egress rules Neutron gives a new group: a pod's own groups decide its egress); a
    changed range replaces the rule.  With it as ``pod_groups`` pool ports are made with
    ``default`` and it, a pod's annotation groups come with it and a reset keeps it;
    ``ensure_pod_groups`` adds it to pool ports made before; the management port has
    neither."""
    name = "ctl-services-sg"
    parent = vm_port(neutron_lab, "ctl-vm-sg", "198.18.0.203")
    lab_neutron.call(neutron_lab, lambda conn: conn.network.create_security_group(
        name="ctl-web"))
    switch = "ctl-sg"
    try:
        group = with_plane(neutron_lab, lambda plane: plane.ensure_services_group(
            name, "198.18.128.0/20"))
        assert lab_neutron.call(neutron_lab, lambda conn: group_rules(conn, group)) == [
            ("ingress", "IPv4", None, "198.18.128.0/20")]
        assert with_plane(neutron_lab, lambda plane: plane.ensure_services_group(
            name, "198.18.128.0/20")) == group
        assert with_plane(neutron_lab, lambda plane: plane.ensure_services_group(
            name, "10.96.0.0/12")) == group
        assert lab_neutron.call(neutron_lab, lambda conn: group_rules(conn, group)) == [
            ("ingress", "IPv4", None, "10.96.0.0/12")]

        def before(plane: NeutronControlPlane) -> Any:
            plane.ensure_router(ROUTER)
            return plane.create_node_network(switch, "198.19.211.0/24", ROUTER, parent, 2,
                                             create_router=False)

        old = with_plane(neutron_lab, before)
        assert lab_neutron.call(neutron_lab, lambda conn: port_groups(
            conn, old.ports[0].name)) == ["default"]

        def with_group(plane: NeutronControlPlane) -> tuple[int, int, Any]:
            plane.pod_groups = (group,)
            added = plane.ensure_pod_groups(ROUTER)
            again = plane.ensure_pod_groups(ROUTER)
            new = plane.add_pool_ports(switch, 2)
            plane.set_port_security_groups(new[0].name, ["ctl-web"],
                                           PortOwner("apps", "web", "c1"))
            plane.clear_port_security_groups(new[1].name)
            return added, again, new

        added, again, new = with_plane(neutron_lab, with_group)
        assert (added, again) == (2, 0)
        groups = lab_neutron.call(neutron_lab, lambda conn: {
            p: port_groups(conn, p) for p in [*(q.name for q in old.ports),
                                              *(q.name for q in new)]})
        assert groups == {old.ports[0].name: sorted(["default", name]),
                          old.ports[1].name: sorted(["default", name]),
                          new[0].name: sorted([name, "ctl-web"]),
                          new[1].name: sorted(["default", name])}
        assert old.mgmt is not None
        assert lab_neutron.call(neutron_lab, lambda conn: port_groups(
            conn, old.mgmt.name)) == ["default"]
        with pytest.raises(Conflict, match="security groups are named 'ctl-web'"):
            with_plane(neutron_lab, lambda plane: plane.ensure_services_group(
                "ctl-web", "10.96.0.0/12"))
    finally:
        with_plane(neutron_lab, lambda plane: plane.destroy_node_network(switch))

        def remove(conn: Any) -> None:
            for sg in conn.network.security_groups():
                if str(sg.name).startswith("ctl-"):
                    conn.network.delete_security_group(sg)
        lab_neutron.call(neutron_lab, remove)
