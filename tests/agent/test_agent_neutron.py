"""The node agent on a Neutron lab with the real controller: security groups granted, and
what they add to a pod's ADD.

``lab up --neutron --kube``: the VM's port is a Neutron port; the controller (threads in
the hypervisor's namespace, where neutron-server answers) makes the node network as
trunk subports of it; the agent in the VM holds no credentials.  50 pods with a security
group and 50 without are added and deleted one after the other through the installed
CNI binary, each pair followed by the security-group requests a standalone node makes
itself at ADD and DEL (its own Neutron connection); the figures are printed
(``pytest -s``).
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.control import credentials
from ovn_underlay.control.base import PortOwner
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.neutron_view import TRUNK
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab import netns
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.cluster import CniRuntime
from ovn_underlay.lab.topology import Lab, LabState
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION
from tests.agent.test_agent_lab import Agent, InHypervisor
from tests.conftest import skip_unless_lab_possible

PODS = 50
GROUP = "ag-web"


@pytest.fixture(scope="module")
def neutron_kube_lab(lab_rundir: Path) -> Iterator[LabState]:
    skip_unless_lab_possible()
    missing = lab_neutron.missing_tools()
    if missing:
        pytest.skip(f"Neutron lab programs missing: {', '.join(missing)}")
    lab = Lab(f"an{os.getpid() % 1000}", lab_rundir)
    state = lab.up(1, neutron=True, kube=True, octavia=False)
    try:
        lab_kube.install_cluster_mode(state)
        lab_kube.request(state, "POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "apps", "annotations": {ALLOWED_ANNOTATION: GROUP}}})
        lab_neutron.call(state, lambda conn: conn.network.create_security_group(name=GROUP))
        yield state
    finally:
        lab.down()


def neutron_plane() -> NeutronControlPlane:
    creds = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                        "OS_NETWORK_ENDPOINT_OVERRIDE": lab_neutron.api_url()},
                                       "the lab's Neutron")
    return NeutronControlPlane(creds, child_ports=TRUNK, timeout=60)


def add_pod(state: LabState, name: str, node: str, groups: str | None) -> None:
    lab_kube.request(state, "POST", "/api/v1/namespaces/apps/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps",
                     "annotations": {ANNOTATION: groups} if groups else {}},
        "spec": {"nodeName": node,
                 "containers": [{"name": "c", "image": "registry.example/app:1"}]}})


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


def test_security_groups_granted_through_the_controller_and_their_cost(
        neutron_kube_lab: LabState, tmp_path: Path) -> None:
    state = neutron_kube_lab
    controller = InHypervisor(state, neutron_plane)
    agent = Agent(state, tmp_path)
    controller.start()
    agent.start()
    try:
        agent.ready()
        config = agent.node.config()
        assert config["backend"] == "cluster" and not config["neutron_config"]
        runtime = CniRuntime(agent.node)
        path = agent.node.pod_netns("agn")
        times: dict[str, list[float]] = {"ADD": [], "ADD+groups": [], "DEL": [],
                                         "DEL+groups": [], "standalone set": [],
                                         "standalone clear": []}
        plane = lab_neutron.in_netns(state.hv_netns, neutron_plane)
        try:
            for i in range(PODS):
                for kind, groups in (("", None), ("+groups", GROUP)):
                    name = f"{'web' if groups else 'plain'}-{i}"
                    add_pod(state, name, agent.name, groups)
                    started = time.perf_counter()
                    reply = runtime.call("ADD", f"ctr-{name}", path, pod=("apps", name))
                    times["ADD" + kind].append(time.perf_counter() - started)
                    assert reply.code == 0, (reply, agent.log_text()[-3000:])
                    if groups and i == 0:
                        port = granted_port(state, agent.name)
                        sg = lab_neutron.call(state, lambda c, p=port: [
                            c.network.get_security_group(g).name
                            for g in c.network.get_port(p).security_group_ids])
                        assert sg == [GROUP]
                    started = time.perf_counter()
                    assert runtime.delete(f"ctr-{name}", path).code == 0
                    times["DEL" + kind].append(time.perf_counter() - started)
                # interleaved, so that both modes see the same load of the machine
                direct = lab_neutron.in_netns(state.hv_netns,
                                              functools.partial(standalone_pair, plane, port))
                times["standalone set"].append(direct[0])
                times["standalone clear"].append(direct[1])
        finally:
            lab_neutron.in_netns(state.hv_netns, plane.close)
            netns.destroy(path.rsplit("/", 1)[1])
        for what, samples in times.items():
            print(f"\n{what}: {ms(samples)} over {len(samples)}")
    finally:
        agent.stop()
        controller.stop()


def standalone_pair(plane: NeutronControlPlane, port: str) -> tuple[float, float]:
    """What ADD and DEL wait for in the standalone mode: the node's own Neutron requests
    (seconds of set_port_security_groups, of clear_port_security_groups)."""
    started = time.perf_counter()
    plane.set_port_security_groups(port, [GROUP], PortOwner("apps", "web-0", "standalone"))
    middle = time.perf_counter()
    plane.clear_port_security_groups(port)
    return middle - started, time.perf_counter() - middle


def granted_port(state: LabState, node: str) -> str:
    obj: dict[str, Any] = lab_kube.request(
        state, "GET", f"/apis/ovn-underlay.io/v1alpha1/underlaynodes/{node}")
    granted = (obj.get("status") or {}).get("securityGroups") or {}
    assert len(granted) == 1, obj.get("status")
    return str(next(iter(granted)))
