"""An informer: one resource type listed, then watched, into a local cache, as client-go does.

The contract:

* :meth:`Informer.start` starts a thread that lists the objects (of one namespace or
  all, optionally filtered by label and field selectors), replaces the cache with them,
  then watches from the list's resourceVersion; :meth:`Informer.stop` ends it at once.
* The cache follows every event; :meth:`Informer.get` and :meth:`Informer.list` read it
  (the objects are shared: do not modify them); :meth:`Informer.has_synced` says whether
  the first list is in.
* Handlers run on the informer's thread after the cache has changed: ``on_add(obj)``,
  ``on_update(old, new)``, ``on_delete(last_known)``; ``on_relist()`` after each list
  is stored and its differences emitted (the first, and each after a 410 Gone).  One
  that raises is logged and the informer goes on.
* The watch asks for bookmarks; :attr:`Informer.resource_version` is the newest version
  seen, from the list, an event or a bookmark.  A watch the server ends (its timeout) is
  made again by lightkube from that version; one that fails (connection dropped, server
  error) is made again by the informer from that version, on a new connection, after a
  backoff (0.5 s doubling to 30 s, reset by the next event), so nothing is listed again
  and no event is missed.  A 429 or 503 answer with Retry-After (the watch cache
  re-initializing, priority and fairness) is asked again after the seconds it names (at
  most 30), logged as information, with no backoff of its own.
* A 410 Gone (the server no longer has the history after that version) makes it list
  again at once: the cache is replaced and the differences are emitted, deletes included
  for objects removed meanwhile.  (A list that fails, with 410 too, is retried after the
  backoff.)

Each (re)connection reads the configuration again (``config`` is a callable), so a
rotated credential in a kubeconfig is picked up.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx2
from lightkube import ALL_NS, ApiError, SingleConfig
from lightkube.core.client import FieldSelector, LabelSelector
from lightkube.core.resource import NamespacedResource

from ovn_underlay.kube.client import HasMetadata, KubeClient, KubeError, describe

LOG = logging.getLogger(__name__)
R = TypeVar("R", bound=HasMetadata)
Key = tuple[str, str]
"""(namespace or "" for cluster-scoped objects, name)."""

LIST_CHUNK = 500
"""Objects per page of a list, as client-go's reflector asks."""
WATCH_TIMEOUT = 300
"""Seconds a watch lasts at least before the server ends it (lightkube makes it again)."""
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
EXPECTED = (httpx2.HTTPError, KubeError, ValueError)
"""Failures of a list or watch that are logged without a traceback."""


def key_of(obj: HasMetadata) -> Key:
    """The cache key of an object."""
    meta = obj.metadata
    if meta is None or not meta.name:
        raise ValueError("an object without metadata.name")
    return meta.namespace or "", meta.name


def version_of(obj: HasMetadata) -> str:
    """The object's resourceVersion ("" when it has none)."""
    return (obj.metadata.resourceVersion or "") if obj.metadata is not None else ""


