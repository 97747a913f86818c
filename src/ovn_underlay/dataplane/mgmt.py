"""The node's management port: how the node itself reaches its pods and every pod the node.

An OVS internal port on br-int, access port of the management child port's VLAN
tag, with that child port's MAC and IP.  It replaces the seed's static
``ip neigh`` / ``route add`` steps: the gateway is learnt by ARP like any other.

Routes through it: the node subnet on the link, the rest of the cluster subnet
via the node switch's gateway on the logical router.  So everything between the
node and any pod takes the management port, also a pod's traffic to the VM's
primary address (the one on the interface holding the uplink's addresses, the
address of the VM's own port) once the control plane routes that address there
and admits it on the management port (``ensure_host_routes``): the node's answers
leave from the address the pod talked to, so a load balancer's reply from a
host-network endpoint un-NATs in the pod's own datapath.  When the caller says
the management port admits the primary address, both routes prefer it as the
source, so the node's own connections to pods (kubelet's probes) come from the
VM's own address too; otherwise they come from the management port's.

The Service range (the agent's ``--service-cidr``), when given, is routed the same
way as the cluster subnet (via the gateway, same preferred source): the node's own
connections to ClusterIPs (host-network pods, kubelet, kube-apiserver's webhooks) then
enter the node switch, whose OVN load balancers translate them as they do a pod's.
The routes made here carry a routing protocol of their own (:data:`RTPROT_OVN_UNDERLAY`,
``proto 197`` in ``ip route``): one of those no longer wanted (a cluster subnet or
Service range changed) is removed; routes anybody else put on the port are left alone.
"""

from __future__ import annotations

from collections.abc import Collection
from ipaddress import IPv4Network

from pyroute2 import IPRoute

from ovn_underlay.config import NodeConfig
from ovn_underlay.dataplane import links
from ovn_underlay.dataplane.node_init import AF_INET, LINUX_BRIDGE, wait_for_link
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.names import EXT_PREFIX, MGMT_IFNAME

EXT_ROLE = EXT_PREFIX + "role"
IFA_F_NOPREFIXROUTE = 0x200
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254
RTPROT_OVN_UNDERLAY = 197
"""The routing protocol (rtm_protocol) marking the routes made here as ours: a value
no routing daemon uses (the kernel's list: rtnetlink.h; iproute2's rt_protos)."""


def ensure_mgmt_port(ovs: Ovs, cfg: NodeConfig, admitted: Collection[str] = (),
                     service_cidr: str = "") -> None:
    """Create or repair the management port from the settings of ``cfg``; idempotent.

    ``admitted``: the node's own addresses the management port admits as sources;
    the primary address, if among them, becomes the routes' preferred source.
    ``service_cidr``: the Service range to route via the gateway besides the cluster
    subnet ("": none).  Routes of ours (:data:`RTPROT_OVN_UNDERLAY`) on the port to any
    other destination are deleted.
    """
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
                     prefixlen=iface.network.prefixlen, flags=IFA_F_NOPREFIXROUTE)
        source = primary_address(ipr, cfg)
        src = {"prefsrc": source} if source and source in admitted else {}
        ipr.route("replace", dst=str(iface.network), oif=index, scope=RT_SCOPE_LINK,
                  proto=RTPROT_OVN_UNDERLAY, **src)
        routed = _routed(cfg, service_cidr)
        for net in routed:
            ipr.route("replace", dst=net, gateway=cfg.gateway_ip, oif=index,
                      proto=RTPROT_OVN_UNDERLAY, **src)
        _remove_other_routes(ipr, index, {str(iface.network), *routed})
    if cfg.userspace_datapath:
        links.set_tx_offload(MGMT_IFNAME, False)


def primary_address(ipr: IPRoute, cfg: NodeConfig) -> str | None:
    """The node's primary IPv4 address: the first on the interface holding the uplink's
    addresses (the bridge, or the Linux bridge in that uplink mode); None without one."""
    holder = cfg.bridge if cfg.uplink_mode == "ovs" else LINUX_BRIDGE
    found = ipr.link_lookup(ifname=holder)
    if not found:
        return None
    addrs = ipr.get_addr(family=AF_INET, index=found[0])
    return str(addrs[0].get_attr("IFA_ADDRESS")) if addrs else None


def _routed(cfg: NodeConfig, service_cidr: str = "") -> list[str]:
    """Networks reached through the router: the cluster subnet unless it is the node's
    own, and ``service_cidr`` if given."""
    nets = []
    if cfg.cluster_subnet:
        cluster, own = IPv4Network(cfg.cluster_subnet), IPv4Network(cfg.subnet)
        if cluster != own:
            nets.append(str(cluster))
    if service_cidr:
        nets.append(str(IPv4Network(service_cidr)))
    return nets


def _remove_other_routes(ipr: IPRoute, index: int, wanted: set[str]) -> None:
    """Delete our IPv4 routes of the main table through link ``index`` whose destination
    (``NET/PREFIX``) is not in ``wanted``."""
    for route in ipr.get_routes(family=AF_INET, table=RT_TABLE_MAIN):
        if route.get_attr("RTA_OIF") != index or route["proto"] != RTPROT_OVN_UNDERLAY:
            continue
        dst = f"{route.get_attr('RTA_DST') or '0.0.0.0'}/{route['dst_len']}"
        if dst not in wanted:
            ipr.route("del", dst=dst, oif=index, table=RT_TABLE_MAIN)


def remove_mgmt_port(ovs: Ovs) -> None:
    """Remove the management port (its addresses and routes go with the interface)."""
    ovs.del_port(MGMT_IFNAME)
