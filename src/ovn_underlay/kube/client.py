"""The Kubernetes API through lightkube: where it is, a client of it, its errors in our terms.

Configuration (:func:`load_config`) comes from a kubeconfig file (the node setting
``kubeconfig``; its current context or the one named) or, when none is named and the
process runs in a pod, from the pod's service account (``KUBERNETES_SERVICE_HOST``/
``KUBERNETES_SERVICE_PORT`` and the token, CA and namespace under :data:`SERVICE_ACCOUNT`).
lightkube reads it: CA (file or inline), ``insecure-skip-tls-verify``, bearer ``token``
or ``tokenFile`` (read again when the server answers 401, so a rotated token is
followed; a relative path is taken from the kubeconfig's directory, as kubectl does),
client certificate and key (files or inline), exec plugins.

:class:`KubeClient` is a lightkube ``Client`` (:attr:`KubeClient.api`) on a transport of
its own: TCP keepalives find a dead server under a silent watch, and :meth:`KubeClient.close`
shuts its connections down at once, which is how a watch blocked in a read is stopped.
Its reads raise only :class:`KubeError` and its subclasses.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import httpx2
import msgspec
import yaml
from lightkube import ApiError, Client, ConfigError, KubeConfig, SingleConfig
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.models import User
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod

DEFAULT_TIMEOUT = 5.0
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
KEEPALIVE = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
)
"""A server gone without a word is noticed within ~60 s, even under a silent watch."""


class KubeError(Exception):
    """The configuration is unusable or the API refused the request."""


class KubeUnavailable(KubeError):
    """The Kubernetes API cannot be reached right now (or answered 5xx or 429)."""


class NotFound(KubeError):
    """The API has no such object."""


class PodNotFound(NotFound):
    """The API has no such pod."""


class HasMetadata(Protocol):
    """What every Kubernetes object has (lightkube's models)."""

    @property
    def metadata(self) -> ObjectMeta | None: ...


def annotations_of(obj: HasMetadata) -> dict[str, str]:
    """The object's annotations (empty when it has none)."""
    meta = obj.metadata
    return dict(meta.annotations or {}) if meta is not None else {}


def in_cluster(service_account: str = SERVICE_ACCOUNT) -> bool:
    """Whether this process runs in a pod with a service account: the in-cluster configuration."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")
                and os.environ.get("KUBERNETES_SERVICE_PORT")
                and os.path.isfile(os.path.join(service_account, "token")))


def load_config(kubeconfig: str = "", context: str = "",
                service_account: str = SERVICE_ACCOUNT) -> SingleConfig:
    """The kubeconfig file's configuration, else the in-cluster one; KubeError if neither."""
    if kubeconfig:
        return _from_file(kubeconfig, context)
    if in_cluster(service_account):
        try:
            config = KubeConfig.from_service_account(service_account).get()
        except (ConfigError, OSError, KeyError) as exc:
            raise KubeError(f"in-cluster configuration ({service_account}): {exc}") from exc
        assert config is not None
        return config
    raise KubeError("no Kubernetes API configured: no kubeconfig, and not in a pod "
                    f"(KUBERNETES_SERVICE_HOST unset or no token in {service_account})")


def _from_file(path: str, context: str) -> SingleConfig:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise KubeError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KubeError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise KubeError(f"kubeconfig {path} is not a mapping")
    try:
        config = KubeConfig.from_dict({"clusters": [], "contexts": [], **doc}, fname=path)
    except (KeyError, TypeError, msgspec.ValidationError) as exc:
        raise KubeError(f"kubeconfig {path} is malformed: {exc}") from exc
    name = context or config.current_context
    if not name:
        raise KubeError(f"kubeconfig {path} has no current-context")
    ctx = config.contexts.get(name)
    if ctx is None:
        raise KubeError(f"kubeconfig {path}: no context named {name!r}")
    for kind, wanted, known in (("cluster", ctx.cluster, config.clusters),
                                ("user", ctx.user, config.users)):
        if wanted is not None and wanted not in known:
            raise KubeError(f"kubeconfig {path}: context {name!r} names the {kind} {wanted!r}, "
                            "which it does not define")
    server = next((str((c.get("cluster") or {}).get("server") or "")
                   for c in doc.get("clusters") or () if c.get("name") == ctx.cluster), "")
    if not server.startswith(("http://", "https://")):
        raise KubeError(f"kubeconfig {path}: the cluster of context {name!r} has no http(s) "
                        "server URL")
    single = config.get(name)
    assert single is not None
    user = single.user or User()
    if user.token_file and not os.path.isabs(user.token_file):
        user = msgspec.structs.replace(user, token_file=str(Path(path).parent / user.token_file))
    return single._replace(user=user)


class _Transport(httpx2.HTTPTransport):
    """httpx's transport with TCP keepalives, whose connections :meth:`cut` shuts down.

    A watch waits in a socket read without a timeout (a server may stay quiet for
    minutes); closing the socket from another thread does not wake that read, shutting it
    down does.  With ``bookmarks`` every watch asks for them (lightkube's watch has no
    parameter for it).
    """

    def __init__(self, verify: ssl.SSLContext, bookmarks: bool) -> None:
        super().__init__(verify=verify, socket_options=KEEPALIVE)
        self._bookmarks = bookmarks
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._cut = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        with self._lock:
            if self._cut:
                raise httpx2.ConnectError("the client is closed", request=request)
        if self._bookmarks and request.url.params.get("watch") == "true":
            request.url = request.url.copy_set_param("allowWatchBookmarks", "true")
        response = super().handle_request(request)
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.add(sock)
                cut = self._cut
            if cut:
                _shut(sock)
        return response

    def cut(self) -> None:
        """Shut down every connection now and refuse new requests."""
        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def translated(server: str, what: str,
               not_found: type[NotFound] = NotFound) -> Iterator[None]:
    """Raise the KubeError saying what failed in place of lightkube's and httpx's exceptions."""
    try:
        yield
    except ApiError as exc:
        raise _refused(what, exc.status.code or 0, exc.status.message or str(exc),
                       not_found) from exc
    except httpx2.HTTPStatusError as exc:
        raise _refused(what, exc.response.status_code, exc.response.reason_phrase,
                       not_found) from exc
    except httpx2.TransportError as exc:
        raise KubeUnavailable(f"cannot reach the Kubernetes API at {server}: "
                              f"{describe(exc)}") from exc
    except (ConfigError, msgspec.MsgspecError) as exc:
        raise KubeError(f"{what} on {server}: {exc}") from exc


def _refused(what: str, code: int, message: str, not_found: type[NotFound]) -> KubeError:
    if code == 404:
        return not_found(f"{what}: not found")
    cls = KubeUnavailable if code >= 500 or code == 429 else KubeError
    return cls(f"{what}: HTTP {code}: {message}")


class KubeClient:
    """A lightkube client of one API server, with reads that raise KubeError."""

    def __init__(self, config: SingleConfig, timeout: float = DEFAULT_TIMEOUT,
                 bookmarks: bool = False) -> None:
        """``bookmarks``: every watch asks for bookmarks (what an informer wants)."""
        if config.cluster.server.startswith("http://"):  # no TLS: skip loading CA bundles
            config = config._replace(cluster=msgspec.structs.replace(config.cluster,
                                                                     insecure=True))
        self.config = config
        self.server = config.cluster.server.rstrip("/")
        try:
            verify = verify_cluster(config.cluster, config.user or User(), config.abs_file,
                                    trust_env=False)
        except (OSError, ssl.SSLError, ConfigError, ValueError) as exc:
            raise KubeError(f"cannot set up TLS for {self.server}: {exc}") from exc
        self._transport = _Transport(verify, bookmarks)
        self.api = Client(config, timeout=httpx2.Timeout(timeout), trust_env=False,
                          transport=self._transport)

    def pod(self, namespace: str, name: str) -> Pod:
        """Pod ``namespace/name``; PodNotFound when there is none."""
        with translated(self.server, f"GET pod {namespace}/{name}", PodNotFound):
            return self.api.get(Pod, name, namespace=namespace)

    def namespace(self, name: str) -> Namespace:
        """Namespace ``name``; NotFound when there is none."""
        with translated(self.server, f"GET namespace {name}"):
            return self.api.get(Namespace, name)

    def pod_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """The annotations of pod ``namespace/name`` (empty if it has none)."""
        return annotations_of(self.pod(namespace, name))

    def namespace_annotations(self, name: str) -> dict[str, str]:
        """The annotations of namespace ``name`` (empty if it has none)."""
        return annotations_of(self.namespace(name))

    def close(self) -> None:
        """Shut the connections down (a watch in progress ends at once) and release them."""
        self._transport.cut()
        self.api.close()


_clients: dict[str, tuple[tuple[int, int, int], KubeClient]] = {}
_clients_lock = threading.Lock()


def client_for(path: str) -> KubeClient:
    """A client for the kubeconfig at ``path``, reused while the file is unchanged.

    Reading the kubeconfig and setting up TLS cost milliseconds; the node daemon asks for
    the same client on every pod start.  A changed file gives a new client.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KubeError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _clients_lock:
        cached = _clients.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    client = KubeClient(load_config(path))
    with _clients_lock:
        _clients[path] = (stamp, client)
    return client


def describe(exc: BaseException) -> str:
    """A one-line account of a failed request, for messages and logs."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status.code}: {exc.status.message}"
    return str(exc) or type(exc).__name__
