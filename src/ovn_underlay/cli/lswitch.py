"""lswitch-setup and lswitch-destroy: the node's switch, router port, pool and mgmt port.

With Neutron lswitch-setup makes a first batch of the pool and leaves the rest
to a detached ``pool fill`` (or makes it all with --wait).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import TYPE_CHECKING

from ovn_underlay.cli.node_config import load, node_settings, open_ovs
from ovn_underlay.cli.node_init import warn_without_cluster_subnet
from ovn_underlay.cli.pool import fill_in_foreground
from ovn_underlay.cni import conflist
from ovn_underlay.config import ConfigError, NodeConfig

if TYPE_CHECKING:
    from ovn_underlay.control.base import ControlPlane

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
    from ovn_underlay.pods import filler

    if made >= target:
        return ""
    cfg = node_settings(args)
    if args.wait:
        have = fill_in_foreground(cfg, target, cfg.pool_batch)
        return f"pool filled: {have} ports"
    pid = filler.spawn(cfg, args.ovsdb)
    log = os.path.join(cfg.state_dir, filler.LOG_FILE)
    return (f"the other {target - made} pool ports are being created in the background "
            f"(pid {pid}, log {log}); 'pool fill' waits for them")


def cmd_lswitch_setup(args: argparse.Namespace) -> int:
    """Create the node's switch, router port, pool and management port.

    With Neutron only a first batch of the pool is made here; the rest is made
    in the background, or before returning with --wait.
    """
    from ovn_underlay.control.base import Routing
    from ovn_underlay.control.factory import connect
    from ovn_underlay.dataplane.mgmt import ensure_mgmt_port
    from ovn_underlay.pods import network

    with open_ovs(args) as ovs:
        cfg = load(ovs)
        target = network.default_pool_size(args.subnet) if args.pool_size is None \
            else args.pool_size
        first = first_batch(cfg, target, args.first_batch)
        control = connect(cfg)
        try:
            net = network.setup(ovs, control, replace(cfg, pool_size=target), args.switch,
                                args.subnet, args.router, first,
                                create_router=not args.no_create_router)
            hosts = control.ensure_host_routes(net.switch) \
                if isinstance(control, Routing) else ()
            router = router_label(control, net.router)
        finally:
            control.close()
        ready = load(ovs)
        if hosts:
            ensure_mgmt_port(ovs, ready, admitted=hosts)
    mgmt = f", management port {net.mgmt.name} {net.mgmt.ip} tag {net.mgmt.tag}" \
        if net.mgmt else ""
    if hosts:
        mgmt += f" (the node's {', '.join(hosts)} routed to it)"
    print(f"switch {net.switch} ({net.subnet}) on router {router} via {net.gateway_ip}: "
          f"{len(net.ports)} pool ports{mgmt}", flush=True)
    warn_without_cluster_subnet(cfg)
    written = conflist.publish(ready, args.ovsdb)
    if written:
        print(f"write {written}: the node can serve pods", flush=True)
    rest = finish(args, len(net.ports), target)
    if rest:
        print(rest)
    return 0


def cmd_router_gateway(args: argparse.Namespace) -> int:
    """Give a router its gateway on an external network, SNATing the pods' addresses."""
    from ovn_underlay.control.base import Routing
    from ovn_underlay.control.factory import connect
    from ovn_underlay.nb_ssl import NODE_OPTIONS, OPTIONS

    files = (args.nb_private_key, args.nb_certificate, args.nb_ca_cert)
    if any(files) and not args.nb:
        raise ConfigError(f"{', '.join(OPTIONS)} go with --nb (this node's own control "
                          "plane uses the files node-init recorded)")
    if args.nb or args.neutron_config:
        cfg = NodeConfig(backend="ovn" if args.nb else "neutron", nb=args.nb,
                         neutron_config=args.neutron_config, nb_private_key=files[0],
                         nb_certificate=files[1], nb_ca_cert=files[2])
    else:
        with open_ovs(args) as ovs:
            cfg = load(ovs)
    snat = args.snat or [cfg.cluster_subnet or cfg.subnet]
    if not snat[0]:
        raise ConfigError("nothing to SNAT: give --snat, or run node-init --cluster-subnet "
                          "(or lswitch-setup) first")
    control = connect(cfg, ssl_options=OPTIONS if args.nb else NODE_OPTIONS)
    try:
        if not isinstance(control, Routing):
            raise ConfigError(f"backend {cfg.backend!r} cannot set a router's gateway: run "
                              "router-gateway where the control plane's credentials are")
        ip = control.ensure_router_gateway(args.router, args.external, snat, args.address,
                                           args.next_hop, args.gateway_chassis)
    finally:
        control.close()
    print(f"router {args.router}: gateway {ip} on {args.external}, SNAT of "
          f"{', '.join(snat)}", flush=True)
    return 0


def router_label(control: ControlPlane, router: str) -> str:
    """The router as lswitch-setup names it: its name, and its id where that differs.

    A node network records its router as its control plane does: OVN NB by
    name, Neutron by id (Neutron is asked for the name).
    """
    from ovn_underlay.control.neutron import NeutronControlPlane

    if not isinstance(control, NeutronControlPlane):
        return router
    name = control.router_name(router)
    return router if name == router else f"{name} ({router})"


def cmd_lswitch_destroy(args: argparse.Namespace) -> int:
    """Remove the node's switch and everything setup made (a pool filler is stopped first)."""
    from ovn_underlay.control.factory import connect
    from ovn_underlay.pods import filler, network
    from ovn_underlay.pods.attach import PodAttacher
    from ovn_underlay.pods.pool import Pool

    with open_ovs(args) as ovs:
        cfg = load(ovs)
        if filler.stop(cfg):
            print("stopped the background pool filler")
        filler.forget(cfg)
        control = connect(cfg)
        try:
            with Pool(cfg.pool_path) as pool:
                attacher = PodAttacher(cfg, ovs, pool, lambda: control)
                detached = network.destroy(ovs, control, attacher, cfg, args.switch,
                                           force=args.force)
        finally:
            control.close()
    for att in detached:
        print(f"detached {att}")
    print(f"switch {args.switch} destroyed")
    return 0
