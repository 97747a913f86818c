"""Pods' owners on their logical ports, recorded in the background, many per request.

ADD and DEL record which pod uses a port (``ovn-underlay:pod-*`` external_ids
in the OVN NB).  Done in the pod's call, that is one NB transaction per pod:
1.5-3 ms of its ADD, and one recomputation of ovn-northd (~5 ms of CPU) per pod.
The daemon instead hands the change to an :class:`OwnerWriter`, which waits a
short window for more and records them all in one request.  The node's pool
stays the record of which pod holds which port; the NB copy follows within
about :data:`WINDOW` seconds, and after a crash :meth:`OwnerWriter.reconcile`
brings it back in line from the pool.

For one port only the newest change counts: a DEL's "no owner" followed by
the next pod's ADD records the next pod.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ovn_underlay.control.base import ControlPlane, PortOwner
from ovn_underlay.pods.pool import Pool

LOG = logging.getLogger(__name__)
WINDOW = 0.05
"""Seconds to wait for more changes once one arrived."""
RETRY = 1.0
"""Seconds between attempts while the control plane fails."""


class OwnerWriter:
    """A thread recording port owners on the control plane, in batches."""

    def __init__(self, control: Callable[[], ControlPlane], window: float = WINDOW,
                 retry: float = RETRY) -> None:
        """``control`` gives the control plane to write to (called for each batch)."""
        self._control = control
        self._window = window
        self._retry = retry
        self._pending: dict[str, PortOwner | None] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="owners", daemon=True)
        self._thread.start()

    def record(self, port: str, owner: PortOwner | None) -> None:
        """Record ``owner`` (None: no pod) on ``port`` soon; returns at once."""
        with self._cond:
            self._pending[port] = owner
            self._cond.notify_all()

    def reconcile(self, pool: Pool) -> None:
        """Queue the owner of every pool port as the pool has it (after a restart)."""
        owners: dict[str, PortOwner | None] = {port.name: None for port in pool.ports()}
        for alloc in pool.leases():
            att = alloc.interface
            owners[alloc.port.name] = PortOwner(att.pod_namespace, att.pod_name,
                                                 att.container_id)
        with self._cond:
            for port, owner in owners.items():
                self._pending.setdefault(port, owner)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every change so far is recorded; False if that took over ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Record what is pending (for up to ``timeout`` seconds), then stop the thread."""
        if not self.flush(timeout):
            with self._cond:
                LOG.warning("stopping with the owners of %d port(s) not recorded on the "
                            "control plane (the pool has them)", len(self._pending))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
            with self._cond:  # let the changes of concurrent pods join this batch
                self._cond.wait_for(lambda: self._stopping, self._window)
                batch, self._pending = self._pending, {}
                self._busy = True
            ok = self._write(batch)
            with self._cond:
                self._busy = False
                if not ok:
                    for port, owner in batch.items():
                        self._pending.setdefault(port, owner)
                self._cond.notify_all()
                if not ok:
                    self._cond.wait_for(lambda: self._stopping, self._retry)

    def _write(self, batch: dict[str, PortOwner | None]) -> bool:
        try:
            skipped = self._control().record_owners(batch)
        except Exception as exc:
            LOG.warning("could not record the owners of %d port(s) on the control plane, "
                        "retrying in %gs: %s", len(batch), self._retry, exc)
            return False
        if skipped:
            LOG.warning("not recording owners on %s: no such pool port on the control plane",
                        ", ".join(sorted(skipped)))
        LOG.debug("recorded the owners of %d port(s)", len(batch))
        return True
