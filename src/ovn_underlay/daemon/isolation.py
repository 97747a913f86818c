"""Keeping the host isolation ruleset in place while the daemon runs.

The ruleset (:mod:`ovn_underlay.dataplane.isolation`) is kernel state: something
may flush it (a firewall reload, ``nft flush ruleset``), and the set of NICs
that OVS owns may change (an uplink added to br-int).  The daemon writes it
before it serves its first call, then checks it every :data:`DEFAULT_INTERVAL`
seconds and writes it again where it is missing or out of date.  Every ADD
checks that it exists anyway before it plugs a pod.
"""

from __future__ import annotations

import logging
import threading

from ovn_underlay.daemon.agent import NodeAgent
from ovn_underlay.dataplane import isolation

LOG = logging.getLogger(__name__)
DEFAULT_INTERVAL = 5.0


class IsolationKeeper:
    """A thread checking the host isolation ruleset of the node of ``agent``."""

    def __init__(self, agent: NodeAgent, interval: float = DEFAULT_INTERVAL) -> None:
        self.agent = agent
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error = ""

    def check(self) -> None:
        """One check: write the ruleset if the node needs it and it is missing or stale."""
        metrics = self.agent.metrics
        try:
            if not self.agent.config().userspace_datapath:
                return
            guard = isolation.wanted(self.agent.ovs)
            if isolation.ensure(guard):
                LOG.warning("host isolation ruleset written: the node's kernel takes in "
                            "nothing from pods' host ends nor from %s (it was missing or "
                            "stale)", ", ".join(guard.devices) or "other OVS NICs")
                if metrics is not None:
                    metrics.isolation_writes.inc()
            self._last_error = ""
        except Exception as exc:
            if metrics is not None:
                metrics.isolation_failures.inc()
            if str(exc) != self._last_error:
                LOG.error("cannot put the host isolation ruleset in place (ADDs will fail "
                          "until it is): %s", exc)
            self._last_error = str(exc)

    def start(self) -> None:
        """Check every ``interval`` seconds in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="isolation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the ruleset stays: it must outlive the daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
