"""The seed's kubelet exec-plugin verbs: init, setup, status, teardown."""

from __future__ import annotations

import argparse

from ovn_underlay.cli.node_config import node_settings


def cmd_init(args: argparse.Namespace) -> int:
    """Succeed when the node is set up for pods (settings and network present)."""
    cfg = node_settings(args)
    cfg.require_network()
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """Attach the container's eth0 (netns from --netns or the engine API)."""
    from ovn_underlay.container_engine import IFNAME, check_container_id, container_netns
    from ovn_underlay.pods.attach import node_attacher
    from ovn_underlay.pods.pool import PodInterface

    cid = check_container_id(args.container_id)
    netns = args.netns or container_netns(cid, args.engine_socket)
    with node_attacher(args.ovsdb) as attacher:
        attacher.add(PodInterface(cid, IFNAME, netns, args.namespace, args.pod))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print ``{"ip": ...}`` of the container's eth0 (exit 1 when not attached)."""
    import json

    from ovn_underlay.container_engine import IFNAME, check_container_id
    from ovn_underlay.pods.pool import Pool

    cid = check_container_id(args.container_id)
    cfg = node_settings(args)
    with Pool(cfg.pool_path) as pool:
        alloc = pool.find(cid, IFNAME)
    if alloc is None:
        print(json.dumps({"error": f"container {cid} has no attachment"}))
        return 1
    print(json.dumps({"ip": alloc.port.ip}))
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    """Detach the container's eth0; fine when it is not attached."""
    from ovn_underlay.container_engine import IFNAME, check_container_id
    from ovn_underlay.pods.attach import node_attacher

    cid = check_container_id(args.container_id)
    with node_attacher(args.ovsdb, need_network=False) as attacher:
        attacher.delete(cid, IFNAME)
    return 0
