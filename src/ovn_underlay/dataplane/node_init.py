"""node-init: the seed's "Prep the host" as a plan of idempotent changes.

``plan`` inspects the node and returns only the changes still needed, each
with a sentence saying what it does; ``--dry-run`` prints them, a normal run
applies them in order.  A second run on an initialised node plans nothing.

Uplink modes:
- ``ovs`` (default): the VM's NIC is a VLAN trunk port of br-int and the NIC's
  addresses move to br-int's own interface, which takes the NIC's MAC.  OVS
  learns MACs per VLAN, so two pods of one VM reach each other through OVN.
- ``linux-bridge``: the seed's breth1 holding the NIC and a veth to br-int.  A
  VLAN-unaware bridge learns the pods' MACs on the NIC once frames come back
  from OVN and then drops traffic between pods of the same VM, so this mode
  needs bridge vlan_filtering and is refused where the kernel lacks it.
"""

from __future__ import annotations

import ctypes
import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ovn_underlay.config import ConfigError, NodeConfig, to_external_ids
from ovn_underlay.dataplane import isolation, links, nsenter
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.names import HOST_IFNAME_PREFIX

LINUX_BRIDGE = "breth1"
VETH_BRIDGE_END = "breth1-veth"
VETH_OVS_END = "br-int-veth"
AF_INET = 2
RT_PROTO_KERNEL = 2


@dataclass(frozen=True)
class Change:
    """One change node-init makes: what it does, and how."""

    what: str
    apply: Callable[[], object]


def detect_datapath() -> str:
    """``system`` where the OVS kernel module is loaded, else the userspace ``netdev``."""
    return "system" if Path("/sys/module/openvswitch").exists() else "netdev"


def vlan_filtering_supported() -> bool:
    """Whether this kernel's bridges can filter VLANs, probed in a throwaway namespace."""
    result: list[bool] = []

    def probe() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(nsenter.CLONE_NEWNET) != 0:
            result.append(False)
            return
        with IPRoute(groups=0) as ipr:
            try:
                ipr.link("add", ifname="vfprobe", kind="bridge", br_vlan_filtering=1)
                result.append(True)
            except NetlinkError as exc:
                result.append(exc.code not in (errno.EOPNOTSUPP, errno.EINVAL))

    thread = threading.Thread(target=probe, name="vlan-filtering-probe")
    thread.start()
    thread.join()
    return bool(result and result[0])


def settings_changes(ovs: Ovs, want: dict[str, str], what: str) -> list[Change]:
    """The change that records the ``want`` entries the node's external_ids lack (or none)."""
    have = ovs.get_config()
    diff = {key: value for key, value in want.items() if have.get(key) != value}
    if not diff:
        return []
    shown = " ".join(f"{k}={v}" for k, v in sorted(diff.items()))
    return [Change(f"record {what} in Open_vSwitch external_ids: {shown}",
                   lambda: ovs.set_config(diff))]


