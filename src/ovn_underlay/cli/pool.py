"""pool show and pool fill: the node's port pool, and filling it up in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from ovn_underlay.cli.node_config import node_settings
from ovn_underlay.config import ConfigError, NodeConfig

if TYPE_CHECKING:
    from ovn_underlay.control.base import ChildPort
    from ovn_underlay.pods.pool import PortLease


def _port_json(port: ChildPort, lease: PortLease | None) -> dict[str, Any]:
    """A pool port in ``pool show --json``: its logical port (``lport``) and who holds it."""
    shown = {"lport": port.name, **{k: v for k, v in asdict(port).items() if k != "name"}}
    held = None if lease is None else {
        "port": shown, "attachment": asdict(lease.interface), "state": lease.state,
        "since": lease.since}
    return {**shown, "allocation": held}


def cmd_pool_show(args: argparse.Namespace) -> int:
    """Print the pool: every port, free or held by whom."""
    import json

    from ovn_underlay.daemon import status as daemon_status
    from ovn_underlay.pods.pool import Pool

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
    for line in port_lines(ports, held):
        print(line)
    return 0


def pod_label(namespace: str, name: str) -> str:
    """``namespace/name`` of a pod, its name alone if it has no namespace (podman's).

    A missing part is ``-``; ``pool show --json`` keeps the raw fields.
    """
    if not namespace:
        return name or "-"
    return f"{namespace}/{name or '-'}"


def port_lines(ports: list[ChildPort], held: dict[str, PortLease]) -> list[str]:
    """``pool show``'s line per port, in columns as wide as their longest value."""
    name_width = max((len(p.name) for p in ports), default=0)
    ip_width = max((len(p.ip) for p in ports), default=0)
    lines = []
    for port in ports:
        alloc = held.get(port.name)
        owner = "free" if alloc is None else (
            f"{alloc.state} "
            f"{pod_label(alloc.interface.pod_namespace, alloc.interface.pod_name)} "
            f"{alloc.interface.container_id[:12]}/{alloc.interface.ifname}")
        lines.append(f"  tag {port.tag:4d}  {port.name:{name_width}s}  {port.ip:{ip_width}s}  "
                     f"{port.mac}  {owner}")
    return lines


def fill_in_foreground(cfg: NodeConfig, target: int, batch: int) -> int:
    """Fill the pool with a progress bar; SIGTERM (lswitch-destroy) ends it after a round."""
    import signal
    import threading

    from ovn_underlay.control.factory import connect
    from ovn_underlay.pods import fill

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stopping.set())
    control = connect(cfg)
    try:
        return fill.fill(cfg, control, target, batch, ProgressBar(sys.stderr),
                         stopping.is_set)
    finally:
        control.close()


def cmd_pool_fill(args: argparse.Namespace) -> int:
    """Create ports until the pool has its size (in the foreground)."""
    from ovn_underlay.pods import filler

    cfg = node_settings(args)
    cfg.require("switch")
    target = args.size if args.size is not None else cfg.pool_size
    if target <= 0:
        raise ConfigError("no pool size: pass --size (lswitch-setup records the size it "
                          "was given)")
    try:
        have = fill_in_foreground(cfg, target, args.batch or cfg.pool_batch)
    finally:
        if filler.running(cfg) == os.getpid():
            filler.forget(cfg)
    print(f"pool of {cfg.switch}: {have} ports (wanted {target})")
    return 0


class ProgressBar:
    """``[#####.....] 12/40 ports`` redrawn in place on a terminal, one line per round else."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        import time

        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def __call__(self, have: int, target: int) -> None:
        """Show ``have`` of ``target`` ports."""
        import time

        done = min(have, target)
        filled = self.width * done // target if target else self.width
        line = (f"pool [{'#' * filled}{'.' * (self.width - filled)}] {done}/{target} ports "
                f"({time.monotonic() - self.started:.1f}s)")
        if self.tty:
            end = "\n" if done >= target else ""
            self.stream.write(f"\r{line}{end}")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()
