"""Node subnets: the Node's ``spec.podCIDR`` when it has one, else one allocated here.

When kube-controller-manager allocates node CIDRs (``--allocate-node-cidrs``), every Node
has ``spec.podCIDR`` and that is the node's subnet.  Otherwise the controller allocates
one from the cluster subnet (``--cluster-subnet``), in blocks of ``/node_prefix``
(``--node-subnet-size``, default 24), the lowest free block first, and records it on the
Node as the annotation :data:`ANNOTATION`.

The allocation survives restarts because it is read back, never recomputed: at the start
of each leadership term :meth:`SubnetAllocator.load` takes every subnet already in use
(the Nodes' podCIDRs and annotations, the UnderlayNodes' ``status.subnet`` (Nodes deleted
but kept while their VM port exists) and the node switches in the control plane), and a
node that has one keeps it.  A subnet is never handed to two nodes: a block overlapping
any subnet in use, whoever's, is not free.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping

LOG = logging.getLogger(__name__)
ANNOTATION = "ovn-underlay.io/node-subnet"
"""On a Node: the subnet the controller allocated to it."""
DEFAULT_NODE_PREFIX = 24


class SubnetError(Exception):
    """No subnet for a node: none configured, malformed, or the cluster subnet is full."""


def _network(value: str, what: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise SubnetError(f"{what} {value!r} is not a subnet: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise SubnetError(f"{what} {value!r}: only IPv4 is supported")
    return net


class SubnetAllocator:
    """Which node has which subnet, and the next free block for a node that has none."""

    def __init__(self, cluster_subnet: str, node_prefix: int = DEFAULT_NODE_PREFIX) -> None:
        """``cluster_subnet`` "": no allocation (every Node needs a podCIDR)."""
        self.cluster = _network(cluster_subnet, "cluster subnet") if cluster_subnet else None
        if self.cluster is not None and not self.cluster.prefixlen <= node_prefix <= 30:
            raise SubnetError(f"node subnet size /{node_prefix} does not fit the cluster "
                              f"subnet {cluster_subnet} (it must be /{self.cluster.prefixlen}"
                              " to /30)")
        self.node_prefix = node_prefix
        self._by_node: dict[str, ipaddress.IPv4Network] = {}
        self._taken: list[ipaddress.IPv4Network] = []

    def load(self, subnets: Mapping[str, str], taken: Iterable[str] = ()) -> None:
        """Forget everything, then take ``subnets`` (node -> subnet) and ``taken`` (subnets of
        no known node, e.g. a control-plane switch of a node that is gone)."""
        self._by_node = {}
        for node, subnet in subnets.items():
            try:
                self._by_node[node] = _network(subnet, f"subnet of node {node}")
            except SubnetError as exc:
                LOG.warning("%s: ignored", exc)
        self._taken = []
        for subnet in taken:
            try:
                self._taken.append(_network(subnet, "subnet in use"))
            except SubnetError as exc:
                LOG.warning("%s: ignored", exc)

    def subnet_of(self, node: str) -> str | None:
        """The subnet ``node`` has (None: none yet)."""
        net = self._by_node.get(node)
        return str(net) if net is not None else None

    def assign(self, node: str, pod_cidr: str = "") -> str:
        """The node's subnet: its podCIDR if given, else the one it has, else a new block.

        Raises SubnetError when there is none to give (no cluster subnet, or it is full),
        or when the podCIDR overlaps another node's subnet.
        """
        if pod_cidr:
            net = _network(pod_cidr, f"podCIDR of node {node}")
            other = self._overlapping(net, node)
            if other:
                raise SubnetError(f"the podCIDR {net} of node {node} overlaps {other}")
            self._by_node[node] = net
            return str(net)
        known = self._by_node.get(node)
        if known is not None:
            return str(known)
        if self.cluster is None:
            raise SubnetError(f"node {node} has no spec.podCIDR and no --cluster-subnet is "
                              "set to allocate one from")
        for block in self.cluster.subnets(new_prefix=self.node_prefix):
            if not self._overlapping(block, node):
                self._by_node[node] = block
                LOG.info("node %s: allocated subnet %s from %s", node, block, self.cluster)
                return str(block)
        raise SubnetError(f"the cluster subnet {self.cluster} has no free /{self.node_prefix} "
                          f"left for node {node} ({len(self._by_node)} nodes hold one)")

    def release(self, node: str) -> None:
        """Forget the node's subnet (its network was destroyed)."""
        self._by_node.pop(node, None)

    def _overlapping(self, net: ipaddress.IPv4Network, node: str) -> str:
        """Who holds a subnet overlapping ``net`` ("" if nobody but ``node``)."""
        for other, held in self._by_node.items():
            if other != node and held.overlaps(net):
                return f"{held} of node {other}"
        for held in self._taken:
            if held.overlaps(net) and self._by_node.get(node) != held:
                return f"{held} (in use in the control plane)"
        return ""
