"""How long the relay makes a pod wait, and whether the refill keeps ahead of a burst.

Both print their figures (``pytest -s``) and assert generous bounds:

* security groups at ADD: one ``set_port_security_groups`` through the relay (a merge
  patch, the watch event, the controller's status write, its watch event), against the
  real controller (whose checks read the pod and its namespace; the OVN backend then
  refuses, so its answer is ``refused``) and against the StatusResponder (which grants);
* a burst: 48 pods take ports at one every 10 ms from a pool of 32 (refill below 8 up to
  32, 16 per request) while the daemon's Refiller asks the real controller, on a real NB,
  through the relay; every take must find a free port.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lightkube import Client

from ovn_underlay.config import CLUSTER_BACKEND, NodeConfig, key_of
from ovn_underlay.control.base import ControlPlaneError, PortOwner
from ovn_underlay.daemon.agent import NodeAgent
from ovn_underlay.daemon.refill import Refiller
from ovn_underlay.lab import daemons
from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.pods.controller_relay import ControllerRelay, node_network
from ovn_underlay.pods.network import network_config
from ovn_underlay.pods.pool import PodInterface
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION
from tests.agent.support import create_underlay_node, install_crd, responding
from tests.controller.conftest import MakeReplica, cluster, nb, replicas
from tests.controller.support import add_node
from tests.functional.test_ovs import vsctl
from tests.kube.support import namespace, pod, write_kubeconfig

__all__ = ["cluster", "nb", "replicas"]
CALLS = 50


@pytest.fixture
def direct(server: KubeApiServer, tmp_path: Path) -> str:
    """A kubeconfig naming the server itself (the tests' TCP relay would add its own
    latency to every request)."""
    return write_kubeconfig(tmp_path / "direct-kubeconfig", server.url)


@pytest.fixture
def kubeconfig(direct: str) -> str:
    """The controller's kubeconfig too names the server itself."""
    return direct


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_security_groups_through_the_relay_and_the_real_controller(
        replicas: MakeReplica, cluster: Client, direct: str) -> None:
    replicas()
    add_node(cluster, "n1", "10.0.0.11")
    cluster.create(namespace("apps", {ALLOWED_ANNOTATION: "web"}))
    cluster.create(pod("web-0", "apps", node="n1", annotations={ANNOTATION: "web"}))
    relay = ControllerRelay.for_node(NodeConfig(backend=CLUSTER_BACKEND,
                                                kubeconfig=direct, node_name="n1"))
    try:
        st = relay.wait_ready(10.0)
        assert st is not None
        port = st.ports[0].name
        samples = []
        for i in range(CALLS):
            owner = PortOwner("apps", "web-0", f"c{i}")

            def ask(owner: PortOwner = owner) -> None:
                with pytest.raises(ControlPlaneError, match="need the neutron backend"):
                    relay.set_port_security_groups(port, ["web"], owner)

            samples.append(timed(ask))
            relay.record_owners({port: None})
    finally:
        relay.close()
    p50, p99 = percentiles(samples)
    print(f"\nsecurity groups through the relay, real controller (refused by OVN): "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {CALLS}")
    assert p99 < 2000


def test_security_groups_through_the_relay_granted(server: KubeApiServer, tmp_path: Path,
                                                   admin: Client, direct: str) -> None:
    install_crd(admin)
    create_underlay_node(admin, "n1")
    with responding(server, tmp_path):
        relay = ControllerRelay.for_node(NodeConfig(backend=CLUSTER_BACKEND,
                                                    kubeconfig=direct, node_name="n1"))
        try:
            assert relay.wait_ready(10.0) is not None
            port = relay.add_pool_ports("n1-pods", 1)[0].name
            sets, clears = [], []
            for i in range(CALLS):
                owner = PortOwner("apps", "web-0", f"c{i}")
                sets.append(timed(functools.partial(relay.set_port_security_groups, port,
                                                    ["web"], owner)))
                clears.append(timed(functools.partial(relay.clear_port_security_groups,
                                                      port)))
        finally:
            relay.close()
    for what, samples in (("set", sets), ("clear", clears)):
        p50, p99 = percentiles(samples)
        print(f"\nsecurity groups {what} through the relay, granted by the StatusResponder: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {CALLS}")
        assert p99 < 2000


@pytest.fixture
def node_ovsdb(ovsdb_factory: Callable[[str, Path], str]) -> str:
    conn = ovsdb_factory("conf", daemons.OVS_SCHEMA)
    vsctl(conn, "init")
    return conn


@pytest.fixture
def cluster_node(replicas: MakeReplica, cluster: Client, direct: str, node_ovsdb: str,
                 tmp_path: Path) -> Iterator[NodeAgent]:
    """A node in cluster mode whose network the real controller made: its OVS database
    holds the settings the node agent records, its pool the controller's first ports."""
    replicas(pool_size=32, max_pool_ports=128, pool_batch=16)
    add_node(cluster, "n1", "10.0.0.11")
    relay = ControllerRelay.for_node(NodeConfig(backend=CLUSTER_BACKEND,
                                                kubeconfig=direct, node_name="n1"))
    st = relay.wait_ready(10.0)
    assert st is not None
    st = relay.request_pool_ports(32)
    relay.close()
    cfg = network_config(NodeConfig(backend=CLUSTER_BACKEND, kubeconfig=direct,
                                    node_name="n1", state_dir=str(tmp_path / "state"),
                                    pool_low=8, pool_high=32, pool_batch=16),
                         node_network(st))
    settings = {key_of(name): str(getattr(cfg, name)) for name in (
        "backend", "kubeconfig", "node_name", "state_dir", "pool_low", "pool_high",
        "pool_batch", "switch", "subnet", "gateway_ip", "router", "gateway_mac")}
    vsctl(node_ovsdb, "set", "Open_vSwitch", ".",
          *(f'external_ids:"{k}"="{v}"' for k, v in settings.items()))
    agent = NodeAgent(node_ovsdb)
    agent.pool.add_ports(node_network(st).ports)
    yield agent
    agent.close()


def test_the_refill_keeps_ahead_of_a_burst(cluster_node: NodeAgent) -> None:
    agent = cluster_node
    refiller = Refiller(agent, interval=0.5)
    refiller.run_once()  # the start-up reconcile, before the burst
    refiller.start()
    lowest, took, empty = agent.pool.stats().free, [], 0
    started = time.monotonic()
    try:
        for i in range(48):
            try:
                agent.pool.acquire(PodInterface(f"burst{i}", "eth0", f"/run/netns/b{i}"))
            except Exception:
                empty += 1
            refiller.wake()
            took.append(time.monotonic() - started)
            lowest = min(lowest, agent.pool.stats().free)
            time.sleep(0.01)
        deadline = time.monotonic() + 20
        while agent.pool.stats().free < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        back = time.monotonic() - started
    finally:
        refiller.stop()
    stats = agent.pool.stats()
    print(f"\nburst of 48 takes at 10 ms from 32 free (low 8, high 32, batch 16): "
          f"{empty} found the pool empty, lowest free {lowest}, free again >= 8 after "
          f"{back:.2f} s; pool {stats.total} ports, {stats.free} free; refill added "
          f"{refiller.status.added}, failures {refiller.status.failures}")
    assert empty == 0 and refiller.status.failures == 0