class NodeInit:
    """Plans and applies node-init for ``cfg`` on the node reached through ``ovs``."""

    def __init__(self, ovs: Ovs, cfg: NodeConfig) -> None:
        self.ovs = ovs
        self.cfg = cfg

    def plan(self) -> list[Change]:
        """The changes still needed, in order."""
        if self.cfg.uplink_mode not in ("ovs", "linux-bridge"):
            raise ConfigError(f"uplink mode {self.cfg.uplink_mode!r}: use 'ovs' or "
                              "'linux-bridge'")
        with IPRoute(groups=0) as ipr:
            uplink = _link(ipr, self.cfg.uplink)
            if uplink is None:
                raise ConfigError(f"uplink interface {self.cfg.uplink!r} not found on this "
                                  "node (it is the NIC on the VMs' OVN network; --uplink)")
            mac = str(uplink.get_attr("IFLA_ADDRESS"))
            changes = self._config_changes()
            changes += self._bridge_changes(mac)
            if self.cfg.uplink_mode == "ovs":
                changes += self._ovs_uplink_changes(ipr)
            else:
                changes += self._linux_bridge_changes(ipr)
        return changes + self._isolation_changes()

    def _isolation_changes(self) -> list[Change]:
        """On the userspace datapath: the ruleset keeping OVS's NICs from the node's stack.

        Planned last, so that the uplink is in OVS (and its addresses on the
        bridge) by the time the ruleset cuts the kernel off from it.
        """
        if not self.cfg.userspace_datapath:
            return []
        extra = (self.cfg.uplink,) if self.cfg.uplink_mode == "ovs" else (VETH_OVS_END,)
        guard = isolation.wanted(self.ovs, extra)
        if isolation.applied_digest() == guard.digest():
            return []
        devices = " and ".join(guard.devices) or "no other NIC"
        return [Change(f"put the host isolation ruleset in place (nftables tables inet and "
                       f"arp {isolation.TABLE}): the node's kernel takes in nothing from pods' "
                       f"host ends ({HOST_IFNAME_PREFIX}*) nor from {devices}",
                       lambda: isolation.ensure(isolation.wanted(self.ovs, extra)))]

    def _config_changes(self) -> list[Change]:
        return settings_changes(self.ovs, to_external_ids(self.cfg, _NODE_FIELDS), "settings")

    def _bridge_changes(self, uplink_mac: str) -> list[Change]:
        bridge, datapath = self.cfg.bridge, self.cfg.datapath
        other = {"hwaddr": uplink_mac} if self.cfg.uplink_mode == "ovs" else {}
        if self.ovs.bridge_datapath_type(bridge) == datapath and \
                self.ovs.bridge_other_config(bridge).items() >= other.items():
            return []
        extra = f", MAC {uplink_mac} of {self.cfg.uplink}" if other else ""
        return [Change(f"create OVS bridge {bridge} (datapath {datapath}{extra})",
                       lambda: self.ovs.ensure_bridge(bridge, datapath, other))]

    def _ovs_uplink_changes(self, ipr: Any) -> list[Change]:
        bridge, nic = self.cfg.bridge, self.cfg.uplink
        changes = []
        info = self.ovs.port(nic)
        if info is None or info.bridge != bridge:
            changes.append(Change(f"add {nic} to {bridge} as a VLAN trunk port",
                                  lambda: self.ovs.add_trunk_port(bridge, nic)))
        if self.cfg.userspace_datapath and links.tx_offload_enabled(nic):
            changes.append(Change(f"turn TX checksum offload off on {nic} (userspace "
                                  "datapath)", lambda: links.set_tx_offload(nic, False)))
        addrs = _ipv4_addresses(ipr, nic)
        if addrs:
            shown = ", ".join(addrs)
            changes.append(Change(f"move {shown} and {nic}'s routes to {bridge}",
                                  lambda: move_addresses(nic, bridge)))
        elif _link(ipr, bridge) is None or not _is_up(_link(ipr, bridge)):
            changes.append(Change(f"bring {bridge} up", lambda: set_up(bridge)))
        return changes

    def _linux_bridge_changes(self, ipr: Any) -> list[Change]:
        if _link(ipr, LINUX_BRIDGE) is not None:
            return []
        if not vlan_filtering_supported():
            raise ConfigError(
                "uplink mode linux-bridge needs bridge vlan_filtering, which this kernel "
                "does not support: without it the bridge drops traffic between two pods of "
                "the same VM. Use the default uplink mode 'ovs' (--uplink-mode ovs), which "
                "puts the NIC in OVS where MAC learning is per VLAN.")
        nic, bridge = self.cfg.uplink, self.cfg.bridge
        return [Change(f"create Linux bridge {LINUX_BRIDGE} (vlan_filtering) with {nic}, "
                       f"move {nic}'s addresses to it, and link it to {bridge} through "
                       f"{VETH_BRIDGE_END}/{VETH_OVS_END}",
                       lambda: self._make_linux_bridge(nic, bridge))]

    def _make_linux_bridge(self, nic: str, bridge: str) -> None:
        with IPRoute(groups=0) as ipr:
            ipr.link("add", ifname=LINUX_BRIDGE, kind="bridge", br_vlan_filtering=1)
            ipr.link("add", ifname=VETH_OVS_END, kind="veth", peer=VETH_BRIDGE_END)
            master = ipr.link_lookup(ifname=LINUX_BRIDGE)[0]
            for port in (nic, VETH_BRIDGE_END):
                idx = ipr.link_lookup(ifname=port)[0]
                ipr.link("set", index=idx, master=master)
                ipr.vlan_filter("add", index=idx,
                                vlan_info={"vid": 1, "flags": 0x8})  # range begin
                ipr.vlan_filter("add", index=idx,
                                vlan_info={"vid": 4094, "flags": 0x10})  # range end
            for name in (LINUX_BRIDGE, VETH_OVS_END, VETH_BRIDGE_END):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        self.ovs.add_trunk_port(bridge, VETH_OVS_END)
        move_addresses(nic, LINUX_BRIDGE)

    def apply(self, changes: list[Change], report: Callable[[str], None]) -> None:
        """Apply ``changes`` in order, reporting each before it is made."""
        for change in changes:
            report(change.what)
            change.apply()


