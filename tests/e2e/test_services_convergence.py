"""Services converge with traffic flowing (issue 15, item 4): a controller restart, a
dropped watch, a node added after the Services exist, changes made around a restart.

A kube lab of three VMs runs the real cluster controller (``ovn-k8s-underlay
controller``, a process in the hypervisor, as :func:`ovn_underlay.lab.kube.start_controller`
starts it) and node agents on vm1 and vm2; vm3's Node is registered only by the node
test.  Pods are plumbed through each node's installed CNI binary, as a runtime calls it;
their backends are small TCP servers (``services_convergence_support.py serve``), and
selector-less Services get EndpointSlices written by the test, as a user writes them.  A
client in a pod on vm2 opens a new TCP connection to a ClusterIP every 20 ms (1 s timeout
for connect and answer) and records every outcome; each test counts failures from the
moment every backend has answered (the warm-up) to its end, and prints its figures (run
with ``-s`` to see them).

Restart and dropped watch: zero failed requests, and the NB rows of the Services (their
``Load_Balancer`` rows, the group and every node switch's references to them) identical,
``_uuid`` included: nothing rewritten; what changed meanwhile is updated in place.  The
dropped watch is the test API server's watch cache re-initializing (SIGUSR1, SIGUSR2:
see :mod:`ovn_underlay.lab.kubeapi.watch`).  A delete and re-create of a Service's row a
few milliseconds apart failed no request in a trial run, so the rows' identity, not the
traffic alone, is what shows a rewrite.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.control.ovn_lb import GROUP
from ovn_underlay.controller.main import ControllerConfig
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, CniRuntime, Node, pod_ip
from ovn_underlay.lab.daemons import alive, netns_argv, read_live_pid
from ovn_underlay.lab.topology import Lab, LabState, VmInfo
from tests.conftest import skip_unless_lab_possible
from tests.e2e.services_convergence_support import Outcome, read_outcomes
from tests.functional.test_ovn_nb import as_list, dump
from tests.waiting import eventually

SUPPORT = str(Path(__file__).with_name("services_convergence_support.py"))
NAMESPACE = "default"
PORT, TARGET = 80, 8080
INTERVAL, TIMEOUT = 0.02, 1.0
READY_WITHIN = 60.0
WARM_OK = 10
"""Consecutive successes (after every backend answered) that end a client's warm-up."""
LEASE_DURATION = ControllerConfig().lease_duration
"""The lab's controller runs with the default Lease timings (15 s)."""
LEASE = (f"/apis/coordination.k8s.io/v1/namespaces/{lab_kube.CLUSTER_NAMESPACE}/leases/"
         "ovn-underlay-controller")
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
SYNC_LINE = re.compile(r"epoch (\d+): (complete|incremental) sync of .*: (\d+) row\(s\) "
                       r"created, (\d+) updated, (\d+) deleted in (\d+) transaction")


@dataclass
class Pod:
    name: str
    node: Node
    netns: str
    ip: str

    @property
    def vm(self) -> str:
        return self.node.vm.name


