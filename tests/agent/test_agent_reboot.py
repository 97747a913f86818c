"""A node reboot simulated on a lab VM, in cluster mode: the agent and the VM's OVS go down
and come up again while the pods live on.

A real reboot loses the pods' network namespaces (kubelet makes the sandboxes again, with
ADDs) and the VM's kernel state; a lab VM is a namespace of this machine, so here the agent,
ovs-vswitchd and its ovsdb-server are stopped and started again, on the same database file
and run directory, and in one case the VM's own kernel state is dropped as a reboot drops it
(OVS's tap devices with the addresses moved onto br-int, the nftables rules; the VM's address
put back on its NIC as its boot configuration would).  The pods' namespaces and veths are
kept: the harder case for idempotence, since the agent coming back finds the pods it served
and must neither make anything twice nor lose anything.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.lab import daemons, netns
from ovn_underlay.lab.cluster import CniRuntime, pod_ip
from ovn_underlay.lab.topology import VM_NETWORK, LabState, VmInfo, vsctl
from tests.agent.test_agent_lab import Agent, InHypervisor
from tests.conftest import cluster_mode_lab

REACH_WITHIN = 30.0


@pytest.fixture(scope="module")
def reboot_lab(lab_rundir: Path) -> Iterator[LabState]:
    """A lab of one VM with the test API server, the UnderlayNode CRD and the controller's
    namespace."""
    yield from cluster_mode_lab(lab_rundir, "rb", 1)


def stop_ovs(vm: VmInfo) -> None:
    """Stop the VM's ovs-vswitchd, then its ovsdb-server (SIGTERM, as shutdown does)."""
    for name in ("vswitchd", "conf"):
        pid = daemons.read_live_pid(Path(vm.daemons[name]))
        assert pid is not None, f"{vm.name}'s {name} is not running"
        daemons.stop_pid(pid)
        assert not daemons.alive(pid)


def start_ovs(vm: VmInfo) -> None:
    """Start the VM's ovsdb-server on its database file, then ovs-vswitchd, as the lab
    started them (same run directory, pid files and sockets)."""
    rundir = Path(vm.rundir)
    conf, _ = daemons.start_ovsdb_server("conf", rundir, daemons.OVS_SCHEMA, vm.netns)
    vswitchd = daemons.start_vswitchd("vswitchd", rundir, vm.ovsdb, vm.netns)
    assert (str(conf.pidfile), str(vswitchd.pidfile)) == (vm.daemons["conf"],
                                                          vm.daemons["vswitchd"])


def bridge_ports(vm: VmInfo) -> dict[str, str]:
    """Every port on the VM's br-int with its tag (``[]`` for none)."""
    names = vsctl(vm.ovsdb, "list-ports", "br-int").split()
    return {name: vsctl(vm.ovsdb, "get", "Port", name, "tag").strip() for name in names}


def wait_opened(vm: VmInfo, ports: list[str], timeout: float = REACH_WITHIN) -> None:
    """Wait until ovs-vswitchd has opened each of ``ports`` (an ofport, no error)."""
    deadline = time.monotonic() + timeout
    while True:
        state = {p: (vsctl(vm.ovsdb, "get", "Interface", p, "ofport").strip(),
                     vsctl(vm.ovsdb, "get", "Interface", p, "error").strip()) for p in ports}
        if all(ofport.isdigit() and int(ofport) > 0 and error == "[]"
               for ofport, error in state.values()):
            return
        assert time.monotonic() < deadline, f"ports not opened by ovs-vswitchd: {state}"
        time.sleep(0.2)


def reaches(netns_path: str, address: str, timeout: float = REACH_WITHIN) -> bool:
    """Whether ``netns_path`` (a pod's or a VM's namespace) gets an echo reply from
    ``address`` within ``timeout``."""
    ns = netns_path.rsplit("/", 1)[-1]
    deadline = time.monotonic() + timeout
    while True:
        ping = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1",
                               address], capture_output=True, timeout=10, check=False)
        if ping.returncode == 0:
            return True
        if time.monotonic() > deadline:
            return False


def lose_host_state(vm: VmInfo) -> None:
    """What a reboot of the VM drops while OVS is down, the pods aside: OVS's tap devices
    (br-int, with the addresses the agent moved onto it, and the management port) and the
    nftables rules; then the VM's address on its NIC again, as its boot configuration puts it."""
    for dev in ("br-int", "ovs-netdev", "oul-mgmt"):
        daemons.run(["ip", "link", "del", dev], netns=vm.netns)
    daemons.run(["nft", "flush", "ruleset"], netns=vm.netns)
    daemons.run(["ip", "addr", "add", f"{vm.ip}/{VM_NETWORK.prefixlen}", "dev", "eth1"],
                netns=vm.netns)


def kernel_state(vm: VmInfo, ifindex: bool) -> dict[str, str]:
    """The VM's IPv4 addresses (with the ifindex of their device when ``ifindex``: a device
    made again has a new one), routes and nftables ruleset (the isolation rules among them)."""
    state = {" ".join(argv): daemons.run(argv, netns=vm.netns)
             for argv in (["ip", "-4", "-o", "addr"], ["ip", "route"],
                          ["nft", "-s", "list", "ruleset"])}
    if not ifindex:
        state["ip -4 -o addr"] = "\n".join(line.split(":", 1)[1] for line
                                           in state["ip -4 -o addr"].splitlines())
    return state


