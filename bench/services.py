"""ClusterIP Services on OVN load balancers: programming latency and scale.

    .venv/bin/python bench/services.py [--parts latency scale] [--quick]
        [--changes 100] [--services 1000 --endpoints 10 --switches 100]
        [--services-via ovn octavia] [--octavia-changes 30]
        [--octavia-services 100 --octavia-endpoints 5]

``--services-via`` (default: both) picks the backends: ``ovn`` runs parts (a) and (b)
below, ``octavia`` part (c); ``--parts`` picks latency and scale in either.

**(a) latency** (``--changes``, default 100).  A two-VM lab with the test API server
(``--lab``, default ``sv1``), the real cluster controller (``ovn-k8s-underlay controller``
in the hypervisor) and a node agent per VM, as ``make demo`` runs them; pods made through
the installed CNI binary and the agents' daemons: one client on vm1 and ``--backends``
(default 4) backends spread over both VMs, each backend listening on UDP 7000 and 7001.
The client sends one datagram every ``--interval-ms`` (default 1) to each of two VIPs,
each from a fresh socket (a new source port, so a new conntrack entry: no entry left
over from an earlier backend can hold a datagram back):

* ``controller``: a selector-less Service (UDP 7000) in the API, whose one EndpointSlice
  the bench rewrites (PUT, as a user would) to name the next backend each time; timed
  from the PUT's answer to the first datagram the new backend receives;
* ``OVN write alone`` (the reference): a VIP outside the Service range (UDP 7001) that
  the bench programs itself with ``OvnLoadBalancers.sync`` on the lab's NB (the
  controller's own writer, no API, no controller), timed from the sync's return.

The two alternate, one change each in turn, so both see the same machine.  The backend
timestamps its first datagram after being armed (CLOCK_MONOTONIC is the machine's, in
every namespace).  Also reported: when the old backend got its last datagram, the
datagrams lost (sent by the client, received by no backend), and the controller's own
sync time (its log's "incremental sync ... ms").  ``--loaded N`` runs the changes again
with N more Services (of ``--endpoints`` endpoints, addresses no pod has) programmed; off
by default: with 1000 of them the lab hypervisor's ovs-vswitchd (OVS 3.1.0, userspace
datapath) died on an assertion in its conntrack (``conn_update_state``) in 3 of 4 runs,
on either path.  A daemon of the lab found dead is named in the error.

**(b) scale** (``--services`` x ``--endpoints``, default 1000 x 10, ``--switches`` node
switches, default 100).  No VMs: an NB, an SB and ovn-northd of the bench's own (unix
sockets in ``--rundir``/``<lab>-scale``).  The topology is made with the product's NB
code as the controller makes it (``create_node_network``: a switch per node on one
router, its management port and 4 pool ports, children of a VM port on a switch
``vmnet``).  Cases, each on fresh databases:

* ``group, controller``: the test API server (``python -m ovn_underlay.lab.kubeapi``,
  its EndpointSlice controller off) and the controller process; one Node per switch,
  whose InternalIP is its VM port's address (so the controller adopts the switch, as
  its node reconciler does for a real VM); once every switch has the Services group,
  N selector-less Services and their EndpointSlices are POSTed at once (8 connections)
  and the NB is watched (an IDL of its own) until every row holds every endpoint;
* ``group, direct``: the same rows written by ``OvnLoadBalancers.sync`` from the bench
  (no API, no controller);
* ``per switch, direct``: the same N Load_Balancer rows, without the group: each in
  every switch's ``load_balancer`` column, written by the bench, 500 rows a transaction
  (as many transactions as the group's writer takes);
* ``per switch, small transactions``: the same, with at most 500 row writes a
  transaction counting each switch a row goes into as one (5 rows a transaction over
  100 switches): what a writer batching by row writes, as the controller does, would
  do without the group.

Per case: time to the rows (from the first API create, or the first write, until the
bench's IDL shows every row with every endpoint), NB transactions (the controller's log
lines), controller CPU (utime+stime over the burst) and peak RSS, CPU of ovn-northd, NB
and SB from the first write until the SB has it (``ovn-nbctl --wait=sb sync``, then
northd idle), logical flows (Logical_Flow rows, and flows per datapath: a row on a
datapath group counts once per datapath in it), memory of NB, SB and northd, the NB
file's size (compacted).  Then, in the direct cases, one Service's endpoint changed
alone, 10 times: northd's CPU per change and the time until the SB has it.

**(c) Octavia** (``--services-via octavia``).  A Neutron lab with Octavia and the test
API server (``lab up --neutron --kube``, lab ``<--lab>o``), the controller as
:func:`ovn_underlay.lab.kube.start_controller` runs it there (``--backend neutron
--service-subnet services --service-cidr 198.18.128.0/20``: each Service an Octavia load
balancer whose OVN row the provider writes), agents on both VMs with small pools (as
the Octavia e2e test), pods through the CNI binary.  What serves Octavia's API (Debian's
one-request console script, or gunicorn's threads) is read from the running process
and printed.

* latency (``--octavia-changes``, default 30, ``--quick`` 10): the pods and the backend
  and client programs of part (a); the controller's path is the same selector-less
  Service and slice rewrite; the reference is a load balancer of the bench's own made
  straight through Octavia (VIP from the Service subnet's pool, UDP 7001), changed with
  a batch member update (``PUT /v2/lbaas/pools/{id}/members``, what the controller sends
  when one member replaces another).  Timed from the write's *request* (Octavia answers
  the member update only after ~0.5-1.5 s, after the datagrams already reach the new
  member), to the first datagram at the new backend and until the bench sees the load
  balancer ACTIVE again (polled every 50 ms after the first datagram); each change once
  its load balancer is ACTIVE (a change to a PENDING one is refused, 409, and waits).
  The client (every ``--octavia-interval-ms``, default 2) takes its source ports in turn
  from 10000-60999: a random ephemeral port used again within the datapath's UDP
  conntrack timeout went to the backend its old entry named (first datagrams "5 ms" after
  the write, the old backend still reached).  Printed beside part (a)'s rows when it ran.
* scale (``--octavia-services`` x ``--octavia-endpoints``, default 100 x 5, ``--quick``
  20 x 5): that many selector-less Services and slices (addresses in the upper halves of
  the two node networks, no pod's) POSTed at once (8 connections); until the NB holds the
  provider's row of each with every endpoint, then until Octavia lists every load
  balancer ACTIVE with a pool of that many members (two GETs a poll, every 0.25 s, only
  after the NB); the controller's CPU and its Octavia writes (its log's "transactions"
  are Octavia and Neutron write requests), CPU of every process.  Beside it, the same
  count through the OVN-direct controller: part (b)'s ``controller`` case over 2 switches.

Prints tables and writes JSON to ``bench/results/services-<time>.json`` and
``bench/results/services.json`` (or only ``--json``).
``--quick``: 20 changes; 200 Services over 20 switches; Octavia: 10 changes, 20 x 5.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import benchlib

PARTS = ("latency", "scale")
SCALE_CASES = ("controller", "group", "per-switch", "per-switch-small")
TARGETS = ("latency p50 < 100 ms, p99 < 500 ms; 1000 x 10 converged < 10 s from an empty NB")
NAMESPACE = "default"
SERVICE = "bench-lat"
CTRL_PORT, REF_PORT = 7000, 7001
REF_VIP = "198.18.144.10"
"""The reference's VIP: outside the API server's Service range (198.18.128.0/20)."""
FIRST_WAIT = 15.0
WARM_WAIT = 60.0
"""Seconds a change may take to reach its backend before the bench gives up."""
SETTLE = 0.15
"""Seconds after a change's first datagram before the next change (plus up to 0.1 s)."""
AGENT_TIMEOUT = 120.0
CONVERGE_WAIT = 300.0
SETTLE_WAIT = 600.0
POSTERS = 8
ONE_CHANGES = 10
"""Scale, direct cases: single-Service changes measured after the burst."""
SCALE_ROUTER = "bench-cluster"
SCALE_SUBNET = "10.128.0.0/14"
VM_SWITCH = "vmnet"
VIAS = ("ovn", "octavia")
OCTAVIA_FIRST_WAIT = 30.0
OCTAVIA_ACTIVE_WAIT = 60.0
OCTAVIA_CONVERGE_WAIT = 600.0
OCTAVIA_CONTROLLER_SETTINGS = {"pool-size": "4"}
OCTAVIA_AGENT_SETTINGS = {"pool-high": "6", "pool-low": "2", "pool-batch": "4"}
"""Small pools (as the Octavia e2e test): a Neutron port costs ~0.2 s of server CPU."""
SYNC_LINE = re.compile(r"(complete|incremental) sync of (\d+) Service\(s\).* in (\d+) "
                       r"transaction\(s\), (\d+) ms")

BACKEND = r"""
import select, socket, sys, time
socks = {}
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("0.0.0.0", port))
    s.setblocking(False)
    socks[s.fileno()] = (s, port)
armed, last, count = set(), {}, {}
poll = select.poll()
poll.register(sys.stdin.fileno(), select.POLLIN)
for fd in socks:
    poll.register(fd, select.POLLIN)
print("ready", flush=True)
while True:
    for fd, _ in poll.poll():
        now = time.monotonic()
        if fd == sys.stdin.fileno():
            line = sys.stdin.readline()
            if not line:
                sys.exit(0)
            verb, port = line.split()
            port = int(port)
            if verb == "arm":
                armed.add(port)
                print("armed", port, flush=True)
            else:
                print("last", port, last.get(port, 0.0), count.get(port, 0), flush=True)
            continue
        sock, port = socks[fd]
        got = 0
        while True:
            try:
                sock.recv(64)
                got += 1
            except BlockingIOError:
                break
        last[port] = now
        count[port] = count.get(port, 0) + got
        if port in armed:
            armed.discard(port)
            print("first", port, now, flush=True)
"""

CLIENT = r"""
import socket, sys, threading, time
interval = float(sys.argv[1])
targets = [(sys.argv[i], int(sys.argv[i + 1])) for i in range(2, len(sys.argv), 2)]
sent = 0
def answer():
    for line in sys.stdin:
        print("sent", sent, flush=True)
threading.Thread(target=answer, daemon=True).start()
print("ready", flush=True)
due = time.monotonic()
while True:
    for target in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", target)
        s.close()
    sent += 1
    due += interval
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        due = time.monotonic()
"""


