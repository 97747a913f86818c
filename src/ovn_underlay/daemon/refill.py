"""Keeping the node's pool between its watermarks, in the background.

Every round (each ``interval`` seconds, and at once after a CNI call that
took or freed ports; step 2 at most once per ``interval``, however often CNI
calls wake the loop, so that continuous churn cannot starve it):

1. after start-up and after a failed round, *reconcile* the pool with the
   control plane: pool ports of this node that only the control plane has (a
   refill cut short by a crash) are adopted back, free pool records
   whose port no longer exists there are dropped.  In cluster mode every round:
   there it reads the relay's copy of the UnderlayNode (no request), and the
   controller grows a pool over several passes, listing ports after the request
   that asked for them has returned;
2. *reclaim* ports whose pod is gone: an allocation older than
   ``reclaim_after`` seconds whose network namespace no longer exists is
   detached as a DEL would (a runtime that lost track of a pod never sends one);
3. with fewer than ``low`` free ports, *add* ports until ``high`` are free, at
   most ``batch`` per control-plane request (not while ``pool fill`` runs: it
   is adding ports already).  Ports are never deleted here: freed ports stay
   in the pool, ``lswitch-destroy`` removes them all.

Only the backend-neutral :class:`~ovn_underlay.control.base.ControlPlane`
calls are used (in cluster mode, of the relay to the cluster controller: step 3 raises
the UnderlayNode's ``spec.poolPorts``), on a connection of the refill's own (a slow batch must not
hold up the owner updates of pod ADDs).  No step can lose a port or hand one
out twice: ports enter the pool only after the control plane made them, and
the pool itself hands each free port to one attachment only.  A failed round
is counted, recorded and retried with exponential backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ovn_underlay.config import CLUSTER_BACKEND, ConfigError, NodeConfig
from ovn_underlay.control.base import ControlPlane
from ovn_underlay.daemon.agent import NodeAgent, connect_control, control_key
from ovn_underlay.daemon.metrics import timed
from ovn_underlay.daemon.status import RefillStatus
from ovn_underlay.pods import filler

LOG = logging.getLogger(__name__)
DEFAULT_INTERVAL = 2.0
DEFAULT_RECLAIM_AFTER = 30.0
MAX_BACKOFF = 60.0
RECLAIM_READINESS_TIMEOUT = 1.0


@dataclass(frozen=True)
class Watermarks:
    """Refill below ``low`` free ports up to ``high``, ``batch`` ports per request."""

    low: int
    high: int
    batch: int

    @classmethod
    def of(cls, cfg: NodeConfig) -> Watermarks:
        """The node's watermarks; ConfigError unless 0 <= low <= high and batch >= 1."""
        if not 0 <= cfg.pool_low <= cfg.pool_high or cfg.pool_batch < 1:
            raise ConfigError(f"pool watermarks low {cfg.pool_low}, high {cfg.pool_high}, "
                              f"batch {cfg.pool_batch}: need 0 <= low <= high and batch >= 1 "
                              "(node-init --pool-low/--pool-high/--pool-batch)")
        return cls(cfg.pool_low, cfg.pool_high, cfg.pool_batch)


