"""How a node network looks in Neutron: names, the marks it carries, reading it back.

What a node network is made of (``<switch>`` is the node's switch name), each
object marked in its description, set in the request that creates it, with
JSON ``{"ovn-underlay": <kind>}`` (:func:`mark`):

* network ``<switch>``, whose description holds, as JSON, what the node network
  was made with (kind ``node-network``, subnet, router id, parent port,
  child-port mode, management VLAN);
* subnet ``<switch>`` (kind ``subnet``; no DHCP; the router's address is the
  first host);
* an interface of the router on that subnet: a port Neutron makes itself
  (``device_owner`` ``network:router_interface``), left unmarked; a router
  created for it is marked ``router`` (deleted with its last node network), the
  cluster controller's router (``ensure_router``) ``cluster-router`` (never
  deleted here), one that existed is left as it was;
* ``<switch>-mgmt``, the management port (kind ``mgmt-port``; second host
  address, VLAN ``mgmt_tag``), and the pool ports ``<switch>-p<tag>`` (kind
  ``pool-port``): children of the VM's port, made in one of two ways:

  - ``trunk``: plain ports added as subports (``segmentation_type`` vlan) of
    the trunk whose parent is the VM's port (a trunk created for it is named
    ``ovn-underlay-<parent id prefix>`` and marked ``trunk``);
  - ``binding-profile``: the seed's way, ``binding:profile`` =
    ``{"parent_name": <VM port>, "tag": <vlan>}``.

  Either way ML2/OVN writes ``parent_name`` and ``tag`` into the port's
  Northbound row, so the node's plumbing is the same.  These ports are made
  with ``device_owner`` ``compute:ovn-underlay`` (a pod is an instance, as
  kuryr's ``compute:kuryr``), which binding-profile children keep; Neutron's
  trunk service rewrites a subport's to ``trunk:subport`` when it joins the
  trunk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ovn_underlay.control.base import ChildPort, NodeNetwork
from ovn_underlay.control.planning import gateway_ip, parse_subnet

MARK = "ovn-underlay"
TRUNK = "trunk"
BINDING_PROFILE = "binding-profile"
MODES = (TRUNK, BINDING_PROFILE)
ROUTER_INTERFACE = "network:router_interface"
TRUNK_SUBPORT = "trunk:subport"
"""``device_owner`` Neutron's trunk service gives a port when it joins a trunk."""
PORT_OWNER = "compute:ovn-underlay"
"""``device_owner`` of the ports made here.  Neutron skips its per-port routed-network
inventory lookup for ``compute:`` ports (measured: ~10 % of a port create's CPU)."""


def mgmt_port_name(switch: str) -> str:
    """The node's management port."""
    return f"{switch}-mgmt"


def pool_port_name(switch: str, tag: int) -> str:
    """The pool port of ``switch`` with VLAN ``tag``."""
    return f"{switch}-p{tag}"


