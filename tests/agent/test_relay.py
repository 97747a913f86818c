"""The cluster mode's control plane on a node: ControllerRelay against the test API server.

The controller's status writes come from :class:`~tests.agent.support.StatusResponder`
(a test double of those writes only); the relay, its informer and the API are real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client

from ovn_underlay.cni import spec
from ovn_underlay.cni.spec import CniError
from ovn_underlay.config import CLUSTER_BACKEND, NodeConfig
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable, PortOwner
from ovn_underlay.control.factory import connect
from ovn_underlay.kube import underlay_node as un
from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.pods.cni_plugin import cni_errors
from ovn_underlay.pods.controller_relay import ControllerRelay
from tests.agent.support import (
    StatusResponder,
    create_underlay_node,
    install_crd,
    responding,
    underlay_object,
)

NODE = "node-a"
SWITCH = f"{NODE}-pods"
OWNER = PortOwner("web", "frontend-0", "c0ffee")
SUBNET_ANY = "198.19.9.0/24"


@pytest.fixture
def crd(admin: Client) -> Client:
    """The admin client, once the API serves UnderlayNodes."""
    install_crd(admin)
    return admin


@pytest.fixture
def responder(server: KubeApiServer, tmp_path: Path, crd: Client) -> Iterator[StatusResponder]:
    """The node's UnderlayNode, created and answered as the controller would."""
    create_underlay_node(crd, NODE)
    with responding(server, tmp_path, max_ports=6, refuse=frozenset({"db-admin"})) as running:
        yield running


@pytest.fixture
def relay_for(kubeconfig: str, crd: Client) -> Iterator[ControllerRelay]:
    relay = ControllerRelay.for_node(NodeConfig(backend=CLUSTER_BACKEND, kubeconfig=kubeconfig,
                                                node_name=NODE), timeout=2.0)
    yield relay
    relay.close()


@pytest.fixture
def ready(relay_for: ControllerRelay, responder: StatusResponder) -> ControllerRelay:
    """The relay once the responder has answered the new UnderlayNode."""
    assert relay_for.wait_ready(5.0) is not None
    return relay_for


def test_node_network_and_pool_ports_come_from_the_status(
        ready: ControllerRelay, responder: StatusResponder, crd: Client) -> None:
    """The node network is the status's; more ports raise spec.poolPorts, capped by the
    controller, and only the new ones come back."""
    before = ready.get_node_network(SWITCH)
    assert before is not None and before.ports == ()
    first = ready.add_pool_ports(SWITCH, 4)
    assert [p.name for p in first] == [f"{NODE}-p{i}" for i in range(4)]
    assert first[0].prefixlen == 24 and first[0].gateway == "198.19.7.1"
    assert underlay_object(crd, NODE)["spec"]["poolPorts"] == 4
    net = ready.get_node_network(SWITCH)
    assert net is not None and net.mgmt is not None and net.mgmt.tag == 4094
    assert ready.get_node_network("other-switch") is None
    capped = ready.add_pool_ports(SWITCH, 4)  # the responder stops at 6
    assert [p.name for p in capped] == [f"{NODE}-p4", f"{NODE}-p5"]
    assert ready.add_pool_ports(SWITCH, 4) == ()
    with pytest.raises(ControlPlaneError, match="owns the pool's size"):
        ready.delete_pool_ports(SWITCH, [first[0].name])


def test_owners_are_one_merge_patch_of_spec_pods(
        ready: ControllerRelay, responder: StatusResponder, crd: Client) -> None:
    ports = ready.add_pool_ports(SWITCH, 2)
    other = PortOwner("web", "frontend-1", "beef")
    skipped = ready.record_owners({ports[0].name: OWNER, ports[1].name: other,
                                       "no-such-port": other})
    assert skipped == ["no-such-port"]
    pods = underlay_object(crd, NODE)["spec"]["pods"]
    assert pods[ports[0].name] == {"namespace": "web", "name": "frontend-0",
                                   "containerID": "c0ffee"}
    ready.record_owners({ports[1].name: None, "no-such-port": None})
    assert set(underlay_object(crd, NODE)["spec"]["pods"]) == {ports[0].name}


def test_security_groups_granted_refused_and_reset(
        ready: ControllerRelay, responder: StatusResponder, crd: Client) -> None:
    port = ready.add_pool_ports(SWITCH, 1)[0].name
    ready.set_port_security_groups(port, ["web", "monitoring"], OWNER)
    assert ready.status().security_groups[port] == ("web", "monitoring")
    ready.clear_port_security_groups(port)
    assert port not in ready.status().security_groups
    assert "securityGroups" not in underlay_object(crd, NODE)["spec"]["pods"][port]
    with pytest.raises(ControlPlaneError, match="does not allow db-admin") as refused:
        ready.set_port_security_groups(port, ["db-admin"], OWNER)
    assert not isinstance(refused.value, ControlPlaneUnavailable)


