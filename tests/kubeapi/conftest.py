"""Fixtures for the test API server: one server per test, raw HTTP and lightkube clients."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from ovn_underlay.lab.kubeapi import KubeApiServer

POD_SPEC = {"containers": [{"name": "c", "image": "registry.example/app:1"}]}


class Http:
    """Raw HTTP/1.1 to the server (one request per connection, as curl would)."""

    def __init__(self, server: KubeApiServer, token: str | None = None) -> None:
        self.server = server
        self.token = token

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.server.url)
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)

    def headers(self, content_type: str | None, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = token if token is not None else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json",
                token: str | None = None) -> tuple[int, Any]:
        conn = self.connection()
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        conn.request(method, path, body=data,
                     headers=self.headers(content_type if data is not None else None, token))
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, body
        return body

    def create(self, path: str, body: Any) -> Any:
        status, created = self.request("POST", path, body)
        assert status == 201, created
        return created

    def watch(self, path: str, timeout: float = 10.0) -> Watch:
        return Watch(self, path, timeout)


class Watch:
    """A raw watch stream: ``next()`` returns the next event (or raises on timeout)."""

    def __init__(self, http_: Http, path: str, timeout: float) -> None:
        self.conn = http_.connection(timeout)
        self.conn.request("GET", path, headers=http_.headers(None, None))
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = dict(self.response.getheaders())

    def next(self) -> dict[str, Any]:
        line = self.response.readline()
        if not line:
            raise EOFError("watch stream ended")
        event: dict[str, Any] = json.loads(line)
        return event

    def until(self, predicate: Any, limit: int = 100) -> dict[str, Any]:
        for _ in range(limit):
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError("no matching event")

    def ended(self) -> bool:
        try:
            return self.response.readline() == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer(bookmark_interval=0.3) as running:
        yield running


@pytest.fixture
def api(server: KubeApiServer) -> Http:
    return Http(server)


def lightkube_client(url: str, token: str | None = None, ca: str | None = None) -> Any:
    """A lightkube Client on ``url`` (a kubeconfig of one cluster, one user, namespace default).

    ``KubeConfig.from_server`` leaves the user unset, which lightkube 1.0 refuses, so the
    same one-context config is spelled out.
    """
    from lightkube import Client, KubeConfig

    cluster: dict[str, Any] = {"server": url}
    if ca:
        cluster["certificate-authority"] = ca
    config = KubeConfig.from_dict({
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "lab", "user": {"token": token} if token else {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab",
                                                  "namespace": "default"}}],
        "current-context": "lab"})
    return Client(config, trust_env=False)


@pytest.fixture
def kube(server: KubeApiServer) -> Iterator[Any]:
    client = lightkube_client(server.url)
    yield client
    client.close()


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A minimal Pod manifest."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {**POD_SPEC, **spec}}


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": data}
