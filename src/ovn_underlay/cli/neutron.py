"""node-init's part for the Neutron backend: credentials check, parent port, settings."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ovn_underlay import config as node_config
from ovn_underlay.config import NodeConfig
from ovn_underlay.control import credentials
from ovn_underlay.dataplane.node_init import Change, settings_changes
from ovn_underlay.dataplane.ovs import Ovs

NEUTRON_FIELDS = ("neutron_cloud", "child_ports", "kubeconfig")
"""Settings node-init records besides the ones of node.uplink."""


def check_node(cfg: NodeConfig, parent: str | None) -> tuple[NodeConfig, str]:
    """``cfg`` with its parent port, after one request to Neutron.

    The parent is ``parent`` if given (--parent), else OS_VIF_ID of the
    credentials, else the one recorded before.  Wrong credentials, an
    unreachable identity service or a missing parent port fail here, at
    node-init, rather than at the first pod.
    """
    from ovn_underlay.control.neutron import NeutronControlPlane

    creds = credentials.load(cfg)
    cfg = replace(cfg, parent=parent or credentials.parent_port(creds, cfg.parent))
    control = NeutronControlPlane(creds, child_ports=cfg.child_ports)
    try:
        return cfg, control.check_access(cfg.parent)
    finally:
        control.close()


def setting_changes(ovs: Ovs, args: argparse.Namespace) -> list[Change]:
    """Record the Neutron and annotation settings given on the command line."""
    want = {node_config.key_of(name): str(value) for name in NEUTRON_FIELDS
            if (value := getattr(args, name, None)) is not None}
    return settings_changes(ovs, want, "Neutron settings")
