"""lswitch-setup / lswitch-destroy: the node's switch, router attachment, pool and mgmt port.

Setup asks the control plane for the node network (all or nothing there), then
makes the node's side: the pool records, the settings, the management port.
If a node-side step fails, the control-plane rows this call created are
removed again, so an error leaves nothing half-created.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import IPv4Network

from ovn_underlay.config import NETWORK_FIELDS, ConfigError, NodeConfig, key_of, to_external_ids
from ovn_underlay.control.base import VLAN_MAX, ControlPlane, NodeNetwork
from ovn_underlay.control.planning import parse_subnet
from ovn_underlay.dataplane.mgmt import ensure_mgmt_port, remove_mgmt_port
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.pods.attach import PodAttacher
from ovn_underlay.pods.pool import Pool

LOG = logging.getLogger(__name__)
RESERVED_ADDRESSES = 4
"""Per subnet: network, broadcast, the router's gateway and the management port."""


def default_pool_size(subnet: str) -> int:
    """One port per free address of the subnet, as the seed made them.

    Every port needs its own VLAN tag on the parent port, so a subnet with more
    free addresses than there are tags (4093 besides the management port's)
    cannot be filled: refused, with what to do instead.
    """
    net: IPv4Network = parse_subnet(subnet)
    size = net.num_addresses - RESERVED_ADDRESSES
    tags = VLAN_MAX - 1
    if size > tags:
        raise ConfigError(f"subnet {subnet} has {size} free addresses but a parent port has "
                          f"only {tags} VLAN tags for child ports: use a /20 or smaller "
                          "subnet, or --pool-size")
    return size


def network_config(cfg: NodeConfig, net: NodeNetwork) -> NodeConfig:
    """``cfg`` with the node network's settings filled in."""
    mgmt = net.mgmt
    return replace(cfg, switch=net.switch, subnet=net.subnet, router=net.router,
                   gateway_ip=net.gateway_ip, gateway_mac=net.gateway_mac,
                   mgmt_port=mgmt.name if mgmt else "", mgmt_mac=mgmt.mac if mgmt else "",
                   mgmt_ip=mgmt.ip if mgmt else "")


def setup(ovs: Ovs, control: ControlPlane, cfg: NodeConfig, switch: str, subnet: str,
          router: str, pool_size: int | None = None, create_router: bool = True) -> NodeNetwork:
    """Create (or find, when identical) the node network and make the node's side of it."""
    cfg.require("parent")
    if cfg.switch and cfg.switch != switch:
        raise ConfigError(f"this node is already set up with switch {cfg.switch!r} "
                          f"({cfg.subnet}); run 'lswitch-destroy {cfg.switch}' first")
    size = default_pool_size(subnet) if pool_size is None else pool_size
    existed = control.get_node_network(switch) is not None
    net = control.create_node_network(switch, subnet, router, cfg.parent, size, cfg.mgmt_tag,
                                      create_router, cfg.cluster_subnet or None)
    new_cfg = network_config(cfg, net)
    try:
        with Pool(cfg.pool_path) as pool:
            pool.add_ports(net.ports)
        ovs.set_config(to_external_ids(new_cfg, NETWORK_FIELDS))
        if net.mgmt is not None:
            ensure_mgmt_port(ovs, new_cfg)
    except BaseException:
        if not existed:
            LOG.warning("node-side setup failed: removing switch %s again", switch)
            _undo_node_side(ovs, new_cfg)
            control.destroy_node_network(switch)
        raise
    return net


def _undo_node_side(ovs: Ovs, cfg: NodeConfig) -> None:
    remove_mgmt_port(ovs)
    ovs.remove_config([key_of(f) for f in NETWORK_FIELDS])
    with Pool(cfg.pool_path) as pool:
        pool.remove_ports(force=True)


def destroy(ovs: Ovs, control: ControlPlane, attacher: PodAttacher, cfg: NodeConfig,
            switch: str, force: bool = False) -> list[str]:
    """Remove the node network; refuse while pods hold ports unless ``force``.

    Returns the attachments that ``force`` detached.
    """
    if cfg.switch and cfg.switch != switch:
        raise ConfigError(f"this node's switch is {cfg.switch!r}, not {switch!r}")
    held = attacher.pool.leases()
    if held and not force:
        pods = ", ".join(f"{a.interface.pod_namespace or '-'}/{a.interface.pod_name or '-'}"
                         f" ({a.interface.container_id[:12]})" for a in held)
        raise ConfigError(f"{len(held)} pod(s) still hold ports of {switch}: {pods}; "
                          "delete them first or use --force")
    detached = []
    for alloc in held:
        att = alloc.interface
        attacher.delete(att.container_id, att.ifname)
        detached.append(f"{att.container_id[:12]}/{att.ifname}")
    _undo_node_side(ovs, cfg)
    control.destroy_node_network(switch)
    return detached
