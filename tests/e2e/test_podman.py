"""podman as the runtime: its CNI calls reach the plugin, its engine API the kubelet verbs.

A fresh lab with 2 VMs: vm1 a node with a pool of 8 ports, vm2 one with a
pool of 2 (so that it runs out).  Each VM has its own podman
(:mod:`ovn_underlay.lab.podman`) whose CNI network is the one node-init wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.lab.cluster import Node, pod_ip
from ovn_underlay.lab.daemons import netns_argv
from ovn_underlay.lab.podman import BUSYBOX, Podman
from ovn_underlay.lab.topology import Lab, vsctl
from tests.conftest import PodFactory, skip_unless_lab_possible

PODMAN_TOOLS = ("podman", "runc", "conmon", "nsenter")
TCP_PORT = 7777


@pytest.fixture(scope="module")
def cluster(lab_rundir: Path) -> Iterator[tuple[Podman, Podman]]:
    """A fresh lab, both VMs nodes, a podman on each; all removed afterwards."""
    skip_unless_lab_possible()
    missing = [t for t in PODMAN_TOOLS if shutil.which(t) is None]
    if missing or not BUSYBOX.exists():
        pytest.skip(f"podman programs missing: {', '.join(missing) or BUSYBOX} "
                    f"(make deps installs them)")
    the_lab = Lab(f"pm{os.getpid() % 10000}", lab_rundir)
    state = the_lab.up(2)
    engines: list[Podman] = []
    try:
        for vm, size in zip(state.vms, (8, 2), strict=True):
            node = Node(state, vm)
            node.init()
            node.setup_switch(pool_size=size)
            engine = Podman(node)
            engine.prepare()
            engines.append(engine)
        yield engines[0], engines[1]
    finally:
        try:
            for engine in engines:
                engine.close()
        finally:
            the_lab.down()


@pytest.fixture
def vm1(cluster: tuple[Podman, Podman]) -> Iterator[Podman]:
    """vm1's podman; every container of the test removed afterwards."""
    yield cluster[0]
    cluster[0].remove_all()


@pytest.fixture
def vm2(cluster: tuple[Podman, Podman]) -> Iterator[Podman]:
    """vm2's podman; every container of the test removed afterwards."""
    yield cluster[1]
    cluster[1].remove_all()