_NODE_FIELDS = ("backend", "nb", "neutron_config", "parent", "bridge", "datapath", "uplink",
                "uplink_mode", "state_dir", "mtu", "cluster_subnet", "mgmt_tag", "node_name")


def _link(ipr: Any, name: str) -> Any | None:
    found = ipr.link_lookup(ifname=name)
    return ipr.link("get", index=found[0])[0] if found else None


def _is_up(msg: Any) -> bool:
    return bool(msg["flags"] & 1)


def _ipv4_addresses(ipr: Any, name: str) -> list[str]:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return []
    return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(family=AF_INET, index=found[0])]


def wait_for_link(name: str, timeout: float = 10.0) -> int:
    """The index of ``name`` once it exists (ovs-vswitchd creates internal ports late)."""
    deadline = time.monotonic() + timeout
    with IPRoute(groups=0) as ipr:
        while True:
            found = ipr.link_lookup(ifname=name)
            if found:
                return int(found[0])
            if time.monotonic() > deadline:
                raise ConfigError(f"interface {name} did not appear within {timeout:.0f}s "
                                  "(is ovs-vswitchd running?)")
            time.sleep(0.05)


def set_up(name: str) -> None:
    """Bring ``name`` up once it exists."""
    index = wait_for_link(name)
    with IPRoute(groups=0) as ipr:
        ipr.link("set", index=index, state="up")


def move_addresses(src: str, dst: str) -> None:
    """Move every IPv4 address of ``src``, and the routes through it, to ``dst``."""
    dst_index = wait_for_link(dst)
    with IPRoute(groups=0) as ipr:
        src_index = ipr.link_lookup(ifname=src)[0]
        ipr.link("set", index=dst_index, state="up")
        routes = [r for r in ipr.get_routes(family=AF_INET, oif=src_index)
                  if r["proto"] != RT_PROTO_KERNEL and r.get_attr("RTA_TABLE") == 254]
        for addr in ipr.get_addr(family=AF_INET, index=src_index):
            ip, plen = addr.get_attr("IFA_ADDRESS"), addr["prefixlen"]
            ipr.addr("del", index=src_index, address=ip, prefixlen=plen)
            ipr.addr("add", index=dst_index, address=ip, prefixlen=plen)
        for route in routes:
            dst_net = route.get_attr("RTA_DST")
            target = f"{dst_net}/{route['dst_len']}" if dst_net else "0.0.0.0/0"
            ipr.route("replace", dst=target, gateway=route.get_attr("RTA_GATEWAY"),
                      oif=dst_index)
