"""OctaviaLoadBalancers without an Octavia: what marks a load balancer as ours, where an
endpoint's member goes, what limits() says (the lab's Octavia: tests/functional)."""

from __future__ import annotations

import ipaddress

import pytest

from ovn_underlay.control import credentials
from ovn_underlay.control.base import ControlPlaneUnavailable
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.octavia_lb import (
    TAG,
    OctaviaLoadBalancers,
    _key_of,
    _Subnets,
    description,
    lb_name,
)
from ovn_underlay.control.services import Endpoint, ServicePort, ServicesPending, ServiceState


def backend() -> OctaviaLoadBalancers:
    creds = credentials.from_variables({
        "OS_AUTH_TYPE": "none", "OS_NETWORK_ENDPOINT_OVERRIDE": "http://127.0.0.1:9",
        "OS_LOAD_BALANCER_ENDPOINT_OVERRIDE": "http://127.0.0.1:9"}, "test")
    lbs = OctaviaLoadBalancers(NeutronControlPlane(creds, timeout=1), "services")
    lbs._subnet = {"id": "svc", "network": "services-net", "project": ""}
    lbs._subnets = _Subnets({"node1": [(ipaddress.IPv4Network("198.19.1.0/24"), "s1")],
                             "node2": [(ipaddress.IPv4Network("198.19.2.0/24"), "s2")]})
    return lbs


def test_the_load_balancer_endpoint_override_reaches_the_connection() -> None:
    creds = credentials.from_variables({
        "OS_AUTH_TYPE": "none", "OS_NETWORK_ENDPOINT_OVERRIDE": "http://n:9696",
        "OS_LOAD_BALANCER_ENDPOINT_OVERRIDE": "http://o:9876"}, "openrc")
    assert creds.connect_kwargs()["load_balancer_endpoint_override"] == "http://o:9876"


def test_ours_needs_tag_name_and_description_together() -> None:
    key = "default/web"
    ours = {"name": lb_name(key), "description": description(key), "tags": [TAG]}
    assert _key_of(ours) == key
    assert _key_of({**ours, "tags": []}) is None
    assert _key_of({**ours, "name": "by-hand"}) is None
    assert _key_of({**ours, "description": ""}) is None
    assert _key_of({**ours, "description": description("default/other")}) is None


def test_members_are_the_endpoints_on_node_networks_on_the_service_subnet() -> None:
    """On the Service subnet, not the node's (the provider would take the load balancer
    off a node switch whose members all went); endpoints on no node network left out."""
    lbs = backend()
    state = ServiceState("default", "web", ("198.18.128.10",), (
        ServicePort("tcp", 80, "", (Endpoint("198.19.1.5", 8080, "n1"),
                                    Endpoint("198.19.2.5", 8080, "n1"),
                                    Endpoint("198.18.0.9", 6443, "n2"))),))
    want = lbs._want(state)
    assert want is not None
    assert want.ports == {("TCP", 80): frozenset({("198.19.1.5", 8080, "svc"),
                                                   ("198.19.2.5", 8080, "svc")})}


def test_limits_say_what_the_provider_does_not_do() -> None:
    lbs = backend()
    plain = ServiceState("default", "web", ("198.18.128.10",), (
        ServicePort("tcp", 80, "", (Endpoint("198.19.1.5", 8080, "n1"),)),))
    assert lbs.limits(plain) == ()
    lbs._persistence = False
    odd = ServiceState("default", "odd", ("198.18.128.11",), (
        ServicePort("tcp", 80, "", (Endpoint("198.18.0.9", 6443, "n1"),)),
        ServicePort("udp", 53, "", ())), affinity_timeout=10800, local_only=True)
    said = lbs.limits(odd)
    assert len(said) == 4
    assert "sessionAffinity ClientIP is not applied" in said[0]
    assert "internalTrafficPolicy Local" in said[1]
    assert "UDP 53 has no ready endpoints" in said[2] and "time out" in said[2]
    assert "198.18.0.9" in said[3]
    lbs._persistence = True
    assert "360 s" in lbs.limits(odd)[0]


def test_services_pending_is_unavailable_and_names_the_services() -> None:
    exc = ServicesPending(["b/y", "a/x"], 60)
    assert isinstance(exc, ControlPlaneUnavailable)
    assert exc.keys == ("a/x", "b/y")
    assert "a/x, b/y" in str(exc)
    with pytest.raises(ValueError):
        OctaviaLoadBalancers(backend()._neutron, "s", workers=0)