def test_a_new_owner_does_not_inherit_an_earlier_runs_groups(
        ready: ControllerRelay, responder: StatusResponder, crd: Client,
        kubeconfig: str) -> None:
    """Groups an earlier daemon asked for (it crashed before the DEL) are not merged into the
    entry of the next pod on that port."""
    port = ready.add_pool_ports(SWITCH, 1)[0].name
    ready.set_port_security_groups(port, ["web"], OWNER)
    restarted = ControllerRelay.for_node(NodeConfig(backend=CLUSTER_BACKEND,
                                                    kubeconfig=kubeconfig, node_name=NODE))
    try:
        assert restarted.wait_ready(5.0) is not None
        restarted.record_owners({port: PortOwner("web", "frontend-9", "d00d")})
    finally:
        restarted.close()
    assert underlay_object(crd, NODE)["spec"]["pods"][port] == {
        "namespace": "web", "name": "frontend-9", "containerID": "d00d"}


def test_late_owner_writes_leave_a_request_with_groups_alone(
        ready: ControllerRelay, responder: StatusResponder, crd: Client) -> None:
    """The owners are written from the background: an older pod's owner, or the "no owner"
    of its DEL, can arrive after the next pod's ADD asked for groups on the port."""
    port = ready.add_pool_ports(SWITCH, 1)[0].name
    ready.record_owners({port: PortOwner("web", "old", "0ld")})
    ready.record_owners({port: None})
    ready.set_port_security_groups(port, ["web"], OWNER)
    ready.record_owners({port: PortOwner("web", "old", "0ld")})
    ready.record_owners({port: None})
    assert underlay_object(crd, NODE)["spec"]["pods"][port] == {
        "namespace": "web", "name": "frontend-0", "containerID": "c0ffee",
        "securityGroups": ["web"]}
    ready.clear_port_security_groups(port)
    ready.record_owners({port: None})
    assert port not in underlay_object(crd, NODE)["spec"]["pods"]
    ready.clear_port_security_groups(port)  # no entry: nothing to patch, nothing to wait for


def test_a_refused_request_is_withdrawn(
        ready: ControllerRelay, responder: StatusResponder, crd: Client) -> None:
    port = ready.add_pool_ports(SWITCH, 1)[0].name
    with pytest.raises(ControlPlaneError, match="does not allow"):
        ready.set_port_security_groups(port, ["db-admin"], OWNER)
    assert "securityGroups" not in underlay_object(crd, NODE)["spec"]["pods"][port]


def test_no_answer_is_unavailable_within_the_timeout(
        ready: ControllerRelay, responder: StatusResponder) -> None:
    port = ready.add_pool_ports(SWITCH, 1)[0].name
    responder.paused.set()
    started = time.monotonic()
    with pytest.raises(ControlPlaneUnavailable, match="did not answer"):
        ready.set_port_security_groups(port, ["web"], OWNER)
    assert 1.9 < time.monotonic() - started < 4
    responder.resume()
    ready.set_port_security_groups(port, ["web"], OWNER)  # the pending request is met


def test_without_an_underlay_node_requests_are_unavailable(
        relay_for: ControllerRelay) -> None:
    assert relay_for.get_node_network(SWITCH) is None
    with pytest.raises(ControlPlaneUnavailable, match="no UnderlayNode node-a yet"):
        relay_for.set_port_security_groups("p", ["web"], OWNER)


def test_what_only_the_controller_does_is_refused(relay_for: ControllerRelay) -> None:
    for call in (lambda: relay_for.create_node_network("s", SUBNET_ANY, "r", "vm", 4),
                 lambda: relay_for.destroy_node_network("s"),
                 lambda: relay_for.ensure_router("r"), relay_for.node_switches,
                 lambda: relay_for.port_holding("10.0.0.5"), lambda: relay_for.fence(3)):
        with pytest.raises(ControlPlaneError, match="cluster controller"):
            call()


def test_in_process_cni_in_cluster_mode_is_try_again_and_never_reaches_nb() -> None:
    """Without the agent's daemon there is no relay: connect() refuses, CNI code 11."""
    cfg = NodeConfig(backend=CLUSTER_BACKEND, nb="tcp:192.0.2.1:6641")
    with pytest.raises(CniError) as failed, cni_errors("ADD"):
        connect(cfg)
    assert failed.value.code == spec.ERR_TRY_AGAIN == 11
    assert "cluster mode" in failed.value.msg and "agent" in failed.value.msg


def test_status_parses_what_the_responder_writes(
        ready: ControllerRelay, responder: StatusResponder) -> None:
    ready.add_pool_ports(SWITCH, 1)
    st = ready.status()
    assert st.ready and st.switch == SWITCH and isinstance(st, un.Status)
