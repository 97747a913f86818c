"""The lab's outside: an "external" network namespace behind the cluster router's gateway.

``<lab>-ext`` holds the external host, 203.0.113.10/24 (TEST-NET-3, used only
inside the lab's namespaces) on its ``eth0``.  That is one end of a veth whose
other end ``ext-hv`` is a port of the hypervisor's OVS bridge ``br-ext``; the
hypervisor's chassis maps the physical network ``extnet`` to ``br-ext``
(``ovn-bridge-mappings``) and may host gateways (``ovn-cms-options=
enable-chassis-as-gw``, what Neutron's scheduler looks for).  On the OVN side
the external network is a logical switch with a localnet port on ``extnet``:
made directly in the NB lab, and in the Neutron lab as Neutron makes it for an
external flat network (``router:external``, subnet 203.0.113.0/24 whose gateway
is the external host).

:func:`attach` gives the cluster router its gateway there with the command
``router-gateway`` on a node (the control plane's ``ensure_router_gateway``):
in the NB lab the distributed gateway port 203.0.113.1/24 on the hypervisor
chassis, a default route via the external host and SNAT of the cluster subnet
to 203.0.113.1; in the Neutron lab the router's external_gateway_info with SNAT,
the address picked by Neutron.  The external
host has no route to the cluster subnet: a pod's traffic reaches it only as
SNAT, and nothing outside can open a connection to a pod (that would take
floating IPs or NodePorts).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from ovn_underlay.lab import netns
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.daemons import run

if TYPE_CHECKING:
    from openstack.connection import Connection

    from ovn_underlay.lab.topology import LabState

EXT_NETWORK = IPv4Network("203.0.113.0/24")
EXT_HOST = str(EXT_NETWORK[10])
"""The external host, also the external network's gateway (the router's next hop)."""
NB_GATEWAY = f"{EXT_NETWORK[1]}/{EXT_NETWORK.prefixlen}"
"""The router's gateway address in the NB lab (Neutron picks its own)."""
EXT_SWITCH = "ext"
PHYSNET = "extnet"
BRIDGE = "br-ext"
HV_END = "ext-hv"
NEUTRON_POOL = (str(EXT_NETWORK[100]), str(EXT_NETWORK[200]))


def namespace(lab: str) -> str:
    """The external network's namespace of lab ``lab``."""
    return f"{lab}-ext"


def up(state: LabState) -> None:
    """The external namespace and host, ``br-ext`` with the mapping, the external network.

    The namespace is recorded in ``state.namespaces`` before it is made, so that
    ``lab down`` removes it after a failure half-way.
    """
    from ovn_underlay.lab.topology import nbctl, vsctl

    ns = namespace(state.name)
    state.namespaces.append(ns)
    netns.create(ns)
    hv = state.hv_netns
    vsctl(state.hv_ovsdb, "--may-exist", "add-br", BRIDGE, "--", "set", "Bridge", BRIDGE,
          "datapath_type=netdev")
    vsctl(state.hv_ovsdb, "set", "Open_vSwitch", ".",
          f"external_ids:ovn-bridge-mappings={PHYSNET}:{BRIDGE}",
          "external_ids:ovn-cms-options=enable-chassis-as-gw")
    run(["ip", "-n", hv, "link", "add", HV_END, "type", "veth", "peer", "name", "eth0",
         "netns", ns])
    run(["ip", "-n", ns, "addr", "add", f"{EXT_HOST}/{EXT_NETWORK.prefixlen}", "dev", "eth0"])
    for dev_ns, dev in ((ns, "lo"), (ns, "eth0"), (hv, HV_END)):
        run(["ip", "-n", dev_ns, "link", "set", dev, "up"])
    for dev_ns, dev in ((ns, "eth0"), (hv, HV_END)):
        run(["ethtool", "-K", dev, "tx", "off"], netns=dev_ns)
    vsctl(state.hv_ovsdb, "--may-exist", "add-port", BRIDGE, HV_END)
    if state.neutron:
        state.neutron["external"] = _neutron_network(state)
    else:
        port = f"{EXT_SWITCH}-localnet"
        nbctl(state.nb, "--may-exist", "ls-add", EXT_SWITCH, "--",
              "--may-exist", "lsp-add", EXT_SWITCH, port, "--",
              "lsp-set-type", port, "localnet", "--",
              "lsp-set-addresses", port, "unknown", "--",
              "lsp-set-options", port, f"network_name={PHYSNET}")


def _neutron_network(state: LabState) -> str:
    """The external flat network on ``extnet`` and its subnet, made through Neutron."""
    def make(conn: Connection) -> str:
        net = conn.network.find_network(EXT_SWITCH) or conn.network.create_network(
            name=EXT_SWITCH, is_router_external=True, provider_network_type="flat",
            provider_physical_network=PHYSNET)
        if conn.network.find_subnet(EXT_SWITCH) is None:
            conn.network.create_subnet(
                network_id=net.id, name=EXT_SWITCH, cidr=str(EXT_NETWORK), ip_version=4,
                enable_dhcp=False, gateway_ip=EXT_HOST,
                allocation_pools=[{"start": NEUTRON_POOL[0], "end": NEUTRON_POOL[1]}])
        return str(net.id)

    return lab_neutron.retrying(lambda: lab_neutron.call(state, make))


def attach(state: LabState, router: str, snat: Sequence[str]) -> str:
    """Give ``router`` its gateway on the external network; return the SNAT address.

    Through the command an operator runs, ``ovn-k8s-underlay router-gateway``, in
    the first VM's namespace (where the control plane is reachable) and with the
    control plane named on the command line, as the holder of its credentials
    does: a node in cluster mode has none.
    """
    from ovn_underlay.lab.cluster import Node

    args = [f"--snat={net}" for net in snat]
    if state.neutron:
        args += ["--neutron-config", state.vms[0].openrc]
    else:
        args += ["--nb", state.nb, "--address", NB_GATEWAY, "--next-hop", EXT_HOST,
                 "--gateway-chassis", state.chassis]
    out = Node(state, state.vms[0]).cli("router-gateway", router, EXT_SWITCH, *args).stdout
    return out.split(" gateway ", 1)[1].split()[0]
