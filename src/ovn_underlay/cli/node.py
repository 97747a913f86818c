"""node-init, config show, lswitch-setup, lswitch-destroy and pool show."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovn_underlay import config as node_config
from ovn_underlay.config import NodeConfig
from ovn_underlay.control.base import ChildPort
from ovn_underlay.control.factory import connect
from ovn_underlay.daemon import status as daemon_status
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.pods import network as lswitch
from ovn_underlay.pods.attach import PodAttacher
from ovn_underlay.pods.pool import Pool, PortLease

if TYPE_CHECKING:
    from ovn_underlay.dataplane.node_init import Change

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


def node_settings(args: argparse.Namespace) -> NodeConfig:
    """The node's settings, read from its local Open_vSwitch database (``--ovsdb``)."""
    with open_ovs(args) as ovs:
        return load(ovs)


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
    from ovn_underlay.dataplane.node_init import NodeInit, detect_datapath

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
        if cfg.backend == "neutron":
            from ovn_underlay.cli import neutron

            cfg, checked = neutron.check_node(cfg, args.parent)
            print(checked, flush=True)
        init = NodeInit(ovs, cfg)
        changes = init.plan() + _daemon_setting_changes(ovs, args)
        if cfg.backend == "neutron":
            changes += neutron.setting_changes(ovs, args)
        prefix = "would " if args.dry_run else ""
        if args.dry_run:
            for change in changes:
                print(f"{prefix}{change.what}")
        else:
            init.apply(changes, lambda what: print(what, flush=True))
        installed = (install_cni(args, args.dry_run, cfg.daemon_socket) if args.install_cni
                     else [])
        for line in installed:
            print(f"{prefix}{line}")
        if not changes and not installed:
            print("node already initialised: nothing to change")
    return 0


def _daemon_setting_changes(ovs: Ovs, args: argparse.Namespace) -> list[Change]:
    """Record the daemon settings given on the command line that differ from the node's."""
    from ovn_underlay.dataplane.node_init import settings_changes

    want = {node_config.key_of(name): str(value) for name in node_config.DAEMON_FIELDS
            if (value := getattr(args, name, None)) is not None}
    return settings_changes(ovs, want, "daemon settings")


def conflist(args: argparse.Namespace) -> dict[str, Any]:
    """The network configuration list a runtime reads for this node."""
    plugin: dict[str, Any] = {"type": CNI_BINARY, "ovsdb": args.ovsdb}
    if args.cni_log_file:
        plugin["logFile"] = args.cni_log_file
    return {"cniVersion": args.cni_version, "name": NETWORK_NAME, "plugins": [plugin]}


def native_shim() -> Path | None:
    """The native shim built from cni/shim.c (``make``), None if it was not built."""
    from ovn_underlay.cni import shim

    path = Path(shim.__file__).with_name(shim.NATIVE_SHIM)
    return path if os.access(path, os.X_OK) else None


def launcher(daemon_socket: str, native: Path | None = None,
             reply_timeout: float | None = None) -> str:
    """The CNI binary: a Python script calling the shim, run by ``native`` if given.

    With the native shim as its interpreter the script is read only for its
    ``#socket:``/``#python:``/``#reply-timeout:`` lines, and run by Python
    only when the daemon cannot serve the call (see cni/shim.c).  Without it,
    this Python runs the script isolated (-I) and without site (-S): ~8 ms
    instead of the console script's ~25 ms (site-packages, .pth files, the
    entry-point wrapper); the shim adds site-packages itself on its
    in-process fallback, and skips the interpreter's teardown when the
    daemon answered.
    """
    import ovn_underlay
    from ovn_underlay.cni import shim

    timeout = shim.REPLY_TIMEOUT if reply_timeout is None else reply_timeout
    package_root = Path(ovn_underlay.__file__).resolve().parent.parent
    interpreter = str(native) if native is not None else f"{sys.executable} -IS"
    return (f"#!{interpreter}\n"
            f"#socket: {daemon_socket}\n"
            f"#python: {sys.executable}\n"
            f"#reply-timeout: {timeout:g}\n"
            '"""The ovn-underlay CNI plugin (written by ovn-k8s-underlay node-init '
            '--install-cni)."""\n'
            "import sys\n\n"
            f"sys.path.insert(0, {str(package_root)!r})\n"
            "from ovn_underlay.cni.shim import launch\n\n"
            f"launch({daemon_socket!r}, {timeout!r})\n")


