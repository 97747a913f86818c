"""The node agent of cluster mode: set the node up from the API, then run the daemon.

What ``ovn-k8s-underlay agent`` (the DaemonSet's container) does, in order; every step
is idempotent, so an agent killed at any point and started again carries on where it
stopped (and a rebooted node is set up again the same way):

1. *settings*: record the node's settings in the Open_vSwitch external_ids with backend
   ``cluster`` (the node-local record, as node-init keeps it) and remove any
   control-plane credentials a standalone set-up left there (``nb``, ``neutron-config``,
   ``neutron-cloud``): the node never connects to OVN NB or Neutron;
2. *node*: br-int, the uplink and the host isolation ruleset, planned and applied as
   node-init does (:class:`~ovn_underlay.dataplane.node_init.NodeInit`);
3. *controller*: wait for the node's UnderlayNode to be Ready (the controller creates it
   for the Node and makes the node network), raise its ``spec.poolPorts`` to the
   node's ``pool-high`` watermark and wait for the controller to have seen that;
4. *network*: record the node network in external_ids as lswitch-setup does, add the
   status's pool ports to the local pool, set up the management port (the node's own
   addresses its preferred source once the controller routes them to it:
   ``status.hostAddresses``; the Service range routed through it too when the agent
   was given one, :attr:`AgentSettings.service_cidr`);
5. *CNI*: install the CNI binary (the ``install_cni`` callback) and record where the
   conflist goes; the daemon writes the conflist once it serves (the node can then
   serve pods, which the container runtime reports to the kubelet as NetworkReady);
6. *daemon*: :class:`~ovn_underlay.daemon.main.Daemon` serves CNI calls; its refill
   asks the controller for more ports through the relay.  Meanwhile the agent follows
   its UnderlayNode's Ready condition (:meth:`ClusterAgent.follow_controller`).

It reports on its Node the condition ``NetworkUnavailable`` (the one Kubernetes acts on):
``False``/``OvnUnderlayReady`` once the daemon serves, else ``True`` with a reason and a
message a person can read (``NodeSetupFailed``, ``WaitingForController``, or the reason
of the UnderlayNode's Ready condition, e.g. ``NoVMPort``).  A failed step is retried
with a backoff (1 s doubling to 30 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from lightkube import SingleConfig
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from ovn_underlay.config import (
    CLUSTER_BACKEND,
    CNI_FIELDS,
    DAEMON_FIELDS,
    NETWORK_FIELDS,
    ConfigError,
    NodeConfig,
    from_external_ids,
    key_of,
    to_external_ids,
)
from ovn_underlay.control.base import ControlPlaneError
from ovn_underlay.daemon.main import Daemon
from ovn_underlay.dataplane.mgmt import ensure_mgmt_port
from ovn_underlay.dataplane.node_init import NodeInit
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.kube import underlay_node as un
from ovn_underlay.kube.client import KubeClient, KubeError, translated
from ovn_underlay.pods.controller_relay import ControllerRelay, node_network
from ovn_underlay.pods.network import network_config
from ovn_underlay.pods.pool import Pool

LOG = logging.getLogger(__name__)
NodeStatus = Node.Status
CONDITION = "NetworkUnavailable"
READY_REASON = "OvnUnderlayReady"
SETUP_FAILED = "NodeSetupFailed"
WAITING = "WaitingForController"
CREDENTIAL_KEYS = tuple(key_of(name) for name in ("nb", "neutron_config", "neutron_cloud"))
"""What a standalone node-init may have left: control-plane credentials, removed here."""
RECORDED = ("backend", "parent", "bridge", "datapath", "uplink", "uplink_mode", "state_dir",
            "mtu", "cluster_subnet", "mgmt_tag", "node_name", "kubeconfig",
            *DAEMON_FIELDS, *CNI_FIELDS)
"""The node's settings the agent records in external_ids (besides the node network's)."""
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
FOLLOW_INTERVAL = 1.0
"""Seconds between the serving agent's looks at its UnderlayNode's Ready condition."""
SERVING = "the ovn-underlay daemon serves CNI calls on this node"


class SetupFailed(Exception):
    """A set-up step failed; ``reason`` is the NetworkUnavailable reason to report."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Condition:
    """The node's NetworkUnavailable condition as the agent reports it."""

    unavailable: bool
    reason: str
    message: str