def tag_of_name(switch: str, name: str) -> int | None:
    """The VLAN tag a pool port's name carries (None for other names)."""
    match = re.fullmatch(re.escape(switch) + r"-p(\d+)", name or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Meta:
    """What a node network was made with, stored in its network's description."""

    subnet: str
    router: str
    parent: str
    mode: str
    mgmt_tag: int | None

    def encode(self) -> str:
        """The network description that records this."""
        return json.dumps({MARK: "node-network", "subnet": self.subnet, "router": self.router,
                           "parent": self.parent, "child-ports": self.mode,
                           "mgmt-tag": self.mgmt_tag}, separators=(",", ":"))

    @classmethod
    def decode(cls, description: str | None) -> Meta | None:
        """The metadata of a description; None unless ovn-underlay wrote it."""
        try:
            data = json.loads(description or "")
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get(MARK) != "node-network":
            return None
        try:
            return cls(str(data["subnet"]), str(data["router"]), str(data["parent"]),
                       str(data["child-ports"]), data.get("mgmt-tag"))
        except KeyError:
            return None


@dataclass(frozen=True)
class View:
    """A node network as Neutron holds it, read at once."""

    network: Any
    meta: Meta
    subnet: Any
    ports: tuple[Any, ...]
    trunk: Any | None

    def tags(self) -> dict[str, int]:
        """Port id -> VLAN tag of every child of the parent that Neutron knows of.

        A binding:profile hidden by policy (a tenant's view) is trusted to be
        what the port's name says.
        """
        if self.meta.mode == TRUNK:
            subports = self.trunk.sub_ports if self.trunk is not None else []
            return {str(s["port_id"]): int(s["segmentation_id"]) for s in subports}
        tags: dict[str, int] = {}
        for port in self.ports:
            profile = port.binding_profile
            if profile is None:
                tag = self.name_tag(port)
                if tag is not None:
                    tags[port.id] = tag
            elif profile.get("parent_name") == self.meta.parent and "tag" in profile:
                tags[port.id] = int(profile["tag"])
        return tags

    def name_tag(self, port: Any) -> int | None:
        """The tag the name of one of our ports stands for (mgmt: the management tag)."""
        if port.name == mgmt_port_name(self.network.name):
            return self.meta.mgmt_tag
        return tag_of_name(self.network.name, port.name)

    def used_ips(self) -> set[str]:
        """Every address taken on the subnet, and the gateway's."""
        ips = {gateway_ip(self.meta.subnet)}
        for port in self.ports:
            ips.update(str(f["ip_address"]) for f in port.fixed_ips or ())
        return ips

    def gateway(self) -> tuple[str, str]:
        """The router interface's address and MAC (planned values when it is missing)."""
        for port in self.ports:
            if str(port.device_owner or "").startswith(ROUTER_INTERFACE) and port.fixed_ips:
                return str(port.fixed_ips[0]["ip_address"]), str(port.mac_address)
        return gateway_ip(self.meta.subnet), ""

    def child_port(self, port: Any, tag: int, gateway: str | None = None) -> ChildPort:
        """A Neutron port of this network, with its first address, as a ChildPort."""
        return ChildPort(port.id, str(port.mac_address), str(port.fixed_ips[0]["ip_address"]),
                         parse_subnet(self.meta.subnet).prefixlen,
                         gateway if gateway is not None else self.gateway()[0], tag)

    def own_ports(self) -> list[Any]:
        """The management and pool ports (by name), complete or not."""
        switch = self.network.name
        return [p for p in self.ports
                if p.name == mgmt_port_name(switch) or tag_of_name(switch, p.name) is not None]

    def incomplete(self) -> list[Any]:
        """Own ports that are not children of the parent with the tag their name says."""
        tags = self.tags()
        return [p for p in self.own_ports()
                if tags.get(p.id) is None or tags[p.id] != self.name_tag(p)]

    def node_network(self) -> NodeNetwork:
        """The NodeNetwork of the complete ports."""
        switch = self.network.name
        gw_ip, gw_mac = self.gateway()
        broken = {p.id for p in self.incomplete()}
        tags = self.tags()
        mgmt = None
        pool: list[ChildPort] = []
        for port in self.own_ports():
            if port.id in broken or not port.fixed_ips:
                continue
            child = self.child_port(port, tags[port.id], gw_ip)
            if port.name == mgmt_port_name(switch):
                mgmt = child
            else:
                pool.append(child)
        return NodeNetwork(switch=switch, subnet=self.meta.subnet, gateway_ip=gw_ip,
                           gateway_mac=gw_mac, router=self.meta.router, parent=self.meta.parent,
                           mgmt=mgmt, ports=tuple(sorted(pool, key=lambda c: c.tag)))


def mark(kind: str) -> str:
    """The description that marks an object ovn-underlay created as ``kind``."""
    return json.dumps({MARK: kind})


def marked(description: str | None, kind: str) -> bool:
    """Whether a description says ovn-underlay created the object as ``kind``."""
    try:
        data = json.loads(description or "")
    except ValueError:
        return False
    return isinstance(data, dict) and data.get(MARK) == kind
