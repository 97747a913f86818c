"""The node daemon end to end on a lab of its own, through the CNI binary as a runtime calls it.

The lab is this module's (the daemon refills pools, which other modules' tests
count): one VM whose node has a pool of 8 ports and watermarks low 4, high 12,
batch 4; its daemon runs inside the VM and reclaims ports of vanished pods after 1 s.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ovn_underlay.daemon.server import is_serving
from ovn_underlay.lab import netns, probe
from ovn_underlay.lab.cluster import CniRuntime, Node, pod_ip
from ovn_underlay.lab.daemons import netns_argv
from ovn_underlay.lab.topology import LabState, nbctl, vsctl
from tests.conftest import PodFactory, own_lab
from tests.e2e import teardown_cases
from tests.waiting import eventually

POOL, LOW, HIGH, BATCH = 8, 4, 12, 4
METRICS = "127.0.0.1:9476"
START_TIMEOUT = 30.0


class DaemonProcess:
    """``ovn-k8s-underlay daemon`` running inside a lab VM, started and stopped by pid."""

    def __init__(self, node: Node, sock: str) -> None:
        self.node = node
        self.sock = sock
        self.log = Path(node.vm.rundir) / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return netns_argv(self.node.vm.netns, [
            sys.executable, "-m", "ovn_underlay.cli", "--ovsdb", self.node.vm.ovsdb, "daemon",
            "--reclaim-after", "1", "--log-file", str(self.log)])

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not is_serving(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the daemon did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample the daemon exports now, by (name, sorted labels)."""
        fetch = (f"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                 f"'http://{METRICS}/metrics', timeout=10).read().decode())")
        text = subprocess.run(netns_argv(self.node.vm.netns, [sys.executable, "-c", fetch]),
                              capture_output=True, text=True, check=True, timeout=30).stdout
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}



def count(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def lab(lab_rundir: Path) -> Iterator[LabState]:
    yield from own_lab("d", lab_rundir, 1)


@pytest.fixture(scope="module")
def node(lab: LabState) -> Node:
    node = Node(lab, lab.vms[0])
    node.init("--daemon-socket", f"{node.vm.rundir}/daemon/cni.sock", "--pool-low", str(LOW),
              "--pool-high", str(HIGH), "--pool-batch", str(BATCH), "--metrics-address",
              METRICS)
    node.setup_switch(pool_size=POOL)
    return node


@pytest.fixture(scope="module")
def daemon(node: Node) -> Iterator[DaemonProcess]:
    """The node's daemon on daemon/cni.sock in its VM's run directory; stopped afterwards."""
    proc = DaemonProcess(node, f"{node.vm.rundir}/daemon/cni.sock")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def running(daemon: DaemonProcess) -> DaemonProcess:
    """The daemon, started again if a test left it stopped."""
    if daemon.proc is None or daemon.proc.poll() is not None:
        daemon.start()
    return daemon


def pool_show(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(node.cli("pool", "show", "--json").stdout)
    return data


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 20.0,
             poll: float = 0.1) -> None:
    eventually(condition, timeout, what, poll)


def reaches_gateway(path: str, result: dict[str, Any]) -> bool:
    return probe.ping(path.rsplit("/", 1)[1], result["ips"][0]["gateway"], attempts=3)


def in_process_log(node: Node) -> str:
    """What the plugin logged while serving calls itself (the daemon logs elsewhere)."""
    path = Path(node.vm.rundir) / "cni.log"
    return path.read_text() if path.exists() else ""


def test_calls_go_through_the_daemon_and_a_pod_works(running: DaemonProcess, node: Node,
                                                     pods: PodFactory) -> None:
    before = running.metrics()
    log_before = in_process_log(node)
    runtime = CniRuntime(node)
    path, cid = pods.netns(node)
    pods.track(runtime, cid, path)
    result = runtime.add(cid, path, ("default", "web"))
    assert reaches_gateway(path, result)
    assert runtime.call("CHECK", cid, path, prev_result=result).code == 0
    assert runtime.delete(cid, path, prev_result=result).code == 0
    missing = runtime.call("ADD", "ctrnonetns", "/var/run/netns/no-such-pod", pod=("d", "x"))
    assert missing.code == 1 and missing.output is not None and missing.output["code"] == 4
    after = running.metrics()
    for command in ("ADD", "CHECK", "DEL"):
        assert count(after, "ovn_underlay_cni_request_duration_seconds_count", command=command,
                     result="ok") == count(before, "ovn_underlay_cni_request_duration_seconds"
                                                   "_count", command=command, result="ok") + 1
    assert count(after, "ovn_underlay_cni_errors_total", command="ADD", code="4") == 1
    assert count(after, "ovn_underlay_control_plane_request_duration_seconds_count",
                 backend="ovn", operation="record_owners", result="ok") >= 1
    assert count(after, "ovn_underlay_pool_size") == pool_show(node)["stats"]["total"]
    assert in_process_log(node) == log_before, "the shim did the work itself"


def test_the_socket_is_root_only_and_a_second_daemon_refuses(running: DaemonProcess) -> None:
    assert stat.S_IMODE(os.stat(running.sock).st_mode) == 0o600
    second = subprocess.run(running.argv(), capture_output=True, text=True, timeout=60,
                            check=False)
    assert second.returncode == 1
    assert "already serves" in second.stderr
    assert is_serving(running.sock)


def test_the_pool_is_refilled_between_its_watermarks(running: DaemonProcess, node: Node,
                                                     pods: PodFactory) -> None:
    free = pool_show(node)["stats"]["free"]
    for _ in range(free - LOW + 1):
        pods.add(node)
    wait_for("the refill", lambda: pool_show(node)["stats"]["free"] >= HIGH)
    shown = pool_show(node)
    assert shown["stats"]["free"] == HIGH
    refill = shown["refill"]
    assert (refill["low"], refill["high"], refill["batch"]) == (LOW, HIGH, BATCH)
    assert refill["daemon"]["running"] and refill["daemon"]["refill"]["added"] >= 1
    text = node.cli("pool", "show").stdout.splitlines()[1]
    assert text.startswith(f"refill: below {LOW} free ports") and "added" in text
    nb_ports = nbctl(node.state.nb, "--bare", "--columns=name", "find", "Logical_Switch_Port",
                     "external_ids:ovn-underlay\\:role=pool").split()
    assert sorted(nb_ports) == sorted(p["lport"] for p in shown["ports"])


def test_concurrent_adds_get_distinct_ports_and_working_pods(running: DaemonProcess,
                                                             node: Node,
                                                             pods: PodFactory) -> None:
    runtime = CniRuntime(node)
    targets = [pods.netns(node) for _ in range(12)]
    for path, cid in targets:
        pods.track(runtime, cid, path)
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda t: runtime.add(t[1], t[0], ("default", t[1])), targets))
    assert len({pod_ip(r) for r in results}) == 12
    tags = {int(vsctl(node.vm.ovsdb, "--columns=tag", "--bare", "find", "Port",
                      f"name={r['interfaces'][0]['name']}")) for r in results}
    assert len(tags) == 12
    assert all(reaches_gateway(path, r) for (path, _), r in zip(targets[:3], results,
                                                                  strict=False))
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda t: runtime.delete(t[1], t[0]).code, targets))
    assert codes == [0] * 12
    assert pool_show(node)["stats"]["attached"] == 0


