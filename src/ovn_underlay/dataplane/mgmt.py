"""The node's management port: how the node itself reaches its pods and every pod the node.

An OVS internal port on br-int, access port of the management child port's VLAN
tag, with that child port's MAC and IP, and a route to the cluster subnet via
the node switch's gateway on the logical router.  It replaces the seed's static
``ip neigh`` / ``route add`` steps: the gateway is learnt by ARP like any other.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from pyroute2 import IPRoute

from ovn_underlay.config import NodeConfig
from ovn_underlay.dataplane import links
from ovn_underlay.dataplane.node_init import wait_for_link
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.names import EXT_PREFIX, MGMT_IFNAME

EXT_ROLE = EXT_PREFIX + "role"


def ensure_mgmt_port(ovs: Ovs, cfg: NodeConfig) -> None:
    """Create or repair the management port from the settings of ``cfg``; idempotent."""
    cfg.require("mgmt_port", "mgmt_mac", "mgmt_ip", "gateway_ip", "subnet")
    ovs.add_access_port(cfg.bridge, MGMT_IFNAME, cfg.mgmt_tag,
                        {"iface-id": cfg.mgmt_port, EXT_ROLE: "mgmt"}, internal=True)
    index = wait_for_link(MGMT_IFNAME)
    iface = cfg.mgmt_interface
    with IPRoute(groups=0) as ipr:
        ipr.link("set", index=index, address=cfg.mgmt_mac, state="up",
                 **({"mtu": cfg.mtu} if cfg.mtu else {}))
        have = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.get_addr(index=index)}
        if str(iface) not in have:
            ipr.addr("add", index=index, address=str(iface.ip),
                     prefixlen=iface.network.prefixlen)
        for net in _routed(cfg):
            ipr.route("replace", dst=net, gateway=cfg.gateway_ip, oif=index)
    if cfg.userspace_datapath:
        links.set_tx_offload(MGMT_IFNAME, False)


def _routed(cfg: NodeConfig) -> list[str]:
    """Networks reached through the router: the cluster subnet, minus the node's own."""
    if not cfg.cluster_subnet:
        return []
    cluster, own = IPv4Network(cfg.cluster_subnet), IPv4Network(cfg.subnet)
    return [] if cluster == own else [str(cluster)]


def remove_mgmt_port(ovs: Ovs) -> None:
    """Remove the management port (its addresses and routes go with the interface)."""
    ovs.del_port(MGMT_IFNAME)
