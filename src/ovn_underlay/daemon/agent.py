"""The daemon's long-lived connections to the node: local OVS, pool, control plane.

One :class:`NodeAgent` serves every request thread.  Each request gets an
:class:`~ovn_underlay.pods.attach.PodAttacher` of its own over the shared
connections (they are thread-safe: ovsdbapp commits one transaction at a
time per connection, the pool takes a lock per call).  Settings are read from
the local OVS database's in-memory replica on every request, so
``lswitch-setup`` run while the daemon is up takes effect at once; only the
pool file and the control-plane connection are fixed at start-up.

In cluster mode (backend ``cluster``) the control plane is the node's
:class:`~ovn_underlay.pods.controller_relay.ControllerRelay` to the cluster controller
(:func:`connect_control`): the node holds no control-plane credentials.

Pods' owners go to the control plane in batches, in the background
(:mod:`ovn_underlay.daemon.owners`); at start the daemon queues them all from
the pool, so a crash leaves no stale owner behind for long.

With a kubeconfig set, the agent watches the Kubernetes API for this node's Pods and all
Namespaces (:class:`~ovn_underlay.kube.node_cache.NodeCache`), where ADD reads the
security-group annotations; the cache follows the node's ``kubeconfig`` and ``node-name``
settings as they change.

DEL leaves deleting the pod's veth (20-25 ms in the kernel) to a background
thread: by then its OVS port is gone and its pool port is free.  That work
keeps a hold on the pod interface's gate key, so a request for the same
interface that follows waits for it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from ovn_underlay.config import CLUSTER_BACKEND, ConfigError, NodeConfig, from_external_ids
from ovn_underlay.control.base import ControlPlane
from ovn_underlay.control.factory import connect
from ovn_underlay.daemon.gate import KeyedGate
from ovn_underlay.daemon.metrics import Metrics, timed
from ovn_underlay.daemon.owners import OwnerWriter
from ovn_underlay.dataplane import links
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.pods.attach import PodAttacher
from ovn_underlay.pods.pool import PodInterface, Pool, PoolStats
from ovn_underlay.pods.security_groups import PodSecurityGroups

if TYPE_CHECKING:
    from ovn_underlay.kube.node_cache import NodeCache

LOG = logging.getLogger(__name__)
CLEANUP_THREADS = 4


def connect_control(cfg: NodeConfig) -> ControlPlane:
    """The node's control plane: the relay to the cluster controller in cluster mode, else
    the backend of :func:`~ovn_underlay.control.factory.connect` (node-local credentials)."""
    if cfg.backend == CLUSTER_BACKEND:
        from ovn_underlay.pods.controller_relay import ControllerRelay

        return ControllerRelay.for_node(cfg)
    return connect(cfg)


def control_key(cfg: NodeConfig) -> tuple[str, ...]:
    """The settings a control-plane connection is made from (a change needs a new one)."""
    if cfg.backend == CLUSTER_BACKEND:
        return (cfg.backend, cfg.kubeconfig, cfg.node_name)
    return (cfg.backend, cfg.nb, cfg.neutron_config)


class NodeAgent:
    """The node's OVS database, pool and control plane, opened once for many requests."""

    def __init__(self, ovsdb: str, metrics: Metrics | None = None) -> None:
        """Connect to the local OVS database at ``ovsdb`` and open the node's pool."""
        self.ovsdb = ovsdb
        self.metrics = metrics
        self.gate = KeyedGate()
        self.ovs = Ovs(ovsdb)
        try:
            self.pool_path = self.config().pool_path
            self.pool = Pool(self.pool_path)
        except BaseException:
            self.ovs.close()
            raise
        self._control_lock = threading.Lock()
        self._control: ControlPlane | None = None
        self._control_key: tuple[str, ...] = ()
        self._kube_lock = threading.Lock()
        self._kube: NodeCache | None = None
        self._kube_key = ("", "")
        self._cleanup = ThreadPoolExecutor(CLEANUP_THREADS, thread_name_prefix="unplumb")
        self.owners = OwnerWriter(lambda: self.control(self.config()))
        self.owners.reconcile(self.pool)
        self.kube_cache(self.config())

    def config(self) -> NodeConfig:
        """The node's settings as they are now."""
        return from_external_ids(self.ovs.get_config())

    def pool_stats(self) -> PoolStats:
        """The pool's port counts."""
        return self.pool.stats()

    def control(self, cfg: NodeConfig) -> ControlPlane:
        """The control plane of ``cfg``, connected on first use and then kept."""
        key = control_key(cfg)
        with self._control_lock:
            if self._control is None:
                control = connect_control(cfg)
                if self.metrics is not None:
                    control = timed(control, cfg.backend, self.metrics)
                self._control, self._control_key = control, key
            elif key != self._control_key:
                raise ConfigError("the node's control-plane settings changed since the "
                                  "daemon connected: restart the daemon")
            return self._control

    def attacher(self, ovsdb: str, readiness_timeout: float,
                 need_network: bool = True) -> PodAttacher:
        """A PodAttacher for one request, on the shared connections."""
        if ovsdb != self.ovsdb:
            raise ConfigError(f"the network configuration names the OVS database {ovsdb}, "
                              f"but this daemon serves {self.ovsdb}")
        cfg = self.config()
        if need_network:
            cfg.require_network()
        if cfg.pool_path != self.pool_path:
            raise ConfigError(f"the node's pool moved to {cfg.pool_path} since the daemon "
                              f"opened {self.pool_path}: restart the daemon")
        attacher = PodAttacher(cfg, self.ovs, self.pool, lambda: self.control(cfg),
                               readiness_timeout, unplumb=self._unplumb_later,
                               record_owner=self.owners.record)
        cache = self.kube_cache(cfg)
        if cache is not None:
            attacher.security_groups = PodSecurityGroups(cfg, cache)
        return attacher

    def kube_cache(self, cfg: NodeConfig) -> NodeCache | None:
        """The watched Pods and Namespaces of ``cfg``'s kubeconfig (None without one).

        Made (and started) on first use, and made again when the node's ``kubeconfig``
        or ``node-name`` setting changes; the Kubernetes client is imported only then.
        """
        if not cfg.kubeconfig:
            key = ("", "")
        else:
            from ovn_underlay.kube.node_cache import NodeCache, node_name

            key = (cfg.kubeconfig, node_name(cfg.node_name))
        with self._kube_lock:
            if key == self._kube_key:
                return self._kube
            old, self._kube, self._kube_key = self._kube, None, key
            if cfg.kubeconfig:
                self._kube = NodeCache(*key)
                self._kube.start()
                LOG.info("watching the Kubernetes API of %s for the pods of node %s", *key)
            cache = self._kube
        if old is not None:
            old.stop()
        return cache

    def lend_attacher(self, ovsdb: str, readiness_timeout: float,
                      need_network: bool = True) -> AbstractContextManager[PodAttacher]:
        """:meth:`attacher` as the CNI plugin takes it (nothing to close afterwards)."""
        return nullcontext(self.attacher(ovsdb, readiness_timeout, need_network))

    def _unplumb_later(self, iface: PodInterface) -> None:
        self.gate.extend(iface.key)
        self._cleanup.submit(self._unplumb, iface)

    def _unplumb(self, iface: PodInterface) -> None:
        try:
            links.unplumb_pod(iface.host_if)
        except Exception:
            LOG.exception("could not remove the veth %s of a deleted pod", iface.host_if)
        finally:
            self.gate.release(iface.key)

    def close(self) -> None:
        """Finish background work and close every connection."""
        self._cleanup.shutdown(wait=True)
        self.owners.close()
        with self._kube_lock:
            cache, self._kube, self._kube_key = self._kube, None, ("", "")
        if cache is not None:
            cache.stop()
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None
        self.pool.close()
        self.ovs.close()
