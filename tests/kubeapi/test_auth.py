"""Item 10: static-token authentication and the request log."""

from __future__ import annotations

import json
from pathlib import Path

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, configmap, lightkube_client


def test_tokens_authenticate_and_everything_is_logged(tmp_path: Path) -> None:
    """kube-apiserver's --token-auth-file format (https://kubernetes.io/docs/reference/
    access-authn-authz/authentication/#static-token-file): a request without a valid bearer
    token is 401 Unauthorized; with one it runs as that user, whose groups (quoted, comma
    separated, or ``|``) plus system:authenticated are logged with the verb in Kubernetes
    terms, for deriving RBAC rules."""
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('t-ctrl,ctrl,u1,"system:masters,lab:ctrl"\nt-node,node1,u2,lab:nodes|x\n')
    log = tmp_path / "requests.jsonl"
    with KubeApiServer(tokens_file=tokens, request_log=log) as secured:
        anonymous = Http(secured)
        status, body = anonymous.request("GET", "/api/v1/namespaces")
        assert (status, body["reason"]) == (401, "Unauthorized")
        assert anonymous.request("GET", "/api/v1/namespaces", token="wrong")[0] == 401
        ctrl = Http(secured, token="t-ctrl")
        ctrl.create("/api/v1/namespaces/default/configmaps", configmap("c"))
        ctrl.get("/api/v1/namespaces/default/configmaps/c")
        ctrl.get("/api/v1/namespaces/default/configmaps")
        ctrl.request("PATCH", "/api/v1/namespaces/default/configmaps/c", {"data": {}},
                     "application/merge-patch+json")
        ctrl.request("DELETE", "/api/v1/namespaces/default/configmaps/c")
        node = Http(secured, token="t-node")
        node.watch("/api/v1/nodes?watch=true&timeoutSeconds=1").ended()
        node.get("/apis/coordination.k8s.io/v1")
        entries = secured.request_log()
    assert entries[0]["code"] == 401 and entries[0]["user"] == ""
    ctrl_entries = [e for e in entries if e["user"] == "ctrl"]
    assert [e["verb"] for e in ctrl_entries] == ["create", "get", "list", "patch", "delete"]
    assert ctrl_entries[0]["groups"] == ["system:masters", "lab:ctrl", "system:authenticated"]
    assert ctrl_entries[0] | {"time": 0, "userAgent": ""} == {
        "method": "POST", "path": "/api/v1/namespaces/default/configmaps", "userAgent": "",
        "user": "ctrl", "uid": "u1",
        "groups": ["system:masters", "lab:ctrl", "system:authenticated"], "verb": "create",
        "apiGroup": "", "apiVersion": "v1", "resource": "configmaps", "subresource": "",
        "namespace": "default", "name": "", "code": 201, "time": 0}
    node_entries = [e for e in entries if e["user"] == "node1"]
    assert node_entries[0]["verb"] == "watch" and node_entries[0]["resource"] == "nodes"
    assert node_entries[0]["groups"] == ["lab:nodes", "x", "system:authenticated"]
    assert node_entries[1]["nonResourceURL"] == "/apis/coordination.k8s.io/v1"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["verb"] for e in lines] == [e["verb"] for e in entries]


def test_lightkube_with_a_token(tmp_path: Path) -> None:
    """lightkube's bearer token from its kubeconfig authenticates; none is 401."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Namespace

    tokens = tmp_path / "tokens.csv"
    tokens.write_text("secret,admin,u0\n")
    with KubeApiServer(tokens_file=tokens) as secured:
        with lightkube_client(secured.url, token="secret") as client:
            assert "default" in [n.metadata.name for n in client.list(Namespace)]
        with lightkube_client(secured.url) as client:
            try:
                list(client.list(Namespace))
            except ApiError as exc:
                assert exc.status.code == 401
            else:
                raise AssertionError("no token, yet listed")
        assert secured.request_log()[0]["user"] == "admin"
