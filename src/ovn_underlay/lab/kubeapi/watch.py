"""Watches: the event stream of one resource, as kube-apiserver's watch cache serves it.

https://kubernetes.io/docs/reference/using-api/api-concepts/ "Efficient detection of
changes", "Watch bookmarks", "Semantics for watch", "410 Gone responses":

* ``resourceVersion`` unset or ``"0"``: synthetic ``ADDED`` events for every matching
  object ("Get State and Start at Most Recent" / "at Any"), then the changes after that.
* ``resourceVersion=N``: the changes strictly after N ("Start at Exact"); a version older
  than the history window is answered on the established stream (HTTP 200) by an ``ERROR``
  event carrying a 410 ``Expired`` Status, which is what the real server's watch cache does
  (k8s.io/apiserver/pkg/storage/cacher: "we should return a watch, even if ...
  the resource version is too old"), after which the stream ends.
* selectors apply to every event, with transitions: an object that starts matching is
  ``ADDED``, one that stops matching is ``DELETED`` (its previous state, at the event's
  version), as the cacher's ``convertToWatchEvent`` does.
* ``allowWatchBookmarks=true``: a ``BOOKMARK`` (only ``metadata.resourceVersion`` set) after
  every ``bookmark_interval`` seconds without events; ``sendInitialEvents=true`` (with
  ``resourceVersionMatch=NotOlderThan``) ends the initial ADDED events with a bookmark
  annotated ``k8s.io/initial-events-end: "true"``.
* ``timeoutSeconds`` ends the stream; unset, the server picks 30 to 60 minutes
  (kube-apiserver's ``--min-request-timeout`` rule).
* The watch cache re-initializing (``KubeApiServer.drop_watches`` / ``resume_watches``,
  SIGUSR1 / SIGUSR2 to the program): what kube-apiserver's cacher does when its watch of
  etcd breaks, e.g. after etcd compacted past it (``terminateAllWatchers``, then a
  relist): every open watch ends, watch requests are answered 429 ``storage is
  (re)initializing`` (Retry-After 1) until it is ready again, and then its history
  begins at that moment, so a watch resuming from an older resourceVersion gets the 410.
"""

from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable, Iterator

from . import errors as err
from .api import Api, Selection, parse_rv
from .jsonutil import Obj
from .resources import ResourceType
from .store import ADDED, DELETED, MODIFIED, Event, Subscription

MIN_REQUEST_TIMEOUT = 1800.0
POLL = 0.5  # how often an idle stream checks that its client is still there


class WatchStream:
    """One watch request: ``open()`` (raises 4xx ApiError), then iterate the events."""

    def __init__(self, api: Api, rtype: ResourceType, selection: Selection,
                 resource_version: str | None, resource_version_match: str | None, bookmarks: bool,
                 send_initial_events: bool | None, timeout: float | None,
                 bookmark_interval: float) -> None:
        self.api = api
        self.rtype = rtype
        self.selection = selection
        self.rv_text = resource_version or ""
        self.rv_match = resource_version_match or ""
        self.bookmarks = bookmarks
        self.send_initial = send_initial_events
        self.timeout = timeout if timeout is not None else MIN_REQUEST_TIMEOUT * (
            1 + random.random())
        self.bookmark_interval = bookmark_interval
        self._pending: list[Obj] = []
        self._subscription: Subscription | None = None
        self._after = 0

    def open(self) -> None:
        """Check the parameters and take the starting state atomically with subscribing."""
        if self.send_initial is not None:
            if self.rv_match != "NotOlderThan":
                raise err.bad_request("sendInitialEvents: Forbidden: sendInitialEvents is "
                                      "forbidden for watch unless resourceVersionMatch is set "
                                      "to NotOlderThan")
            if self.send_initial and not self.bookmarks:
                raise err.bad_request("allowWatchBookmarks: Required value: "
                                      "allowWatchBookmarks must be set to true when "
                                      "sendInitialEvents is true")
        elif self.rv_match:
            raise err.bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch is "
                                  "forbidden for watch unless sendInitialEvents is provided")
        requested = parse_rv(self.rv_text) if self.rv_text not in ("", "0") else None
        store = self.api.store
        with store.lock:
            self._subscription = store.subscribe(self.rtype.storage)
            initial = self.send_initial if self.send_initial is not None else requested is None
            if initial:
                objects = store.objects(self.rtype.storage)
                for key in sorted(objects):
                    if self.selection.matches(objects[key]):
                        self._pending.append(self._event(ADDED, objects[key]))
                self._after = store.rv
                if self.send_initial:
                    self._pending.append(self._bookmark(store.rv, initial_end=True))
                return
            assert requested is not None
            since = store.events_since(self.rtype.storage, requested)
            if since is None:
                floor = store.floor(self.rtype.storage)
                self._pending.append({"type": "ERROR", "object": err.gone(
                    f"too old resource version: {requested} ({floor + 1})").status()})
                self.close()
                return
            for event in since:
                translated = self._translate(event)
                if translated is not None:
                    self._pending.append(translated)
            self._after = max(requested, store.rv)

    def _event(self, kind: str, obj: Obj) -> Obj:
        return {"type": kind, "object": self.api.external(self.rtype, obj)}

    def _bookmark(self, rv: int, initial_end: bool = False) -> Obj:
        metadata: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": self.rtype.kind,
                                                "apiVersion": self.rtype.api_version,
                                                "metadata": metadata}}

    def _translate(self, event: Event) -> Obj | None:
        if event.type == DELETED:
            return self._event(DELETED, event.obj) if self.selection.matches(event.obj) else None
        now = self.selection.matches(event.obj)
        before = event.prev is not None and self.selection.matches(event.prev)
        if now and before:
            return self._event(MODIFIED, event.obj)
        if now:
            return self._event(ADDED, event.obj)
        if before and event.prev is not None:
            last = dict(event.prev)
            last["metadata"] = dict(event.prev["metadata"])
            last["metadata"]["resourceVersion"] = str(event.rv)
            return self._event(DELETED, last)
        return None

    def events(self, alive: Callable[[], bool]) -> Iterator[Obj]:
        """The stream's events until the timeout, the server's stop or ``alive()`` false."""
        yield from self._pending
        self._pending = []
        subscription = self._subscription
        if subscription is None:
            return
        store = self.api.store
        deadline = time.monotonic() + self.timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            wait = min(deadline - now, POLL)
            if self.bookmarks:
                wait = min(wait, max(next_bookmark - now, 0.0))
            try:
                event = subscription.get(timeout=wait)
            except queue.Empty:
                if not alive():
                    return
                if self.bookmarks and time.monotonic() >= next_bookmark:
                    with store.lock:
                        idle = subscription.queue.empty()
                        rv = store.rv
                    if idle:
                        yield self._bookmark(rv)
                    next_bookmark = time.monotonic() + self.bookmark_interval
                continue
            if event is None:
                return
            if event.rv <= self._after:
                continue
            translated = self._translate(event)
            if translated is not None:
                yield translated
                next_bookmark = time.monotonic() + self.bookmark_interval

    def end(self) -> None:
        """End the stream as the server does at its timeout (from any thread): the
        events iterator returns, the response ends cleanly; the client watches again."""
        subscription = self._subscription
        if subscription is not None:
            subscription.queue.put(None)

    def close(self) -> None:
        if self._subscription is not None:
            self.api.store.unsubscribe(self._subscription)
            self._subscription = None