OCTAVIA_CLIENT = r"""
import errno, socket, sys, threading, time
interval = float(sys.argv[1])
targets = [(sys.argv[i], int(sys.argv[i + 1])) for i in range(2, len(sys.argv), 2)]
sent = 0
port = 10000
def answer():
    for line in sys.stdin:
        print("sent", sent, flush=True)
threading.Thread(target=answer, daemon=True).start()
print("ready", flush=True)
due = time.monotonic()
while True:
    while True:
        port = port + 1 if port < 60999 else 10000
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", port))
            break
        except OSError as exc:
            s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    for target in targets:
        s.sendto(b"x", target)
    s.close()
    sent += 1
    due += interval
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        due = time.monotonic()
"""
"""The Octavia part's client: as CLIENT, but each round from the next source port of
10000-60999 in turn, not a random ephemeral one: a port used again within the
conntrack's timeout (the lab's userspace datapath: 30-60 s for UDP) would find its old
entry and go to the backend of an earlier change, long gone from the VIP (seen: first
datagrams 5 ms after the write, the old backend still reached)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="what to run (default: both)")
    p.add_argument("--quick", action="store_true",
                   help="20 changes; 200 Services over 20 switches (unless given)")
    p.add_argument("--changes", type=int, help="latency: changes per path (default: 100)")
    p.add_argument("--backends", type=int, default=4, help="latency: backend pods (default 4)")
    p.add_argument("--interval-ms", type=float, default=1.0,
                   help="latency: the client's datagram interval per VIP (default: 1)")
    p.add_argument("--loaded", type=int, default=0, metavar="N",
                   help="latency: then the changes again with N more Services of "
                        "--endpoints endpoints programmed (default: 0, not: with 1000, "
                        "the lab's ovs-vswitchd 3.1.0 died in its userspace conntrack in 2 "
                        "of 3 runs)")
    p.add_argument("--services", type=int, help="scale: Services (default: 1000)")
    p.add_argument("--endpoints", type=int, default=10,
                   help="scale: endpoints per Service (default: 10)")
    p.add_argument("--switches", type=int, help="scale: node switches (default: 100)")
    p.add_argument("--cases", nargs="+", choices=SCALE_CASES, default=list(SCALE_CASES),
                   help="scale: which cases (default: all)")
    p.add_argument("--services-via", nargs="+", choices=VIAS, default=list(VIAS),
                   help="the Services backends: ovn (parts a, b), octavia (part c, with the "
                        "OVN-direct controller on its count; default: both)")
    p.add_argument("--octavia-changes", type=int,
                   help="octavia latency: changes per path (default: 30; --quick 10)")
    p.add_argument("--octavia-interval-ms", type=float, default=2.0,
                   help="octavia latency: the client's datagram interval per VIP (default: 2;"
                        " each from the next of 51000 source ports)")
    p.add_argument("--octavia-services", type=int,
                   help="octavia scale: Services (default: 100; --quick 20)")
    p.add_argument("--octavia-endpoints", type=int, default=5,
                   help="octavia scale: endpoints per Service (default: 5)")
    benchlib.add_lab_options(p, "sv1", "services")
    args = p.parse_args(argv)
    args.octavia_changes = args.octavia_changes or (10 if args.quick else 30)
    args.octavia_services = args.octavia_services or (20 if args.quick else 100)
    if not 1 <= args.octavia_services <= 1000 or not 1 <= args.octavia_endpoints <= 50:
        p.error("--octavia-services must be 1..1000, --octavia-endpoints 1..50")
    args.changes = args.changes or (20 if args.quick else 100)
    args.services = args.services or (200 if args.quick else 1000)
    args.switches = args.switches or (20 if args.quick else 100)
    if not 2 <= args.backends <= 12:
        p.error("--backends must be 2..12")
    if not 1 <= args.switches <= 250 or not 1 <= args.endpoints <= 250:
        p.error("--switches and --endpoints must be 1..250")
    if not 1 <= args.services <= 4000:
        p.error("--services must be 1..4000 (the API server's Service range)")
    return args


# -- processes ------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem(pid: int) -> dict[str, float]:
    """Resident memory of ``pid`` now and at its peak, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024
    return out


def wait_idle(pid: int, timeout: float, quiet: float = 0.02, span: float = 0.5) -> None:
    """Wait until ``pid`` uses under ``quiet`` CPU seconds in ``span`` seconds, twice."""
    deadline = time.monotonic() + timeout
    calm = 0
    last = proc_cpu(pid)
    while calm < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} still busy after {timeout:.0f} s")
        time.sleep(span)
        now = proc_cpu(pid)
        calm = calm + 1 if now - last < quiet else 0
        last = now


class Peer:
    """A helper program in a namespace, spoken to line by line (its output read with
    os.read into a buffer of our own: select() must see every line not yet taken)."""

    def __init__(self, netns_name: str, program: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns_name, sys.executable, "-c", program, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.name = netns_name
        self._buffer = b""
        if self.readline(10) != "ready":
            raise RuntimeError(f"{netns_name}: helper did not start: {self.errors()}")

    def readline(self, timeout: float) -> str:
        """The next line ("" if none came within ``timeout`` s)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                return ""
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def ask(self, line: str, timeout: float = 5.0) -> str:
        """Send ``line``; the answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        answer = self.readline(timeout)
        if not answer:
            raise RuntimeError(f"{self.name}: no answer to {line!r}: {self.errors()}")
        verb = line.split(maxsplit=1)[0]
        if answer.split(maxsplit=1)[0] != {"arm": "armed"}.get(verb, verb):
            raise RuntimeError(f"{self.name}: {answer!r} in answer to {line!r}")
        return answer

    def errors(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-2000:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# -- the cluster labs of parts (a) and (c) ----------------------------------------------------

class ClusterLab:
    """A lab of :func:`cluster_lab`, up with its controller and agents: a Node and a CNI
    runtime per VM, each VM's node switch (its UnderlayNode's status), the controller's
    log and pid; ``peers`` (helper programs) and the pods of :meth:`add_pod` are stopped
    and deleted when the lab goes.  ``began``: when the bring-up began (monotonic);
    ``up_s``: the seconds ``lab up`` took of it."""

    def __init__(self, state: Any, began: float, up_s: float) -> None:
        from ovn_underlay.lab import kube
        from ovn_underlay.lab.cluster import CniRuntime, Node

        self.state, self.began, self.up_s = state, began, up_s
        self.nodes = [Node(state, vm) for vm in state.vms]
        self.runtimes = [CniRuntime(node) for node in self.nodes]
        self.switches = {vm.name: kube.request(state, "GET", f"{kube.UNDERLAY_NODES}/{vm.name}")[
            "status"]["switch"] for vm in state.vms}
        pidfile = Path(state.daemons["cluster-controller"])
        self.log = pidfile.with_suffix(".log")
        self.controller_pid = int(pidfile.read_text())
        self.peers: list[Peer] = []
        self.pods: list[tuple[Any, str, str]] = []

    def add_pod(self, index: int, name: str) -> tuple[str, str]:
        """Pod ``name`` on VM ``index`` through the installed CNI binary (retried while
        the agent's daemon is not serving yet); its namespace's name and its address."""
        from ovn_underlay.lab.cluster import pod_ip

        runtime = self.runtimes[index]
        path = self.nodes[index].pod_netns(name)
        cid = f"ctr-{name}"
        self.pods.append((runtime, cid, path))
        deadline = time.monotonic() + AGENT_TIMEOUT
        while True:  # 11: the agent's daemon is not serving yet
            reply = runtime.call("ADD", cid, path, pod=(NAMESPACE, name))
            if reply.code == 0 and reply.output is not None:
                return path.rsplit("/", 1)[1], pod_ip(reply.output)
            if (reply.output or {}).get("code") != 11 or time.monotonic() > deadline:
                raise RuntimeError(f"CNI ADD {name}: {reply}")
            time.sleep(0.3)


@contextlib.contextmanager
def cluster_lab(args: argparse.Namespace, name: str, announce: str, neutron: bool = False,
                controller_settings: dict[str, str] | None = None,
                agent_settings: dict[str, str] | None = None) -> Iterator[ClusterLab]:
    """Lab ``name`` with 2 VMs and the test API server (and Neutron), the cluster
    controller and an agent per VM as ``make demo`` runs them (with these settings
    files), until every VM's network is available; ``announce`` is printed once the lab
    is known not to be up already.  Afterwards the peers are stopped and, unless
    ``--keep``, the pods deleted (CNI DEL, their namespaces) and the lab taken down."""
    from ovn_underlay.lab import kube, netns
    from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET
    from ovn_underlay.lab.topology import Lab

    lab = Lab(name, Path(args.rundir))
    if lab.state_file.exists() or netns.listed(f"{name}-"):
        raise RuntimeError(f"lab {name} is up already: take it down first (lab --name {name} "
                           "down), or use another --lab")
    print(announce, flush=True)
    began = time.monotonic()
    state = lab.up(2, neutron=neutron, kube=True)
    up_s = time.monotonic() - began
    cluster = None
    try:
        kube.install_cluster_mode(state)
        if controller_settings:
            _write_settings(lab.dir / "hv" / "cluster-controller" / "settings",
                            controller_settings)
        if agent_settings:
            for vm in state.vms:
                _write_settings(Path(vm.rundir) / "agent" / "settings", agent_settings)
        kube.start_controller(state, lab.dir, CLUSTER_SUBNET, CLUSTER_ROUTER)
        for vm in state.vms:
            kube.start_agent(state, vm, CLUSTER_SUBNET)
        lab.save(state)
        for vm in state.vms:
            kube.wait_network_available(state, vm, AGENT_TIMEOUT)
        cluster = ClusterLab(state, began, up_s)
        yield cluster
    finally:
        for peer in cluster.peers if cluster else []:
            peer.stop()
        for runtime, cid, path in [] if args.keep or not cluster else cluster.pods:
            with contextlib.suppress(Exception):
                runtime.delete(cid, path)
            with contextlib.suppress(Exception):
                netns.destroy(path.rsplit("/", 1)[1])
        if not args.keep:
            lab.down()


def _write_settings(directory: Path, settings: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for option, value in settings.items():
        (directory / option).write_text(f"{value}\n")


# -- (a) latency ----------------------------------------------------------------------------

class ApiConnection:
    """A keep-alive HTTP connection to the lab's API server, its socket made inside the
    hypervisor's namespace (where 198.18.1.1 is)."""

    def __init__(self, state: Any) -> None:
        from ovn_underlay.lab.neutron import in_netns

        url = urllib.parse.urlsplit(state.kube["url"])

        def connect() -> http.client.HTTPConnection:
            conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=30)
            conn.connect()
            return conn

        self.conn = in_netns(state.hv_netns, connect)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        reply = self.conn.getresponse()
        text = reply.read()
        if reply.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {reply.status}: {text[:500]!r}")
        return json.loads(text or b"null")


def _slice(ip: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{SERVICE}-1", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": SERVICE}},
            "addressType": "IPv4",
            "ports": [{"name": "udp", "protocol": "UDP", "port": CTRL_PORT}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}]}


