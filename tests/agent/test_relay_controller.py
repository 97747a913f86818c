"""The relay against the real cluster controller (controller/ on a real NB ovsdb-server and
the test API server): a node with no control-plane credentials gets its pool ports, its
owners recorded in NB, and the controller's verdict on security groups."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lightkube import Client

from ovn_underlay.config import CLUSTER_BACKEND, NodeConfig
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable, PortOwner
from ovn_underlay.pods.controller_relay import ControllerRelay
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION
from tests.controller.conftest import MakeReplica, cluster, nb, replicas
from tests.controller.support import add_node
from tests.functional.test_ovn_nb import rows
from tests.kube.support import eventually, namespace, pod

__all__ = ["cluster", "nb", "replicas"]


@pytest.fixture
def node_relay(replicas: MakeReplica, cluster: Client,
               kubeconfig: str) -> Iterator[ControllerRelay]:
    """The relay of Node n1 (InternalIP on VM port vm1) with its controller running; the
    node's settings name no NB and no Neutron credentials."""
    replicas(max_pool_ports=12)
    add_node(cluster, "n1", "10.0.0.11")
    cfg = NodeConfig(backend=CLUSTER_BACKEND, kubeconfig=kubeconfig, node_name="n1")
    assert not cfg.nb and not cfg.neutron_config and not cfg.neutron_cloud
    relay = ControllerRelay.for_node(cfg, timeout=10.0)
    yield relay
    relay.close()


def test_pool_ports_from_the_controller_are_real_nb_ports(node_relay: ControllerRelay,
                                                          nb: str) -> None:
    st = node_relay.wait_ready(10.0)
    assert st is not None and st.switch == "node-n1" and st.parent == "vm1"
    first = {p.name for p in st.ports}
    added = node_relay.add_pool_ports("node-n1", 5)  # the first of the controller's batches
    assert 1 <= len(added) <= 5 and not first & {p.name for p in added}
    eventually(lambda: len(node_relay.status().ports) == len(first) + 5, 10.0)
    ports = rows(nb, "Logical_Switch_Port")
    for port in added:
        assert ports[port.name]["parent_name"] == "vm1"
        assert ports[port.name]["tag"] == port.tag
    while node_relay.add_pool_ports("node-n1", 50):  # the controller's cap: 12 in all
        pass
    assert len(node_relay.status().ports) == 12
    owner = PortOwner("apps", "web-0", "c0ffee")
    assert node_relay.record_owners({added[0].name: owner}) == []

    def recorded() -> bool:
        ext = rows(nb, "Logical_Switch_Port")[added[0].name]["external_ids"]
        return "web-0" in str(ext)

    eventually(recorded, 10.0)


def test_security_groups_are_the_controllers_verdict(node_relay: ControllerRelay,
                                                     cluster: Client) -> None:
    """The controller checks the pod (here: refused, it names a group its namespace does
    not allow; the OVN backend refuses groups it would allow)."""
    st = node_relay.wait_ready(10.0)
    assert st is not None
    port = st.ports[0].name
    cluster.create(namespace("apps", {ALLOWED_ANNOTATION: "web"}))
    cluster.create(pod("greedy", "apps", node="n1", annotations={ANNOTATION: "db"}))
    cluster.create(pod("web-0", "apps", node="n1", annotations={ANNOTATION: "web"}))
    with pytest.raises(ControlPlaneError, match="namespace apps does not allow") as refused:
        node_relay.set_port_security_groups(port, ["db"], PortOwner("apps", "greedy", "c1"))
    assert not isinstance(refused.value, ControlPlaneUnavailable)
    with pytest.raises(ControlPlaneError, match="need the neutron backend"):
        node_relay.set_port_security_groups(port, ["web"], PortOwner("apps", "web-0", "c2"))
    node_relay.clear_port_security_groups(port)
    assert port not in node_relay.status().security_groups
