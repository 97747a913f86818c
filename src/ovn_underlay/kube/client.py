"""Read a pod's annotations from the Kubernetes API, with nothing but a kubeconfig file.

A deliberately small client: the kubeconfig's current context (or the one
named) gives the server, its CA (file or inline data, or
``insecure-skip-tls-verify``) and the user's credentials (bearer ``token`` or
``tokenFile``, client certificate and key as files or inline data).  One GET
of ``/api/v1/namespaces/NS/pods/NAME`` per call, with the standard library's
HTTP client.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 5.0


class KubeError(Exception):
    """The kubeconfig is unusable or the API refused the request."""


class KubeUnavailable(KubeError):
    """The Kubernetes API cannot be reached right now (or answered 5xx)."""


class PodNotFound(KubeError):
    """The API has no such pod."""


@dataclass(frozen=True)
class KubeConfig:
    """What a request needs: the server and how to trust and authenticate to it."""

    server: str
    ca_file: str = ""
    ca_data: str = ""
    insecure: bool = False
    token: str = field(default="", repr=False)
    cert_file: str = ""
    key_file: str = ""
    cert_data: bytes = field(default=b"", repr=False)
    key_data: bytes = field(default=b"", repr=False)


def _named(items: Any, name: str, kind: str, path: str) -> Mapping[str, Any]:
    """The ``kind`` entry called ``name`` in a kubeconfig list (contexts, clusters, users)."""
    for item in items or ():
        if isinstance(item, Mapping) and item.get("name") == name:
            value = item.get(kind)
            return value if isinstance(value, Mapping) else {}
    raise KubeError(f"kubeconfig {path}: no {kind} named {name!r}")


def _relative(base: Path, value: Any) -> str:
    """A file named in a kubeconfig, relative to the kubeconfig's directory."""
    return str(base / str(value)) if value else ""


def _decoded(value: Any, what: str, path: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True) if value else b""
    except ValueError as exc:
        raise KubeError(f"kubeconfig {path}: {what} is not base64") from exc


def parse_kubeconfig(text: str, path: str = "kubeconfig", context: str = "") -> KubeConfig:
    """The settings of ``context`` (default: current-context) of a kubeconfig document."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise KubeError(f"kubeconfig {path} is not a mapping")
    name = context or str(doc.get("current-context") or "")
    if not name:
        raise KubeError(f"kubeconfig {path} has no current-context")
    ctx = _named(doc.get("contexts"), name, "context", path)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster", "")), "cluster", path)
    user = _named(doc.get("users"), str(ctx.get("user", "")), "user", path) \
        if ctx.get("user") else {}
    server = str(cluster.get("server") or "")
    if not server.startswith(("http://", "https://")):
        raise KubeError(f"kubeconfig {path}: cluster of context {name!r} has no http(s) "
                        "server URL")
    base = Path(path).parent
    token = str(user.get("token") or "")
    if not token and user.get("tokenFile"):
        try:
            token = Path(_relative(base, user["tokenFile"])).read_text().strip()
        except OSError as exc:
            raise KubeError(f"kubeconfig {path}: cannot read tokenFile: {exc}") from exc
    ca_data = _decoded(cluster.get("certificate-authority-data"), "certificate-authority-data",
                       path)
    return KubeConfig(
        server=server.rstrip("/"),
        ca_file=_relative(base, cluster.get("certificate-authority")),
        ca_data=ca_data.decode(errors="replace"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=token,
        cert_file=_relative(base, user.get("client-certificate")),
        key_file=_relative(base, user.get("client-key")),
        cert_data=_decoded(user.get("client-certificate-data"), "client-certificate-data",
                           path),
        key_data=_decoded(user.get("client-key-data"), "client-key-data", path),
    )


def load_kubeconfig(path: str, context: str = "") -> KubeConfig:
    """The settings of the kubeconfig file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KubeError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    return parse_kubeconfig(text, path, context)


@contextmanager
def _key_pair_files(cfg: KubeConfig) -> Iterator[tuple[str, str]]:
    """The client certificate and key as files (inline data goes to a private temp dir)."""
    if not cfg.cert_data:
        yield cfg.cert_file, cfg.key_file
        return
    with tempfile.TemporaryDirectory(prefix="oul-kube-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for name, data in ((cert, cfg.cert_data), (key, cfg.key_data or cfg.cert_data)):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        yield cert, key


def _ssl_context(cfg: KubeConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.ca_file or None,
                                     cadata=cfg.ca_data or None)
    if cfg.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with _key_pair_files(cfg) as (cert, key):
        if cert:
            try:
                ctx.load_cert_chain(cert, key or None)
            except (OSError, ssl.SSLError) as exc:
                raise KubeError(f"cannot load the client certificate: {exc}") from exc
    return ctx


class KubeClient:
    """GETs of pods from the API server of a kubeconfig."""

    def __init__(self, cfg: KubeConfig, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.cfg = cfg
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = []
        if cfg.server.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(cfg)))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str) -> dict[str, Any]:
        """The JSON object at the API ``path``; raises PodNotFound on 404."""
        request = urllib.request.Request(self.cfg.server + path,
                                         headers={"Accept": "application/json"})
        if self.cfg.token:
            request.add_header("Authorization", f"Bearer {self.cfg.token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                data = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise PodNotFound(f"{path}: not found on {self.cfg.server}") from exc
            cls = KubeUnavailable if exc.code >= 500 else KubeError
            raise cls(f"GET {self.cfg.server}{path}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KubeUnavailable(f"cannot reach the Kubernetes API at {self.cfg.server}: "
                                  f"{reason}") from exc
        except ValueError as exc:
            raise KubeError(f"GET {self.cfg.server}{path}: the answer is not JSON") from exc
        if not isinstance(data, dict):
            raise KubeError(f"GET {self.cfg.server}{path}: the answer is not an object")
        return data

    def pod_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """The annotations of pod ``namespace/name`` (empty if it has none)."""
        quote = urllib.parse.quote
        pod = self.get(f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
                       f"{quote(name, safe='')}")
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        return {str(k): str(v) for k, v in annotations.items()}


CLIENT_MAX_AGE = 60.0
"""Seconds a cached client is reused: a tokenFile it read may have been rotated since."""
_clients: dict[str, tuple[tuple[int, int, int], float, KubeClient]] = {}
_clients_lock = threading.Lock()


def client_for(path: str) -> KubeClient:
    """A client for the kubeconfig at ``path``, reused while the file is unchanged.

    Parsing the kubeconfig and building its TLS context costs milliseconds;
    the node daemon asks for the same client on every pod start.  A client
    is made again when the file changes or after :data:`CLIENT_MAX_AGE`.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KubeError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    now = time.monotonic()
    with _clients_lock:
        cached = _clients.get(path)
    if cached is not None and cached[0] == stamp and now - cached[1] < CLIENT_MAX_AGE:
        return cached[2]
    client = KubeClient(load_kubeconfig(path))
    with _clients_lock:
        _clients[path] = (stamp, now, client)
    return client