def pool(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(node.cli("pool", "show", "--json").stdout)
    return data


def port_of(node: Node, container_id: str) -> dict[str, Any]:
    """The pool port attached to ``container_id``."""
    held: list[dict[str, Any]] = [
        p for p in pool(node)["ports"]
        if p["allocation"] and p["allocation"]["attachment"]["container_id"] == container_id]
    assert len(held) == 1, f"{container_id[:12]} holds {len(held)} ports"
    return held[0]


def node_state(node: Node) -> dict[str, Any]:
    """What attaching a container changes on a node: br-int's ports and the pool."""
    return {"ports": sorted(vsctl(node.vm.ovsdb, "list-ports", "br-int").split()),
            "pool": pool(node)}


def cni_log(node: Node) -> list[str]:
    return (Path(node.vm.rundir) / "cni.log").read_text().splitlines()


def cni_calls(node: Node, container_id: str) -> list[str]:
    """The CNI commands the plugin logged for ``container_id``, in order."""
    return [line.split("CNI ", 1)[1].split()[0] for line in cni_log(node)
            if f" container={container_id} " in line]


def eth0(engine: Podman, container: str) -> tuple[str, str]:
    """The MAC and the IPv4 address/prefix of the container's eth0, read inside it."""
    link = engine.exec(container, "cat", "/sys/class/net/eth0/address").stdout.strip()
    addr = engine.exec(container, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    return link, addr.split()[3]


def pings(engine: Podman, container: str, ip: str, attempts: int = 5) -> bool:
    return any(engine.exec(container, "ping", "-c", "1", "-W", "1", ip,
                           check=False).returncode == 0 for _ in range(attempts))


def tcp_exchange(engine: Podman, container: str, ip: str, client_netns: str) -> bool:
    """A TCP echo: busybox nc serves in the container, the lab's echo client connects."""
    engine.exec(container, "nc", "-l", "-p", str(TCP_PORT), "-e", "tr", "a-z", "A-Z",
                detach=True)
    client = netns_argv(client_netns, [sys.executable, "-m", "ovn_underlay.lab.echo",
                                       "connect", ip, str(TCP_PORT), "3"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(client, capture_output=True, timeout=15, check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def test_podman_run_gets_a_pool_port_that_reaches_the_cluster(
        vm1: Podman, cluster: tuple[Podman, Podman], pods: PodFactory) -> None:
    node = vm1.node
    container = vm1.start("web")
    port = port_of(node, container.id)
    assert port["allocation"]["state"] == "attached"
    assert eth0(vm1, container.id) == (port["mac"], f"{port['ip']}/{port['prefixlen']}")
    networks = json.loads(vm1.inspect(container.id, "{{json .NetworkSettings.Networks}}"))
    assert networks[vm1.network]["IPAddress"] == port["ip"]
    assert networks[vm1.network]["MacAddress"] == port["mac"]
    assert pings(vm1, container.id, port["gateway"])
    path, _, remote = pods.add(cluster[1].node)
    assert pings(vm1, container.id, pod_ip(remote))
    assert tcp_exchange(vm1, container.id, port["ip"], path.rsplit("/", 1)[1])


def test_podman_stop_start_and_rm_give_the_port_back_and_leave_no_ovs_port(
        vm1: Podman) -> None:
    node = vm1.node
    before = node_state(node)
    container = vm1.start("gone")
    first = port_of(node, container.id)
    vm1.podman("stop", "-t", "0", container.id)
    assert node_state(node) == before
    vm1.podman("start", container.id)
    assert port_of(node, container.id)["ip"] == first["ip"]
    sandbox = vm1.inspect(container.id, "{{.NetworkSettings.SandboxKey}}")
    attached = node_state(node)
    host_ifs = set(attached["ports"]) - set(before["ports"])
    assert len(host_ifs) == 1
    assert Path(sandbox).exists()
    vm1.remove(container.id)
    assert node_state(node) == before
    assert not Path(sandbox).exists()
    assert not host_ifs & set(vsctl(node.vm.ovsdb, "list-ports", "br-int").split())


def test_a_failed_add_shows_the_plugin_error_and_its_del_cleans_up(vm2: Podman) -> None:
    node = vm2.node
    free = pool(node)["stats"]["free"]
    assert free > 0
    for index in range(free):
        vm2.start(f"fill{index}")
    full = node_state(node)
    failed = vm2.run("one-too-many", check=False)
    assert failed.returncode != 0
    assert 'plugin type="ovn-underlay" failed (add)' in failed.stderr, failed.stderr
    assert "exhausted" in failed.stderr, failed.stderr
    assert node_state(node) == full
    assert cni_calls(node, vm2.container_id("one-too-many")) == ["ADD", "DEL"]
    vm2.remove_all()
    assert pool(node)["stats"]["free"] == free
    assert vm2.start("after").id
    assert port_of(node, vm2.container_id("after"))


def test_a_result_podman_rejects_is_undone_by_the_del_it_sends(vm2: Podman) -> None:
    """podman 4.3 cannot read 1.1.0 results: the ADD attaches, podman fails, its DEL frees."""
    node = vm2.node
    before = node_state(node)
    node.init("--cni-version", "1.1.0")
    try:
        failed = vm2.run("too-new", check=False)
    finally:
        node.init()
    if failed.returncode == 0:
        pytest.skip("this podman reads CNI 1.1.0 results")
    assert 'unsupported CNI result version "1.1.0"' in failed.stderr, failed.stderr
    cid = vm2.container_id("too-new")
    assert cni_calls(node, cid) == ["ADD", "DEL"]
    assert any(f"ADD {cid[:12]}/eth0" in line and " port " in line for line in cni_log(node))
    assert node_state(node) == before


def test_kubelet_verbs_find_the_container_through_podmans_engine_api(vm1: Podman) -> None:
    node = vm1.node
    sock = str(vm1.start_service())
    before = node_state(node)
    container = vm1.start("kube", network="none")
    assert vm1.exec(container.id, "ip", "link", "show", "eth0", check=False).returncode != 0
    node.cli("setup", "default", "web", container.id, "--engine-socket", sock)
    status = json.loads(node.cli("status", "default", "web", container.id).stdout)
    port = port_of(node, container.id)
    assert status == {"ip": port["ip"]}
    assert eth0(vm1, container.id) == (port["mac"], f"{port['ip']}/{port['prefixlen']}")
    assert pings(vm1, container.id, port["gateway"])
    node.cli("teardown", "default", "web", container.id)
    assert node.cli("status", "default", "web", container.id, check=False).returncode == 1
    assert node_state(node) == before
    assert vm1.exec(container.id, "ip", "link", "show", "eth0", check=False).returncode != 0
    unknown = node.cli("setup", "default", "web", "no-such-container", "--engine-socket", sock,
                       check=False)
    assert unknown.returncode == 1 and "no-such-container not found" in unknown.stderr
    assert node_state(node) == before
