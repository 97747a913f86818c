"""How the Neutron backend splits a batch of ports into concurrent bulk POSTs.

The connection is a stand-in that records the requests: what reaches a real
neutron-server is covered by tests/e2e/test_neutron.py.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from ovn_underlay.control import neutron
from ovn_underlay.control.base import ControlPlaneError
from ovn_underlay.control.credentials import Credentials
from ovn_underlay.control.neutron_view import BINDING_PROFILE, PORT_OWNER, Meta, View

PARENT = "vm-port"


@pytest.mark.parametrize("count", [0, 1, 2, 3, 8, 16, 17, 33, 250])
def test_a_plan_is_split_in_order_into_near_equal_requests(count: int) -> None:
    plan = list(range(count))
    chunks = neutron.split_plan(plan)
    assert [x for chunk in chunks for x in chunk] == plan
    sizes = [len(chunk) for chunk in chunks]
    assert all(0 < size <= neutron.BULK_MAX for size in sizes)
    assert len(chunks) >= min(neutron.BULK_STREAMS, count)
    assert not sizes or max(sizes) - min(sizes) <= 1


class FakeNetwork:
    """``create_ports`` of openstacksdk's network proxy, recording each bulk POST."""

    def __init__(self, fail_name: str | None = None) -> None:
        self.fail_name = fail_name
        self.lock = threading.Lock()
        self.bodies: list[list[dict[str, Any]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.both_started = threading.Barrier(2, timeout=5)

    def create_ports(self, bodies: list[dict[str, Any]]) -> list[SimpleNamespace]:
        with self.lock:
            self.bodies.append(bodies)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            first_two = len(self.bodies) <= 2
        try:
            if first_two:
                self.both_started.wait()  # fails unless two requests are under way at once
            if any(b["name"] == self.fail_name for b in bodies):
                raise ControlPlaneError(f"cannot create {self.fail_name}")
            if self.fail_name is not None:
                time.sleep(0.2)  # a request takes longer than a failure
            return [SimpleNamespace(id=f"id-{b['name']}", name=b["name"],
                                    mac_address="fa:16:3e:00:00:01",
                                    fixed_ips=b["fixed_ips"]) for b in bodies]
        finally:
            with self.lock:
                self.in_flight -= 1


def control_with(network: FakeNetwork) -> neutron.NeutronControlPlane:
    control = neutron.NeutronControlPlane(Credentials("test", vif_id=PARENT),
                                          child_ports=BINDING_PROFILE)
    control._connection = SimpleNamespace(network=network)  # type: ignore[assignment]
    return control


def profile_view() -> View:
    meta = Meta("198.19.1.0/24", "router-id", PARENT, BINDING_PROFILE, None)
    network = SimpleNamespace(id="n", name="node1", description=meta.encode())
    return View(network, meta, SimpleNamespace(id="s"), (), None)


def plan(count: int) -> list[tuple[str, str, int]]:
    return [(f"node1-p{tag}", f"198.19.1.{tag + 2}", tag) for tag in range(1, count + 1)]


def test_a_batch_goes_out_as_concurrent_bulk_posts_of_children() -> None:
    network = FakeNetwork()
    made = control_with(network)._create_ports(profile_view(), plan(40))
    assert [(p.name, p.tag) for p in made] == [(f"id-node1-p{t}", t) for t in range(1, 41)]
    assert network.most_in_flight == neutron.BULK_STREAMS
    assert sorted(len(bodies) for bodies in network.bodies) == [13, 13, 14]
    for body in (b for bodies in network.bodies for b in bodies):
        tag = int(body["name"].rsplit("p", 1)[1])
        assert body["device_owner"] == PORT_OWNER
        assert body["description"] == '{"ovn-underlay": "pool-port"}'
        assert body["binding_profile"] == {"parent_name": PARENT, "tag": tag}
        assert body["fixed_ips"] == [{"subnet_id": "s", "ip_address": f"198.19.1.{tag + 2}"}]


def test_a_failed_request_stops_the_batch_after_the_requests_under_way() -> None:
    network = FakeNetwork(fail_name="node1-p1")
    with pytest.raises(ControlPlaneError, match="cannot create node1-p1"):
        control_with(network)._create_ports(profile_view(), plan(64))
    assert network.in_flight == 0  # nothing is still being created when the error comes out
    assert len(network.bodies) == 2  # the two requests not yet sent were dropped


class RacedRouters:
    """A network proxy where this client's router create lost a race: another client's
    de-duplication deleted the router while the POST was still being answered (neutron-
    server then answers 404 for it), and the kept router is the other client's."""

    def __init__(self, survivors: list[SimpleNamespace]) -> None:
        self.survivors = survivors
        self.created = False
        self.deleted: list[str] = []

    def create_router(self, **attrs: Any) -> SimpleNamespace:
        from openstack.exceptions import NotFoundException

        self.created = True
        raise NotFoundException("Router 8b8c96f6 could not be found")

    def routers(self, name: str) -> list[SimpleNamespace]:
        """None before the create (the other client's router came during ours)."""
        return [r for r in self.survivors if r.name == name] if self.created else []

    def find_router(self, name_or_id: str) -> None:
        return None

    def networks(self, name: str) -> list[SimpleNamespace]:
        return []

    def delete_router(self, router: Any, ignore_missing: bool) -> None:
        self.deleted.append(router.id)


def raced_plane(network: RacedRouters) -> neutron.NeutronControlPlane:
    control = neutron.NeutronControlPlane(Credentials("test", vif_id=PARENT))
    control._connection = SimpleNamespace(network=network)  # type: ignore[assignment]
    return control


def test_a_router_create_that_lost_the_race_uses_the_router_kept() -> None:
    kept = SimpleNamespace(id="theirs", name="cluster", description=neutron.mark(
        "cluster-router"), created_at="2026-12-01T18:00:00Z", external_gateway_info=None)
    network = RacedRouters([kept])
    raced_plane(network).ensure_router("cluster")
    assert network.created and network.deleted == []


@pytest.mark.parametrize("survivors", [[], [SimpleNamespace(
    id="foreign", name="cluster", description="made by hand", created_at="",
    external_gateway_info=None)]])
def test_a_failed_router_create_without_one_of_ours_to_use_is_an_error(
        survivors: list[SimpleNamespace]) -> None:
    with pytest.raises(ControlPlaneError, match="create router cluster failed"):
        raced_plane(RacedRouters(survivors)).ensure_router("cluster")