class NodeReporter:
    """Writes the NetworkUnavailable condition on the Node's status (only when it changes)."""

    def __init__(self, kube: KubeClient, node: str) -> None:
        self.kube = kube
        self.node = node
        self.last: Condition | None = None
        self._lock = threading.Lock()

    def report(self, cond: Condition) -> None:
        """Patch the condition in (strategic merge: the Node's other conditions stay);
        a failure is logged, not raised (the next change tries again).  Thread-safe."""
        with self._lock:
            self._report(cond)

    def _report(self, cond: Condition) -> None:
        if cond == self.last:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = {"type": CONDITION, "status": "True" if cond.unavailable else "False",
                 "reason": cond.reason, "message": cond.message[:1024],
                 "lastHeartbeatTime": now}
        if self.last is None or self.last.unavailable != cond.unavailable:
            entry["lastTransitionTime"] = now
        try:
            with translated(self.kube.server, f"PATCH node {self.node} status"):
                self.kube.api.patch(NodeStatus, self.node,
                                    {"status": {"conditions": [entry]}},
                                    patch_type=PatchType.STRATEGIC)
        except KubeError as exc:
            LOG.warning("cannot report %s=%s (%s) on node %s: %s", CONDITION, entry["status"],
                        cond.reason, self.node, exc)
            return
        LOG.info("node %s: %s=%s %s: %s", self.node, CONDITION, entry["status"], cond.reason,
                 cond.message)
        self.last = cond


InstallCni = Callable[[NodeConfig], list[str]]
"""Installs the CNI binary for the node's settings; what it did, one line each."""


@dataclass(frozen=True)
class AgentSettings:
    """What the agent was told (command line over settings directory over defaults)."""

    ovsdb: str
    node: str
    cfg: NodeConfig
    """The node's settings to record (backend cluster, the node name and kubeconfig)."""
    ready_timeout: float = 0.0
    """Give up waiting for the controller after this many seconds (0: never)."""
    service_cidr: str = ""
    """The Services' ClusterIP range (IPv4, checked), routed through the management port
    ("": not routed: the node's own processes cannot reach ClusterIPs)."""