class Refiller:
    """The pool's background refill for the node of ``agent``."""

    def __init__(self, agent: NodeAgent, on_round: Callable[[], None] = lambda: None,
                 interval: float = DEFAULT_INTERVAL,
                 reclaim_after: float = DEFAULT_RECLAIM_AFTER,
                 control_factory: Callable[[NodeConfig], ControlPlane] = connect_control
                 ) -> None:
        """``on_round`` is called after every round (the daemon writes its status file)."""
        self.agent = agent
        self._connect = control_factory
        self.status = RefillStatus()
        self.interval = interval
        self.reclaim_after = reclaim_after
        self._on_round = on_round
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._control: ControlPlane | None = None
        self._control_key: tuple[str, ...] = ()
        self._reconcile_due = True
        self._failed_in_row = 0

    def start(self) -> None:
        """Run rounds in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="refill", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a round soon (the pool may have changed)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the current round and close the refill's control-plane connection."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self._control is not None:
            self._control.close()
            self._control = None

    def _loop(self) -> None:
        last_reclaim = -self.interval
        while not self._stop.is_set():
            reclaim = time.monotonic() - last_reclaim >= self.interval
            if reclaim:
                last_reclaim = time.monotonic()
            self.run_once(reclaim=reclaim)
            if self._failed_in_row:
                self._stop.wait(min(self.interval * 2 ** self._failed_in_row, MAX_BACKOFF))
            else:
                self._wake.wait(self.interval)
            self._wake.clear()

    def run_once(self, reclaim: bool = True) -> None:
        """One round: reconcile if due, reclaim if asked, then refill the pool."""
        try:
            cfg = self.agent.config()
            marks = Watermarks.of(cfg)
            self.status.low, self.status.high, self.status.batch = marks.low, marks.high, \
                marks.batch
            if cfg.has_network:
                self._round(cfg, marks, reclaim)
            self._failed_in_row = 0
        except Exception as exc:
            self._failed_in_row += 1
            self._reconcile_due = True
            self.status.failures += 1
            self.status.last_error = str(exc) or type(exc).__name__
            if self.agent.metrics is not None:
                self.agent.metrics.refill_failures.inc()
            LOG.warning("pool refill failed (%d in a row): %s", self._failed_in_row, exc)
        finally:
            self.status.checked_at = time.time()
            self._on_round()

    def _round(self, cfg: NodeConfig, marks: Watermarks, reclaim: bool) -> None:
        control = self._control_for(cfg)
        if self._reconcile_due or cfg.backend == CLUSTER_BACKEND:
            self._reconcile(cfg, control)
            self._reconcile_due = False
        if reclaim:
            self._reclaim()
        free = self.agent.pool.stats().free
        if free < marks.low and filler.running(cfg) is None:
            self._grow(cfg, control, marks.high - free, marks.batch)

    def _control_for(self, cfg: NodeConfig) -> ControlPlane:
        """The refill's own control-plane connection; made again if the settings change."""
        key = control_key(cfg)
        if self._control is not None and key != self._control_key:
            self._control.close()
            self._control = None
        if self._control is None:
            control = self._connect(cfg)
            if self.agent.metrics is not None:
                control = timed(control, cfg.backend, self.agent.metrics)
            self._control, self._control_key = control, key
        return self._control

    def _count(self, action: str, ports: int) -> None:
        setattr(self.status, action, getattr(self.status, action) + ports)
        if self.agent.metrics is not None and ports:
            self.agent.metrics.refill_ports.labels(action).inc(ports)

    def _reconcile(self, cfg: NodeConfig, control: ControlPlane) -> None:
        net = control.get_node_network(cfg.switch)
        if net is None:
            return
        known = {p.name for p in self.agent.pool.ports()}
        orphans = [p for p in net.ports if p.name not in known]
        if orphans:
            self._count("adopted", self.agent.pool.add_ports(orphans))
            LOG.info("adopted %d pool ports found only in the control plane", len(orphans))
        exist = {p.name for p in net.ports}
        gone = [p.name for p in self.agent.pool.free_ports() if p.name not in exist]
        if gone:
            self.agent.pool.remove_ports(gone)
            LOG.warning("dropped %d free pool records whose ports no longer exist: %s",
                        len(gone), ", ".join(gone))

    def _reclaim(self) -> None:
        now = time.time()
        for alloc in self.agent.pool.leases():
            att = alloc.interface
            if (not att.netns or now - alloc.since < self.reclaim_after
                    or os.path.exists(att.netns)):
                continue
            key = att.key
            if not self.agent.gate.try_hold(key):
                continue
            try:
                attacher = self.agent.attacher(self.agent.ovsdb, RECLAIM_READINESS_TIMEOUT,
                                               need_network=False)
                if attacher.delete(att.container_id, att.ifname) is not None:
                    self._count("reclaimed", 1)
                    LOG.info("reclaimed %s of %s/%s: its netns %s is gone", alloc.port.name,
                             att.container_id[:12], att.ifname, att.netns)
            finally:
                self.agent.gate.release(key)

    def _grow(self, cfg: NodeConfig, control: ControlPlane, want: int, batch: int) -> None:
        while want > 0 and not self._stop.is_set():
            count = min(batch, want)
            made = control.add_pool_ports(cfg.switch, count)
            self._count("added", self.agent.pool.add_ports(made))
            LOG.info("pool refill: added %d ports to %s", len(made), cfg.switch)
            want -= count

