"""The node's side (ControllerRelay, no control-plane credentials) against the controller:
pool ports, owners and security groups through the UnderlayNode, with their latencies."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Iterator

import pytest
from lightkube import Client

from ovn_underlay.control.base import ControlPlaneError, PortOwner
from ovn_underlay.kube.client import load_config
from ovn_underlay.pods.controller_relay import ControllerRelay
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION
from ovn_underlay.pods.security_groups import ANNOTATION as POD_GROUPS
from tests.controller.conftest import MakeReplica
from tests.controller.support import add_node, rows, wait_ready
from tests.kube.support import namespace, pod


@pytest.fixture
def relay_n1(replicas: MakeReplica, cluster: Client, kubeconfig: str
             ) -> Iterator[ControllerRelay]:
    """Node n1's relay, once the controller made n1's network."""
    replicas(max_pool_ports=40, pool_batch=8)
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    node = ControllerRelay(functools.partial(load_config, kubeconfig), "n1", timeout=5)
    yield node
    node.close()


def test_pool_ports_asked_by_the_node_are_made_by_the_controller(
        relay_n1: ControllerRelay, nb: str) -> None:
    net = relay_n1.get_node_network("node-n1")
    assert net is not None and len(net.ports) == 4
    times = []
    for _ in range(4):
        start = time.monotonic()
        new = relay_n1.add_pool_ports("node-n1", 8)
        times.append(time.monotonic() - start)
        assert len(new) == 8
    names = {p.name for p in relay_n1.get_node_network("node-n1").ports}  # type: ignore[union-attr]
    assert len(names) == 36
    assert names <= set(rows(nb, "Logical_Switch_Port"))
    print(f"8 pool ports through the controller: median {statistics.median(times) * 1000:.0f} "
          f"ms, max {max(times) * 1000:.0f} ms")


def test_the_controllers_refusal_reaches_the_node(relay_n1: ControllerRelay,
                                                  cluster: Client) -> None:
    cluster.create(namespace("apps", {ALLOWED_ANNOTATION: "web"}))
    times = []
    for i, port in enumerate(("node-n1-p1", "node-n1-p2", "node-n1-p3")):
        cluster.create(pod(f"web{i}", "apps", node="n1", annotations={POD_GROUPS: "web"}))
        owner = PortOwner("apps", f"web{i}", f"cid{i}")
        relay_n1.record_owners({port: owner})
        start = time.monotonic()
        with pytest.raises(ControlPlaneError, match="need the neutron backend"):
            relay_n1.set_port_security_groups(port, ["web"], owner)
        times.append(time.monotonic() - start)
    print(f"a security-group request answered by the controller: median "
          f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
