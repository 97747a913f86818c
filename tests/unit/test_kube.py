"""The Kubernetes client on lightkube, and the security-group annotation read with GETs.

The API is the test API server (:mod:`ovn_underlay.lab.kubeapi`), in-process on localhost,
authenticating static tokens.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml
from lightkube import Client

from ovn_underlay.config import NodeConfig
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.kube import client as kube
from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.pods.pool import PodInterface
from ovn_underlay.pods.security_groups import (
    ALLOWED_ANNOTATION,
    GroupNotAllowed,
    PodSecurityGroups,
    parse_groups,
)
from tests.kube.support import namespace, pod, write_kubeconfig

TOKEN = "t0ken"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="openssl not installed")


def tokens_file(directory: Path, *tokens: str) -> Path:
    path = directory / "tokens.csv"
    path.write_text("".join(f"{t},user-{i},u{i}\n" for i, t in enumerate(tokens)))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """The API with namespace web (allowing web and db), its pods, and namespace open."""
    with KubeApiServer(tokens_file=tokens_file(tmp_path_factory.mktemp("api"), TOKEN)) as api:
        admin = Client(kube.load_config(write_kubeconfig(
            tmp_path_factory.mktemp("admin") / "config", api.url, {"token": TOKEN})))
        admin.create(namespace("web", {ALLOWED_ANNOTATION: "web, db"}))
        admin.create(namespace("open"))
        admin.create(pod("front-0", "web", annotations={"security-group": "web, db ,web",
                                                        "other": "x"}))
        admin.create(pod("plain", "web"))
        admin.create(pod("sneaky", "web", annotations={"security-group": "web,admin-only"}))
        admin.create(pod("asks", "open", annotations={"security-group": "web"}))
        admin.close()
        yield api


@pytest.fixture
def kubeconfig(server: KubeApiServer, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", server.url, {"token": TOKEN})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- configuration ---------------------------------------------------------------------
def test_the_current_context_gives_server_token_and_trust(tmp_path: Path) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://api:6443/",
                                               "certificate-authority-data": ca,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"tokenFile": "token", "client-key": "/k.pem"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c"}}]}))
    cfg = kube.load_config(str(path))
    assert cfg.cluster.server == "https://api:6443/" and cfg.cluster.insecure
    assert cfg.cluster.certificate_auth_data == ca
    assert cfg.user is not None and cfg.user.token_file == str(tmp_path / "token")
    assert cfg.user.client_key == "/k.pem"
    other = kube.load_config(str(path), context="other")
    assert other.user is not None and other.user.token is None and other.user.token_file is None


@pytest.mark.parametrize(("text", "error"), [
    ("- a list", "is not a mapping"),
    ("a: [", "is not valid YAML"),
    ("{clusters: []}", "has no current-context"),
    ("current-context: x\ncontexts: [{context: {cluster: c}}]", "is malformed"),
    ("current-context: gone\ncontexts: []", "no context named 'gone'"),
    ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]",
     "context 'x' names the cluster 'c', which it does not define"),
    ("current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
     "clusters: [{name: c, cluster: {server: 'http://a'}}]",
     "names the user 'u', which it does not define"),
    ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
     "clusters: [{name: c, cluster: {server: 'ftp://a'}}]", "has no http\\(s\\) server URL"),
    ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
     "clusters: [{name: c, cluster: {}}]", "has no http\\(s\\) server URL"),
])
def test_a_broken_kubeconfig_says_what_is_wrong(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "cfg").write_text(text)
    with pytest.raises(kube.KubeError, match=f"kubeconfig {tmp_path}/cfg.*{error}"):
        kube.load_config(str(tmp_path / "cfg"))


def test_without_kubeconfig_or_service_account_there_is_no_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(kube.KubeError, match=r"cannot read kubeconfig .*absent"):
        kube.load_config(str(tmp_path / "absent"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert not kube.in_cluster(str(tmp_path))  # no token
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    (tmp_path / "token").write_text("x")
    assert not kube.in_cluster(str(tmp_path))
    with pytest.raises(kube.KubeError, match="no Kubernetes API configured"):
        kube.load_config("", service_account=str(tmp_path))


# -- requests --------------------------------------------------------------------------
def test_annotations_are_read_with_the_bearer_token(server: KubeApiServer,
                                                    kubeconfig: str) -> None:
    client = kube.KubeClient(kube.load_config(kubeconfig))
    assert client.pod_annotations("web", "front-0") == {"security-group": "web, db ,web",
                                                        "other": "x"}
    assert client.pod_annotations("web", "plain") == {}
    assert client.namespace_annotations("web") == {ALLOWED_ANNOTATION: "web, db"}
    with pytest.raises(kube.PodNotFound, match="GET pod web/absent: not found"):
        client.pod_annotations("web", "absent")
    with pytest.raises(kube.NotFound) as absent:
        client.namespace_annotations("absent")
    assert not isinstance(absent.value, kube.PodNotFound)
    assert {e["user"] for e in server.request_log()[-5:]} == {"user-0"}
    client.close()


def test_a_wrong_token_is_refused_and_a_rotated_token_file_followed(
        server: KubeApiServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("stale\n")
    client = kube.KubeClient(kube.load_config(write_kubeconfig(
        tmp_path / "config", server.url, {"tokenFile": "token"})))
    with pytest.raises(kube.KubeError, match="HTTP 401") as refused:
        client.pod_annotations("web", "plain")
    assert not isinstance(refused.value, kube.KubeUnavailable)
    token.write_text(f"{TOKEN}\n")
    assert client.pod_annotations("web", "plain") == {}


def test_an_unreachable_api_is_unavailable(tmp_path: Path) -> None:
    port = closed_port()
    client = kube.KubeClient(kube.load_config(write_kubeconfig(
        tmp_path / "config", f"http://127.0.0.1:{port}")))
    with pytest.raises(kube.KubeUnavailable, match="cannot reach the Kubernetes API at "
                                                   f"http://127.0.0.1:{port}: .*refused"):
        client.pod_annotations("web", "front-0")


@pytest.mark.parametrize(("code", "error"), [(503, kube.KubeUnavailable),
                                             (429, kube.KubeUnavailable), (403, kube.KubeError),
                                             (404, kube.PodNotFound)])
def test_answers_are_mapped_to_the_modules_errors(code: int,
                                                  error: type[kube.KubeError]) -> None:
    request = httpx2.Request("GET", "http://api/x")
    with pytest.raises(error, match=f"GET x: (HTTP {code}|not found)") as raised, \
            kube.translated("http://api", "GET x", kube.PodNotFound):
        raise httpx2.HTTPStatusError("x", request=request,
                                     response=httpx2.Response(code, request=request))
    assert type(raised.value) is error


def test_a_client_is_reused_until_its_kubeconfig_changes(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, "http://api-one")
    first = kube.client_for(str(path))
    assert kube.client_for(str(path)) is first
    write_kubeconfig(path, "http://api-number-two")
    second = kube.client_for(str(path))
    assert second is not first and second.server == "http://api-number-two"
    with pytest.raises(kube.KubeError, match="cannot read kubeconfig"):
        kube.client_for(str(tmp_path / "absent"))


# -- TLS and the in-cluster configuration ------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeApiServer, Path]]:
    """An https API server (self-signed for 127.0.0.1) taking the token ``sa-token``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "ca.crt", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=kubeapi", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    with KubeApiServer(tls_cert=cert, tls_key=key,
                       tokens_file=tokens_file(tmp, "sa-token")) as api:
        yield api, cert


