"""The ``security-group`` pod annotation on a real neutron-server, read from a Kubernetes API.

The Kubernetes API is kmock's KubernetesEmulator served over HTTP from the
lab's hypervisor namespace (a thread of this process that joined it), where
the CNI plugin in a VM reaches it over the management network.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import CniRuntime, Node, pod_ip
from ovn_underlay.lab.topology import LabState
from tests.conftest import PodFactory

GROUP = "oul-echo-only"
OPEN_PORT, CLOSED_PORT = 7777, 7778
TOKEN = "kube-t0ken"


class KubeApi:
    """kmock's KubernetesEmulator on HTTP, listening in the lab's hypervisor namespace."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.emulator: kmock.KubernetesEmulator | None = None
        self.server: kmock.Server | None = None
        self.thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self.names = itertools.count(1)

    def _run(self) -> None:
        lab_neutron.enter_netns(self.state.hv_netns)
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, \
                kmock.Server(emulator, host=lab_neutron.hv_mgmt_ip(), port=0) as server:
            self.emulator, self.server = emulator, server
            self.ready.set()
            await self.stopping.wait()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(10), "the Kubernetes API emulator did not start"

    def stop(self) -> None:
        assert self.stopping is not None
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{lab_neutron.hv_mgmt_ip()}:{self.server.port}"

    def create_pod(self, annotations: dict[str, str]) -> tuple[str, str]:
        """POST a pod with a new name to the API, as a controller would; (namespace, name)."""
        namespace, name = "default", f"pod-{next(self.names)}"
        async def post() -> int:
            assert self.server is not None
            reply = await self.server.client.post(
                f"/api/v1/namespaces/{namespace}/pods",
                json={"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": namespace,
                                   "annotations": annotations}})
            return reply.status

        status = asyncio.run_coroutine_threadsafe(post(), self.loop).result(10)
        assert status in (200, 201)
        return namespace, name

    def authorizations(self) -> list[str]:
        """The Authorization headers of the requests the API received."""
        assert self.emulator is not None
        return [str(r.headers.get("Authorization")) for r in list(self.emulator)]

    def write_kubeconfig(self, path: Path) -> str:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "lab",
            "clusters": [{"name": "lab", "cluster": {"server": self.url}}],
            "users": [{"name": "cni", "user": {"token": TOKEN}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "cni"}}]}))
        return str(path)


@pytest.fixture(scope="module")
def kube_api(neutron_lab: LabState) -> Iterator[KubeApi]:
    api = KubeApi(neutron_lab)
    api.start()
    yield api
    api.stop()


@pytest.fixture
def echo_only(neutron_lab: LabState) -> Iterator[str]:
    """A security group letting in TCP to OPEN_PORT only (no ICMP); its id."""
    def make(conn: Any) -> str:
        group = conn.network.create_security_group(name=GROUP)
        conn.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4",
            protocol="tcp", port_range_min=OPEN_PORT, port_range_max=OPEN_PORT,
            remote_ip_prefix="0.0.0.0/0")
        return str(group.id)

    group_id = lab_neutron.call(neutron_lab, make)
    yield group_id
    lab_neutron.call(neutron_lab, lambda conn: conn.network.delete_security_group(group_id))


@pytest.fixture
def annotated_nodes(neutron_lab: LabState, kube_api: KubeApi,
                    neutron_nodes: tuple[Node, Node]) -> Iterator[tuple[Node, Node]]:
    """VM 1 reads the annotations (trunk child ports); VM 2 has no Kubernetes API."""
    reader, plain = neutron_nodes
    reader.init("--kubeconfig", kube_api.write_kubeconfig(Path(reader.vm.rundir) / "kubeconfig"),
                child_ports="trunk")
    plain.init(child_ports="binding-profile")
    for node in neutron_nodes:
        node.setup_switch(pool_size=4)
    yield reader, plain
    reader.init("--kubeconfig", "")


def port_groups(state: LabState, port: str) -> list[str]:
    return list(lab_neutron.call(state, lambda conn: conn.network.get_port(port)
                                 ).security_group_ids)


def default_group(state: LabState) -> str:
    def find(conn: Any) -> str:
        project = next(iter(conn.network.ports())).project_id
        return str(conn.network.find_security_group("default", project_id=project).id)
    return lab_neutron.call(state, find)


def held_port(node: Node, container_id: str) -> str:
    return next(p["lport"] for p in node.pool()["ports"]
                if p["allocation"] and p["allocation"]["attachment"]["container_id"]
                == container_id)


def test_the_annotation_limits_what_reaches_the_pod_while_it_lives(
        neutron_lab: LabState, kube_api: KubeApi, echo_only: str,
        annotated_nodes: tuple[Node, Node], pods: PodFactory) -> None:
    reader, plain = annotated_nodes
    runtime = CniRuntime(reader)
    path, cid = pods.netns(reader)
    pods.track(runtime, cid, path)
    pod = kube_api.create_pod({"security-group": GROUP})
    guarded = probe.Endpoint(cid, path.rsplit("/", 1)[1], pod_ip(runtime.add(cid, path, pod)))
    port = held_port(reader, cid)
    assert port_groups(neutron_lab, port) == [echo_only]
    assert f"Bearer {TOKEN}" in kube_api.authorizations()
    client_path, _, _ = pods.add(plain)
    client = client_path.rsplit("/", 1)[1]
    assert probe.tcp(client, guarded, port=OPEN_PORT)
    assert not probe.tcp(client, guarded, port=CLOSED_PORT, timeout=2.0)
    assert not probe.ping(client, guarded.ip, attempts=1)
    gateway = reader.config()["gateway_ip"]
    assert probe.ping(guarded.netns, gateway)  # its egress stays open

    assert runtime.delete(cid, path).code == 0
    assert port_groups(neutron_lab, port) == [default_group(neutron_lab)]
    path2, cid2 = pods.netns(reader)
    pods.track(runtime, cid2, path2)
    pod = kube_api.create_pod({})
    again = probe.Endpoint(cid2, path2.rsplit("/", 1)[1], pod_ip(runtime.add(cid2, path2, pod)))
    assert held_port(reader, cid2) == port  # the same port, back in the pool clean
    assert probe.tcp(client, again, port=CLOSED_PORT)
    assert probe.ping(client, again.ip)


def test_an_unknown_group_fails_the_add_and_leaves_the_port_clean(
        neutron_lab: LabState, kube_api: KubeApi, annotated_nodes: tuple[Node, Node],
        pods: PodFactory) -> None:
    reader, _ = annotated_nodes
    runtime = CniRuntime(reader)
    path, cid = pods.netns(reader)
    pods.track(runtime, cid, path)
    reply = runtime.call("ADD", cid, path,
                         pod=kube_api.create_pod({"security-group": "no-such-group"}))
    assert reply.code == 1 and reply.output is not None
    assert "no-such-group" in reply.output["msg"]
    assert reader.pool()["stats"]["free"] == 4
    default = default_group(neutron_lab)
    assert all(port_groups(neutron_lab, p["lport"]) == [default] for p in reader.pool()["ports"])


def test_without_a_kubernetes_api_the_annotation_is_off_and_said_once(
        annotated_nodes: tuple[Node, Node], pods: PodFactory) -> None:
    _, plain = annotated_nodes
    for _ in range(2):
        pods.add(plain)
    log = (Path(plain.vm.rundir) / "cni.log").read_text()
    assert log.count("'security-group' pod annotation is off") == 1
