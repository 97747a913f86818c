"""node-init, config show, lswitch-setup, lswitch-destroy and pool show."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from ovn_underlay import config as node_config
from ovn_underlay import lswitch
from ovn_underlay.attachments import Attacher
from ovn_underlay.config import NodeConfig
from ovn_underlay.control.factory import connect
from ovn_underlay.node.ovs import Ovs
from ovn_underlay.pool import Pool

CONFLIST_NAME = "10-ovn-underlay.conflist"
NETWORK_NAME = "ovn-underlay"
CNI_BINARY = "ovn-underlay"


@contextmanager
def open_ovs(args: argparse.Namespace) -> Iterator[Ovs]:
    """The node's local Open_vSwitch database."""
    ovs = Ovs(args.ovsdb)
    try:
        yield ovs
    finally:
        ovs.close()


def load(ovs: Ovs) -> NodeConfig:
    """The node's settings."""
    return node_config.from_external_ids(ovs.get_config())


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in fields(NodeConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _uplink_mtu(name: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{name}/mtu").read_text())
    except (OSError, ValueError):
        return 0


def cmd_node_init(args: argparse.Namespace) -> int:
    """Prepare the node: settings, br-int, uplink; optionally install the CNI plugin."""
    from ovn_underlay.node.uplink import NodeInit, detect_datapath

    with open_ovs(args) as ovs:
        cfg = replace(load(ovs), **_overrides(args))
        if not cfg.datapath or args.datapath == "auto":
            cfg = replace(cfg, datapath=detect_datapath())
        if not cfg.uplink:
            cfg = replace(cfg, uplink="eth1")
        if not cfg.mtu:
            cfg = replace(cfg, mtu=_uplink_mtu(cfg.uplink))
        if cfg.backend == "ovn":
            cfg.require("nb", "parent")
        init = NodeInit(ovs, cfg)
        changes = init.plan()
        prefix = "would " if args.dry_run else ""
        if args.dry_run:
            for change in changes:
                print(f"{prefix}{change.what}")
        else:
            init.apply(changes, lambda what: print(what, flush=True))
        installed = install_cni(args, dry_run=args.dry_run) if args.install_cni else []
        for line in installed:
            print(f"{prefix}{line}")
        if not changes and not installed:
            print("node already initialised: nothing to change")
    return 0


def conflist(args: argparse.Namespace) -> dict[str, Any]:
    """The network configuration list a runtime reads for this node."""
    plugin: dict[str, Any] = {"type": CNI_BINARY, "ovsdb": args.ovsdb}
    if args.cni_log_file:
        plugin["logFile"] = args.cni_log_file
    return {"cniVersion": args.cni_version, "name": NETWORK_NAME, "plugins": [plugin]}


def install_cni(args: argparse.Namespace, dry_run: bool) -> list[str]:
    """Link the plugin into the CNI bin dir and write its conflist; say what was done."""
    binary = Path(sys.executable).parent / CNI_BINARY
    if not binary.exists():
        found = shutil.which(CNI_BINARY)
        if found is None:
            raise node_config.ConfigError(f"cannot find the {CNI_BINARY} program to install")
        binary = Path(found)
    bin_dir, conf_dir = Path(args.cni_bin_dir), Path(args.cni_conf_dir)
    link, conf = bin_dir / CNI_BINARY, conf_dir / CONFLIST_NAME
    text = json.dumps(conflist(args), indent=2) + "\n"
    done = []
    if not (link.is_symlink() and link.resolve() == binary.resolve()):
        done.append(f"link {link} -> {binary}")
        if not dry_run:
            bin_dir.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{CNI_BINARY}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(binary)
            os.replace(tmp, link)
    if not conf.exists() or conf.read_text() != text:
        done.append(f"write {conf}")
        if not dry_run:
            conf_dir.mkdir(parents=True, exist_ok=True)
            tmp = conf.with_name(f".{CONFLIST_NAME}.tmp")
            tmp.write_text(text)
            os.replace(tmp, conf)
    return done


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the node's settings."""
    with open_ovs(args) as ovs:
        cfg = load(ovs)
    if args.json:
        print(json.dumps(asdict(cfg), indent=2))
        return 0
    pairs = node_config.describe(cfg)
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")
    return 0


def cmd_lswitch_setup(args: argparse.Namespace) -> int:
    """Create the node's switch, router port, pool and management port."""
    with open_ovs(args) as ovs:
        cfg = load(ovs)
        control = connect(cfg)
        try:
            net = lswitch.setup(ovs, control, cfg, args.switch, args.subnet, args.router,
                                args.pool_size, create_router=not args.no_create_router)
        finally:
            control.close()
    mgmt = f", management port {net.mgmt.name} {net.mgmt.ip} tag {net.mgmt.tag}" \
        if net.mgmt else ""
    print(f"switch {net.switch} ({net.subnet}) on router {net.router} via {net.gateway_ip}: "
          f"{len(net.ports)} pool ports{mgmt}")
    return 0


def cmd_lswitch_destroy(args: argparse.Namespace) -> int:
    """Remove the node's switch and everything setup made."""
    with open_ovs(args) as ovs:
        cfg = load(ovs)
        control = connect(cfg)
        try:
            with Pool(cfg.pool_path) as pool:
                attacher = Attacher(cfg, ovs, pool, lambda: control)
                detached = lswitch.destroy(ovs, control, attacher, cfg, args.switch,
                                           force=args.force)
        finally:
            control.close()
    for att in detached:
        print(f"detached {att}")
    print(f"switch {args.switch} destroyed")
    return 0


def cmd_pool_show(args: argparse.Namespace) -> int:
    """Print the pool: every port, free or held by whom."""
    with open_ovs(args) as ovs:
        cfg = load(ovs)
    with Pool(cfg.pool_path) as pool:
        stats = pool.stats()
        held = {a.port.lport: a for a in pool.allocations()}
        ports = pool.ports()
    if args.json:
        print(json.dumps({"stats": asdict(stats), "ports": [
            {**asdict(p), "allocation": asdict(held[p.lport]) if p.lport in held else None}
            for p in ports]}, indent=2))
        return 0
    print(f"pool {cfg.pool_path}: {stats.total} ports, {stats.free} free, "
          f"{stats.attaching} attaching, {stats.attached} attached")
    for port in ports:
        alloc = held.get(port.lport)
        owner = "free" if alloc is None else (
            f"{alloc.state} {alloc.attachment.pod_namespace}/{alloc.attachment.pod_name} "
            f"{alloc.attachment.container_id[:12]}/{alloc.attachment.ifname}")
        print(f"  tag {port.tag:4d}  {port.lport:24s} {port.ip:15s} {port.mac}  {owner}")
    return 0