def retry_after(exc: BaseException) -> float | None:
    """The seconds a 429 or 503 answer asks the client to wait (its Retry-After header,
    in seconds, at most :data:`BACKOFF_MAX`), else None: how kube-apiserver says its
    watch cache is (re)initializing or its priority and fairness rejected the request."""
    if not isinstance(exc, httpx2.HTTPStatusError) or exc.response.status_code not in (429,
                                                                                       503):
        return None
    try:
        seconds = float(exc.response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(BACKOFF_MAX, seconds) if seconds >= 0 else None


def is_gone(exc: BaseException) -> bool:
    """Whether a list or watch failed with 410 Gone (its resourceVersion is too old)."""
    if isinstance(exc, ApiError):
        return exc.status.code == 410
    return isinstance(exc, httpx2.HTTPStatusError) and exc.response.status_code == 410


class Informer(Generic[R]):
    """A cache of one resource type kept up to date by list and watch (module docstring)."""

    def __init__(self, config: Callable[[], SingleConfig], resource: type[R], *,
                 namespace: str | None = None, labels: LabelSelector | None = None,
                 fields: FieldSelector | None = None,
                 on_add: Callable[[R], object] | None = None,
                 on_update: Callable[[R, R], object] | None = None,
                 on_delete: Callable[[R], object] | None = None,
                 on_relist: Callable[[], object] | None = None,
                 watch_timeout: int | None = None, name: str = "") -> None:
        """``namespace`` None: every namespace (or a cluster-scoped resource).

        ``watch_timeout``: seconds each watch lasts (default: 300 to 600, at random, so
        that the nodes' informers do not all come back at once).
        """
        self.config = config
        self.resource = resource
        self.name = name or f"{resource.__name__} informer"
        self._namespace = namespace if namespace is not None else (
            ALL_NS if issubclass(resource, NamespacedResource) else None)
        self._selection: dict[str, Any] = {"labels": labels, "fields": fields}
        self._on_add, self._on_update, self._on_delete = on_add, on_update, on_delete
        self._on_relist = on_relist
        self._watch_timeout = watch_timeout
        self._lock = threading.Lock()
        self._cache: dict[Key, R] = {}
        self._rv = ""
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._kube: KubeClient | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0

    # -- the cache ---------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> R | None:
        """The cached object ``namespace/name`` ("" namespace for cluster-scoped ones)."""
        with self._lock:
            return self._cache.get((namespace, name))

    def list(self) -> list[R]:
        """Every cached object."""
        with self._lock:
            return list(self._cache.values())

    def has_synced(self) -> bool:
        """Whether the first list has been stored (and its add handlers run)."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`has_synced`."""
        return self._synced.wait(timeout)

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion seen: of the last list, event or bookmark."""
        with self._lock:
            return self._rv

    # -- the thread --------------------------------------------------------------------
    def start(self) -> None:
        """Start listing and watching in a thread of its own (once)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} was started already")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the watch and the thread (waits up to ``timeout`` seconds for it)."""
        self._stopping.set()
        with self._lock:
            kube, self._kube = self._kube, None
        if kube is not None:
            kube.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        relist = True
        while not self._stopping.is_set():
            try:
                api = self._connect()
                if relist:
                    self._relist(api)
                    relist = False
                self._watch(api)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                self._disconnect()
                if is_gone(exc) and not relist:
                    LOG.info("%s: resourceVersion %s is gone from the server's history: "
                             "listing again", self.name, self.resource_version)
                    relist = True
                    continue
                asked = retry_after(exc)
                if asked is not None and isinstance(exc, httpx2.HTTPStatusError):
                    LOG.info("%s: the API server asks to wait %g s (HTTP %d); again then",
                             self.name, asked, exc.response.status_code)
                    self._stopping.wait(asked)
                    continue
                self._failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
                LOG.warning("%s: %s; again in %.1f s", self.name, describe(exc), delay,
                            exc_info=not isinstance(exc, EXPECTED))
                self._stopping.wait(delay)
        self._disconnect()

    def _connect(self) -> Any:
        """The lightkube client of the current connection, made anew after a failure."""
        with self._lock:
            kube = self._kube
        if kube is None:
            kube = KubeClient(self.config(), bookmarks=True)
            with self._lock:
                stopping = self._stopping.is_set()
                if not stopping:
                    self._kube = kube
            if stopping:
                kube.close()
                raise KubeError(f"{self.name} is stopping")
        return kube.api

    def _disconnect(self) -> None:
        with self._lock:
            kube, self._kube = self._kube, None
        if kube is not None:
            kube.close()

    def _relist(self, api: Any) -> None:
        listed = api.list(self.resource, namespace=self._namespace, chunk_size=LIST_CHUNK,
                          **self._selection)
        fresh: dict[Key, R] = {key_of(obj): obj for obj in listed}
        with self._lock:
            old, self._cache = self._cache, fresh
            self._rv = listed.resourceVersion
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit(self._on_add, obj)
            elif version_of(before) != version_of(obj):
                self._emit(self._on_update, before, obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit(self._on_delete, obj)
        self._synced.set()
        if self._on_relist is not None:
            try:
                self._on_relist()
            except Exception:
                LOG.exception("%s: the relist handler failed", self.name)

    def _watch(self, api: Any) -> None:
        timeout = self._watch_timeout if self._watch_timeout is not None \
            else int(WATCH_TIMEOUT * (1 + random.random()))
        for kind, obj in api.watch(self.resource, namespace=self._namespace,
                                   server_timeout=max(1, timeout),
                                   resource_version=self.resource_version, **self._selection):
            self._failures = 0
            self._apply(kind, obj)

    def _apply(self, kind: str, obj: R) -> None:
        if kind == "BOOKMARK":
            with self._lock:
                self._rv = version_of(obj)
            return
        key = key_of(obj)
        with self._lock:
            before = self._cache.get(key)
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
            self._rv = version_of(obj)
        if kind == "DELETED":
            if before is not None:
                self._emit(self._on_delete, obj)
        elif before is None:
            self._emit(self._on_add, obj)
        else:
            self._emit(self._on_update, before, obj)

    def _emit(self, handler: Callable[..., object] | None, *objs: R) -> None:
        if handler is None:
            return
        try:
            handler(*objs)
        except Exception:
            LOG.exception("%s: a handler failed on %s", self.name,
                          "/".join(filter(None, key_of(objs[-1]))))