def test_without_the_daemon_the_plugin_still_works(running: DaemonProcess, node: Node,
                                                   pods: PodFactory) -> None:
    running.stop()
    assert not Path(running.sock).exists()
    log_before = in_process_log(node)
    path, _, result = pods.add(node)
    assert reaches_gateway(path, result)
    assert "CNI ADD" in in_process_log(node)[len(log_before):]


def test_a_killed_daemon_loses_and_duplicates_no_port(running: DaemonProcess, node: Node,
                                                      pods: PodFactory) -> None:
    runtime = CniRuntime(node)
    first = [pods.add(node, runtime) for _ in range(3)]
    racing = [pods.netns(node) for _ in range(4)]
    for path, cid in racing:
        pods.track(runtime, cid, path)
    log_before = in_process_log(node)
    daemon_log = running.log.read_text()
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(runtime.add, cid, path, ("default", cid)) for path, cid in racing]
        wait_for("an ADD in the daemon", lambda: any(
            f"CNI ADD container={cid[:12]}" in running.log.read_text()[len(daemon_log):]
            for _, cid in racing), timeout=30, poll=0.002)
        running.kill()
        raced = [f.result() for f in pending]
    assert is_serving(running.sock) is False
    finished_here = [cid for _, cid in racing
                     if f"container={cid}" in in_process_log(node)[len(log_before):]]
    assert finished_here, "the daemon was killed with ADDs in flight: the shim finishes them"
    # What a crash before the owners' batch was written leaves in the NB:
    ports = pool_show(node)["ports"]
    held = next(p["lport"] for p in ports if p["allocation"])
    free = next(p["lport"] for p in ports if not p["allocation"])
    nbctl(node.state.nb, "remove", "Logical_Switch_Port", held, "external_ids",
          '"ovn-underlay:container-id"')
    nbctl(node.state.nb, "set", "Logical_Switch_Port", free,
          "external_ids:ovn-underlay\\:container-id=gone")
    running.start()
    for path, cid, result in first[:2]:
        assert runtime.delete(cid, path, prev_result=result).code == 0
    later = [pods.add(node, runtime)]
    live = {cid: (path, result) for path, cid, result in first[2:] + later}
    live.update({cid: (path, result) for (path, cid), result in zip(racing, raced,
                                                                     strict=True)})
    shown = pool_show(node)
    held = {p["allocation"]["attachment"]["container_id"]: p for p in shown["ports"]
            if p["allocation"]}
    assert set(held) == set(live)
    assert all(held[cid]["allocation"]["state"] == "attached" for cid in live)
    assert {held[cid]["ip"] for cid in live} == {pod_ip(r) for _, r in live.values()}
    nb_ports = nbctl(node.state.nb, "--bare", "--columns=name", "find", "Logical_Switch_Port",
                     "external_ids:ovn-underlay\\:role=pool").split()
    assert sorted(nb_ports) == sorted(p["lport"] for p in shown["ports"]), "a port was lost"
    for cid, (path, result) in live.items():
        tag = vsctl(node.vm.ovsdb, "--columns=tag", "--bare", "find", "Port",
                    f"name={result['interfaces'][0]['name']}")
        assert int(tag) == held[cid]["tag"]
        assert reaches_gateway(path, result)
    pool_owners = {p["lport"]: p["allocation"]["attachment"]["container_id"]
                   if p["allocation"] else None for p in shown["ports"]}
    wait_for("the NB owners to follow the pool", lambda: nb_owners(node) == pool_owners)


