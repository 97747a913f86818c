"""pool fill, and how lswitch-setup splits the pool into a first batch and the rest."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from ovn_underlay.cli.node import node_settings
from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.control.factory import connect
from ovn_underlay.pods import fill as pool_fill

FIRST_BATCH = 8
"""Neutron ports lswitch-setup makes before it returns (~2 s of bulk POST)."""


def first_batch(cfg: NodeConfig, target: int, asked: int | None) -> int:
    """How many of ``target`` ports lswitch-setup makes itself (all, except with Neutron)."""
    if asked is not None and asked < 0:
        raise ConfigError(f"--first-batch must not be negative (got {asked})")
    if cfg.backend != "neutron":
        return target
    return min(target, FIRST_BATCH if asked is None else asked)


def finish(args: argparse.Namespace, made: int, target: int) -> str:
    """After lswitch-setup: fill the rest now (--wait) or in the background; say which."""
    if made >= target:
        return ""
    cfg = node_settings(args)
    if args.wait:
        have = _fill(cfg, target, cfg.pool_batch)
        return f"pool filled: {have} ports"
    pid = pool_fill.spawn(cfg, args.ovsdb)
    log = os.path.join(cfg.state_dir, pool_fill.LOG_FILE)
    return (f"the other {target - made} pool ports are being created in the background "
            f"(pid {pid}, log {log}); 'pool fill' waits for them")


def _fill(cfg: NodeConfig, target: int, batch: int) -> int:
    """Fill in the foreground; SIGTERM (lswitch-destroy) ends it after the current round."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stopping.set())
    control = connect(cfg)
    try:
        return pool_fill.fill(cfg, control, target, batch, pool_fill.ProgressBar(sys.stderr),
                              stopping.is_set)
    finally:
        control.close()


def cmd_pool_fill(args: argparse.Namespace) -> int:
    """Create ports until the pool has its size (in the foreground)."""
    cfg = node_settings(args)
    cfg.require("switch")
    target = args.size if args.size is not None else cfg.pool_size
    if target <= 0:
        raise ConfigError("no pool size: pass --size (lswitch-setup records the size it "
                          "was given)")
    try:
        have = _fill(cfg, target, args.batch or cfg.pool_batch)
    finally:
        if pool_fill.running(cfg) == os.getpid():
            pool_fill.forget(cfg)
    print(f"pool of {cfg.switch}: {have} ports (wanted {target})")
    return 0