class BenchService:
    """The pods and the Service of both latency parts: a client on the first VM and
    ``--backends`` backends spread over both (the first on the second VM), each backend
    serving BACKEND on both ports; the selector-less Service SERVICE (UDP CTRL_PORT) and
    its one EndpointSlice, naming the first backend.  ``made`` and ``since`` say how
    long the pods took (printed)."""

    def __init__(self, args: argparse.Namespace, cluster: ClusterLab, api: ApiConnection,
                 made: str, since: float) -> None:
        vms = cluster.state.vms
        self.api = api
        self.client_ns, self.client_ip = cluster.add_pod(0, "client")
        self.backends: list[tuple[str, str, str]] = []
        for i in range(args.backends):
            where = 1 - i % 2
            ns_name, ip = cluster.add_pod(where, f"be{i}")
            self.backends.append((ns_name, ip, vms[where].name))
        print(f"  {made} in {time.monotonic() - since:.0f} s: client {self.client_ip} on "
              f"{vms[0].name}, backends "
              f"{', '.join(f'{ip} ({vm})' for _, ip, vm in self.backends)}", flush=True)
        self.servers = [Peer(ns_name, BACKEND, str(CTRL_PORT), str(REF_PORT))
                        for ns_name, _, _ in self.backends]
        cluster.peers += self.servers
        service = api.call("POST", f"/api/v1/namespaces/{NAMESPACE}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "udp", "protocol": "UDP", "port": CTRL_PORT,
                                "targetPort": CTRL_PORT}]}})
        self.vip: str = service["spec"]["clusterIP"]
        self.slice = api.call("POST", f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/"
                              "endpointslices", _slice(self.backends[0][1]))

    def warm_up(self) -> None:
        """Wait until the first backend gets datagrams on both ports (the client sends)."""
        for port in (CTRL_PORT, REF_PORT):
            _first_after(self.servers[0], port, None, WARM_WAIT)

    def point(self, index: int) -> float:
        """Rewrite the slice (PUT, as a user would) to name backend ``index``; when the
        answer came."""
        body = dict(self.slice)
        body["endpoints"] = _slice(self.backends[index][1])["endpoints"]
        self.slice = self.api.call("PUT", f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/"
                                   f"endpointslices/{SERVICE}-1", body)
        return time.monotonic()


class ChangeCosts:
    """What a run of latency changes costs, from now to :meth:`done`: the client's
    datagrams and the backends' on either port, CPU by process and the controller's,
    the controller's incremental syncs (its log)."""

    def __init__(self, cluster: ClusterLab, client: Peer, servers: list[Peer]) -> None:
        self.log, self.controller_pid = cluster.log, cluster.controller_pid
        self.client, self.servers = client, servers
        self.mark = self.log.stat().st_size
        self.cpu0 = benchlib.cpu_by_process()
        self.ctrl_cpu0 = proc_cpu(self.controller_pid)
        self.sent0 = int(client.ask("sent x").split()[1])
        self.got0 = [_received(s) for s in servers]

    def done(self, ref: str, writes: str) -> dict[str, Any]:
        """The costs (the reference path's datagrams under ``ref``, the controller's
        transactions under ``writes``), once the last datagrams in flight have come."""
        time.sleep(0.5)
        sent = int(self.client.ask("sent x").split()[1]) - self.sent0
        after = [_received(s) for s in self.servers]
        got = [sum(a[j] - b[j] for a, b in zip(after, self.got0, strict=True)) for j in (0, 1)]
        cpu = benchlib.cpu_delta(self.cpu0, benchlib.cpu_by_process())
        syncs = [m for m in SYNC_LINE.finditer(_read_from(self.log, self.mark))
                 if m.group(1) == "incremental"]
        return {"controller_sync_ms": [int(m.group(4)) for m in syncs],
                writes: sum(int(m.group(3)) for m in syncs),
                "controller_cpu_s": proc_cpu(self.controller_pid) - self.ctrl_cpu0,
                "datagrams_sent_per_vip": sent,
                "datagrams_received": {"controller": got[0], ref: got[1]},
                "cpu_s": {k: v for k, v in cpu.items() if v >= 0.2}}


def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Part (a): bring the lab up, measure, take it down."""
    from ovn_underlay.control.ovn_lb import OvnLoadBalancers
    from ovn_underlay.control.ovn_nb import OvnNbControlPlane

    with cluster_lab(args, args.lab, f"latency: lab {args.lab} with 2 VMs, the API server, "
                     "the controller, 2 agents ...") as cluster:
        plane = OvnNbControlPlane(cluster.state.nb, timeout=10)
        try:
            return _ovn_latency(args, cluster, OvnLoadBalancers(plane))
        finally:
            with contextlib.suppress(Exception):
                plane.close()


def _ovn_latency(args: argparse.Namespace, cluster: ClusterLab, lbs: Any) -> dict[str, Any]:
    """EndpointSlice rewrites through the controller, alternating with the bench's own
    writes of a load balancer of its own with ``lbs`` (OVN alone)."""
    from ovn_underlay.control.services import Endpoint, ServicePort, ServiceState

    state = cluster.state
    api = ApiConnection(state)
    bench = BenchService(args, cluster, api, "lab up, pods made", cluster.began)
    backends, servers = bench.backends, bench.servers

    def ref_state(index: int) -> ServiceState:
        _, ip, vm_name = backends[index]
        return ServiceState("bench", "ref", (REF_VIP,), (ServicePort(
            "udp", REF_PORT, "udp", (Endpoint(ip, REF_PORT, vm_name),)),))

    lbs.sync([ref_state(0)], cluster.switches, complete=False)
    client = Peer(bench.client_ns, CLIENT, str(args.interval_ms / 1000), bench.vip,
                  str(CTRL_PORT), REF_VIP, str(REF_PORT))
    cluster.peers.append(client)
    warm = time.monotonic()
    bench.warm_up()
    print(f"  both VIPs reach {backends[0][1]} ({time.monotonic() - warm:.1f} s after the "
          "client started)", flush=True)

    def via_ovn(index: int) -> float:
        lbs.sync([ref_state(index)], cluster.switches, complete=False)
        return time.monotonic()

    paths: dict[str, tuple[int, Callable[[int], float]]] = {
        "controller": (CTRL_PORT, bench.point), "ovn": (REF_PORT, via_ovn)}
    where = {"controller": 0, "ovn": 0}

    def changes(phase: str) -> dict[str, Any]:
        """``args.changes`` changes per path, alternating; their samples and costs."""
        costs = ChangeCosts(cluster, client, servers)
        samples: dict[str, list[dict[str, Any]]] = {"controller": [], "ovn": []}
        print(f"  {phase}: {args.changes} changes per path, alternating; the client "
              f"sends every {args.interval_ms:g} ms to {bench.vip}:{CTRL_PORT} and "
              f"{REF_VIP}:{REF_PORT} ...", flush=True)
        for k in range(args.changes):
            order = ("controller", "ovn") if k % 2 == 0 else ("ovn", "controller")
            for name in order:
                port, change = paths[name]
                old, new = where[name], (where[name] + 1) % len(backends)
                servers[new].ask(f"arm {port}")
                started = time.monotonic()
                answered = change(new)
                try:
                    first = _first_after(servers[new], port, name)
                except RuntimeError as exc:
                    raise RuntimeError(f"{phase}, change {k + 1}: {exc}"
                                       f"{_lab_problems(state)}") from None
                where[name] = new
                time.sleep(SETTLE + (k % 10) / 100)
                last = float(servers[old].ask(f"last {port}").split()[2])
                samples[name].append({"backend": new,
                                      "same_node": backends[new][2] == state.vms[0].name,
                                      "write_ms": (answered - started) * 1000,
                                      "first_ms": (first - answered) * 1000,
                                      "old_last_ms": (last - answered) * 1000})
        return {"samples": samples, **costs.done("ovn", "controller_transactions")}

    phases = {"idle": changes("idle")}
    if args.loaded:
        took = _load_background(api, state.nb, args.loaded, args.endpoints)
        print(f"  {args.loaded} more Services x {args.endpoints} endpoints programmed by "
              f"the controller in {took:.1f} s", flush=True)
        phases["loaded"] = changes(f"with {args.loaded} other Services")
    lbs.delete(["bench/ref"])
    return {"vip": bench.vip, "client": bench.client_ip,
            "backends": [{"ip": ip, "node": vm} for _, ip, vm in backends],
            "phases": phases}


def _lab_problems(state: Any) -> str:
    """What of the lab's OVS/OVN daemons died, with the last words of their logs."""
    from ovn_underlay.lab.daemons import read_live_pid

    said = []
    for where, daemons in [("hv", state.daemons)] + [(vm.name, vm.daemons) for vm in state.vms]:
        for name, pidfile in daemons.items():
            if read_live_pid(Path(pidfile)) is not None:
                continue
            log = Path(pidfile).with_suffix(".log")
            last = [line for line in (log.read_text(errors="replace").splitlines()
                                      if log.exists() else [])
                    if "|EMER|" in line or "|ERR|" in line][-2:]
            said.append(f"{where} {name} is dead ({log}): {' / '.join(last) or 'no error'}")
    return ("; " + "; ".join(said)) if said else ""


def _received(server: Peer) -> tuple[int, int]:
    """Datagrams a backend received so far on the controller's port and the reference's."""
    return (int(server.ask(f"last {CTRL_PORT}").split()[3]),
            int(server.ask(f"last {REF_PORT}").split()[3]))


def _load_background(api: ApiConnection, nb: str, count: int, endpoints: int) -> float:
    """``count`` more selector-less Services of ``endpoints`` endpoints each (addresses no
    pod has: never sent to) through the API; seconds until the NB has them all."""
    watch = LbWatch(nb)
    try:
        watch.wait(lambda rows: True, 10)
        started = time.monotonic()
        for i in range(count):
            for method, path, body in _service_jobs(f"bg{i}", [
                    (_address(i * endpoints + e), None) for e in range(endpoints)]):
                api.call(method, path, body)
        done = watch.wait(_complete(count, endpoints), CONVERGE_WAIT)
        if done < 0:
            raise RuntimeError(f"the controller did not program {count} background Services")
        return done - started
    finally:
        watch.close()


