"""Calls that must undo only what they did themselves, run with and without the node daemon.

Each case builds a working pod through the CNI binary as a runtime calls it,
then sends the call that used to break it: a DEL that arrives after the pod's
network namespace path was reused by another pod, a repeated ADD whose
readiness probe fails, an ADD of the same container into another namespace.
The working pod must come out as it was: its eth0, its OVS port, its pool
record (CHECK passes) and its traffic.
"""

from __future__ import annotations

import time
from typing import Any

from ovn_underlay.dataplane import links
from ovn_underlay.lab import netns, probe
from ovn_underlay.lab.cluster import CniRuntime, Node, pod_ip
from ovn_underlay.lab.topology import nbctl, vsctl
from tests.conftest import PodFactory


def assert_intact(node: Node, runtime: CniRuntime, cid: str, path: str,
                  result: dict[str, Any]) -> None:
    """The pod ``cid`` is exactly as its ADD made it, and works."""
    host_if = result["interfaces"][0]["name"]
    assert links.inspect_pod(path, "eth0") is not None, "the pod lost its eth0"
    assert host_if in vsctl(node.vm.ovsdb, "list-ports", "br-int").split()
    held = [p for p in node.pool()["ports"] if p["ip"] == pod_ip(result)]
    assert held and held[0]["allocation"]["attachment"]["container_id"] == cid
    assert held[0]["allocation"]["state"] == "attached"
    check = runtime.call("CHECK", cid, path, prev_result=result)
    assert check.code == 0, check.output
    assert probe.ping(path.rsplit("/", 1)[1], result["ips"][0]["gateway"], attempts=3)


def late_del_after_the_netns_path_was_reused(node: Node, pods: PodFactory,
                                             with_netns: bool) -> None:
    """Pod X's netns vanishes without a DEL; pod Y gets the same path; X's DEL comes late."""
    runtime = CniRuntime(node)
    path, x = pods.netns(node)
    pods.track(runtime, x, path)
    runtime.add(x, path, ("default", x))
    name = path.rsplit("/", 1)[1]
    netns.destroy(name)
    netns.create(name)
    y = f"{x}-next"
    pods.track(runtime, y, path)
    y_result = runtime.add(y, path, ("default", y))
    reply = runtime.delete(x, path if with_netns else "")
    assert reply.code == 0, reply.output
    assert not [p for p in node.pool()["ports"] if p["allocation"]
                and p["allocation"]["attachment"]["container_id"] == x], "X's port is free"
    assert_intact(node, runtime, y, path, y_result)


def failed_repeated_add_keeps_the_working_pod(node: Node, pods: PodFactory) -> None:
    """A runtime retries ADD of an attached pod and the gateway is silent this time."""
    runtime = CniRuntime(node)
    path, cid, result = pods.add(node, runtime)
    lport = next(p["lport"] for p in node.pool()["ports"] if p["ip"] == pod_ip(result))
    security = nbctl(node.state.nb, "get", "Logical_Switch_Port", lport,
                     "port_security").strip()
    # OVN now drops the pod's frames: its gateway falls silent for it alone.
    nbctl(node.state.nb, "lsp-set-port-security", lport, "0a:58:00:00:00:01")
    try:
        deadline = time.monotonic() + 10
        while probe.ping(path.rsplit("/", 1)[1], result["ips"][0]["gateway"], attempts=1):
            assert time.monotonic() < deadline, "the gateway did not fall silent"
        reply = runtime.call("ADD", cid, path, pod=("default", cid), readinessTimeout=1)
    finally:
        nbctl(node.state.nb, "set", "Logical_Switch_Port", lport,
              f"port_security={security}")
    assert reply.output is not None and reply.output["code"] == 101, reply.stderr[-400:]
    assert_intact(node, runtime, cid, path, result)


def add_into_another_netns_is_refused_while_the_pod_lives(node: Node,
                                                          pods: PodFactory) -> None:
    """ADD of an attached container's interface into a second namespace."""
    runtime = CniRuntime(node)
    path, cid, result = pods.add(node, runtime)
    other, _ = pods.netns(node)
    reply = runtime.call("ADD", cid, other, pod=("default", cid))
    assert reply.output is not None and reply.output["code"] == 104, reply.stderr[-400:]
    assert path in reply.output["msg"]
    assert links.inspect_pod(other, "eth0") is None
    netns.destroy(other.rsplit("/", 1)[1])
    assert_intact(node, runtime, cid, path, result)


def add_into_a_new_netns_after_the_old_one_died(node: Node, pods: PodFactory) -> None:
    """The same container's ADD into a new namespace once the old one is gone: moved there."""
    runtime = CniRuntime(node)
    path, cid, result = pods.add(node, runtime)
    netns.destroy(path.rsplit("/", 1)[1])
    other, _ = pods.netns(node)
    pods.track(runtime, cid, other)
    moved = runtime.add(cid, other, ("default", cid))
    assert pod_ip(moved) == pod_ip(result), "the attachment keeps its port"
    held = [p for p in node.pool()["ports"] if p["ip"] == pod_ip(moved)]
    assert held[0]["allocation"]["attachment"]["netns"] == other
    assert_intact(node, runtime, cid, other, moved)
