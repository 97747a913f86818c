"""The ``security-group`` pod annotation on a real neutron-server, read from a Kubernetes API.

The Kubernetes API is the test API server (:mod:`ovn_underlay.lab.kubeapi`), listening in
the lab's hypervisor namespace on the management network, where the CNI plugin in a VM
reaches it; objects are made through it with lightkube, as a controller would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from ovn_underlay.kube.client import load_config
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import CniRuntime, Node, pod_ip
from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.lab.topology import LabState
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION
from tests.conftest import PodFactory
from tests.kube.support import namespace, pod, write_kubeconfig

GROUP = "oul-echo-only"
OPEN_PORT, CLOSED_PORT = 7777, 7778
TOKEN, ADMIN_TOKEN = "kube-t0ken", "admin-t0ken"
_T = TypeVar("_T")


class KubeApi:
    """The test API server on the management network, in the lab's hypervisor namespace."""

    def __init__(self, state: LabState, workdir: Path) -> None:
        self.state = state
        self.workdir = workdir
        tokens = workdir / "tokens.csv"
        tokens.write_text(f"{TOKEN},cni,u1\n{ADMIN_TOKEN},admin,u0\n")
        self.server = lab_neutron.in_netns(state.hv_netns, lambda: KubeApiServer(
            host=lab_neutron.hv_mgmt_ip(), tokens_file=tokens).start())
        self.admin_config = write_kubeconfig(workdir / "admin", self.url, {"token": ADMIN_TOKEN})
        self.names = itertools.count(1)

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def _as_admin(self, func: Callable[[Client], _T]) -> _T:
        def run() -> _T:
            client = Client(load_config(self.admin_config))
            try:
                return func(client)
            finally:
                client.close()

        return lab_neutron.in_netns(self.state.hv_netns, run)

    def create_namespace(self, name: str) -> None:
        """Make namespace ``name``, without annotations."""
        self._as_admin(lambda client: client.create(namespace(name)))

    def allow(self, name: str, groups: str) -> None:
        """Let the pods of namespace ``name`` name ``groups``, as the cluster admin does."""
        self._as_admin(lambda client: client.patch(
            Namespace, name, {"metadata": {"annotations": {ALLOWED_ANNOTATION: groups}}},
            patch_type=PatchType.MERGE))

    def create_pod(self, annotations: dict[str, str],
                   in_namespace: str = "default") -> tuple[str, str]:
        """POST a pod with a new name to the API, as a controller would; (namespace, name)."""
        name = f"pod-{next(self.names)}"
        self._as_admin(lambda client: client.create(pod(name, in_namespace,
                                                        annotations=annotations)))
        return in_namespace, name

    def readers(self) -> set[str]:
        """The users who read pods."""
        return {e["user"] for e in self.server.request_log()
                if e.get("resource") == "pods" and e.get("verb") == "get"}

    def write_kubeconfig(self, path: Path) -> str:
        return write_kubeconfig(path, self.url, {"token": TOKEN})


@pytest.fixture(scope="module")
def kube_api(neutron_lab: LabState, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[KubeApi]:
    api = KubeApi(neutron_lab, tmp_path_factory.mktemp("kube-api"))
    try:
        api.allow("default", f"{GROUP},no-such-group")
        api.create_namespace("restricted")
        yield api
    finally:
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
    assert kube_api.readers() == {"cni"}
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


def test_a_group_its_namespace_does_not_allow_fails_the_add(
        neutron_lab: LabState, kube_api: KubeApi, echo_only: str,
        annotated_nodes: tuple[Node, Node], pods: PodFactory) -> None:
    reader, _ = annotated_nodes
    runtime = CniRuntime(reader)
    path, cid = pods.netns(reader)
    pods.track(runtime, cid, path)
    reply = runtime.call("ADD", cid, path,
                         pod=kube_api.create_pod({"security-group": GROUP}, "restricted"))
    assert reply.code != 0 and reply.output is not None
    assert GROUP in reply.output["msg"] and ALLOWED_ANNOTATION in reply.output["msg"]
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
