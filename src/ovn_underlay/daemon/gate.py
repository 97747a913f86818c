"""Per-key serialisation: work on one pod interface runs one at a time, others in parallel."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

Key = Hashable
"""What the work is on: a pod interface's (container id, ifname)."""


class KeyedGate:
    """Holds keys (pod interfaces) so that work on the same key never overlaps.

    A holder may :meth:`extend` its hold to background work, which calls
    :meth:`release` when done: the next holder of that key waits for both.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holds: dict[Key, int] = {}

    @contextmanager
    def hold(self, key: Key) -> Iterator[None]:
        """Wait until nobody holds ``key``, then hold it for the block."""
        with self._changed:
            while key in self._holds:
                self._changed.wait()
            self._holds[key] = 1
        try:
            yield
        finally:
            self.release(key)

    def try_hold(self, key: Key) -> bool:
        """Hold ``key`` if nobody does (then :meth:`release` it); never waits."""
        with self._changed:
            if key in self._holds:
                return False
            self._holds[key] = 1
            return True

    def extend(self, key: Key) -> None:
        """Add a hold on ``key`` for background work, whoever holds it now."""
        with self._changed:
            self._holds[key] = self._holds.get(key, 0) + 1

    def release(self, key: Key) -> None:
        """Drop one hold on ``key``; the key is free once every hold is dropped."""
        with self._changed:
            left = self._holds[key] - 1
            if left:
                self._holds[key] = left
            else:
                del self._holds[key]
                self._changed.notify_all()
