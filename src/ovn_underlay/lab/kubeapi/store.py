"""The object store: one lock, one resourceVersion counter, a bounded history per resource.

Like etcd behind kube-apiserver, every write takes the next value of a single global
counter as its ``metadata.resourceVersion``.  Each resource (storage key: API group and
plural) keeps the last ``history`` events, which is what a watch or an exact-version list
can be served from; a request for a version older than that window is answered 410
(``compact()`` drops the whole window, for tests that need to force it).

Stored objects are never mutated after ``commit``: readers may hold them without copying.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass

from .jsonutil import Obj

StorageKey = tuple[str, str]  # (API group, plural)
Key = tuple[str, str]  # (namespace or "", name)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    storage: StorageKey
    key: Key
    obj: Obj  # state after the write; for DELETED the last state, at the deletion's RV
    prev: Obj | None  # state before the write (None for ADDED)


class Subscription:
    """Events of one resource (or of all with ``storage=None``), in commit order."""

    def __init__(self, storage: StorageKey | None) -> None:
        self.storage = storage
        self.queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()

    def get(self, timeout: float) -> Event | None:
        """The next event; None when the store closes; raises queue.Empty on timeout."""
        return self.queue.get(timeout=timeout)


class Store:
    def __init__(self, history: int = 10000) -> None:
        self.lock = threading.RLock()
        self.advanced = threading.Condition(self.lock)
        self.rv = 0
        self.history = history
        self._objects: dict[StorageKey, dict[Key, Obj]] = {}
        self._events: dict[StorageKey, deque[Event]] = {}
        self._floor: dict[StorageKey, int] = {}
        self._subscriptions: list[Subscription] = []
        self.closed = False

    # Reads (callers hold the lock when they need a consistent view of several).

    def get(self, storage: StorageKey, key: Key) -> Obj | None:
        return self._objects.get(storage, {}).get(key)

    def objects(self, storage: StorageKey) -> dict[Key, Obj]:
        """The live map of one resource's objects: do not modify; hold the lock to iterate."""
        return self._objects.setdefault(storage, {})

    # Writes.

    def commit(self, storage: StorageKey, key: Key, obj: Obj) -> Obj:
        """Store ``obj`` (created or replaced) at the next resourceVersion."""
        with self.lock:
            objects = self._objects.setdefault(storage, {})
            prev = objects.get(key)
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            objects[key] = obj
            self._record(Event(self.rv, MODIFIED if prev is not None else ADDED, storage, key,
                               obj, prev))
            return obj

    def remove(self, storage: StorageKey, key: Key) -> Obj:
        """Delete the object at ``key``; returns its last state at the deletion's RV."""
        with self.lock:
            prev = self._objects[storage].pop(key)
            self.rv += 1
            last = dict(prev)
            last["metadata"] = dict(prev["metadata"])
            last["metadata"]["resourceVersion"] = str(self.rv)
            self._record(Event(self.rv, DELETED, storage, key, last, prev))
            return last

    def _record(self, event: Event) -> None:
        events = self._events.setdefault(event.storage, deque())
        if len(events) >= self.history:
            self._floor[event.storage] = events.popleft().rv
        events.append(event)
        for subscription in self._subscriptions:
            if subscription.storage is None or subscription.storage == event.storage:
                subscription.queue.put(event)
        self.advanced.notify_all()

    # History.

    def floor(self, storage: StorageKey) -> int:
        """Every event of ``storage`` after this RV is still in the history."""
        return self._floor.get(storage, 0)

    def events_since(self, storage: StorageKey, rv: int) -> list[Event] | None:
        """The events after ``rv``, or None when some fell out of the window (410)."""
        with self.lock:
            if rv < self.floor(storage):
                return None
            return [e for e in self._events.get(storage, ()) if e.rv > rv]

    def state_at(self, storage: StorageKey, rv: int) -> dict[Key, Obj] | None:
        """The objects as they were at ``rv`` (None when out of the window)."""
        with self.lock:
            later = self.events_since(storage, rv)
            if later is None:
                return None
            state = dict(self._objects.get(storage, {}))
            for event in reversed(later):
                if event.prev is None:
                    state.pop(event.key, None)
                else:
                    state[event.key] = event.prev
            return state

    def compact(self) -> int:
        """Forget every event so far (test hook: the next watch from an old RV gets 410)."""
        with self.lock:
            for storage in set(self._events) | set(self._objects):
                self._floor[storage] = self.rv
            self._events.clear()
            return self.rv

    def wait_for(self, rv: int, timeout: float) -> bool:
        """Wait up to ``timeout`` for the counter to reach ``rv``."""
        with self.lock:
            return self.advanced.wait_for(lambda: self.rv >= rv or self.closed, timeout)

    # Subscriptions.

    def subscribe(self, storage: StorageKey | None) -> Subscription:
        """Subscribe (under the lock: nothing committed after this call is missed)."""
        with self.lock:
            subscription = Subscription(storage)
            self._subscriptions.append(subscription)
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def close(self) -> None:
        """Wake every subscriber with None (server stopping)."""
        with self.lock:
            self.closed = True
            for subscription in self._subscriptions:
                subscription.queue.put(None)
            self._subscriptions.clear()
            self.advanced.notify_all()