def held_by(pool: dict[str, Any]) -> dict[str, Any]:
    """Each pool port with its holder (None when free)."""
    return {p["lport"]: p["allocation"] for p in pool["ports"]}


@pytest.mark.parametrize(("stop", "lose"), [("SIGTERM", False), ("SIGKILL", True)],
                         ids=["shutdown-host-state-kept", "power-cut-host-state-lost"])
def test_after_a_simulated_reboot_the_node_serves_its_pods_and_new_ones(
        reboot_lab: LabState, tmp_path: Path, stop: str, lose: bool) -> None:
    """Two pods added through the host's CNI binary reach their gateway and each other; the
    agent is stopped (``stop``: SIGTERM as at shutdown, or SIGKILL as at a power cut) and the
    VM's OVS too (the binary answers 11, try again, meanwhile), the VM's own kernel state
    dropped when ``lose``; OVS and the agent started again: the node is ready again with the
    same pool (ports and holders), the same br-int ports with their tags, all opened again by
    ovs-vswitchd, the same addresses, routes and nftables rules in the VM (on the same devices
    unless ``lose``: nothing made twice), and
    the pods reach their gateway and each other, the VM its pod; a new pod is added and an
    old one deleted, which frees its port."""
    controller = InHypervisor(reboot_lab)
    controller.start()
    agent = Agent(reboot_lab, tmp_path)
    vm = agent.node.vm
    pods: dict[str, str] = {}
    runtime: CniRuntime | None = None
    try:
        agent.start()
        agent.ready()
        runtime = CniRuntime(agent.node)
        results = {}
        for pod in ("a", "b"):
            pods[pod] = agent.node.pod_netns(pod)
            results[pod] = runtime.add(f"ctr-{pod}", pods[pod], ("default", pod))
        gateway = str(results["a"]["ips"][0]["gateway"])
        for pod, other in (("a", "b"), ("b", "a")):
            assert reaches(pods[pod], gateway), f"pod {pod} to its gateway {gateway}"
            assert reaches(pods[pod], pod_ip(results[other])), f"pod {pod} to pod {other}"
        assert reaches(vm.netns, pod_ip(results["a"])), "the VM to its pod"
        pool = agent.node.pool()
        ports = bridge_ports(vm)
        kernel = kernel_state(vm, ifindex=not lose)
        assert len([a for a in held_by(pool).values() if a]) == 2, pool

        if stop == "SIGTERM":  # what a shutdown sends first
            assert agent.stop() == 0
            assert agent.condition()["reason"] == "AgentStopped"
        else:  # a power cut: nobody reports the node unavailable meanwhile
            agent.kill()
            assert agent.condition()["status"] == "False"
        stopped = agent.condition()["lastHeartbeatTime"]
        stop_ovs(vm)
        if lose:
            lose_host_state(vm)
        down = runtime.call("ADD", "ctr-down", agent.node.pod_netns("down"),
                            pod=("default", "down"))
        netns.destroy(f"{reboot_lab.name}-{vm.name}-down")
        assert (down.output or {}).get("code") == 11, down
        time.sleep(1.0)  # the condition's times are in whole seconds: the next one differs
        start_ovs(vm)
        started = time.monotonic()
        agent.start()
        agent.wait_condition(lambda c: c.get("status") == "False"
                             and c.get("lastHeartbeatTime") != stopped)
        print(f"{stop}: agent start to NetworkUnavailable=False: "
              f"{time.monotonic() - started:.2f} s")

        assert held_by(agent.node.pool()) == held_by(pool)
        assert bridge_ports(vm) == ports
        wait_opened(vm, sorted(ports))
        assert kernel_state(vm, ifindex=not lose) == kernel
        for pod, other in (("a", "b"), ("b", "a")):
            assert reaches(pods[pod], gateway), f"pod {pod} to its gateway after the reboot"
            assert reaches(pods[pod], pod_ip(results[other])), f"pod {pod} to pod {other}"
        assert reaches(vm.netns, pod_ip(results["a"])), "the VM to its pod after the reboot"

        pods["c"] = agent.node.pod_netns("c")
        added = runtime.add("ctr-c", pods["c"], ("default", "c"))
        assert reaches(pods["c"], gateway) and reaches(pods["c"], pod_ip(results["a"]))
        assert pod_ip(added) not in {pod_ip(r) for r in results.values()}
        b_port = next(lport for lport, held in held_by(pool).items()
                      if held and held["attachment"]["container_id"] == "ctr-b")
        assert runtime.delete("ctr-b", pods["b"]).code == 0
        assert held_by(agent.node.pool())[b_port] is None
        after = bridge_ports(vm)
        assert len(set(ports) - set(after)) == len(set(after) - set(ports)) == 1  # b out, c in
    finally:
        if runtime is not None:
            for pod, path in pods.items():
                runtime.delete(f"ctr-{pod}", path)
                netns.destroy(path.rsplit("/", 1)[1])
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()
        controller.stop()