@dataclass
class Traffic:
    """A client process in ``pod`` sending to ``ip``: one request every INTERVAL s."""

    pod: Pod
    ip: str
    out: Path
    proc: subprocess.Popen[bytes]
    mark: float = 0.0
    """Start time (epoch seconds) of the first request counted: the end of the warm-up."""

    def outcomes(self) -> list[Outcome]:
        return read_outcomes(str(self.out))

    def counted(self) -> list[Outcome]:
        return [o for o in self.outcomes() if o.at >= self.mark]

    def warm(self, backends: set[str], timeout: float = READY_WITHIN) -> None:
        """Wait until every one of ``backends`` answered and the last WARM_OK requests
        succeeded; count from the next request on."""
        def ready() -> bool:
            seen = self.outcomes()
            tail = seen[-WARM_OK:]
            return (len(tail) == WARM_OK and all(o.ok for o in tail)
                    and backends <= {o.what for o in seen if o.ok})
        eventually(ready, timeout, lambda: f"{sorted(backends)} answering {self.pod.name}: "
                   f"{self.outcomes()[-5:]}")
        self.mark = self.outcomes()[-1].at + 0.0001

    def hits(self, since: float = 0.0) -> Counter[str]:
        return Counter(o.what for o in self.counted() if o.ok and o.at >= since)

    def failures(self) -> list[Outcome]:
        return [o for o in self.counted() if not o.ok]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def summary(self, label: str) -> str:
        counted = self.counted()
        failed = self.failures()
        span = counted[-1].at - counted[0].at if len(counted) > 1 else 0.0
        worst = max((o.ms for o in counted), default=0.0)
        warm = [o for o in self.outcomes() if o.at < self.mark]
        return (f"{label}: {len(counted)} requests over {span:.1f} s from {self.pod.name} "
                f"({self.pod.vm}), {len(failed)} failed, slowest {worst:.0f} ms, hits "
                f"{dict(sorted(self.hits().items()))} (warm-up: {len(warm)} requests, "
                f"{sum(not o.ok for o in warm)} failed)"
                + (f"; failures: {failed[:5]}" if failed else ""))


