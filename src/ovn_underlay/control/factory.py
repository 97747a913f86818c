"""Connect to the control plane a node is configured for."""

from __future__ import annotations

import os

from ovn_underlay.config import CLUSTER_BACKEND, ConfigError, NodeConfig
from ovn_underlay.control.base import ControlPlane, ControlPlaneUnavailable
from ovn_underlay.nb_ssl import NODE_OPTIONS, nb_ssl


def connect(cfg: NodeConfig, timeout: float = 10.0,
            ssl_options: tuple[str, str, str] = NODE_OPTIONS) -> ControlPlane:
    """The node's control-plane backend, connected (ControlPlaneUnavailable in cluster mode:
    only the node agent's daemon reaches the controller, through its relay).

    OVN NB over ``ssl:`` uses ``cfg``'s three SSL files, checked first by
    :func:`~ovn_underlay.nb_ssl.nb_ssl`; its ConfigErrors name them as ``ssl_options``
    (default: the node-init options that record them).
    """
    if cfg.backend == "ovn":
        cfg.require("nb")
        from ovn_underlay.control.ovn_nb import OvnNbControlPlane

        files = nb_ssl(cfg.nb, cfg.nb_private_key, cfg.nb_certificate, cfg.nb_ca_cert,
                       ssl_options)
        return OvnNbControlPlane(cfg.nb, timeout=timeout, ssl=files)
    if cfg.backend == "neutron":
        from ovn_underlay.control import credentials, neutron

        # A bulk POST takes ~0.2 s per port: Neutron requests get a longer timeout.
        return neutron.NeutronControlPlane(
            credentials.load(cfg), child_ports=cfg.child_ports,
            lock_path=os.path.join(cfg.state_dir, neutron.LOCK_FILE),
            timeout=max(timeout, neutron.DEFAULT_TIMEOUT))
    if cfg.backend == CLUSTER_BACKEND:
        raise no_relay()
    raise ConfigError(f"unknown control-plane backend {cfg.backend!r} (external_ids:"
                      "ovn-underlay:backend); supported: ovn, neutron, cluster")


def no_relay() -> ControlPlaneUnavailable:
    """The error of a node in cluster mode asked for its control plane outside the agent."""
    return ControlPlaneUnavailable(
        "this node runs in cluster mode (backend 'cluster'): it holds no control-plane "
        "credentials, its requests go to the cluster controller through the node agent's "
        "relay, and only the running agent ('ovn-k8s-underlay agent') has one; try again "
        "once it runs")