class ClusterAgent:
    """The node agent: set the node up (module docstring), then run the daemon."""

    def __init__(self, settings: AgentSettings, kube_config: Callable[[], SingleConfig],
                 install_cni: InstallCni | None = None,
                 daemon_factory: Callable[[str], Daemon] = Daemon) -> None:
        self.settings = settings
        self._kube_config = kube_config
        self._install_cni = install_cni
        self._daemon_factory = daemon_factory
        self._stopping = threading.Event()
        self._started = time.monotonic()
        self.daemon: Daemon | None = None
        self.kube = KubeClient(kube_config())
        self.reporter = NodeReporter(self.kube, settings.node)

    def stop(self) -> None:
        """Stop setting up (at the next step) or serving."""
        self._stopping.set()
        if self.daemon is not None:
            self.daemon.stop()

    def _late(self) -> bool:
        """Whether the ready timeout (if any) has passed."""
        limit = self.settings.ready_timeout
        return bool(limit) and time.monotonic() - self._started > limit

    def run(self) -> int:
        """Set up (retrying failed steps) and serve until :meth:`stop`; the exit code (1:
        not set up within the ready timeout)."""
        self._started = time.monotonic()
        if self.settings.service_cidr:
            LOG.info("service range %s: routed through the management port with the node "
                     "network, so host-network processes reach ClusterIPs",
                     self.settings.service_cidr)
        else:
            LOG.warning("no --service-cidr: host-network processes on this node (kubelet, "
                        "host-network pods, the API server's webhooks) cannot reach "
                        "ClusterIPs through the management port (only through kube-proxy's "
                        "rules, if it runs here)")
        failures = 0
        while not self._stopping.is_set() and not self._late():
            try:
                self.daemon = self.setup()
                break
            except SetupFailed as exc:
                failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                self.reporter.report(Condition(True, exc.reason, str(exc)))
                LOG.warning("set-up: %s: %s (again in %g s)", exc.reason, exc, delay)
                self._stopping.wait(delay)
        if self.daemon is None:
            self.close()
            return 0 if self._stopping.is_set() else 1
        follower = threading.Thread(target=self.follow_controller, name="follow-controller",
                                    daemon=True)
        try:
            self.reporter.report(Condition(False, READY_REASON, SERVING))
            follower.start()
            self.daemon.serve()
        finally:
            self._stopping.set()
            if follower.is_alive():
                follower.join(FOLLOW_INTERVAL * 5)
            self.reporter.report(Condition(True, "AgentStopped", "the ovn-underlay node "
                                           "agent stopped"))
            self.daemon.close()
            self.close()
        return 0

    def follow_controller(self) -> None:
        """While serving (until :meth:`stop`): report the controller's verdict as it changes.

        The UnderlayNode turning not Ready (say ``NodeDeleted``, ``ControlPlaneError``)
        makes NetworkUnavailable True with its reason and message; Ready again, False.
        Its status is read from the relay's watch each :data:`FOLLOW_INTERVAL` (no request).
        """
        relay = ControllerRelay(self._kube_config, self.settings.node)
        try:
            while not self._stopping.wait(FOLLOW_INTERVAL):
                try:
                    st = relay.status()
                except ControlPlaneError:
                    continue  # not synced (yet, or again): the last report stands
                if st.ready:
                    self.reporter.report(Condition(False, READY_REASON, SERVING))
                else:
                    self.reporter.report(self._waiting(relay))
        finally:
            relay.close()

    def setup(self) -> Daemon:
        """Steps 1-6 of the module docstring; the daemon, started.  SetupFailed if a step
        fails (nothing is undone: every step is repeated as is on the next attempt)."""
        s = self.settings
        ovs = self._open_ovs()
        try:
            cfg = self._prepare(ovs)
            st = self._wait_for_controller(cfg)
            cfg = self._record_network(ovs, cfg, st)
            self._cni(cfg)
        finally:
            ovs.close()
        if self._stopping.is_set():
            raise SetupFailed(SETUP_FAILED, "stopped during set-up")
        daemon = self._daemon_factory(s.ovsdb)
        try:
            daemon.start()
        except Exception as exc:
            raise SetupFailed(SETUP_FAILED, f"the daemon did not start: {exc}") from exc
        return daemon

    def _open_ovs(self) -> Ovs:
        try:
            return Ovs(self.settings.ovsdb)
        except Exception as exc:
            raise SetupFailed(SETUP_FAILED, f"cannot open the node's Open_vSwitch database "
                              f"{self.settings.ovsdb}: {exc}") from exc

    def _prepare(self, ovs: Ovs) -> NodeConfig:
        """Steps 1 and 2: the node's settings and node-init's changes."""
        cfg = replace(self.settings.cfg, backend=CLUSTER_BACKEND, nb="", neutron_config="",
                      neutron_cloud="")
        try:
            have = from_external_ids(ovs.get_config())
        except Exception as exc:
            raise SetupFailed(SETUP_FAILED, str(exc) or type(exc).__name__) from exc
        if have.switch and have.backend != CLUSTER_BACKEND:
            raise SetupFailed(SETUP_FAILED, (
                f"this node was set up in standalone mode (backend {have.backend}, switch "
                f"{have.switch}): remove that network with its own credentials first "
                f"('ovn-k8s-underlay lswitch-destroy {have.switch} --force'); the agent "
                "changes nothing until then"))
        try:
            stale = [k for k in CREDENTIAL_KEYS if k in ovs.get_config()]
            if stale:
                ovs.remove_config(stale)
                LOG.info("removed control-plane credentials from external_ids: %s",
                         ", ".join(stale))
            ovs.set_config(to_external_ids(cfg, RECORDED))
            init = NodeInit(ovs, cfg)
            init.apply(init.plan(), lambda what: LOG.info("node set-up: %s", what))
            return from_external_ids(ovs.get_config())
        except Exception as exc:
            raise SetupFailed(SETUP_FAILED, str(exc) or type(exc).__name__) from exc

    def _wait_for_controller(self, cfg: NodeConfig) -> un.Status:
        """Step 3: the UnderlayNode Ready, with the pool of ``pool-high`` ports asked for."""
        relay = ControllerRelay(self._kube_config, self.settings.node)
        try:
            while not self._stopping.is_set() and not self._late():
                st = relay.wait_ready(1.0)
                if st is not None:
                    try:
                        return relay.request_pool_ports(cfg.pool_high)
                    except Exception as exc:
                        raise SetupFailed(WAITING, f"pool ports: {exc}") from exc
                self.reporter.report(self._waiting(relay))
            raise SetupFailed(*_reason_message(self._waiting(relay)))
        finally:
            relay.close()

    def _waiting(self, relay: ControllerRelay) -> Condition:
        """What the node waits for: no UnderlayNode yet, or the controller's reason."""
        try:
            st = relay.status()
        except Exception as exc:
            return Condition(True, WAITING, f"cannot read UnderlayNode {self.settings.node}: "
                             f"{exc}")
        if st.reason:
            return Condition(True, st.reason, st.message or st.reason)
        return Condition(True, WAITING, f"waiting for the cluster controller to make the "
                         f"network of node {self.settings.node} (UnderlayNode "
                         f"{self.settings.node} not Ready)")

    def _record_network(self, ovs: Ovs, cfg: NodeConfig, st: un.Status) -> NodeConfig:
        """Step 4: the node network in external_ids, the pool ports, the management port."""
        net = node_network(st)
        if cfg.switch and cfg.switch != net.switch:
            raise SetupFailed(SETUP_FAILED, f"this node records switch {cfg.switch}, the "
                              f"controller made {net.switch} for it: remove the node's "
                              "ovn-underlay:* network settings and its pool (state dir) to "
                              "take the controller's")
        new = network_config(replace(cfg, parent=net.parent), net)
        if net.mgmt is not None:
            new = replace(new, mgmt_tag=net.mgmt.tag)
        try:
            ovs.set_config(to_external_ids(new, (*NETWORK_FIELDS, "parent", "mgmt_tag")))
            with Pool(new.pool_path) as pool:
                added = pool.add_ports(net.ports)
            if added:
                LOG.info("added %d pool ports of %s to the local pool", added, net.switch)
            if net.mgmt is not None:
                ensure_mgmt_port(ovs, new, admitted=st.host_addresses,
                                 service_cidr=self.settings.service_cidr)
        except Exception as exc:
            raise SetupFailed(SETUP_FAILED, f"node network {net.switch}: {exc}") from exc
        return from_external_ids(ovs.get_config())

    def _cni(self, cfg: NodeConfig) -> None:
        """Step 5: the CNI binary (the conflist is the daemon's, once it serves)."""
        if self._install_cni is None:
            return
        try:
            for line in self._install_cni(cfg):
                LOG.info("CNI: %s", line)
        except (OSError, ConfigError) as exc:
            raise SetupFailed(SETUP_FAILED, f"installing the CNI binary: {exc}") from exc

    def close(self) -> None:
        """Close the agent's Kubernetes connections."""
        self.kube.close()


def _reason_message(cond: Condition) -> tuple[str, str]:
    return cond.reason, cond.message
