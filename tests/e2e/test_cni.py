"""The CNI plugin end to end on the lab, called exactly as a runtime calls it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ovn_underlay.lab import netns, probe
from ovn_underlay.lab.cluster import CniRuntime, Node, pod_ip
from ovn_underlay.lab.daemons import netns_argv
from ovn_underlay.lab.topology import nbctl, vsctl
from tests.conftest import PodFactory
from tests.e2e import teardown_cases


def snapshot(node: Node) -> dict[str, Any]:
    """What a CNI call may change: OVS ports, pool state, NB owners, pod-side links."""
    pool = json.loads(node.cli("pool", "show", "--json").stdout)
    owners = nbctl(node.state.nb, "--columns=name,external_ids", "--format=json", "list",
                   "Logical_Switch_Port")
    return {"ports": sorted(vsctl(node.vm.ovsdb, "list-ports", "br-int").split()),
            "pool": pool, "nb": sorted(json.loads(owners)["data"])}


def gateway_reachable(netns_path: str, gateway: str) -> bool:
    return probe.ping(netns_path.rsplit("/", 1)[1], gateway, attempts=2)


def test_add_gives_a_working_pod_and_del_removes_it(nodes: tuple[Node, Node],
                                                    pods: PodFactory) -> None:
    node = nodes[0]
    before = snapshot(node)
    path, cid, result = pods.add(node)
    ip, gw = pod_ip(result), result["ips"][0]["gateway"]
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"][1] == {"name": "eth0", "mac": result["interfaces"][1]["mac"],
                                       "sandbox": path}
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": gw}]
    assert gateway_reachable(path, gw)
    after = snapshot(node)
    host_if = result["interfaces"][0]["name"]
    assert set(after["ports"]) - set(before["ports"]) == {host_if}
    port = vsctl(node.vm.ovsdb, "--columns=tag", "--bare", "find", "Port", f"name={host_if}")
    lport = next(p for p in after["pool"]["ports"] if p["ip"] == ip)
    assert int(port) == lport["tag"]
    assert lport["allocation"]["state"] == "attached"
    owner = nbctl(node.state.nb, "get", "Logical_Switch_Port", lport["lport"],
                  "external_ids:ovn-underlay\\:pod-name").strip().strip('"')
    assert owner == cid
    assert CniRuntime(node).delete(cid, path, prev_result=result).code == 0
    assert snapshot(node) == before
    assert CniRuntime(node).delete(cid, path).code == 0, "DEL must be idempotent"


def test_add_del_add_reuses_the_port(nodes: tuple[Node, Node], pods: PodFactory) -> None:
    node = nodes[0]
    runtime = CniRuntime(node)
    path, cid = pods.netns(node)
    pods.track(runtime, cid, path)
    first = runtime.add(cid, path, ("default", "reuse"))
    assert runtime.delete(cid, path, prev_result=first).code == 0
    second = runtime.add(cid, path, ("default", "reuse"))
    assert pod_ip(second) == pod_ip(first)
    assert gateway_reachable(path, second["ips"][0]["gateway"])


def test_add_is_idempotent(nodes: tuple[Node, Node], pods: PodFactory) -> None:
    node = nodes[0]
    path, cid, first = pods.add(node)
    before = snapshot(node)
    again = CniRuntime(node).add(cid, path, ("default", cid))
    assert again == first
    assert snapshot(node) == before


def test_twenty_concurrent_adds_get_distinct_ports(nodes: tuple[Node, Node],
                                                   pods: PodFactory) -> None:
    node = nodes[0]
    runtime = CniRuntime(node)
    targets = [pods.netns(node) for _ in range(20)]
    for path, cid in targets:
        pods.track(runtime, cid, path)
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda t: runtime.add(t[1], t[0], ("default", t[1])), targets))
    ips = {pod_ip(r) for r in results}
    macs = {r["interfaces"][1]["mac"] for r in results}
    assert len(ips) == 20 and len(macs) == 20
    tags = {int(vsctl(node.vm.ovsdb, "--columns=tag", "--bare", "find", "Port",
                      f"name={r['interfaces'][0]['name']}")) for r in results}
    assert len(tags) == 20


def test_pool_exhaustion_is_a_clear_error_and_changes_nothing(nodes: tuple[Node, Node],
                                                              pods: PodFactory) -> None:
    node = nodes[1]
    free = json.loads(node.cli("pool", "show", "--json").stdout)["stats"]["free"]
    for _ in range(free):
        pods.add(node)
    before = snapshot(node)
    path, cid = pods.netns(node)
    reply = CniRuntime(node).call("ADD", cid, path, pod=("default", "one-too-many"))
    assert reply.code != 0 and reply.output is not None
    assert reply.output["code"] == 100
    assert "exhausted" in reply.output["msg"]
    assert snapshot(node) == before
    status = CniRuntime(node, cni_version="1.1.0").call("STATUS")
    assert status.code != 0 and status.output is not None and status.output["code"] == 50


BAD_INPUTS: list[tuple[str, dict[str, str], bytes | None, int]] = [
    ("malformed JSON", {}, b"{not json", 6),
    ("missing CNI_COMMAND", {"CNI_COMMAND": ""}, None, 4),
    ("missing CNI_CONTAINERID", {"CNI_CONTAINERID": ""}, None, 4),
    ("unknown cniVersion", {}, json.dumps({"cniVersion": "9.9.9", "name": "ovn-underlay",
                                           "type": "ovn-underlay"}).encode(), 1),
    ("netns does not exist", {"CNI_NETNS": "/var/run/netns/no-such-pod"}, None, 4),
    ("interface name too long", {"CNI_IFNAME": "a-very-long-ifname"}, None, 4),
]


@pytest.mark.parametrize(("case", "env", "stdin", "code"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_the_right_error_and_changes_nothing(
        nodes: tuple[Node, Node], pods: PodFactory, case: str, env: dict[str, str],
        stdin: bytes | None, code: int) -> None:
    node = nodes[0]
    before = snapshot(node)
    path, cid = pods.netns(node)
    reply = CniRuntime(node).call("ADD", cid, path, pod=("default", "bad"), stdin=stdin,
                                  env=env)
    assert reply.code != 0, case
    assert reply.output is not None and reply.output["code"] == code, reply.output
    assert reply.output["msg"]
    assert snapshot(node) == before


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_every_spec_version_gets_its_own_result_shape(nodes: tuple[Node, Node],
                                                      pods: PodFactory, version: str) -> None:
    node = nodes[0]
    runtime = CniRuntime(node, cni_version=version)
    path, cid, result = pods.add(node, runtime)
    assert result["cniVersion"] == version
    ip = result["ips"][0]
    assert ("version" in ip) == version.startswith("0."), ip
    assert ("mtu" in result["interfaces"][1]) == (version == "1.1.0")
    if version != "0.3.1":
        check = runtime.call("CHECK", cid, path, pod=("default", cid), prev_result=result)
        assert check.code == 0, check.output


def test_check_detects_a_broken_pod(nodes: tuple[Node, Node], pods: PodFactory) -> None:
    node = nodes[0]
    path, cid, result = pods.add(node)
    runtime = CniRuntime(node)
    subprocess.run(netns_argv(path.rsplit("/", 1)[1], ["ip", "addr", "flush", "dev", "eth0"]),
                   check=True)
    check = runtime.call("CHECK", cid, path, prev_result=result)
    assert check.code != 0 and check.output is not None
    assert "address" in check.output["msg"]


def test_del_after_the_netns_is_gone_frees_the_port(nodes: tuple[Node, Node],
                                                    pods: PodFactory) -> None:
    node = nodes[0]
    before = snapshot(node)
    path, cid, result = pods.add(node)
    netns.destroy(path.rsplit("/", 1)[1])
    assert CniRuntime(node).delete(cid, path, prev_result=result).code == 0
    assert CniRuntime(node).delete(cid, "").code == 0
    assert snapshot(node) == before


def test_gc_releases_attachments_the_runtime_forgot(nodes: tuple[Node, Node],
                                                    pods: PodFactory) -> None:
    node = nodes[0]
    keep_path, keep_cid, kept = pods.add(node)
    _, lost_cid, lost = pods.add(node)
    runtime = CniRuntime(node, cni_version="1.1.0")
    reply = runtime.call("GC", **{"cni.dev/valid-attachments": [
        {"containerID": keep_cid, "ifname": "eth0"}]})
    assert reply.code == 0, reply.output
    held = {p["allocation"]["attachment"]["container_id"]
            for p in json.loads(node.cli("pool", "show", "--json").stdout)["ports"]
            if p["allocation"]}
    assert keep_cid in held and lost_cid not in held
    assert lost["interfaces"][0]["name"] not in vsctl(node.vm.ovsdb, "list-ports", "br-int")
    assert runtime.call("CHECK", keep_cid, keep_path, prev_result=kept).code == 0


def test_a_crash_during_add_loses_no_port(nodes: tuple[Node, Node], pods: PodFactory) -> None:
    node = nodes[0]
    runtime = CniRuntime(node)
    before = snapshot(node)
    for delay in (0.05, 0.12, 0.2, 0.3):
        path, cid = pods.netns(node)
        variables = ["CNI_COMMAND=ADD", f"CNI_CONTAINERID={cid}", f"CNI_NETNS={path}",
                     "CNI_IFNAME=eth0", f"CNI_PATH={node.cni_bin_dir}"]
        proc = subprocess.Popen(
            netns_argv(node.vm.netns, ["env", "-i", *variables,
                                       str(node.cni_bin_dir / "ovn-underlay")]),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(runtime.netconf()).encode())
        proc.stdin.close()
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert runtime.delete(cid, path).code == 0
        netns.destroy(path.rsplit("/", 1)[1])
    assert snapshot(node) == before


@pytest.mark.parametrize("with_netns", [True, False], ids=["del-with-netns", "del-no-netns"])
def test_a_late_del_leaves_the_pod_that_reused_the_netns_path_alone(
        nodes: tuple[Node, Node], pods: PodFactory, with_netns: bool) -> None:
    teardown_cases.late_del_after_the_netns_path_was_reused(nodes[0], pods, with_netns)


def test_a_failed_repeated_add_keeps_the_working_pod(nodes: tuple[Node, Node],
                                                     pods: PodFactory) -> None:
    teardown_cases.failed_repeated_add_keeps_the_working_pod(nodes[0], pods)


def test_an_add_into_another_netns_is_refused_while_the_pod_lives(
        nodes: tuple[Node, Node], pods: PodFactory) -> None:
    teardown_cases.add_into_another_netns_is_refused_while_the_pod_lives(nodes[0], pods)


def test_an_add_into_a_new_netns_moves_an_attachment_whose_netns_died(
        nodes: tuple[Node, Node], pods: PodFactory) -> None:
    teardown_cases.add_into_a_new_netns_after_the_old_one_died(nodes[0], pods)


def test_a_pod_with_host_ports_is_refused_and_changes_nothing(nodes: tuple[Node, Node],
                                                              pods: PodFactory) -> None:
    node = nodes[0]
    runtime = CniRuntime(node)
    assert runtime.plugin_conf["capabilities"] == {"portMappings": True}, \
        "the conflist declares the capability, so runtimes pass the mappings, never drop them"
    path, cid = pods.netns(node)
    pods.track(runtime, cid, path)
    before = snapshot(node)
    reply = runtime.call("ADD", cid, path, pod=("default", cid), runtimeConfig={
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    assert reply.code == 1 and reply.output is not None and reply.output["code"] == 105
    assert "hostPort" in reply.output["msg"]
    assert snapshot(node) == before
