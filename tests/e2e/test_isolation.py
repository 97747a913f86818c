"""A pod reaches its node only through OVN: hand-made frames never reach the VM's own stack.

On the userspace datapath ovs-vswitchd reads its ports with packet sockets, and
the VM's kernel takes in the same frames for itself: a pod that sends to the
MAC of its veth's host end (or to broadcast) would reach the VM's addresses,
or be routed on by the VM, around port security, ACLs and security groups.
These tests send such frames from a pod, with its own and with spoofed source
addresses, IPv4 and IPv6, with forwarding off and on, and watch the VMs' stacks
with raw sockets that report the interface each packet came in on.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ovn_underlay.dataplane import isolation
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import Node, pod_ip
from ovn_underlay.lab.daemons import run
from ovn_underlay.lab.netns import path as netns_path
from tests.conftest import PodFactory
from tests.e2e import rawframes as rf

SPOOFED_MAC = "0a:58:c6:13:01:63"
SPOOFED_IP = "198.19.1.99"
FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
PROTOCOLS = (socket.IPPROTO_UDP, socket.IPPROTO_TCP, socket.IPPROTO_ICMP)
RA_PREFIX = "fdc6:1301:99::/64"
RA_PREFIX_TEXT = "fdc6:1301:99:"


def links(vm_netns: str) -> dict[int, dict[str, Any]]:
    return {link["ifindex"]: link
            for link in json.loads(run(["ip", "-n", vm_netns, "-j", "addr"]))}


def addresses(vm_netns: str) -> list[str]:
    """Every address of the VM, IPv4 and IPv6, loopback included."""
    return [a["local"] for link in links(vm_netns).values() for a in link["addr_info"]]


def sysctl(vm_netns: str, name: str, value: str | None = None) -> str:
    argv = ["ip", "netns", "exec", vm_netns, "sysctl", "-n", name]
    if value is not None:
        argv = ["ip", "netns", "exec", vm_netns, "sysctl", "-q", "-w", f"{name}={value}"]
    return run(argv).strip()


@pytest.fixture(params=[False, True], ids=["forwarding-off", "forwarding-on"])
def forwarding(request: pytest.FixtureRequest, nodes: tuple[Node, Node]) -> Iterator[bool]:
    """Both VMs with IP forwarding as asked (a Kubernetes node usually has it on)."""
    before = {(vm.netns, name): sysctl(vm.netns, name) for vm in (n.vm for n in nodes)
              for name in FORWARDING}
    for vm_netns, name in before:
        sysctl(vm_netns, name, "1" if request.param else "0")
    yield bool(request.param)
    for (vm_netns, name), value in before.items():
        sysctl(vm_netns, name, value)


def probes(pod_mac: str, pod_ipv4: str, host_mac: str, targets: list[str],
           marker: bytes) -> list[bytes]:
    """Frames to the host end's MAC and to broadcast (IPv6: multicast), from the pod's own
    and from spoofed addresses, to every target: UDP, a TCP SYN, an ICMP echo; RAs and NSs."""
    frames = []
    for src_mac, src4 in ((pod_mac, pod_ipv4), (SPOOFED_MAC, SPOOFED_IP)):
        src6 = rf.link_local(src_mac)
        for dst in targets:
            v6 = ":" in dst
            for dst_mac in (host_mac, rf.multicast_mac("ff02::1") if v6 else rf.BROADCAST):
                frames += [rf.ip_frame(dst_mac, src_mac, src6 if v6 else src4, dst, proto,
                                       marker) for proto in PROTOCOLS]
            if v6:
                frames.append(rf.neighbor_solicitation(src_mac, src6, dst))
        frames.append(rf.router_advertisement(src_mac, src6, RA_PREFIX))
        frames += [rf.ip_frame(rf.multicast_mac("ff02::1"), src_mac, src6, "ff02::1", proto,
                               marker) for proto in PROTOCOLS]
    return frames


def test_a_pods_frames_reach_the_vms_stack_only_through_ovn(
        nodes: tuple[Node, Node], pods: PodFactory, forwarding: bool) -> None:
    node, other = nodes
    path, _, result = pods.add(node)
    host_if, pod_mac = result["interfaces"][0]["name"], result["interfaces"][1]["mac"]
    vm_links = links(node.vm.netns)
    host_mac = next(link["address"] for link in vm_links.values() if link["ifname"] == host_if)
    bypass = {index for index, link in vm_links.items()
              if link["ifname"] == "eth1"
              or (link["ifname"].startswith("oul") and link["ifname"] != "oul-mgmt")}
    targets = [*addresses(node.vm.netns), other.vm.ip]
    spoofed = {SPOOFED_IP, rf.link_local(SPOOFED_MAC)}
    marker = rf.new_marker()
    with rf.listening(netns_path(node.vm.netns), marker) as here, \
            rf.listening(netns_path(other.vm.netns), marker) as there:
        rf.send_frames(path, "eth0", probes(pod_mac, pod_ip(result), host_mac, targets,
                                            marker))
        time.sleep(0.5)
        seen_here, seen_there = here.drain(), there.drain()
    sneaked = [s for s in seen_here if s.ifindex in bypass and (
        s.marked or s.source in spoofed or s.source == rf.link_local(pod_mac))]
    assert sneaked == [], f"the VM's stack took in a pod's frames around OVN: {sneaked}"
    assert [s for s in seen_here + seen_there if s.source in spoofed] == [], \
        "spoofed packets reached a VM"
    assert [s for s in seen_there if s.marked] == [], "the VM routed a pod's packets on"
    routes = run(["ip", "-n", node.vm.netns, "-6", "route", "show"])
    assert "default" not in routes and RA_PREFIX_TEXT not in routes, \
        f"the VM took a pod's router advertisement: {routes}"
    assert RA_PREFIX_TEXT not in run(["ip", "-n", node.vm.netns, "-6", "addr"])
    neighbours = run(["ip", "-n", node.vm.netns, "neigh", "show", "dev", host_if])
    assert neighbours.strip() == "", neighbours
    gateway = result["ips"][0]["gateway"]
    assert probe.ping(path.rsplit("/", 1)[1], gateway, attempts=2)
    mgmt = node.config()["mgmt_ip"]
    assert probe.ping(path.rsplit("/", 1)[1], mgmt, attempts=2), \
        "the pod must still reach its node through OVN (the management port)"


def nft_tables(vm_netns: str) -> str:
    return run(["ip", "netns", "exec", vm_netns, "nft", "list", "tables"])


def drop_ruleset(vm_netns: str) -> None:
    """What a reboot (or ``nft flush ruleset``) does to the isolation ruleset."""
    for family in ("inet", "arp"):
        run(["ip", "netns", "exec", vm_netns, "nft", "delete", "table", family,
             isolation.TABLE])


def test_node_init_put_the_ruleset_in_place_for_pods_and_the_uplink(
        nodes: tuple[Node, Node]) -> None:
    for node in nodes:
        assert {"table inet ovn_underlay", "table arp ovn_underlay"} <= set(
            nft_tables(node.vm.netns).splitlines())
        rules = run(["ip", "netns", "exec", node.vm.netns, "nft", "list", "table", "inet",
                     isolation.TABLE])
        assert 'iifname "oul*" iifname != "oul-mgmt"' in rules and 'iifname "eth1"' in rules
        assert 'oifname "oul*" oifname != "oul-mgmt"' in rules
        assert "node already initialised" in node.init("--dry-run").stdout


def test_an_add_puts_a_missing_ruleset_back_before_it_plugs_the_pod(
        nodes: tuple[Node, Node], pods: PodFactory) -> None:
    node = nodes[0]
    drop_ruleset(node.vm.netns)
    assert "ovn_underlay" not in nft_tables(node.vm.netns)
    path, _, result = pods.add(node)
    assert {"table inet ovn_underlay", "table arp ovn_underlay"} <= set(
        nft_tables(node.vm.netns).splitlines())
    assert "node already initialised" in node.init("--dry-run").stdout, \
        "the ADD wrote the same ruleset node-init would"
    assert probe.ping(path.rsplit("/", 1)[1], result["ips"][0]["gateway"], attempts=2)


def test_the_vms_own_traffic_enters_its_stack_through_br_int_not_the_uplink(
        nodes: tuple[Node, Node]) -> None:
    node, other = nodes
    vm_links = links(node.vm.netns)
    with rf.listening(netns_path(node.vm.netns), b"-") as here:
        assert probe.ping(other.vm.netns, node.vm.ip, attempts=2)
        seen = [s for s in here.drain() if s.source == other.vm.ip and s.icmp_type == 8]
    assert seen, "the ping's echo requests reached the VM"
    assert {vm_links[s.ifindex]["ifname"] for s in seen} == {"br-int"}