def test_tls_is_verified_with_the_kubeconfigs_ca(tls_server: tuple[KubeApiServer, Path],
                                                 tmp_path: Path) -> None:
    api, cert = tls_server
    ca = base64.b64encode(cert.read_bytes()).decode()
    trusted = kube.KubeClient(kube.load_config(write_kubeconfig(
        tmp_path / "ok", api.url, {"token": "sa-token"}, {"certificate-authority-data": ca})))
    assert trusted.namespace_annotations("default") == {}
    untrusted = kube.KubeClient(kube.load_config(write_kubeconfig(
        tmp_path / "no-ca", api.url, {"token": "sa-token"})))
    with pytest.raises(kube.KubeUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.namespace("default")


def test_in_a_pod_the_service_account_is_the_configuration(
        tls_server: tuple[KubeApiServer, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    api, cert = tls_server
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "namespace").write_text("kube-system")
    shutil.copy(cert, account / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    assert kube.in_cluster(str(account))
    cfg = kube.load_config("", service_account=str(account))
    assert cfg.cluster.server == f"https://127.0.0.1:{api.port}" and cfg.namespace == "kube-system"
    client = kube.KubeClient(cfg)
    assert client.namespace_annotations("kube-system") == {}
    assert api.request_log()[-1]["user"] == "user-0"


# -- the security-group annotation, read with GETs ---------------------------------------
def test_parse_groups_keeps_order_and_drops_repeats_and_blanks() -> None:
    assert parse_groups("web, db ,web,,") == ("web", "db")
    assert parse_groups("") == ()


def test_the_pods_groups_come_from_its_annotation(kubeconfig: str, tmp_path: Path) -> None:
    groups = PodSecurityGroups(NodeConfig(kubeconfig=kubeconfig, state_dir=str(tmp_path)))
    assert groups.groups_for(PodInterface("c1", "eth0", "/ns", "web", "front-0")) == ("web", "db")
    assert groups.groups_for(PodInterface("c2", "eth0", "/ns", "web", "plain")) == ()
    assert groups.groups_for(PodInterface("c3", "eth0", "/ns", "web", "absent")) == ()
    assert groups.groups_for(PodInterface("c4", "eth0", "/ns")) == ()  # not from Kubernetes


def test_a_group_its_namespace_does_not_allow_fails_the_add(kubeconfig: str) -> None:
    groups = PodSecurityGroups(NodeConfig(kubeconfig=kubeconfig))
    with pytest.raises(GroupNotAllowed, match="pod web/sneaky names security group\\(s\\) "
                       "admin-only, which namespace web does not allow: .* in the namespace's "
                       f"'{ALLOWED_ANNOTATION}' annotation \\(it allows 'web, db'\\)"):
        groups.groups_for(PodInterface("c", "eth0", "/ns", "web", "sneaky"))
    with pytest.raises(GroupNotAllowed, match=r"pod open/asks names security group\(s\) web, "
                       r".*it has no such annotation, so its pods may name none"):
        groups.groups_for(PodInterface("c", "eth0", "/ns", "open", "asks"))


def test_a_lookup_failure_fails_closed(tmp_path: Path) -> None:
    broken = PodSecurityGroups(NodeConfig(kubeconfig=str(tmp_path / "absent")))
    with pytest.raises(ControlPlaneError, match="cannot read the annotations of pod web/x"):
        broken.groups_for(PodInterface("c", "eth0", "/ns", "web", "x"))
    down = PodSecurityGroups(NodeConfig(kubeconfig=write_kubeconfig(
        tmp_path / "down", f"http://127.0.0.1:{closed_port()}")))
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


def test_without_a_kubeconfig_no_kubernetes_client_is_imported(tmp_path: Path) -> None:
    script = ("import sys\n"
              "from ovn_underlay.config import NodeConfig\n"
              "from ovn_underlay.pods.pool import PodInterface\n"
              "from ovn_underlay.pods.security_groups import PodSecurityGroups\n"
              f"cfg = NodeConfig(state_dir={str(tmp_path)!r})\n"
              "att = PodInterface('c', 'eth0', '/ns', 'web', 'front-0')\n"
              "assert PodSecurityGroups(cfg).groups_for(att) == ()\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('lightkube', 'httpx2', 'ovn_underlay') and 'kube' in m))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60, env={**os.environ, "PYTHONPATH": "src"})
    assert done.stdout.strip() == "[]"


class FailingNamespaces:
    """An annotation source whose pods ask for a group and whose namespaces cannot be read."""

    def __init__(self, error: kube.KubeError) -> None:
        self.error = error

    def pod_annotations(self, namespace: str, name: str) -> dict[str, str]:
        return {"security-group": "web"}

    def namespace_annotations(self, name: str) -> dict[str, str]:
        raise self.error


@pytest.mark.parametrize(("error", "raised"), [
    (kube.KubeUnavailable("down"), ControlPlaneUnavailable),
    (kube.KubeError("GET namespace web: HTTP 403: forbidden"), ControlPlaneError)])
def test_an_unreadable_namespace_fails_the_add(error: kube.KubeError,
                                               raised: type[ControlPlaneError]) -> None:
    groups = PodSecurityGroups(NodeConfig(kubeconfig="/k"), FailingNamespaces(error))
    with pytest.raises(raised, match="cannot read the annotations of namespace web \\(which "
                       f"security groups its pods may name, for pod web/p\\): {error}") as info:
        groups.groups_for(PodInterface("c", "eth0", "/ns", "web", "p"))
    assert type(info.value) is raised
