"""The node daemon put together: agent, CNI socket, pool refill, metrics, status file."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from ovn_underlay.cni import conflist
from ovn_underlay.config import METRICS_OFF
from ovn_underlay.daemon.agent import NodeAgent
from ovn_underlay.daemon.isolation import IsolationKeeper
from ovn_underlay.daemon.metrics import Metrics
from ovn_underlay.daemon.refill import DEFAULT_INTERVAL, DEFAULT_RECLAIM_AFTER, Refiller
from ovn_underlay.daemon.server import DEFAULT_WORKERS, UnixServer
from ovn_underlay.daemon.service import CniService
from ovn_underlay.daemon.status import DaemonStatus, status_path, write_status
from ovn_underlay.metrics_http import split_address

LOG = logging.getLogger(__name__)


class Daemon:
    """One node's daemon; :meth:`start`, then :meth:`serve` until :meth:`stop`, then close."""

    def __init__(self, ovsdb: str, socket_path: str | None = None,
                 metrics_address: str | None = None, workers: int = DEFAULT_WORKERS,
                 refill_interval: float = DEFAULT_INTERVAL,
                 reclaim_after: float = DEFAULT_RECLAIM_AFTER) -> None:
        """Socket and metrics address default to the node's settings ("off": no metrics)."""
        self.ovsdb = ovsdb
        self._socket_path = socket_path
        self._metrics_address = metrics_address
        self._workers = workers
        self._refill_interval = refill_interval
        self._reclaim_after = reclaim_after
        self.metrics = Metrics()
        self._closing = contextlib.ExitStack()
        self.server: UnixServer | None = None
        self._status: DaemonStatus | None = None
        self._status_path: Path | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Connect, take the socket and start refilling; everything is undone on failure."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        agent = NodeAgent(self.ovsdb, self.metrics)
        self._closing.callback(agent.close)
        cfg = agent.config()
        keeper = IsolationKeeper(agent)
        keeper.check()
        refiller = Refiller(agent, self._write_status, self._refill_interval,
                            self._reclaim_after)
        service = CniService(agent, refiller.wake)
        server = UnixServer(self._socket_path or cfg.daemon_socket, service.handle,
                            self._workers, owner=self.ovsdb)
        server.bind()
        self._closing.callback(server.close)
        address = self._metrics_address if self._metrics_address is not None \
            else cfg.metrics_address
        served = METRICS_OFF
        if address != METRICS_OFF:
            self.metrics.watch_pool(agent.pool_stats)
            http = self.metrics.serve(address)
            served = f"{split_address(address)[0]}:{http.server_port}"
            self._closing.callback(http.server_close)
            self._closing.callback(http.shutdown)
        self._warm_up(agent)
        self._publish_conflist(agent)
        self._status = DaemonStatus(pid=os.getpid(), socket=str(server.path), metrics=served,
                                    started_at=time.time(), refill=refiller.status)
        self._status_path = status_path(agent.pool_path)
        self._closing.callback(self._status_path.unlink, missing_ok=True)
        refiller.start()
        self._closing.callback(refiller.stop)
        keeper.start()
        self._closing.callback(keeper.stop)
        self.server = server
        LOG.info("serving CNI calls on %s for the node at %s", server.path, self.ovsdb)

    @staticmethod
    def _warm_up(agent: NodeAgent) -> None:
        """Connect the control plane now rather than in the first ADD (tried again there)."""
        cfg = agent.config()
        if not cfg.has_network:
            return
        try:
            agent.control(cfg)
        except Exception as exc:
            LOG.warning("control plane not reachable yet (will retry): %s", exc)

    def _publish_conflist(self, agent: NodeAgent) -> None:
        """Write the conflist if node-init left it to be written and the node is ready."""
        try:
            written = conflist.publish(agent.config(), self.ovsdb)
        except (OSError, conflist.ForeignConflist) as exc:
            LOG.error("cannot write the CNI conflist: %s", exc)
            return
        if written:
            LOG.info("wrote the CNI conflist %s: the node can serve pods", written)

    def _write_status(self) -> None:
        """Publish the status for ``pool show`` (after each refill round)."""
        if self._status is not None and self._status_path is not None:
            try:
                write_status(self._status_path, self._status)
            except OSError as exc:
                LOG.warning("cannot write %s: %s", self._status_path, exc)

    def serve(self) -> None:
        """Serve CNI calls until :meth:`stop`."""
        assert self.server is not None, "start() first"
        if not self._stopping.is_set():
            self.server.serve()

    def stop(self) -> None:
        """Make :meth:`serve` return once the calls in progress are answered (or at once,
        when called before it, even during :meth:`start`)."""
        self._stopping.set()
        if self.server is not None:
            self.server.stop()

    def close(self) -> None:
        """Stop refilling, remove the socket and status file, close every connection."""
        self._closing.close()

