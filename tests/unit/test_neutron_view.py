"""Reading a node network back from Neutron's records, and wording Neutron's failures.

Ports, networks and trunks are plain records with the attributes openstacksdk
gives them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from keystoneauth1 import exceptions as ks
from openstack import exceptions as sdk

from ovn_underlay.control import credentials
from ovn_underlay.control.base import Conflict, ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.control.neutron_errors import translate
from ovn_underlay.control.neutron_view import (
    BINDING_PROFILE,
    TRUNK,
    Meta,
    View,
    marked,
    tag_of_name,
)

PARENT = "vm-port"
SUBNET = "198.19.1.0/24"


def port(pid: str, name: str, ip: str, profile: dict[str, object] | None = None,
         owner: str = "") -> SimpleNamespace:
    return SimpleNamespace(id=pid, name=name, mac_address=f"fa:16:3e:00:00:{pid[-2:]}",
                           fixed_ips=[{"subnet_id": "s", "ip_address": ip}],
                           binding_profile=profile, device_owner=owner, device_id="r")


def view(mode: str, ports: list[SimpleNamespace], subports: list[dict[str, object]] | None
         = None) -> View:
    meta = Meta(SUBNET, "router-id", PARENT, mode, 4094)
    network = SimpleNamespace(id="n", name="node1", description=meta.encode())
    trunk = SimpleNamespace(sub_ports=subports) if subports is not None else None
    return View(network, meta, SimpleNamespace(id="s"), tuple(ports), trunk)


def child(tag: int) -> dict[str, object]:
    return {"parent_name": PARENT, "tag": tag}


def test_meta_round_trips_and_marks_only_what_ovn_underlay_wrote() -> None:
    meta = Meta(SUBNET, "router-id", PARENT, TRUNK, None)
    assert Meta.decode(meta.encode()) == meta
    assert len(Meta(SUBNET, "r" * 36, "p" * 36, BINDING_PROFILE, 4094).encode()) < 255
    for foreign in (None, "", "a network", '{"ovn-underlay": "router"}', '["x"]',
                    '{"ovn-underlay": "node-network"}'):
        assert Meta.decode(foreign) is None
    assert marked('{"ovn-underlay": "trunk"}', "trunk")
    assert not marked('{"ovn-underlay": "trunk"}', "router") and not marked("x", "trunk")
    assert tag_of_name("node1", "node1-p12") == 12
    assert tag_of_name("node1", "node1-p") is None and tag_of_name("node1", "node10-p1") is None


def test_binding_profile_children_and_what_is_not_one() -> None:
    v = view(BINDING_PROFILE, [
        port("m01", "node1-mgmt", "198.19.1.2", child(4094)),
        port("p01", "node1-p1", "198.19.1.3", child(1)),
        port("p02", "node1-p2", "198.19.1.4", {}),               # not a child
        port("p03", "node1-p3", "198.19.1.5", child(7)),         # tag differs from its name
        port("p04", "node1-p4", "198.19.1.6", None),             # profile hidden by policy
        port("r01", "", "198.19.1.1", None, "network:router_interface"),
        port("x01", "someone-else", "198.19.1.9", child(9)),
    ])
    assert [p.name for p in v.incomplete()] == ["node1-p2", "node1-p3"]
    net = v.node_network()
    assert net.mgmt is not None and (net.mgmt.name, net.mgmt.tag) == ("m01", 4094)
    assert [(c.name, c.ip, c.tag) for c in net.ports] == [("p01", "198.19.1.3", 1),
                                                           ("p04", "198.19.1.6", 4)]
    assert (net.gateway_ip, net.gateway_mac) == ("198.19.1.1", "fa:16:3e:00:00:01")
    assert v.used_ips() >= {"198.19.1.1", "198.19.1.9"}


def test_trunk_children_are_the_trunks_subports() -> None:
    v = view(TRUNK, [port("p01", "node1-p1", "198.19.1.3"),
                     port("p02", "node1-p2", "198.19.1.4")],
             [{"port_id": "p01", "segmentation_type": "vlan", "segmentation_id": 1},
              {"port_id": "elsewhere", "segmentation_type": "vlan", "segmentation_id": 30}])
    assert v.tags() == {"p01": 1, "elsewhere": 30}
    assert [p.name for p in v.incomplete()] == ["node1-p2"]  # created, never a subport
    assert [c.name for c in v.node_network().ports] == ["p01"]
    assert view(TRUNK, [], None).tags() == {}


SECRET = "hunter2-secret"
CREDS = credentials.from_variables({
    "OS_AUTH_URL": "http://keystone:5000/v3", "OS_USERNAME": "u", "OS_PASSWORD": SECRET,
    "OS_PROJECT_NAME": "p"}, "openrc /root/openrc")


@pytest.mark.parametrize(("exc", "cls", "text"), [
    (ks.http.Unauthorized(), ControlPlaneError,
     "act: the identity service at http://keystone:5000/v3 refused the credentials of "
     "openrc /root/openrc (wrong user name, password or project?)"),
    (ks.connection.ConnectFailure(
        "Unable to establish connection to http://keystone:5000/v3/auth/tokens: "
        "NewConnectionError('[Errno 113] No route to host')"), ControlPlaneUnavailable,
     "act: cannot reach http://keystone:5000 (from openrc /root/openrc): "
     "[Errno 113] No route to host"),
    (sdk.ConflictException(message="409", details=f"IP in use ({SECRET})"), Conflict,
     "act: IP in use (***)"),
    (sdk.HttpException(message="500", details="boom", http_status=500),
     ControlPlaneUnavailable, "act: Neutron failed (500), try again: boom"),
    (sdk.ForbiddenException(message="403", details="policy"), ControlPlaneError,
     "act: not allowed for openrc /root/openrc: policy (binding-profile child ports need "
     "admin rights: use --child-ports trunk)"),
    (sdk.BadRequestException(message="400", details="bad tag"), ControlPlaneError,
     "act failed in Neutron: bad tag"),
])
def test_failures_are_worded_by_kind_and_never_show_the_password(
        exc: Exception, cls: type[ControlPlaneError], text: str) -> None:
    error = translate("act", exc, CREDS, BINDING_PROFILE)
    assert type(error) is cls
    assert str(error) == text
