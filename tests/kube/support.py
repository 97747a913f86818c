"""What the tests of the Kubernetes side share: kubeconfigs, objects, a cuttable relay, waits."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod

from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.waiting import eventually

__all__ = ["eventually"]


def write_kubeconfig(path: Path, server: str, user: dict[str, object] | None = None,
                     cluster: dict[str, object] | None = None) -> str:
    """A kubeconfig of one cluster (``server``), one user and one context; its path."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


def pod(name: str, namespace: str = "default", node: str = "",
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None) -> Pod:
    """A minimal Pod, bound to ``node`` when one is given."""
    return Pod(metadata=ObjectMeta(name=name, namespace=namespace, annotations=annotations,
                                   labels=labels),
               spec=PodSpec(containers=[Container(name="c", image="registry.example/app:1")],
                            nodeName=node or None))


def namespace(name: str, annotations: dict[str, str] | None = None) -> Namespace:
    """A Namespace with ``annotations``."""
    return Namespace(metadata=ObjectMeta(name=name, annotations=annotations))


def bind(server: KubeApiServer, namespace: str, name: str, node: str) -> None:
    """Bind a pod to ``node`` as the scheduler does (lightkube cannot read the answer)."""
    request = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/{namespace}/pods/{name}/binding", method="POST",
        headers={"Content-Type": "application/json"}, data=json.dumps({
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}).encode())
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 201


class Relay:
    """A TCP relay to the API server: a test cuts its connections, refuses new ones, and
    reads the request lines (method, path and query) that went through."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[str] = []
        self.refusing = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if requests and data[:4] in (b"GET ", b"POST", b"PUT ", b"PATC", b"DELE"):
                    self.requests.append(data.split(b"\r\n", 1)[0].decode())
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Break every connection open now, as a network failure would."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def watches(self, resource: str) -> list[str]:
        """The watch requests of ``resource`` (their request lines)."""
        return [r for r in self._collection(resource) if "watch=true" in r]

    def lists(self, resource: str) -> list[str]:
        """The list requests of ``resource``."""
        return [r for r in self._collection(resource) if "watch=true" not in r]

    @staticmethod
    def query(request: str) -> dict[str, str]:
        """The query parameters of a request line."""
        target = urllib.parse.urlsplit(request.split(" ")[1])
        return dict(urllib.parse.parse_qsl(target.query))

    def _collection(self, resource: str) -> list[str]:
        return [r for r in list(self.requests)
                if r.split(" ")[1].split("?")[0].endswith(f"/{resource}")]

    def close(self) -> None:
        self.listener.close()
        self.cut()