def _service_jobs(name: str, endpoints: Iterable[tuple[str, str | None]]
                  ) -> list[tuple[str, str, Any]]:
    """A selector-less Service ``name`` (TCP 80 to 8080) and its one EndpointSlice of
    ``endpoints`` (address, node name or None), ready: the two API requests, in order."""
    return [("POST", f"/api/v1/namespaces/{NAMESPACE}/services", {
                "metadata": {"name": name},
                "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                    "targetPort": 8080}]}}),
            ("POST", f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices", {
                "metadata": {"name": f"{name}-1",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                "endpoints": [{"addresses": [ip], **({"nodeName": node} if node else {}),
                               "conditions": {"ready": True}} for ip, node in endpoints]})]


def _address(n: int) -> str:
    """The ``n``th address of 10.250.0.0/16 (no pod's)."""
    return f"10.250.{n // 250}.{n % 250 + 1}"


def _first_after(server: Peer, port: int, path: str | None, wait: float = 0.0) -> float:
    """The time of the first datagram on ``port`` after the server was armed (arming it
    first when ``path`` is None: the warm-up)."""
    if path is None:
        server.ask(f"arm {port}")
    wait = wait or FIRST_WAIT
    deadline = time.monotonic() + wait
    while True:
        line = server.readline(max(0.0, deadline - time.monotonic()))
        if line.startswith("first "):
            return float(line.split()[2])
        if not line:
            raise RuntimeError(f"{path or 'warm-up'}: no datagram reached {server.name} on "
                               f"port {port} within {wait:.0f} s of the change")


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


# -- (b) scale ------------------------------------------------------------------------------

class Ovn:
    """NB, SB and ovn-northd of the bench's own, in ``rundir`` (unix sockets)."""

    def __init__(self, rundir: Path) -> None:
        from ovn_underlay.lab import daemons

        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir(parents=True)
        self.rundir = rundir
        self.daemons = []
        nb, self.nb = daemons.start_ovsdb_server("nb", rundir, daemons.NB_SCHEMA)
        self.daemons.append(nb)
        sb, self.sb = daemons.start_ovsdb_server("sb", rundir, daemons.SB_SCHEMA)
        self.daemons.append(sb)
        daemons.run(["ovn-nbctl", f"--db={self.nb}", "init"])
        northd = daemons.start_northd("northd", rundir, self.nb, self.sb, None)
        self.daemons.append(northd)
        self.nb_daemon, self.sb_daemon, self.northd = nb, sb, northd

    def pid(self, daemon: Any) -> int:
        pid = daemon.pid()
        if pid is None:
            raise RuntimeError(f"{daemon.name} is not running; see {daemon.logfile}")
        return int(pid)

    def wait_sb(self) -> float:
        """Until northd has put the NB's current state into the SB (the time that was
        seen), then until northd is idle."""
        from ovn_underlay.lab import daemons

        daemons.run(["ovn-nbctl", f"--db={self.nb}", "--wait=sb",
                     f"--timeout={SETTLE_WAIT:.0f}", "sync"], timeout=SETTLE_WAIT + 10)
        synced = time.monotonic()
        wait_idle(self.pid(self.northd), SETTLE_WAIT)
        return synced

    def flows(self) -> dict[str, int]:
        """Logical_Flow rows, and flows per datapath (a datapath group's row once per
        datapath in it)."""
        from ovn_underlay.lab import daemons

        query = json.dumps(["OVN_Southbound",
                            {"op": "select", "table": "Logical_Flow", "where": [],
                             "columns": ["_uuid", "logical_datapath", "logical_dp_group"]},
                            {"op": "select", "table": "Logical_DP_Group", "where": [],
                             "columns": ["_uuid", "datapaths"]}])
        out = json.loads(daemons.run(["ovsdb-client", "transact", self.sb, query],
                                     timeout=120))
        groups = {g["_uuid"][1]: _set_size(g["datapaths"]) for g in out[1]["rows"]}
        expanded = 0
        for row in out[0]["rows"]:
            group = row["logical_dp_group"]
            expanded += (groups.get(group[1], 0) if group and group[0] == "uuid" else 1)
        return {"logical_flows": len(out[0]["rows"]), "flows_per_datapath": expanded,
                "dp_groups": len(groups)}

    def nb_size(self) -> int:
        """The NB database file's bytes after compaction."""
        from ovn_underlay.lab import daemons

        daemons.run(["ovs-appctl", "-t", str(self.nb_daemon.ctl), "ovsdb-server/compact"])
        return (self.rundir / "nb.db").stat().st_size

    def memory(self) -> dict[str, dict[str, float]]:
        return {d.name: proc_mem(self.pid(d)) for d in self.daemons}

    def cpu(self) -> dict[str, float]:
        return {d.name: proc_cpu(self.pid(d)) for d in self.daemons}

    def stop(self) -> None:
        from ovn_underlay.lab import daemons

        for daemon in reversed(self.daemons):
            pid = daemon.pid()
            if pid is not None:
                daemons.stop_pid(pid)


def _set_size(value: Any) -> int:
    if isinstance(value, list) and value and value[0] == "set":
        return len(value[1])
    return 1 if value else 0


class Topology:
    """The synthetic cluster: node switches on a router, each with its VM port on vmnet."""

    def __init__(self, count: int) -> None:
        self.nodes = [f"n{i:03d}" for i in range(count)]
        self.vm_ip = {n: f"10.0.{i // 250}.{i % 250 + 2}" for i, n in enumerate(self.nodes)}
        self.subnet = {n: f"10.{128 + i // 256}.{i % 256}.0/24"
                       for i, n in enumerate(self.nodes)}

    def make_vm_ports(self, nb: str) -> None:
        """The VMs' network: one plain VIF per node (what the controller looks the Node's
        InternalIP up in)."""
        from ovn_underlay.control.ovn_nb import OvnNbControlPlane

        plane = OvnNbControlPlane(nb, timeout=30)
        try:
            api = plane._api
            commands = [api.ls_add(VM_SWITCH, other_config={"subnet": "10.0.0.0/16"})]
            commands += [api.lsp_add(VM_SWITCH, f"vm-{n}",
                                     addresses=[f"52:54:00:00:{i // 256:02x}:{i % 256:02x} "
                                                f"{self.vm_ip[n]}"])
                         for i, n in enumerate(self.nodes)]
            plane._transact(commands, "bench: VM ports")
        finally:
            plane.close()

    def make_switches(self, nb: str) -> dict[str, str]:
        """Every node's network as the controller makes it; switch by node."""
        from ovn_underlay.control.ovn_nb import OvnNbControlPlane
        from ovn_underlay.controller.nodes import switch_for

        plane = OvnNbControlPlane(nb, timeout=30)
        try:
            plane.ensure_router(SCALE_ROUTER)
            for n in self.nodes:
                plane.create_node_network(switch_for(n), self.subnet[n], SCALE_ROUTER,
                                          f"vm-{n}", 4, create_router=False,
                                          cluster_subnet=SCALE_SUBNET)
        finally:
            plane.close()
        return {n: switch_for(n) for n in self.nodes}

    def endpoints(self, index: int, count: int) -> list[tuple[str, str]]:
        """(ip, node) of Service ``index``'s endpoints, spread over the nodes."""
        out = []
        for e in range(count):
            node = self.nodes[(index * count + e) % len(self.nodes)]
            base = self.subnet[node].rsplit(".", 1)[0]
            out.append((f"{base}.{10 + (index * count + e) // len(self.nodes) % 240}", node))
        return out


class LbWatch:
    """An IDL of the NB's Load_Balancer table (vips and external_ids only)."""

    def __init__(self, nb: str) -> None:
        import ovs.db.idl

        from ovn_underlay.lab import daemons

        helper = ovs.db.idl.SchemaHelper(location=str(daemons.NB_SCHEMA))
        helper.register_columns("Load_Balancer", ["vips", "external_ids"])
        self.idl = ovs.db.idl.Idl(nb, helper)

    def wait(self, done: Callable[[list[Any]], bool], timeout: float) -> float:
        """Until ``done(rows)``; the time it first held."""
        import ovs.poller

        deadline = time.monotonic() + timeout
        seqno = -1
        while True:
            self.idl.run()
            if self.idl.change_seqno != seqno:
                seqno = self.idl.change_seqno
                if done(list(self.idl.tables["Load_Balancer"].rows.values())):
                    return time.monotonic()
            if time.monotonic() > deadline:
                return -1.0
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(100)
            poller.block()

    def close(self) -> None:
        self.idl.close()


def _complete(count: int, endpoints: int) -> Callable[[list[Any]], bool]:
    def check(rows: list[Any]) -> bool:
        full = 0
        for row in rows:
            if row.external_ids.get("ovn-underlay:role") != "service":
                continue
            values = list(row.vips.values())
            if values and all(len(v.split(",")) == endpoints for v in values if v):
                full += all(values)
        return full >= count
    return check


def _service_states(topo: Topology, count: int, endpoints: int) -> list[Any]:
    from ovn_underlay.control.services import Endpoint, ServicePort, ServiceState

    states = []
    for i in range(count):
        vip = f"198.18.{128 + i // 250}.{i % 250 + 2}"
        eps = tuple(sorted(Endpoint(ip, 8080, node) for ip, node in topo.endpoints(i, endpoints)))
        states.append(ServiceState("scale", f"s{i}", (vip,),
                                   (ServicePort("tcp", 80, "http", eps),)))
    return states


class ScaleCase:
    """One case of part (b) on fresh databases."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args = args
        self.name = name
        self.dir = Path(args.rundir) / f"{args.lab}-scale" / name
        self.ovn = Ovn(self.dir)
        self.topo = Topology(args.switches)
        self.topo.make_vm_ports(self.ovn.nb)
        self.switches = self.topo.make_switches(self.ovn.nb)
        self.ovn.wait_sb()
        self.before = self.ovn.flows()
        self.procs: list[subprocess.Popen[bytes]] = []

    def measure(self, t0: float, cpu0: dict[str, float], rows_at: float) -> dict[str, Any]:
        """After the first write at ``t0``: wait for the SB; the figures."""
        settled = self.ovn.wait_sb()
        cpu = self.ovn.cpu()
        flows = self.ovn.flows()
        return {"rows_s": rows_at - t0, "sb_settled_s": settled - t0,
                "cpu_s": {k: cpu[k] - cpu0[k] for k in cpu},
                "flows": flows, "flows_before": self.before,
                "memory_mib": self.ovn.memory(), "nb_bytes": self.ovn.nb_size()}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.ovn.stop()


def scale_controller(args: argparse.Namespace) -> dict[str, Any]:
    """The Services through the API server and the controller process."""
    from ovn_underlay.control.ovn_lb import GROUP
    from ovn_underlay.lab.kube import CLUSTER_NAMESPACE, CRD_FILE, kubeconfig

    case = ScaleCase(args, "controller")
    try:
        api_log = case.dir / "kubeapi.log"
        with open(api_log, "wb") as err:
            api = subprocess.Popen([sys.executable, "-m", "ovn_underlay.lab.kubeapi", "--listen",
                                    "127.0.0.1:0", "--no-endpointslice-controller",
                                    "--watch-history", "50000"],
                                   stdout=subprocess.PIPE, stderr=err)
        case.procs.append(api)
        assert api.stdout is not None
        url = api.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the test API server did not start; see {api_log}")
        port = int(urllib.parse.urlsplit(url).port or 0)
        _install(port, CRD_FILE, CLUSTER_NAMESPACE)
        config = case.dir / "kubeconfig"
        config.write_text(kubeconfig(url, "bench"))
        log = case.dir / "controller.log"
        controller = subprocess.Popen(
            [sys.executable, "-m", "ovn_underlay.cli", "controller", "--config-dir",
             str(case.dir / "settings"), "--kubeconfig", str(config), "--backend", "ovn",
             "--nb", case.ovn.nb, "--cluster-subnet", SCALE_SUBNET, "--router", SCALE_ROUTER,
             "--namespace", CLUSTER_NAMESPACE, "--pool-size", "4", "--log-file", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        case.procs.append(controller)
        _parallel(port, [("POST", "/api/v1/nodes", _node(n, case.topo.vm_ip[n]))
                         for n in case.topo.nodes])
        deadline = time.monotonic() + 120
        want = re.compile(rf"complete sync of \d+ Service\(s\) \(\d+ gone\) over "
                          rf"{args.switches} switch\(es\)")
        while not want.search(log.read_text(errors="replace") if log.exists() else ""):
            if controller.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the controller did not sync {args.switches} switches "
                                   f"within 120 s; see {log}")
            time.sleep(0.2)
        groups = _nbctl(case.ovn.nb, "--bare", "--columns=load_balancer_group", "find",
                        "Logical_Switch", f"name!={VM_SWITCH}").split()
        if len(groups) != args.switches:
            raise RuntimeError(f"{len(groups)} of {args.switches} switches have the group")
        print(f"  {args.switches} Nodes adopted by the controller, group {GROUP} on every "
              "switch", flush=True)
        case.ovn.wait_sb()
        wait_idle(controller.pid, 60)
        watch = LbWatch(case.ovn.nb)
        watch.wait(lambda rows: True, 10)
        mark = log.stat().st_size
        ctrl0 = proc_cpu(controller.pid)
        api0 = proc_cpu(api.pid)
        cpu0 = case.ovn.cpu()
        jobs: list[tuple[str, str, Any]] = []
        for i in range(args.services):
            jobs += _service_jobs(f"s{i}", case.topo.endpoints(i, args.endpoints))
        t0 = time.monotonic()
        posted = _parallel(port, jobs)
        rows_at = watch.wait(_complete(args.services, args.endpoints), CONVERGE_WAIT)
        watch.close()
        if rows_at < 0:
            raise RuntimeError(f"the NB did not get all {args.services} rows within "
                               f"{CONVERGE_WAIT:.0f} s; see {log}")
        ctrl_cpu = proc_cpu(controller.pid) - ctrl0
        result = case.measure(t0, cpu0, rows_at)
        text = _read_from(log, mark)
        syncs = list(SYNC_LINE.finditer(text))
        result.update(
            posts_s=posted - t0, api_cpu_s=proc_cpu(api.pid) - api0,
            controller_cpu_s=ctrl_cpu, controller_memory_mib=proc_mem(controller.pid),
            transactions=sum(int(m.group(3)) for m in syncs),
            syncs=[{"kind": m.group(1), "services": int(m.group(2)),
                    "transactions": int(m.group(3)), "ms": int(m.group(4))} for m in syncs])
        if " ERROR " in text or "Traceback" in text:
            result["controller_errors"] = [line for line in text.splitlines()
                                           if "ERROR" in line or "WARNING" in line][:10]
        return result
    finally:
        case.stop()


def scale_direct(args: argparse.Namespace, group: bool, small: bool = False
                 ) -> dict[str, Any]:
    """The same rows written by the bench: into the group (OvnLoadBalancers.sync), or each
    row into every switch's load_balancer column (``small``: 500 row writes a transaction,
    counting every switch a row is put in as one)."""
    from ovn_underlay.control.ovn_lb import DEFAULT_BATCH, OvnLoadBalancers, desired_rows
    from ovn_underlay.control.ovn_nb import OvnNbControlPlane

    case = ScaleCase(args, "group" if group else "per-switch-small" if small
                     else "per-switch")
    plane = OvnNbControlPlane(case.ovn.nb, timeout=300)
    try:
        states = _service_states(case.topo, args.services, args.endpoints)
        if group:
            OvnLoadBalancers(plane).sync([], case.switches, complete=True)
            case.ovn.wait_sb()
        watch = LbWatch(case.ovn.nb)
        watch.wait(lambda rows: True, 10)
        cpu0 = case.ovn.cpu()
        t0 = time.monotonic()
        if group:
            transactions = OvnLoadBalancers(plane).sync(states, case.switches,
                                                        complete=True).transactions
        else:
            batch = (max(1, DEFAULT_BATCH // len(case.switches)) if small
                     else DEFAULT_BATCH)
            transactions = _per_switch(plane, [r for s in states
                                               for r in desired_rows(s, case.switches)],
                                       list(case.switches.values()), batch)
        written = time.monotonic()
        rows_at = watch.wait(_complete(args.services, args.endpoints), CONVERGE_WAIT)
        watch.close()
        if rows_at < 0:
            raise RuntimeError("the NB did not show the rows written")
        result = case.measure(t0, cpu0, rows_at)
        result.update(write_s=written - t0, transactions=transactions,
                      one_change=_one_change(case, plane, group, states, ONE_CHANGES))
        return result
    finally:
        plane.close()
        case.stop()


def _per_switch(plane: Any, rows: list[Any], switches: list[str], batch: int) -> int:
    """Create ``rows`` and put each into every switch's load_balancer column: ``batch``
    rows a transaction (as many transactions as the group's writer takes for them), each
    switch's new references in one mutation."""
    api = plane._api
    transactions = 0
    for start in range(0, len(rows), batch):
        commands = []
        refs = []
        for row in rows[start:start + batch]:
            ref = api.db_create_row("Load_Balancer", **row.columns())
            commands.append(ref)
            refs.append(ref)
        commands += [api.db_add("Logical_Switch", sw, "load_balancer", *refs)
                     for sw in switches]
        plane._transact(commands, "bench: per-switch load balancers")
        transactions += 1
    return transactions


def _one_change(case: ScaleCase, plane: Any, group: bool, states: list[Any],
                count: int) -> dict[str, Any]:
    """``count`` times one Service's endpoint moved, written alone: northd's CPU and the
    time until the SB has it, per change."""
    import dataclasses

    from ovn_underlay.control.ovn_lb import OvnLoadBalancers, desired_rows
    from ovn_underlay.control.services import Endpoint

    lbs = OvnLoadBalancers(plane)
    northd = case.ovn.pid(case.ovn.northd)
    cpu, took = [], []
    for k in range(count):
        state = states[(k * 37) % len(states)]
        port = state.ports[0]
        moved = dataclasses.replace(port, endpoints=(
            *port.endpoints[1:], Endpoint(f"10.{200 + k // 250}.{k % 250}.9", 8080,
                                          port.endpoints[0].node)))
        changed = dataclasses.replace(state, ports=(moved,))
        before = proc_cpu(northd)
        started = time.monotonic()
        if group:
            lbs.sync([changed], case.switches, complete=False)
        else:
            row = desired_rows(changed, case.switches)[0]
            uuid = plane._read(lambda api=plane._api, name=row.name: next(
                r.uuid for r in api.tables["Load_Balancer"].rows.values() if r.name == name))
            plane._transact([plane._api.db_set("Load_Balancer", uuid, ("vips", dict(row.vips)))],
                            "bench: one change")
        took.append((case.ovn.wait_sb() - started) * 1000)
        cpu.append((proc_cpu(northd) - before) * 1000)
    return {"northd_cpu_ms": cpu, "to_sb_ms": took}


def _node(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def _install(port: int, crd: Path, namespace: str) -> None:
    import yaml

    _parallel(port, [("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                      yaml.safe_load(crd.read_text()))])
    _parallel(port, [("POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": namespace}})])
    for _ in range(100):  # the CRD's resource is served at once, but be sure
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/apis/ovn-underlay.io/v1alpha1/underlaynodes")
        if conn.getresponse().status == 200:
            return
        time.sleep(0.05)
    raise RuntimeError("the UnderlayNode CRD is not served")


def _parallel(port: int, jobs: list[tuple[str, str, Any]]) -> float:
    """Send ``jobs`` over POSTERS keep-alive connections (in order on each); the time the
    last answer came."""

    def run(chunk: list[tuple[str, str, Any]]) -> list[str]:
        failures = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for method, path, body in chunk:
            conn.request(method, path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            text = reply.read()
            if reply.status >= 300:
                failures.append(f"{method} {path}: HTTP {reply.status} {text[:300]!r}")
        conn.close()
        return failures

    return _spread(jobs, run)


def _spread(jobs: list[tuple[str, str, Any]],
            send: Callable[[list[tuple[str, str, Any]]], list[str]]) -> float:
    """``jobs`` shared out over POSTERS connections at once, ``send`` sending one's share
    (consecutive pairs, a Service and its slice, stay on one, in order) and saying what
    failed; the time the last answer came."""
    pairs = [jobs[i:i + 2] for i in range(0, len(jobs), 2)]
    chunks = [[job for pair in pairs[i::POSTERS] for job in pair] for i in range(POSTERS)]
    with ThreadPoolExecutor(POSTERS) as pool:
        failures = [f for said in pool.map(send, [c for c in chunks if c]) for f in said]
    if failures:
        raise RuntimeError(f"{len(failures)} API requests failed, e.g. {failures[0]}")
    return time.monotonic()


def _nbctl(nb: str, *args: str) -> str:
    from ovn_underlay.lab import daemons

    return daemons.run(["ovn-nbctl", f"--db={nb}", *args])


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Part (b): every case asked for, one after the other."""
    out: dict[str, Any] = {}
    for case in args.cases:
        print(f"scale: {case}: {args.services} Services x {args.endpoints} endpoints over "
              f"{args.switches} switches ...", flush=True)
        began = time.monotonic()
        out[case] = (scale_controller(args) if case == "controller"
                     else scale_direct(args, group=case == "group",
                                       small=case == "per-switch-small"))
        print(f"  done in {time.monotonic() - began:.0f} s", flush=True)
    return out


# -- (c) Octavia ----------------------------------------------------------------------------

class OctaviaHttp:
    """Plain HTTP to the lab's Octavia API (noauth), each request's socket made inside the
    hypervisor's namespace (Debian's octavia-api answers HTTP/1.0: no keep-alive)."""

    def __init__(self, state: Any) -> None:
        self.netns = state.hv_netns
        url = urllib.parse.urlsplit(state.octavia["url"])
        self.host, self.port = url.hostname or "", url.port or 80
        self.requests = 0

    def call(self, method: str, path: str, body: Any = None) -> Any:
        from ovn_underlay.lab.neutron import in_netns

        data = None if body is None else json.dumps(body).encode()

        def send() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                conn.request(method, "/v2" + path, body=data,
                             headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                return reply.status, reply.read()
            finally:
                conn.close()

        self.requests += 1
        status, text = in_netns(self.netns, send)
        if status >= 300:
            raise RuntimeError(f"Octavia {method} {path}: HTTP {status}: {text[:500]!r}")
        return json.loads(text or b"null")

    def status(self, lb: str) -> str:
        return str(self.call("GET", f"/lbaas/loadbalancers/{lb}")["loadbalancer"][
            "provisioning_status"])

    def wait_active(self, lb: str, timeout: float = OCTAVIA_ACTIVE_WAIT) -> float:
        """Poll (every 50 ms) until ``lb`` is ACTIVE; when it was seen so."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(lb)
            if status == "ACTIVE":
                return time.monotonic()
            if status == "ERROR" or time.monotonic() > deadline:
                raise RuntimeError(f"Octavia load balancer {lb} is {status}")
            time.sleep(0.05)


def _octavia_server_kind(state: Any) -> str:
    """How the lab's octavia-api serves: its command line, as running."""
    pidfile = Path(state.daemons.get("octavia-api", "/nonexistent"))
    try:
        argv = Path(f"/proc/{int(pidfile.read_text())}/cmdline").read_bytes().decode().split(
            "\0")
    except (OSError, ValueError):
        return "unknown (no octavia-api process found)"
    if "gunicorn" in " ".join(argv):  # its title replaces its argv
        from ovn_underlay.lab import octavia as lab_octavia

        threads = (argv[argv.index("--threads") + 1] if "--threads" in argv
                   else getattr(lab_octavia, "API_THREADS", "?"))
        return f"threaded: gunicorn, 1 process x {threads} threads"
    return "one request at a time (Debian's octavia-api console script, wsgiref)"


def _lab_parallel(state: Any, jobs: list[tuple[str, str, Any]]) -> float:
    """Send ``jobs`` to the lab's API server over POSTERS keep-alive connections (a
    Service and its slice in order on one); the time the last answer came."""

    def run(chunk: list[tuple[str, str, Any]]) -> list[str]:
        failures = []
        api = ApiConnection(state)
        for method, path, body in chunk:
            try:
                api.call(method, path, body)
            except RuntimeError as exc:
                failures.append(str(exc))
        api.conn.close()
        return failures

    return _spread(jobs, run)


def run_octavia(args: argparse.Namespace) -> dict[str, Any]:
    """Part (c): a Neutron + Octavia kube lab; the latency through Octavia and the
    N x M burst, as asked by --parts; then the lab goes down."""
    from ovn_underlay.lab import octavia as lab_octavia
    from ovn_underlay.lab.neutron import call as neutron_call
    from ovn_underlay.lab.neutron import missing_tools as neutron_missing

    missing = neutron_missing() + lab_octavia.missing_tools()
    if missing:
        raise RuntimeError(f"Neutron/Octavia lab programs missing: {', '.join(missing)} "
                           "(make deps)")
    name = f"{args.lab}o"
    with cluster_lab(args, name, f"octavia: lab {name} (Neutron, Octavia, the API server) "
                     "with 2 VMs, the controller, 2 agents ...", neutron=True,
                     controller_settings=OCTAVIA_CONTROLLER_SETTINGS,
                     agent_settings=OCTAVIA_AGENT_SETTINGS) as cluster:
        state, switches, log = cluster.state, cluster.switches, cluster.log
        out: dict[str, Any] = {"octavia_api_server": _octavia_server_kind(state)}
        api = ApiConnection(state)
        octavia = OctaviaHttp(state)
        out.update(lab_up_s=cluster.up_s,
                   nodes_ready_s=time.monotonic() - cluster.began - cluster.up_s)
        if "latency" in args.parts:
            out["latency"] = _octavia_latency(args, cluster, api, octavia)
        if "scale" in args.parts:
            subnets = neutron_call(state, lambda conn: {
                str(net.name): [str(s.cidr) for s in conn.network.subnets(
                    network_id=net.id, ip_version=4)]
                for net in conn.network.networks() if net.name in switches.values()})
            out["scale"] = _octavia_scale(args, state, octavia, log, cluster.controller_pid,
                                          [subnets[switches[vm.name]][0] for vm in state.vms],
                                          [vm.name for vm in state.vms])
        out["controller_errors"] = [line for line in log.read_text(errors="replace").splitlines()
                                    if " ERROR " in line or "Traceback" in line][:10]
        return out


def _octavia_latency(args: argparse.Namespace, cluster: ClusterLab, api: ApiConnection,
                     octavia: OctaviaHttp) -> dict[str, Any]:
    """EndpointSlice rewrites through the controller to Octavia, alternating with the
    bench's own member updates of a load balancer of its own (Octavia alone)."""
    from ovn_underlay.lab import octavia as lab_octavia

    state = cluster.state
    bench = BenchService(args, cluster, api, "pods made", time.monotonic())
    backends, servers, vip = bench.backends, bench.servers, bench.vip
    subnet = state.octavia["service_subnet"]

    def member(index: int) -> dict[str, Any]:
        return {"address": backends[index][1], "protocol_port": REF_PORT, "subnet_id": subnet}

    made = octavia.call("POST", "/lbaas/loadbalancers", {"loadbalancer": {
        "name": "bench-ref", "provider": "ovn", "vip_subnet_id": subnet,
        "project_id": lab_octavia.PROJECT_ID, "listeners": [{
            "name": "bench-ref", "protocol": "UDP", "protocol_port": REF_PORT,
            "default_pool": {"name": "bench-ref", "protocol": "UDP",
                             "lb_algorithm": "SOURCE_IP_PORT", "members": [member(0)]}}]}})
    ref_lb = str(made["loadbalancer"]["id"])
    ref_vip = str(made["loadbalancer"]["vip_address"])
    octavia.wait_active(ref_lb)
    ref_pool = next(str(p["id"]) for p in octavia.call(
        "GET", f"/lbaas/pools?loadbalancer_id={ref_lb}")["pools"])
    client = Peer(bench.client_ns, OCTAVIA_CLIENT, str(args.octavia_interval_ms / 1000), vip,
                  str(CTRL_PORT), ref_vip, str(REF_PORT))
    cluster.peers.append(client)
    warm = time.monotonic()
    bench.warm_up()
    ctrl_lb = next(str(lb["id"]) for lb in octavia.call(
        "GET", "/lbaas/loadbalancers?tags=ovn-underlay")["loadbalancers"]
        if lb["name"] == f"ovn-underlay:{NAMESPACE}/{SERVICE}")
    octavia.wait_active(ctrl_lb)
    print(f"  both VIPs ({vip} the controller's, {ref_vip} the bench's) reach "
          f"{backends[0][1]} ({time.monotonic() - warm:.1f} s after the client started)",
          flush=True)

    def via_octavia(index: int) -> float:
        octavia.call("PUT", f"/lbaas/pools/{ref_pool}/members", {"members": [member(index)]})
        return time.monotonic()

    paths: dict[str, tuple[int, str, Callable[[int], float]]] = {
        "controller": (CTRL_PORT, ctrl_lb, bench.point),
        "octavia": (REF_PORT, ref_lb, via_octavia)}
    where = {"controller": 0, "octavia": 0}
    costs = ChangeCosts(cluster, client, servers)
    samples: dict[str, list[dict[str, Any]]] = {"controller": [], "octavia": []}
    print(f"  {args.octavia_changes} changes per path, alternating, each once the load "
          f"balancer is ACTIVE; the client sends every {args.octavia_interval_ms:g} ms to "
          f"{vip}:{CTRL_PORT} and {ref_vip}:{REF_PORT} ...", flush=True)
    for k in range(args.octavia_changes):
        order = ("controller", "octavia") if k % 2 == 0 else ("octavia", "controller")
        for name in order:
            port, lb, change = paths[name]
            old, new = where[name], (where[name] + 1) % len(backends)
            servers[new].ask(f"arm {port}")
            started = time.monotonic()
            answered = change(new)
            try:
                first = _first_after(servers[new], port, name, OCTAVIA_FIRST_WAIT)
            except RuntimeError as exc:
                raise RuntimeError(f"octavia, change {k + 1}: {exc}{_lab_problems(state)}"
                                   ) from None
            active = octavia.wait_active(lb)
            where[name] = new
            time.sleep(SETTLE + (k % 10) / 100)
            last = float(servers[old].ask(f"last {port}").split()[2])
            samples[name].append({"backend": new,  # from the request (Octavia's takes ~1 s)
                                  "same_node": backends[new][2] == state.vms[0].name,
                                  "write_ms": (answered - started) * 1000,
                                  "first_ms": (first - started) * 1000,
                                  "active_ms": (active - started) * 1000,
                                  "old_last_ms": (last - started) * 1000})
    spent = costs.done("octavia", "controller_octavia_writes")
    client.stop()
    return {"vip": vip, "ref_vip": ref_vip, "client": bench.client_ip,
            "backends": [{"ip": ip, "node": vm} for _, ip, vm in backends],
            "samples": samples, **spent}


def _octavia_scale(args: argparse.Namespace, state: Any, octavia: OctaviaHttp, log: Path,
                   controller_pid: int, subnets: list[str], node_names: list[str]
                   ) -> dict[str, Any]:
    """``--octavia-services`` selector-less Services of ``--octavia-endpoints`` endpoints
    (addresses on the node networks no pod has) POSTed at once: until the NB holds the
    provider's row of each with every endpoint, and until Octavia shows every load
    balancer ACTIVE with a pool of that many members."""
    import ipaddress

    count, per = args.octavia_services, args.octavia_endpoints
    hosts = [list(ipaddress.IPv4Network(s).hosts()) for s in subnets]

    def endpoint(n: int) -> tuple[str, str]:
        node = n % len(hosts)
        pool = hosts[node][len(hosts[node]) // 2:]  # the upper half: no pod's, in practice
        return str(pool[(n // len(hosts)) % len(pool)]), node_names[node]

    wait_idle(controller_pid, 60)
    mark = log.stat().st_size
    jobs: list[tuple[str, str, Any]] = []
    for i in range(count):
        jobs += _service_jobs(f"oc{i}", [endpoint(i * per + e) for e in range(per)])
    watch = LbWatch(state.nb)
    watch.wait(lambda rows: True, 10)
    ctrl0 = proc_cpu(controller_pid)
    cpu0 = benchlib.cpu_by_process()
    print(f"  {count} Services x {per} endpoints POSTed at once ({POSTERS} connections) ...",
          flush=True)
    t0 = time.monotonic()
    posted = _lab_parallel(state, jobs)
    services = kube_list(state, f"/api/v1/namespaces/{NAMESPACE}/services")
    ips = {s["spec"]["clusterIP"] for s in services if s["metadata"]["name"].startswith("oc")}
    if len(ips) != count:
        raise RuntimeError(f"{len(ips)} of {count} Services have a ClusterIP")

    def complete(rows: list[Any]) -> bool:
        full = 0
        for row in rows:
            for key, value in row.vips.items():
                if key.rsplit(":", 1)[0] in ips and len(value.split(",")) == per:
                    full += 1
        return full >= count

    nb_at = watch.wait(complete, OCTAVIA_CONVERGE_WAIT)
    watch.close()
    if nb_at < 0:
        raise RuntimeError(f"the NB did not get all {count} provider rows within "
                           f"{OCTAVIA_CONVERGE_WAIT:.0f} s; see {log}")
    ours = f"ovn-underlay:{NAMESPACE}/oc"
    polls = 0
    deadline = time.monotonic() + OCTAVIA_CONVERGE_WAIT
    while True:
        polls += 1
        lbs = [lb for lb in octavia.call("GET", "/lbaas/loadbalancers?tags=ovn-underlay")[
            "loadbalancers"] if str(lb["name"]).startswith(ours)]
        active = sum(lb["provisioning_status"] == "ACTIVE" for lb in lbs)
        if active == count:
            ids = {lb["id"] for lb in lbs}
            pools = [p for p in octavia.call("GET", "/lbaas/pools?tags=ovn-underlay")["pools"]
                     if any(ref["id"] in ids for ref in p.get("loadbalancers") or ())]
            if len(pools) == count and all(len(p.get("members") or ()) == per
                                           for p in pools):
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{active} of {count} load balancers ACTIVE after "
                               f"{OCTAVIA_CONVERGE_WAIT:.0f} s; see {log}")
        time.sleep(0.25)
    active_at = time.monotonic()
    ctrl_cpu = proc_cpu(controller_pid) - ctrl0
    cpu = benchlib.cpu_delta(cpu0, benchlib.cpu_by_process())
    done_deadline = time.monotonic() + 60
    syncs: list[Any] = []
    while time.monotonic() < done_deadline:  # the controller's own account of the burst
        syncs = list(SYNC_LINE.finditer(_read_from(log, mark)))
        if sum(int(m.group(2)) for m in syncs) >= count:
            break
        time.sleep(0.2)
    statuses = {}
    for lb in octavia.call("GET", "/lbaas/loadbalancers?tags=ovn-underlay")["loadbalancers"]:
        status = str(lb.get("operating_status"))
        statuses[status] = statuses.get(status, 0) + 1
    text = _read_from(log, mark)
    return {"services": count, "endpoints": per, "posts_s": posted - t0,
            "nb_rows_s": nb_at - t0, "active_s": active_at - t0,
            "octavia_polls_by_bench": polls, "controller_cpu_s": ctrl_cpu,
            "controller_memory_mib": proc_mem(controller_pid),
            "octavia_writes": sum(int(m.group(3)) for m in syncs),
            "syncs": [{"kind": m.group(1), "services": int(m.group(2)),
                       "writes": int(m.group(3)), "ms": int(m.group(4))} for m in syncs],
            "operating_status": statuses,
            "pending_warnings": text.count("pending (PENDING_"),
            "cpu_s": {k: v for k, v in cpu.items() if v >= 0.2}}


def kube_list(state: Any, path: str) -> list[dict[str, Any]]:
    from ovn_underlay.lab import kube

    items: list[dict[str, Any]] = kube.request(state, "GET", path)["items"]
    return items


def run_octavia_counterpart(args: argparse.Namespace) -> dict[str, Any]:
    """The OVN-direct controller on the Octavia part's count: the scale harness's
    ``controller`` case with ``--octavia-services`` x ``--octavia-endpoints`` over 2 node
    switches (as many as the lab's VMs)."""
    sub = argparse.Namespace(**vars(args))
    sub.services, sub.endpoints, sub.switches = (args.octavia_services,
                                                 args.octavia_endpoints, 2)
    print(f"octavia: the OVN-direct controller on the same count: {sub.services} Services x "
          f"{sub.endpoints} endpoints over 2 switches ...", flush=True)
    began = time.monotonic()
    result = scale_controller(sub)
    print(f"  done in {time.monotonic() - began:.0f} s", flush=True)
    return result


# -- report ---------------------------------------------------------------------------------

def _pct(samples: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(samples), "p99": benchlib.percentile(samples, 99),
            "max": max(samples), "min": min(samples)}


def _latency_row(run: dict[str, Any], name: str, figures: tuple[str, ...]) -> dict[str, Any]:
    """Path ``name``'s row of a latency run: the percentiles of each of ``figures``, of
    the first datagram with the backend on the client's node and on the other, and the
    share of the client's datagrams no backend received."""
    samples = run["samples"][name]
    row: dict[str, Any] = {fig: _pct([s[fig] for s in samples]) for fig in figures}
    for same in (True, False):
        chosen = [s["first_ms"] for s in samples if s["same_node"] == same]
        if chosen:
            row["first_ms_" + ("same_node" if same else "other_node")] = _pct(chosen)
    sent = run["datagrams_sent_per_vip"]
    row["lost"] = 1 - run["datagrams_received"][name] / sent if sent else 0.0
    return row


def report_latency(args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
    """Print part (a)'s table; its figures."""
    tables: dict[str, Any] = {}
    labels = {"controller": "EndpointSlice -> controller", "ovn": "OVN write alone (ref)"}
    print(f"\n(a) programming latency, {args.changes} changes per path, ms from the write's "
          f"answer (client every {args.interval_ms:g} ms, {len(run['backends'])} backends)")
    print(f"{'path':38s} {'write':>6s} {'first p50':>9s} {'p99':>6s} {'max':>6s} "
          f"{'old last p50':>12s} {'p99':>6s} {'lost':>6s}")
    for phase, part in run["phases"].items():
        table: dict[str, Any] = {}
        where = "" if phase == "idle" else f", +{args.loaded} Services"
        for name in part["samples"]:
            row = _latency_row(part, name, ("write_ms", "first_ms", "old_last_ms"))
            table[name] = row
            print(f"{labels[name] + where:38s} {row['write_ms']['p50']:6.1f} "
                  f"{row['first_ms']['p50']:9.1f} {row['first_ms']['p99']:6.1f} "
                  f"{row['first_ms']['max']:6.1f} {row['old_last_ms']['p50']:12.1f} "
                  f"{row['old_last_ms']['p99']:6.1f} {row['lost'] * 100:5.2f}%")
        if part["controller_sync_ms"]:
            table["controller_sync_ms"] = _pct([float(x) for x in part["controller_sync_ms"]])
        ctrl, ref = table["controller"]["first_ms"], table["ovn"]["first_ms"]
        table["added_by_controller_ms"] = {"p50": ctrl["p50"] - ref["p50"],
                                           "p99": ctrl["p99"] - ref["p99"]}
        table["controller_cpu_s"] = part["controller_cpu_s"]
        table["controller_transactions"] = part["controller_transactions"]
        tables[phase] = table
    for phase, table in tables.items():
        part = run["phases"][phase]
        ctrl, ref = table["controller"]["first_ms"], table["ovn"]["first_ms"]
        sync = table.get("controller_sync_ms", {}).get("p50", float("nan"))
        print(f"{phase}: the controller path adds {ctrl['p50'] - ref['p50']:.1f} ms at p50, "
              f"{ctrl['p99'] - ref['p99']:.1f} ms at p99; its own sync (its log) p50 "
              f"{sync:.0f} ms over {len(part['controller_sync_ms'])} syncs in "
              f"{part['controller_transactions']} NB transactions, "
              f"{part['controller_cpu_s']:.2f} s CPU; first datagram p50 with the backend on "
              "the client's node / the other: " + "; ".join(
                  f"{n} {t['first_ms_same_node']['p50']:.1f} / "
                  f"{t['first_ms_other_node']['p50']:.1f}" for n, t in table.items()
                  if isinstance(t, dict) and "first_ms_other_node" in t
                  and "first_ms_same_node" in t))
        print(f"{phase}: targets p50 < 100 ms {'met' if ctrl['p50'] < 100 else 'NOT met'} "
              f"({ctrl['p50']:.0f}), p99 < 500 ms {'met' if ctrl['p99'] < 500 else 'NOT met'} "
              f"({ctrl['p99']:.0f})")
        top = sorted(part["cpu_s"].items(), key=lambda kv: -kv[1])[:8]
        print(f"{phase}: CPU s during the changes: "
              + ", ".join(f"{k} {v:.1f}" for k, v in top))
    return tables


def report_scale(args: argparse.Namespace, runs: dict[str, Any]) -> dict[str, Any]:
    labels = {"controller": "group, controller", "group": "group, direct",
              "per-switch": "per switch, direct", "per-switch-small": "per switch, small txns"}
    print(f"\n(b) scale: {args.services} Services x {args.endpoints} endpoints, "
          f"{args.switches} node switches, NB + SB + ovn-northd")
    print(f"{'case':20s} {'rows s':>7s} {'SB s':>6s} {'NB txn':>6s} {'ctrl CPU':>8s} "
          f"{'ctrl MiB':>8s} {'northd CPU':>10s} {'NB CPU':>6s} {'SB CPU':>6s} "
          f"{'lflows':>7s} {'per dp':>8s} {'NB MiB':>6s} {'SB MiB':>6s} {'northd':>6s} "
          f"{'NB file':>8s}")
    table = {}
    for name, run in runs.items():
        mem = run["memory_mib"]
        ctrl_cpu = run.get("controller_cpu_s")
        ctrl_mem = run.get("controller_memory_mib", {}).get("peak_rss_mib")
        row = {"rows_s": run["rows_s"], "sb_settled_s": run["sb_settled_s"],
               "transactions": run["transactions"], "controller_cpu_s": ctrl_cpu,
               "controller_peak_rss_mib": ctrl_mem, "northd_cpu_s": run["cpu_s"]["northd"],
               "nb_cpu_s": run["cpu_s"]["nb"], "sb_cpu_s": run["cpu_s"]["sb"],
               "logical_flows": run["flows"]["logical_flows"],
               "logical_flows_added": (run["flows"]["logical_flows"]
                                       - run["flows_before"]["logical_flows"]),
               "flows_per_datapath": run["flows"]["flows_per_datapath"],
               "nb_rss_mib": mem["nb"]["rss_mib"], "sb_rss_mib": mem["sb"]["rss_mib"],
               "northd_rss_mib": mem["northd"]["rss_mib"],
               "nb_file_mib": run["nb_bytes"] / 2 ** 20}
        if "one_change" in run:
            row["one_change_northd_cpu_ms_p50"] = statistics.median(
                run["one_change"]["northd_cpu_ms"])
            row["one_change_to_sb_ms_p50"] = statistics.median(run["one_change"]["to_sb_ms"])
        table[name] = row
        print(f"{labels[name]:20s} {row['rows_s']:7.2f} {row['sb_settled_s']:6.1f} "
              f"{row['transactions']:6d} "
              f"{(f'{ctrl_cpu:.2f}' if ctrl_cpu is not None else '-'):>8s} "
              f"{(f'{ctrl_mem:.0f}' if ctrl_mem is not None else '-'):>8s} "
              f"{row['northd_cpu_s']:10.2f} {row['nb_cpu_s']:6.2f} {row['sb_cpu_s']:6.2f} "
              f"{row['logical_flows']:7d} {row['flows_per_datapath']:8d} "
              f"{row['nb_rss_mib']:6.0f} {row['sb_rss_mib']:6.0f} {row['northd_rss_mib']:6.0f} "
              f"{row['nb_file_mib']:7.1f}M")
    if "controller" in runs:
        run = runs["controller"]
        print(f"controller: POSTs took {run['posts_s']:.2f} s (API server CPU "
              f"{run['api_cpu_s']:.1f} s); syncs: " + ", ".join(
                  f"{s['kind'][:4]} {s['services']} svc/{s['transactions']} txn/{s['ms']} ms"
                  for s in run["syncs"]))
        if run.get("controller_errors"):
            print(f"controller: WARNING: {run['controller_errors'][:3]}")
        met = run["rows_s"] < 10
        print(f"target: converged < 10 s {'met' if met else 'NOT met'} ({run['rows_s']:.2f} s)")
    for name, row in table.items():
        if "one_change_to_sb_ms_p50" in row:
            print(f"{labels[name]}: then one Service changed alone ({ONE_CHANGES} times): "
                  f"northd CPU p50 {row['one_change_northd_cpu_ms_p50']:.0f} ms, in the SB "
                  f"after {row['one_change_to_sb_ms_p50']:.0f} ms (p50)")
    for other in ("per-switch", "per-switch-small"):
        if "group" not in table or other not in table:
            continue
        g, p = table["group"], table[other]
        ratios = {k: p[k] / g[k] for k in ("northd_cpu_s", "nb_cpu_s", "logical_flows",
                                           "flows_per_datapath", "nb_file_mib", "nb_rss_mib",
                                           "sb_settled_s", "one_change_northd_cpu_ms_p50",
                                           "one_change_to_sb_ms_p50") if g.get(k)}
        table[f"{other}_over_group"] = ratios
        print(f"{labels[other]} / group, direct: "
              + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    return table


def report_octavia(args: argparse.Namespace, run: dict[str, Any],
                   ovn_latency: dict[str, Any] | None) -> dict[str, Any]:
    """Print part (c)'s tables, side by side with the OVN-direct figures of this run; its
    figures."""
    table: dict[str, Any] = {"octavia_api_server": run["octavia_api_server"]}
    print(f"\n(c) Octavia (OVN provider), lab up in {run['lab_up_s']:.0f} s; octavia-api: "
          f"{run['octavia_api_server']}")
    lat = run.get("latency")
    if lat:
        print(f"programming latency, ms from the write: the OVN rows from its answer (part "
              f"a, client every {args.interval_ms:g} ms), the Octavia rows from its request "
              f"(Octavia answers a member update after ~1 s; {args.octavia_changes} changes "
              f"per path, each once its load balancer is ACTIVE, client every "
              f"{args.octavia_interval_ms:g} ms, {len(lat['backends'])} backends)")
        print(f"{'path':38s} {'n':>4s} {'write':>6s} {'first p50':>9s} {'p99':>6s} "
              f"{'max':>6s} {'ACTIVE p50':>10s} {'p99':>6s} {'lost':>6s}")
        rows: list[tuple[str, dict[str, Any]]] = []
        if ovn_latency and "idle" in ovn_latency:
            idle = ovn_latency["idle"]
            rows += [("OVN: EndpointSlice -> controller", idle["controller"]),
                     ("OVN: NB write alone (ref)", idle["ovn"])]
        for name, label in (("controller", "Octavia: EndpointSlice -> controller"),
                            ("octavia", "Octavia: API alone (ref)")):
            row = _latency_row(lat, name, ("write_ms", "first_ms", "active_ms", "old_last_ms"))
            row["changes"] = len(lat["samples"][name])
            table.setdefault("latency", {})[name] = row
            rows.append((label, row))
        for label, row in rows:
            active = row.get("active_ms")
            n = row.get("changes", args.changes)
            a50, a99 = ((f"{active['p50']:.0f}", f"{active['p99']:.0f}") if active
                        else ("-", "-"))
            print(f"{label:38s} {n:4d} {row['write_ms']['p50']:6.1f} "
                  f"{row['first_ms']['p50']:9.1f} {row['first_ms']['p99']:6.1f} "
                  f"{row['first_ms']['max']:6.1f} "
                  f"{a50:>10s} {a99:>6s} "
                  f"{row['lost'] * 100:5.2f}%")
        t = table["latency"]
        ctrl, ref = t["controller"]["first_ms"], t["octavia"]["first_ms"]
        t["added_by_controller_ms"] = {"p50": ctrl["p50"] - ref["p50"],
                                       "p99": ctrl["p99"] - ref["p99"]}
        if lat["controller_sync_ms"]:
            t["controller_sync_ms"] = _pct([float(x) for x in lat["controller_sync_ms"]])
        t["controller_cpu_s"] = lat["controller_cpu_s"]
        t["controller_octavia_writes"] = lat["controller_octavia_writes"]
        sync = t.get("controller_sync_ms", {}).get("p50", float("nan"))
        print(f"octavia: the controller path adds {ctrl['p50'] - ref['p50']:.1f} ms at p50, "
              f"{ctrl['p99'] - ref['p99']:.1f} ms at p99 over Octavia alone; its syncs (its "
              f"log, each until ACTIVE) p50 {sync:.0f} ms over {len(lat['controller_sync_ms'])}"
              f" syncs, {lat['controller_octavia_writes']} Octavia writes, "
              f"{lat['controller_cpu_s']:.2f} s CPU")
        if ovn_latency and "idle" in ovn_latency:
            ovn = ovn_latency["idle"]["controller"]["first_ms"]
            t["over_ovn_direct"] = {"p50": ctrl["p50"] / ovn["p50"],
                                    "p99": ctrl["p99"] / ovn["p99"]}
            print(f"octavia: EndpointSlice -> first datagram p50 {ctrl['p50']:.0f} ms against "
                  f"{ovn['p50']:.0f} ms OVN-direct ({ctrl['p50'] / ovn['p50']:.1f}x), p99 "
                  f"{ctrl['p99']:.0f} against {ovn['p99']:.0f} ms")
        top = sorted(lat["cpu_s"].items(), key=lambda kv: -kv[1])[:8]
        print("octavia: CPU s during the changes: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    sc = run.get("scale")
    if sc:
        ovn = run.get("ovn_counterpart")
        print(f"\n{sc['services']} Services x {sc['endpoints']} endpoints created at once "
              f"through the API, 2 node networks: s from the first POST")
        print(f"{'backend':24s} {'POSTs':>6s} {'NB rows':>8s} {'ACTIVE':>7s} {'writes':>7s} "
              f"{'ctrl CPU':>8s} {'ctrl MiB':>8s}")
        rowo = {"posts_s": sc["posts_s"], "nb_rows_s": sc["nb_rows_s"],
                "active_s": sc["active_s"], "octavia_writes": sc["octavia_writes"],
                "controller_cpu_s": sc["controller_cpu_s"],
                "controller_peak_rss_mib": sc["controller_memory_mib"]["peak_rss_mib"],
                "operating_status": sc["operating_status"]}
        table["scale"] = {"octavia": rowo}
        if ovn:
            rown = {"posts_s": ovn["posts_s"], "nb_rows_s": ovn["rows_s"],
                    "nb_transactions": ovn["transactions"],
                    "controller_cpu_s": ovn["controller_cpu_s"],
                    "controller_peak_rss_mib": ovn["controller_memory_mib"]["peak_rss_mib"]}
            table["scale"]["ovn"] = rown
            print(f"{'OVN-direct controller':24s} {rown['posts_s']:6.2f} "
                  f"{rown['nb_rows_s']:8.2f} {'-':>7s} {rown['nb_transactions']:5d} tx "
                  f"{rown['controller_cpu_s']:8.2f} {rown['controller_peak_rss_mib']:8.0f}")
        print(f"{'Octavia controller':24s} {rowo['posts_s']:6.2f} {rowo['nb_rows_s']:8.2f} "
              f"{rowo['active_s']:7.2f} {rowo['octavia_writes']:7d} "
              f"{rowo['controller_cpu_s']:8.2f} {rowo['controller_peak_rss_mib']:8.0f}")
        if ovn:
            table["scale"]["octavia_over_ovn"] = {
                "active_over_rows": sc["active_s"] / ovn["rows_s"],
                "controller_cpu": sc["controller_cpu_s"] / max(ovn["controller_cpu_s"], 1e-3)}
            print(f"Octavia / OVN-direct: converge (ACTIVE / NB rows) "
                  f"{sc['active_s'] / ovn['rows_s']:.0f}x, controller CPU "
                  f"{sc['controller_cpu_s'] / max(ovn['controller_cpu_s'], 1e-3):.1f}x")
        print("octavia: controller syncs: " + ", ".join(
            f"{s['kind'][:4]} {s['services']} svc/{s['writes']} writes/{s['ms']} ms"
            for s in sc["syncs"]) + f"; operating status {sc['operating_status']}; "
            f"{sc['pending_warnings']} pending warning(s)")
        top = sorted(sc["cpu_s"].items(), key=lambda kv: -kv[1])[:8]
        print("octavia: CPU s during the burst: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    if run.get("controller_errors"):
        print(f"octavia: controller errors: {run['controller_errors'][:3]}")
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    missing = [t for t in ("ovsdb-server", "ovn-northd", "ovn-nbctl", "ovsdb-client")
               if shutil.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (make deps)", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"machine": benchlib.machine(), "targets": TARGETS,
                              "params": {k: v for k, v in vars(args).items()
                                         if k not in ("inside", "json")}}
    runs: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    via = args.services_via
    if "scale" in args.parts and "ovn" in via:
        runs["scale"] = run_scale(args)
    if "latency" in args.parts and "ovn" in via:
        runs["latency"] = run_latency(args)
    if "octavia" in via:
        began = time.monotonic()
        runs["octavia"] = run_octavia(args)
        if "scale" in args.parts:
            runs["octavia"]["ovn_counterpart"] = run_octavia_counterpart(args)
        runs["octavia"]["took_s"] = time.monotonic() - began
    if "latency" in runs:
        tables["latency"] = report_latency(args, runs["latency"])
    if "scale" in runs:
        tables["scale"] = report_scale(args, runs["scale"])
    if "octavia" in runs:
        tables["octavia"] = report_octavia(args, runs["octavia"],
                                           tables.get("latency"))
    report.update(table=tables, runs=runs)
    benchlib.write_report(args.json, "services", report)
    if args.json is None:
        (benchlib.RESULTS / "services.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