@dataclass
class Cluster:
    lab: Lab
    state: LabState
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    """ClusterIP by Service name."""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clients: list[Traffic] = field(default_factory=list)

    # -- the controller -------------------------------------------------------------------

    @property
    def controller_log(self) -> Path:
        return self.lab.dir / "hv" / "cluster-controller" / "cluster-controller.log"

    def controller_pid(self) -> int:
        pid = read_live_pid(Path(self.state.daemons["cluster-controller"]))
        assert pid is not None, "the controller is not running"
        return pid

    def start_controller(self) -> None:
        lab_kube.start_controller(self.state, self.lab.dir, CLUSTER_SUBNET, CLUSTER_ROUTER)
        # Recorded beside the hypervisor's ovn-controller, not over it (lab status checks it).
        assert self.state.daemons["controller"] != self.state.daemons["cluster-controller"]
        self.lab.save(self.state)

    def log_size(self) -> int:
        return self.controller_log.stat().st_size if self.controller_log.exists() else 0

    def log_since(self, offset: int) -> str:
        with open(self.controller_log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def lease(self) -> dict[str, Any]:
        spec: dict[str, Any] = lab_kube.request(self.state, "GET", LEASE)["spec"]
        return spec

    # -- pods and Services ----------------------------------------------------------------

    def plumb(self, vm: str, name: str) -> Pod:
        """A pod on ``vm`` through the node's CNI binary (ADD retried while it answers 11,
        try again: the agent's daemon is not serving yet)."""
        node = self.nodes[vm]
        path = node.pod_netns(name)
        deadline = time.monotonic() + READY_WITHIN
        while True:
            reply = CniRuntime(node).call("ADD", f"ctr-{name}", path,
                                          pod=(NAMESPACE, name))
            if reply.code == 0 and reply.output is not None:
                break
            assert (reply.output or {}).get("code") == 11 and time.monotonic() < deadline, \
                reply
            time.sleep(0.3)
        pod = Pod(name, node, path.rsplit("/", 1)[1], pod_ip(reply.output))
        self.pods[name] = pod
        return pod

    def serve(self, pod: Pod) -> None:
        """The pod's backend: it answers its name on TARGET."""
        proc = subprocess.Popen(netns_argv(pod.netns, [sys.executable, SUPPORT, "serve",
                                                       pod.name, pod.ip, str(TARGET)]),
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

    def service(self, name: str, backends: list[Pod], local: bool = False) -> str:
        """A Service without selector (port 80 to 8080; ``local``: internalTrafficPolicy
        Local) and its EndpointSlice; its IP."""
        spec: dict[str, Any] = {"ports": [{"name": "http", "port": PORT, "targetPort": TARGET,
                                           "protocol": "TCP"}]}
        if local:
            spec["internalTrafficPolicy"] = "Local"
        made = lab_kube.request(self.state, "POST", f"/api/v1/namespaces/{NAMESPACE}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
        ip = str(made["spec"]["clusterIP"])
        lab_kube.request(self.state, "POST", SLICES, {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-user", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": TARGET, "protocol": "TCP"}],
            "endpoints": self.endpoints(backends)})
        self.ips[name] = ip
        return ip

    @staticmethod
    def endpoints(backends: list[Pod]) -> list[dict[str, Any]]:
        return [{"addresses": [p.ip], "conditions": {"ready": True}, "nodeName": p.vm}
                for p in backends]

    def set_backends(self, name: str, backends: list[Pod]) -> None:
        lab_kube.request(self.state, "PATCH", f"{SLICES}/{name}-user",
                         {"endpoints": self.endpoints(backends)},
                         content_type="application/merge-patch+json")

    def traffic(self, pod: Pod, service: str) -> Traffic:
        out = self.lab.dir / f"client-{pod.name}-{service}-{len(self.clients)}.txt"
        proc = subprocess.Popen(netns_argv(pod.netns, [
            sys.executable, SUPPORT, "client", self.ips[service], str(PORT), str(INTERVAL),
            str(TIMEOUT), str(out)]), stdin=subprocess.DEVNULL)
        client = Traffic(pod, self.ips[service], out, proc)
        self.clients.append(client)
        return client

    def requests(self, pod: Pod, service: str, count: int) -> list[Outcome]:
        """``count`` requests from ``pod`` to ``service``, one after the other."""
        out = self.lab.dir / f"requests-{pod.name}-{service}-{time.monotonic_ns()}.txt"
        subprocess.run(netns_argv(pod.netns, [
            sys.executable, SUPPORT, "client", self.ips[service], str(PORT), str(INTERVAL),
            str(TIMEOUT), str(out), str(count)]), stdin=subprocess.DEVNULL, check=True,
            timeout=count * (TIMEOUT + 1) + 10)
        return read_outcomes(str(out))

    # -- the NB ---------------------------------------------------------------------------

    def rows(self) -> dict[str, Any]:
        """The Services' NB rows: every Load_Balancer (by name), the group, and each
        switch's references to load balancers and groups."""
        tables = dump(self.state.nb)
        return {
            "lbs": {r["name"]: r for r in tables["Load_Balancer table"]},
            "groups": tables["Load_Balancer_Group table"],
            "switches": {r["name"]: (sorted(as_list(r["load_balancer"])),
                                     sorted(as_list(r["load_balancer_group"])))
                         for r in tables["Logical_Switch table"]}}

    def vips(self, name: str, node: str = "") -> dict[str, str]:
        """The vips of Service ``name``'s row (``node``: its row for that node)."""
        row = self.rows()["lbs"].get(f"Service_{NAMESPACE}/{name}_tcp"
                                     + (f"_node_{node}" if node else ""))
        return dict(row["vips"]) if row else {}

    def backends_in_nb(self, name: str, node: str = "") -> set[str]:
        return {b.split(":")[0] for v in self.vips(name, node).values()
                for b in v.split(",") if b}

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        for proc in self.procs:
            proc.kill()
            proc.wait(5)


def sync_lines(text: str) -> list[tuple[str, int, int, int, int]]:
    """(kind, created, updated, deleted, transactions) of each sync the log reports."""
    return [(m[2], int(m[3]), int(m[4]), int(m[5]), int(m[6]))
            for m in SYNC_LINE.finditer(text)]


@pytest.fixture(scope="module")
def cluster(lab_rundir: Path) -> Iterator[Cluster]:
    """The lab (vm3's Node deleted before the controller starts), the controller, agents
    on vm1 and vm2, pods a1 a2 a3 (vm1), b1 c2 (vm2), c1 (vm1) serving; Services
    ``steady`` (a1, a2) and ``other`` (b1) programmed."""
    skip_unless_lab_possible()
    lab = Lab(f"sc{os.getpid() % 1000}", lab_rundir)
    lab.down()
    started = time.monotonic()
    state = lab.up(3, kube=True)
    made = Cluster(lab, state, {vm.name: Node(state, vm) for vm in state.vms})
    try:
        lab_kube.request(state, "DELETE", "/api/v1/nodes/vm3")
        lab_kube.install_cluster_mode(state)
        made.start_controller()
        for vm in state.vms[:2]:
            lab_kube.start_agent(state, vm, CLUSTER_SUBNET)
        lab.save(state)
        for vm in state.vms[:2]:
            lab_kube.wait_network_available(state, vm, READY_WITHIN)
        for vm, name in (("vm1", "a1"), ("vm1", "a2"), ("vm1", "a3"), ("vm2", "b1"),
                         ("vm1", "c1"), ("vm2", "c2")):
            pod = made.plumb(vm, name)
            if not name.startswith("c"):
                made.serve(pod)
        made.service("steady", [made.pods["a1"], made.pods["a2"]])
        made.service("other", [made.pods["b1"]])
        eventually(lambda: made.backends_in_nb("steady") == {
            made.pods["a1"].ip, made.pods["a2"].ip} and made.backends_in_nb("other"),
            READY_WITHIN, "the Services' rows in the NB")
        print(f"\nlab, controller, 2 agents, 6 pods and 2 Services up in "
              f"{time.monotonic() - started:.1f} s")
        yield made
    finally:
        made.close()
        lab.down()


@dataclass(frozen=True)
class Restart:
    """What a controller restart showed: seconds from the start to leading, the syncs
    the log reports from the stop on, and the first complete one."""

    leading: float
    syncs: list[tuple[str, int, int, int, int]]
    complete: tuple[str, int, int, int, int]


def restart(cluster: Cluster, sig: signal.Signals,
            meanwhile: Callable[[], object] = lambda: None) -> Restart:
    """Stop the controller with ``sig``, run ``meanwhile()`` (no controller runs), start it
    again with the same settings; wait for its term and its first complete sync."""
    holder = cluster.lease()["holderIdentity"]
    assert holder
    offset = cluster.log_size()
    pid = cluster.controller_pid()
    os.kill(pid, sig)
    eventually(lambda: not alive(pid), 15, f"controller {pid} gone")
    meanwhile()
    t0 = time.monotonic()
    cluster.start_controller()
    eventually(lambda: "leading;" in cluster.log_since(offset), 40,
               "the new controller leading")
    leading = time.monotonic() - t0
    complete = eventually(lambda: [s for s in sync_lines(cluster.log_since(offset))
                                   if s[0] == "complete"], 20,
                          "the new leader's complete sync")
    new_holder = cluster.lease()["holderIdentity"]
    assert new_holder and new_holder != holder
    if sig == signal.SIGTERM:  # released: taken at the first try
        assert leading < LEASE_DURATION, leading
    else:  # a silent Lease: a whole lease duration from the first look
        assert leading >= LEASE_DURATION, leading
    return Restart(leading, sync_lines(cluster.log_since(offset)), complete[0])


def test_a_controller_restart_rewrites_nothing_and_no_request_fails(
        cluster: Cluster) -> None:
    """SIGTERM and start again (the Lease is released: the new one takes over at once),
    then SIGKILL and start again (the new one waits for the Lease to expire, 15 s, with
    no leader meanwhile): while a client sends to ``steady``, not one request fails, and
    the new leader's complete sync finds everything in place: identical rows, zero NB
    transactions."""
    traffic = cluster.traffic(cluster.pods["c2"], "steady")
    traffic.warm({"a1", "a2"})
    figures = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        before = cluster.rows()
        done = restart(cluster, sig)
        assert cluster.rows() == before
        assert done.complete[1:] == (0, 0, 0, 0), done.complete
        assert not [s for s in done.syncs if s[4] > 0], done.syncs
        figures.append(f"{sig.name}: restart to leading {done.leading:.2f} s")
    traffic.stop()
    print("\n" + traffic.summary("controller restarts") + "; " + ", ".join(figures))
    assert not traffic.failures(), traffic.summary("controller restarts")
    assert set(traffic.hits()) == {"a1", "a2"}
    assert len(traffic.counted()) > 200


def kubeapi_pid(cluster: Cluster) -> int:
    pid = read_live_pid(Path(cluster.state.daemons["kubeapi"]))
    assert pid is not None
    return pid


def request_log(cluster: Cluster) -> list[dict[str, Any]]:
    import json

    path = Path(cluster.state.kube["request_log"])
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def refused_watches(cluster: Cluster, resource: str, after: float) -> int:
    """Watches of ``resource`` answered 429 at or after ``after`` (epoch seconds)."""
    return sum(1 for e in request_log(cluster)
               if e.get("verb") == "watch" and e.get("resource") == resource
               and e.get("code") == 429 and e.get("time", 0) >= after)


def test_a_dropped_watch_is_followed_by_a_complete_sync_and_no_request_fails(
        cluster: Cluster) -> None:
    """The API server's watch cache re-initializes (SIGUSR1: every watch ends, watches
    get 429; SIGUSR2: ready again, history from now on); meanwhile ``steady``'s slice
    gains a3.  The controller's informers get 410 Gone, list again and sync completely:
    a3 gets traffic, no request fails, ``other``'s row stays as it was and ``steady``'s
    is updated in place (same _uuid), in one row update."""
    traffic = cluster.traffic(cluster.pods["c2"], "steady")
    traffic.warm({"a1", "a2"})
    before = cluster.rows()
    offset = cluster.log_size()
    apiserver = kubeapi_pid(cluster)
    cut = time.time()
    os.kill(apiserver, signal.SIGUSR1)
    for resource in ("endpointslices", "services"):
        eventually(lambda r=resource: refused_watches(cluster, r, cut), 15,
                   f"the controller's {resource} watch refused")
    changed = time.time()
    a1, a2, a3 = (cluster.pods[n] for n in ("a1", "a2", "a3"))
    cluster.set_backends("steady", [a1, a2, a3])
    eventually(lambda: refused_watches(cluster, "endpointslices", changed + 0.01), 15,
               "the controller's EndpointSlice watch refused after the change")
    assert cluster.backends_in_nb("steady") == {a1.ip, a2.ip}  # it cannot know yet
    resumed = time.monotonic()
    os.kill(apiserver, signal.SIGUSR2)

    eventually(lambda: cluster.backends_in_nb("steady") == {a1.ip, a2.ip, a3.ip}, 20,
               "a3 in steady's row")
    programmed = time.monotonic() - resumed
    eventually(lambda: traffic.hits(since=time.time() - 1)["a3"] >= 3, 10,
               "a3 answering")
    reached = time.monotonic() - resumed
    traffic.stop()
    text = cluster.log_since(offset)
    after = cluster.rows()
    print(f"\n{traffic.summary('dropped watch')}; from the resume: a3 in the NB after "
          f"{programmed:.2f} s, answering after {reached:.2f} s")
    assert not traffic.failures(), traffic.summary("dropped watch")
    assert "is gone from the server's history: listing again" in text, text[-3000:]
    syncs = sync_lines(text)
    assert any(s[0] == "complete" for s in syncs), syncs
    assert sum(s[1] for s in syncs) == 0 and sum(s[3] for s in syncs) == 0, syncs
    assert sum(s[2] for s in syncs) == 1, syncs  # steady's row, and nothing else
    steady = f"Service_{NAMESPACE}/steady_tcp"
    assert after["lbs"][steady]["_uuid"] == before["lbs"][steady]["_uuid"]
    assert {k: v for k, v in after["lbs"].items() if k != steady} == {
        k: v for k, v in before["lbs"].items() if k != steady}
    assert after["groups"] == before["groups"] and after["switches"] == before["switches"]
    assert {"a1", "a2", "a3"} <= set(traffic.hits())


def join_node(cluster: Cluster, vm: VmInfo, timeout: float) -> None:
    """``vm``'s Node registered (one there already, from a rerun of a test alone, is
    fine), its agent started, and its NetworkUnavailable=False waited for."""
    try:
        lab_kube.request(cluster.state, "POST", "/api/v1/nodes", lab_kube.node_object(vm))
    except urllib.error.HTTPError as exc:
        assert exc.code == 409, exc
    lab_kube.start_agent(cluster.state, vm, CLUSTER_SUBNET)
    cluster.lab.save(cluster.state)
    lab_kube.wait_network_available(cluster.state, vm, timeout)


def test_a_node_added_after_the_services_gets_them_and_serves_them(
        cluster: Cluster) -> None:
    """vm3's Node registers (and its agent starts) after the Services are programmed: its
    switch gets the group, and the ``internalTrafficPolicy: Local`` Service a row of its
    own there, nothing else is written; a pod on vm3 reaches ``steady``, its requests to
    the Local Service are dropped until a backend on vm3 is there, then reach only that
    one; a pod on vm3 as the backend of a new Service is reached from pods on vm1 and
    vm2."""
    state = cluster.state
    vm3 = state.vms[2]
    a1 = cluster.pods["a1"]
    local = f"Service_{NAMESPACE}/local_tcp_node_"
    cluster.service("local", [a1], local=True)
    eventually(lambda: cluster.backends_in_nb("local", "vm1") == {a1.ip}
               and cluster.vips("local", "vm2"), 20, "the Local Service's rows")
    before = cluster.rows()
    offset = cluster.log_size()
    started = time.monotonic()
    join_node(cluster, vm3, READY_WITHIN)
    ready = time.monotonic() - started
    group = [g["_uuid"] for g in before["groups"] if g["name"] == GROUP]
    assert len(group) == 1

    def grouped() -> dict[str, Any] | None:
        now = cluster.rows()
        row = now["lbs"].get(f"{local}vm3")
        switch = now["switches"].get("node-vm3", ([], []))
        return now if switch[1] == group and row and switch[0] == [row["_uuid"]] else None
    rows = eventually(grouped, 10, "the group and the Local row on vm3's switch")
    attached = time.monotonic() - started
    assert list(rows["lbs"][f"{local}vm3"]["vips"].values()) == [""]  # no endpoint there
    assert {k: v for k, v in rows["lbs"].items() if k != f"{local}vm3"} == before["lbs"]
    assert rows["groups"] == before["groups"]
    assert {k: v for k, v in rows["switches"].items() if k != "node-vm3"} == \
        before["switches"]
    syncs = sync_lines(cluster.log_since(offset))
    assert any(s[0] == "complete" for s in syncs), syncs  # the switches changed
    assert [s[1:4] for s in syncs if s[1:4] != (0, 0, 0)] == [(1, 0, 0)], syncs

    c3 = cluster.plumb("vm3", "c3")
    from_vm3 = cluster.traffic(c3, "steady")
    backends = {p.name for p in cluster.pods.values()
                if p.ip in cluster.backends_in_nb("steady")}
    from_vm3.warm(backends)
    dropped = cluster.requests(c3, "local", 2)
    assert [o.ok for o in dropped] == [False, False], dropped
    assert {o.what for o in cluster.requests(cluster.pods["c1"], "local", 5)} == {"a1"}
    v3 = cluster.plumb("vm3", "v3")
    cluster.serve(v3)
    cluster.set_backends("local", [a1, v3])
    eventually(lambda: cluster.backends_in_nb("local", "vm3") == {v3.ip}, 20,
               "v3 in the Local row of vm3")
    on_vm3 = cluster.requests(c3, "local", 10)
    assert {o.what for o in on_vm3} == {"v3"} and all(o.ok for o in on_vm3), on_vm3
    assert {o.what for o in cluster.requests(cluster.pods["c1"], "local", 5)} == {"a1"}
    cluster.service("on-vm3", [v3])
    eventually(lambda: cluster.backends_in_nb("on-vm3") == {v3.ip}, 20, "on-vm3's row")
    towards = [cluster.traffic(cluster.pods[name], "on-vm3") for name in ("c1", "c2")]
    for client in towards:
        client.warm({"v3"})
    for client in (from_vm3, *towards):
        mark = client.outcomes()[-1].at
        eventually(lambda c=client, m=mark: len([o for o in c.outcomes() if o.at > m])
                   >= 25, 10, "25 more requests")
        client.stop()
    print(f"\nvm3 ready {ready:.1f} s after its Node registered, the group on its switch "
          f"after {attached:.1f} s; "
          + "; ".join(c.summary(f"to {'steady' if c is from_vm3 else 'on-vm3'}")
                      for c in (from_vm3, *towards)))
    for client in (from_vm3, *towards):
        assert not client.failures(), client.summary("after the warm-up")
    assert set(from_vm3.hits()) == backends
    assert all(set(c.hits()) == {"v3"} for c in towards)


def test_changes_around_a_restart_converge_and_leave_the_rest_alone(
        cluster: Cluster) -> None:
    """A change just before a SIGTERM is in the NB after the restart (the stop drains it,
    or the successor's complete sync writes it); changes made while no controller runs
    (SIGKILL, the Lease expiring) are what the next term's complete sync writes: a
    Service created gets its row, a Service deleted loses its row, a changed one is
    updated in place, and ``steady``, unchanged, keeps its row and its traffic."""
    pods = cluster.pods
    cluster.service("doomed", [pods["a1"]])
    eventually(lambda: cluster.backends_in_nb("doomed") == {pods["a1"].ip}, 20,
               "doomed's row")
    steady = f"Service_{NAMESPACE}/steady_tcp"
    backends = {p.name for p in pods.values() if p.ip in cluster.backends_in_nb("steady")}
    traffic = cluster.traffic(pods["c2"], "steady")
    traffic.warm(backends)
    before = cluster.rows()
    cluster.set_backends("other", [pods["b1"], pods["a1"]])
    term = restart(cluster, signal.SIGTERM)
    eventually(lambda: cluster.backends_in_nb("other") == {pods["b1"].ip, pods["a1"].ip},
               20, "other's change made before the SIGTERM")
    assert cluster.rows()["lbs"][steady] == before["lbs"][steady]
    assert sum(s[2] for s in term.syncs) == 1 and sum(s[1] + s[3] for s in term.syncs) == 0, \
        term.syncs  # other's row, written once
    drained = term.syncs[0][0] == "incremental"

    def while_down() -> None:
        cluster.service("late", [pods["a2"]])
        lab_kube.request(cluster.state, "DELETE",
                         f"/api/v1/namespaces/{NAMESPACE}/services/doomed")
        lab_kube.request(cluster.state, "DELETE", f"{SLICES}/doomed-user")
        cluster.set_backends("other", [pods["b1"]])
    rows = cluster.rows()
    kill = restart(cluster, signal.SIGKILL, while_down)
    after = cluster.rows()
    assert f"Service_{NAMESPACE}/doomed_tcp" not in after["lbs"]
    assert cluster.backends_in_nb("late") == {pods["a2"].ip}
    assert cluster.backends_in_nb("other") == {pods["b1"].ip}
    other = f"Service_{NAMESPACE}/other_tcp"
    assert after["lbs"][other]["_uuid"] == rows["lbs"][other]["_uuid"]
    assert after["lbs"][steady] == before["lbs"][steady]
    assert kill.complete[1:4] == (1, 1, 1), kill.complete  # late, other, doomed
    late = cluster.traffic(pods["c1"], "late")
    late.warm({"a2"})
    late.stop()
    traffic.stop()
    writes = "{} created, {} updated, {} deleted in {} transaction(s)".format(
        *kill.complete[1:])
    print(f"\n{traffic.summary('changes around restarts')}; the change before the SIGTERM "
          f"written by {'the stopping controller' if drained else 'its successor'}; "
          f"SIGTERM: restart to leading {term.leading:.2f} s, SIGKILL: {kill.leading:.2f} s, "
          f"its complete sync: {writes}")
    assert not traffic.failures(), traffic.summary("changes around restarts")
    assert set(traffic.hits()) == backends
