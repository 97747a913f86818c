"""The node's settings as the verbs read them (its local Open_vSwitch database); config show."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING

from ovn_underlay import config as node_config
from ovn_underlay.config import NodeConfig

if TYPE_CHECKING:
    from ovn_underlay.dataplane.ovs import Ovs


@contextmanager
def open_ovs(args: argparse.Namespace) -> Iterator[Ovs]:
    """The node's local Open_vSwitch database (``--ovsdb``)."""
    from ovn_underlay.dataplane.ovs import Ovs

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


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the node's settings."""
    import json

    cfg = node_settings(args)
    if args.json:
        print(json.dumps(asdict(cfg), indent=2))
        return 0
    pairs = node_config.describe(cfg)
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")
    return 0