def nb_owners(node: Node) -> dict[str, str | None]:
    """The container recorded on each pool port in the NB (None: none)."""
    listed = json.loads(nbctl(node.state.nb, "--format=json", "--columns=name,external_ids",
                              "find", "Logical_Switch_Port",
                              "external_ids:ovn-underlay\\:role=pool"))
    return {name: dict(ids[1]).get("ovn-underlay:container-id")
            for name, ids in listed["data"]}


def test_the_port_of_a_vanished_pod_is_reclaimed(running: DaemonProcess, node: Node,
                                                 pods: PodFactory) -> None:
    path, cid, _ = pods.add(node)
    netns.destroy(path.rsplit("/", 1)[1])

    def released() -> bool:
        return all(not p["allocation"] or p["allocation"]["attachment"]["container_id"] != cid
                   for p in pool_show(node)["ports"])

    wait_for("the reclaim", released)
    assert pool_show(node)["refill"]["daemon"]["refill"]["reclaimed"] >= 1
    assert CniRuntime(node).delete(cid, path).code == 0, "the runtime's late DEL still works"


def test_the_daemon_keeps_the_host_isolation_ruleset_and_leaves_it_when_it_stops(
        running: DaemonProcess, node: Node) -> None:
    def tables() -> str:
        return subprocess.run(netns_argv(node.vm.netns, ["nft", "list", "tables"]),
                              capture_output=True, text=True, check=True).stdout

    assert "table inet ovn_underlay" in tables()
    for family in ("inet", "arp"):  # as a reboot or a firewall reload would
        subprocess.run(netns_argv(node.vm.netns, ["nft", "delete", "table", family,
                                                  "ovn_underlay"]), check=True)
    wait_for("the daemon to write the ruleset again",
             lambda: {"table inet ovn_underlay", "table arp ovn_underlay"} <= set(
                 tables().splitlines()), timeout=15)
    assert count(running.metrics(), "ovn_underlay_host_isolation_writes_total") >= 1
    running.stop()
    assert "table inet ovn_underlay" in tables(), "the ruleset outlives the daemon"


@pytest.mark.parametrize("with_netns", [True, False], ids=["del-with-netns", "del-no-netns"])
def test_a_late_del_leaves_the_pod_that_reused_the_netns_path_alone(
        running: DaemonProcess, node: Node, pods: PodFactory, with_netns: bool) -> None:
    teardown_cases.late_del_after_the_netns_path_was_reused(node, pods, with_netns)


def test_a_failed_repeated_add_keeps_the_working_pod(running: DaemonProcess, node: Node,
                                                     pods: PodFactory) -> None:
    teardown_cases.failed_repeated_add_keeps_the_working_pod(node, pods)


def test_an_add_into_another_netns_is_refused_while_the_pod_lives(
        running: DaemonProcess, node: Node, pods: PodFactory) -> None:
    teardown_cases.add_into_another_netns_is_refused_while_the_pod_lives(node, pods)


def test_the_daemon_writes_a_missing_conflist_of_a_ready_node(running: DaemonProcess,
                                                               node: Node) -> None:
    conf = node.cni_conf_dir / "10-ovn-underlay.conflist"
    conf.unlink()
    running.stop()
    running.start()
    wait_for("the conflist", conf.exists, timeout=10)
    assert json.loads(conf.read_text())["plugins"][0]["ovsdb"] == node.vm.ovsdb
    assert "wrote the CNI conflist" in running.log.read_text()
