"""Connect to the control plane a node is configured for."""

from __future__ import annotations

from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.control.base import ControlPlane


def connect(cfg: NodeConfig, timeout: float = 10.0) -> ControlPlane:
    """The node's control-plane backend, connected."""
    if cfg.backend == "ovn":
        cfg.require("nb")
        from ovn_underlay.control.ovn_nb import OvnNbControlPlane

        return OvnNbControlPlane(cfg.nb, timeout=timeout)
    raise ConfigError(f"unknown control-plane backend {cfg.backend!r} (external_ids:"
                      "ovn-underlay:backend); supported: ovn")
