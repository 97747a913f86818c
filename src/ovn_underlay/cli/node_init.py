"""node-init: the node's settings, br-int, the uplink and the CNI plugin."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from ovn_underlay import config as node_config
from ovn_underlay.cli.node_config import load, open_ovs
from ovn_underlay.config import NodeConfig
from ovn_underlay.nb_ssl import NODE_OPTIONS, nb_ssl

if TYPE_CHECKING:
    from ovn_underlay.dataplane.node_init import Change
    from ovn_underlay.dataplane.ovs import Ovs


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in fields(NodeConfig)} - set(node_config.CNI_FIELDS)
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _uplink_mtu(name: str) -> int:
    try:
        with open(f"/sys/class/net/{name}/mtu", encoding="ascii") as mtu:
            return int(mtu.read())
    except (OSError, ValueError):
        return 0


def with_host_defaults(cfg: NodeConfig) -> NodeConfig:
    """``cfg`` with what this host gives where it is unset: the datapath detected (also for
    ``auto``), the uplink ``eth1``, the MTU the uplink's."""
    from ovn_underlay.dataplane.node_init import detect_datapath

    if not cfg.datapath or cfg.datapath == "auto":
        cfg = replace(cfg, datapath=detect_datapath())
    if not cfg.uplink:
        cfg = replace(cfg, uplink="eth1")
    if not cfg.mtu:
        cfg = replace(cfg, mtu=_uplink_mtu(cfg.uplink))
    return cfg


def warn_without_cluster_subnet(cfg: NodeConfig) -> None:
    """Say on stderr, loudly and with the fix, that the node lacks its cluster subnet.

    Without it the management port routes only the node's own subnet, so the
    node cannot reach pods on other nodes, nor they it; nothing else fails.
    """
    if cfg.cluster_subnet:
        return
    print("ovn-k8s-underlay: WARNING: no cluster subnet is set, so the management port "
          "routes only this node's own pod subnet: this node cannot reach pods on other "
          "nodes, nor can they reach it. Fix: 'ovn-k8s-underlay node-init --cluster-subnet "
          "CIDR' (the range of all nodes' pod subnets, e.g. 198.19.0.0/16); on a node "
          "already set up, run lswitch-setup again to add the route.",
          file=sys.stderr, flush=True)


def cmd_node_init(args: argparse.Namespace) -> int:
    """Prepare the node: settings, br-int, uplink; optionally install the CNI plugin."""
    from ovn_underlay.cli.cni_install import check_cni_targets, install_cni
    from ovn_underlay.dataplane.node_init import NodeInit

    if args.install_cni:
        check_cni_targets(args)

    with open_ovs(args) as ovs:
        cfg = replace(load(ovs), **_overrides(args))
        cfg = with_host_defaults(cfg)
        if cfg.backend == "ovn":
            cfg.require("nb", "parent")
            nb_ssl(cfg.nb, cfg.nb_private_key, cfg.nb_certificate, cfg.nb_ca_cert,
                   NODE_OPTIONS)
        if cfg.backend == "neutron":
            from ovn_underlay.cli import neutron

            cfg, checked = neutron.check_node(cfg, args.parent)
            print(checked, flush=True)
        init = NodeInit(ovs, cfg)
        changes = (init.plan() + _daemon_setting_changes(ovs, args)
                   + _nb_ssl_setting_changes(ovs, args) + _cni_setting_changes(ovs, args))
        if cfg.backend == "neutron":
            changes += neutron.setting_changes(ovs, args)
        prefix = "would " if args.dry_run else ""
        if args.dry_run:
            for change in changes:
                print(f"{prefix}{change.what}")
        else:
            init.apply(changes, lambda what: print(what, flush=True))
        installed = install_cni(args, args.dry_run, cfg) if args.install_cni else []
        for line in installed:
            print(f"{prefix}{line}")
        if not changes and not installed:
            print("node already initialised: nothing to change")
    warn_without_cluster_subnet(cfg)
    return 0


def _cni_setting_changes(ovs: Ovs, args: argparse.Namespace) -> list[Change]:
    """With --install-cni: record where the conflist goes, written once the node is ready."""
    from ovn_underlay.dataplane.node_init import settings_changes

    if not args.install_cni:
        return []
    values = {"cni_conf_dir": args.cni_conf_dir, "cni_version": args.cni_version,
              "cni_log_file": args.cni_log_file}
    want = {node_config.key_of(name): str(value) for name, value in values.items() if value}
    return settings_changes(ovs, want, "CNI settings")


def _nb_ssl_setting_changes(ovs: Ovs, args: argparse.Namespace) -> list[Change]:
    """Record the NB SSL files given on the command line ('' clears one) that differ from
    the node's."""
    from ovn_underlay.dataplane.node_init import settings_changes

    want = {node_config.key_of(name): value for name in node_config.NB_SSL_FIELDS
            if (value := getattr(args, name, None)) is not None}
    return settings_changes(ovs, want, "NB SSL settings")


def _daemon_setting_changes(ovs: Ovs, args: argparse.Namespace) -> list[Change]:
    """Record the daemon settings given on the command line that differ from the node's."""
    from ovn_underlay.dataplane.node_init import settings_changes

    want = {node_config.key_of(name): str(value) for name in node_config.DAEMON_FIELDS
            if (value := getattr(args, name, None)) is not None}
    return settings_changes(ovs, want, "daemon settings")