def install_cni(args: argparse.Namespace, dry_run: bool,
                daemon_socket: str = node_config.DEFAULT_DAEMON_SOCKET) -> list[str]:
    """Write the plugin's launcher into the CNI bin dir and its conflist; say what was done."""
    bin_dir, conf_dir = Path(args.cni_bin_dir), Path(args.cni_conf_dir)
    binary, conf = bin_dir / CNI_BINARY, conf_dir / CONFLIST_NAME
    native = native_shim()
    script = launcher(daemon_socket, native)
    text = json.dumps(conflist(args), indent=2) + "\n"
    done = []
    if binary.is_symlink() or not binary.exists() or binary.read_text() != script:
        runner = native or f"{sys.executable} -IS (the native shim is not built)"
        done.append(f"write {binary} (run by {runner}; daemon socket {daemon_socket})")
        if not dry_run:
            bin_dir.mkdir(parents=True, exist_ok=True)
            tmp = binary.with_name(f".{CNI_BINARY}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.write_text(script)
            tmp.chmod(0o755)
            os.replace(tmp, binary)
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
    cfg = node_settings(args)
    if args.json:
        print(json.dumps(asdict(cfg), indent=2))
        return 0
    pairs = node_config.describe(cfg)
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")
    return 0


def cmd_lswitch_setup(args: argparse.Namespace) -> int:
    """Create the node's switch, router port, pool and management port.

    With Neutron only a first batch of the pool is made here; the rest is made
    in the background, or before returning with --wait.
    """
    from ovn_underlay.cli import pool as pool_cmds

    with open_ovs(args) as ovs:
        cfg = load(ovs)
        target = lswitch.default_pool_size(args.subnet) if args.pool_size is None \
            else args.pool_size
        first = pool_cmds.first_batch(cfg, target, args.first_batch)
        control = connect(cfg)
        try:
            net = lswitch.setup(ovs, control, replace(cfg, pool_size=target), args.switch,
                                args.subnet, args.router, first,
                                create_router=not args.no_create_router)
        finally:
            control.close()
    mgmt = f", management port {net.mgmt.name} {net.mgmt.ip} tag {net.mgmt.tag}" \
        if net.mgmt else ""
    print(f"switch {net.switch} ({net.subnet}) on router {net.router} via {net.gateway_ip}: "
          f"{len(net.ports)} pool ports{mgmt}", flush=True)
    rest = pool_cmds.finish(args, len(net.ports), target)
    if rest:
        print(rest)
    return 0


def cmd_lswitch_destroy(args: argparse.Namespace) -> int:
    """Remove the node's switch and everything setup made (a pool filler is stopped first)."""
    from ovn_underlay.pods import fill as pool_fill

    with open_ovs(args) as ovs:
        cfg = load(ovs)
        if pool_fill.stop(cfg):
            print("stopped the background pool filler")
        pool_fill.forget(cfg)
        control = connect(cfg)
        try:
            with Pool(cfg.pool_path) as pool:
                attacher = PodAttacher(cfg, ovs, pool, lambda: control)
                detached = lswitch.destroy(ovs, control, attacher, cfg, args.switch,
                                           force=args.force)
        finally:
            control.close()
    for att in detached:
        print(f"detached {att}")
    print(f"switch {args.switch} destroyed")
    return 0


def _port_json(port: ChildPort, lease: PortLease | None) -> dict[str, Any]:
    """A pool port in ``pool show --json``: its logical port (``lport``) and who holds it."""
    shown = {"lport": port.name, **{k: v for k, v in asdict(port).items() if k != "name"}}
    held = None if lease is None else {
        "port": shown, "attachment": asdict(lease.interface), "state": lease.state,
        "since": lease.since}
    return {**shown, "allocation": held}


def cmd_pool_show(args: argparse.Namespace) -> int:
    """Print the pool: every port, free or held by whom."""
    cfg = node_settings(args)
    with Pool(cfg.pool_path) as pool:
        stats = pool.stats()
        held = {a.port.name: a for a in pool.leases()}
        ports = pool.ports()
    daemon = daemon_status.read_status(daemon_status.status_path(cfg.pool_path))
    if args.json:
        print(json.dumps({"stats": asdict(stats), "ports": [
            _port_json(p, held.get(p.name)) for p in ports],
            "refill": daemon_status.refill_report(cfg, daemon)}, indent=2))
        return 0
    print(f"pool {cfg.pool_path}: {stats.total} ports, {stats.free} free, "
          f"{stats.attaching} attaching, {stats.attached} attached")
    print(daemon_status.describe_refill(cfg, daemon))
    for port in ports:
        alloc = held.get(port.name)
        owner = "free" if alloc is None else (
            f"{alloc.state} {alloc.interface.pod_namespace}/{alloc.interface.pod_name} "
            f"{alloc.interface.container_id[:12]}/{alloc.interface.ifname}")
        print(f"  tag {port.tag:4d}  {port.name:24s} {port.ip:15s} {port.mac}  {owner}")
    return 0
