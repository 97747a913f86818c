"""The small Kubernetes client and the security-group annotation lookup.

The API is kmock's KubernetesEmulator served in-process over HTTP on
localhost (a thread runs its event loop).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import kmock
import pytest
import yaml

from ovn_underlay.config import NodeConfig
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.kube import client as kube
from ovn_underlay.pods.pool import PodInterface
from ovn_underlay.pods.security_groups import PodSecurityGroups, parse_groups

TOKEN = "t0ken"


class Emulator:
    """KubernetesEmulator on 127.0.0.1, run by a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.k8s: kmock.KubernetesEmulator | None = None
        self.server: kmock.Server | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),),
                                       daemon=True)

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        async with kmock.KubernetesEmulator() as k8s, kmock.Server(k8s) as server:
            self.k8s, self.server = k8s, server
            self.ready.set()
            await self.stopping.wait()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def add_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        async def post() -> int:
            assert self.server is not None
            reply = await self.server.client.post(
                f"/api/v1/namespaces/{namespace}/pods",
                json={"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "name": name, "namespace": namespace, "annotations": annotations}})
            return reply.status

        assert asyncio.run_coroutine_threadsafe(post(), self.loop).result(10) == 200

    def authorizations(self) -> list[str]:
        assert self.k8s is not None
        return [str(r.headers.get("Authorization")) for r in list(self.k8s)]


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    emulator = Emulator()
    emulator.thread.start()
    assert emulator.ready.wait(10)
    emulator.add_pod("web", "front-0", {"security-group": "web, db ,web", "other": "x"})
    emulator.add_pod("web", "plain", {})
    yield emulator
    assert emulator.stopping is not None
    emulator.loop.call_soon_threadsafe(emulator.stopping.set)
    emulator.thread.join(10)


def kubeconfig(server: str, user: dict[str, object] | None = None,
               cluster: dict[str, object] | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": TOKEN}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c"}}]})


def test_the_current_context_gives_server_token_and_trust(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    text = kubeconfig("https://api:6443/", {"tokenFile": "token", "client-certificate": "c.pem",
                                            "client-key": "/abs/k.pem"},
                      {"certificate-authority-data": ca, "insecure-skip-tls-verify": True})
    cfg = kube.parse_kubeconfig(text, str(tmp_path / "config"))
    assert cfg.server == "https://api:6443"
    assert cfg.token == "from-file" and "from-file" not in repr(cfg)
    assert cfg.ca_data == "-----BEGIN CERTIFICATE-----\n" and cfg.insecure
    assert cfg.cert_file == str(tmp_path / "c.pem") and cfg.key_file == "/abs/k.pem"
    other = kube.parse_kubeconfig(text, "config", context="other")
    assert other.token == ""


@pytest.mark.parametrize(("text", "error"), [
    ("- a list", "is not a mapping"),
    ("{clusters: []}", "has no current-context"),
    (kubeconfig("ftp://api"), "has no http\\(s\\) server URL"),
    (kubeconfig("http://api").replace("current-context: ctx", "current-context: gone"),
     "no context named 'gone'"),
    (kubeconfig("http://api", {"client-key-data": "!!"}), "client-key-data is not base64"),
])
def test_a_broken_kubeconfig_says_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(kube.KubeError, match=error):
        kube.parse_kubeconfig(text, "cfg")


def test_annotations_are_read_with_the_bearer_token(api: Emulator) -> None:
    client = kube.KubeClient(kube.parse_kubeconfig(kubeconfig(api.url)))
    assert client.pod_annotations("web", "front-0") == {"security-group": "web, db ,web",
                                                        "other": "x"}
    assert client.pod_annotations("web", "plain") == {}
    assert f"Bearer {TOKEN}" in api.authorizations()
    with pytest.raises(kube.PodNotFound):
        client.pod_annotations("web", "absent")


def test_an_unreachable_api_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = kube.KubeClient(kube.parse_kubeconfig(kubeconfig(f"http://127.0.0.1:{port}")))
    with pytest.raises(kube.KubeUnavailable, match="cannot reach the Kubernetes API at "
                                                   f"http://127.0.0.1:{port}: .*refused"):
        client.pod_annotations("web", "front-0")

def test_a_client_is_reused_until_its_kubeconfig_changes_or_ages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig("http://api-one"))
    first = kube.client_for(str(path))
    assert kube.client_for(str(path)) is first
    path.write_text(kubeconfig("http://api-number-two"))
    second = kube.client_for(str(path))
    assert second is not first and second.cfg.server == "http://api-number-two"
    monkeypatch.setattr(kube, "CLIENT_MAX_AGE", 0.0)
    assert kube.client_for(str(path)) is not second
    with pytest.raises(kube.KubeError, match="cannot read kubeconfig"):
        kube.client_for(str(tmp_path / "absent"))


def test_parse_groups_keeps_order_and_drops_repeats_and_blanks() -> None:
    assert parse_groups("web, db ,web,,") == ("web", "db")
    assert parse_groups("") == ()


def test_the_pods_groups_come_from_its_annotation(api: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(api.url))
    groups = PodSecurityGroups(NodeConfig(kubeconfig=str(path), state_dir=str(tmp_path)))
    assert groups.groups_for(PodInterface("c1", "eth0", "/ns", "web", "front-0")) == ("web", "db")
    assert groups.groups_for(PodInterface("c2", "eth0", "/ns", "web", "plain")) == ()
    assert groups.groups_for(PodInterface("c3", "eth0", "/ns", "web", "absent")) == ()
    assert groups.groups_for(PodInterface("c4", "eth0", "/ns")) == ()  # not from Kubernetes


def test_a_lookup_failure_fails_closed(tmp_path: Path) -> None:
    broken = PodSecurityGroups(NodeConfig(kubeconfig=str(tmp_path / "absent")))
    with pytest.raises(ControlPlaneError, match="cannot read the annotations of pod web/x"):
        broken.groups_for(PodInterface("c", "eth0", "/ns", "web", "x"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "down").write_text(kubeconfig(f"http://127.0.0.1:{port}"))
    down = PodSecurityGroups(NodeConfig(kubeconfig=str(tmp_path / "down")))
    with pytest.raises(ControlPlaneUnavailable):
        down.groups_for(PodInterface("c", "eth0", "/ns", "web", "x"))


def test_without_a_kubeconfig_the_feature_is_off_and_said_once_per_node(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = NodeConfig(state_dir=str(tmp_path))
    att = PodInterface("c", "eth0", "/ns", "web", "front-0")
    with caplog.at_level(logging.INFO, "ovn_underlay.pods.security_groups"):
        for _ in range(3):  # three processes, as three CNI calls would be
            assert PodSecurityGroups(cfg).groups_for(att) == ()
    assert len(caplog.messages) == 1
    assert "'security-group' pod annotation is off" in caplog.messages[0]
