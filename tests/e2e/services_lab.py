"""A cluster-mode lab for the Services' data path, end to end through the real entry points.

Built as ``make demo`` builds its lab (:mod:`ovn_underlay.lab.kube_demo`): ``lab up
--kube`` (OVN, two VMs, the test API server with its EndpointSlice controller), the
UnderlayNode CRD and namespace, ``ovn-k8s-underlay controller`` in the hypervisor and
``ovn-k8s-underlay agent`` on each VM until its Node says NetworkUnavailable=False, then
containerd and the kubelet stand-in per VM.  Pods are API objects; the stand-ins run
them through containerd's CRI and the installed CNI plugin.  Services and EndpointSlices
are API objects too; the controller turns them into OVN load balancers.

The pods' container (the lab image is busybox-static) serves TCP with busybox ``nc -ll
-e echo NAME``: every connection is answered with the pod's name.  That busybox has no
UDP server of any kind (its ``nc`` has no ``-u``, and there is no ``udpsvd``), so the
UDP side of a backend is :class:`UdpNamers`: a thread of the test process inside the
pod's network namespace answering each datagram with ``NAME SOURCE-IP``.  Clients are
threads of the test process inside a pod's network namespace
(:func:`ovn_underlay.dataplane.nsenter.run_in_netns`, the sandbox's namespace path from
containerd's CRI as the demo finds it): nothing is addressed from outside the lab's
namespaces.

Waits are for what the next step needs, each with a deadline: Pods Ready (what the
kubelet stand-in reports), the controller's ``Load_Balancer`` rows in the NB as wanted,
then ``ovn-nbctl --wait=hv sync`` (every ovn-controller has the flows).

OVS 3.1.0 (Debian 12's) aborts the hypervisor's ovs-vswitchd now and then under this
traffic (an assertion in its userspace conntrack, measured in about 3 of 10 runs of the
module, also with TCP alone and no Service change); that instance carries every pod's
traffic.  :func:`retried_after_ovs_abort` starts it again, as ovs-ctl's monitor would,
and runs the test once more, saying so on stdout; any other failure stays a failure.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from ovn_underlay.dataplane.nsenter import enter_netns, run_in_netns
from ovn_underlay.lab import kube, kube_demo
from ovn_underlay.lab.containerd import Containerd
from ovn_underlay.lab.daemons import read_live_pid
from ovn_underlay.lab.topology import Lab, LabState, nbctl, start_hv_vswitchd
from tests.conftest import skip_unless_containerd_possible, skip_unless_lab_possible
from tests.waiting import eventually

NAMESPACE = "default"
ECHO_PORT = 9100
"""Where :class:`TcpEchoes` answer (in the pods they are started for)."""
TCP_PORT = 8080
"""Where a pod's container answers TCP (unless its spec says another number)."""
UDP_PORT = 8081
"""Where a pod's UDP namer answers."""
READY_TIMEOUT = 90.0
PROGRAMMED_TIMEOUT = 20.0
POLL = 0.05
NO_ANSWER = "-"
"""A client's record of an exchange that got no answer (a timeout)."""


@dataclass(frozen=True)
class PodSpec:
    """A Pod to make: its node, labels (``pod: <name>`` is always added) and TCP port."""

    name: str
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    port: int = TCP_PORT
    port_name: str = "web"
    udp: bool = False
    """Whether a UDP namer answers for it on :data:`UDP_PORT`."""


@dataclass(frozen=True)
class RunningPod:
    """A Ready Pod: its IP and its sandbox's network namespace (a path)."""

    name: str
    node: str
    ip: str
    netns: str


def pod_manifest(spec: PodSpec) -> dict[str, Any]:
    """The Pod: one container answering TCP connections on ``spec.port`` with its name."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": NAMESPACE,
                         "labels": {**spec.labels, "pod": spec.name}},
            "spec": {"nodeName": spec.node, "containers": [{
                "name": "namer", "image": "oul-busybox:lab",
                "command": ["nc", "-ll", "-p", str(spec.port), "-e", "echo", spec.name],
                "ports": [{"name": spec.port_name, "containerPort": spec.port,
                           "protocol": "TCP"},
                          {"name": "udp", "containerPort": UDP_PORT, "protocol": "UDP"}]}]}}


def service_port(name: str, port: int, target: int | str, protocol: str = "TCP"
                 ) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": target, "protocol": protocol}


def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """``check()`` until it gives something true (returned); AssertionError at the deadline
    naming ``what`` and the last value."""
    return eventually(check, timeout, what, POLL)


# --- clients (threads inside a pod's network namespace) ---------------------------------


def _read_all(sock: socket.socket) -> str:
    data = b""
    while chunk := sock.recv(256):
        data += chunk
    return data.decode().strip()


def tcp_once(ip: str, port: int, timeout: float) -> str:
    """One TCP exchange (run inside a namespace): the name answered, else ``!<error>``."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            return _read_all(sock) or "!empty"
    except TimeoutError:
        return NO_ANSWER
    except OSError as exc:
        return f"!{_error(exc)}"


def _error(exc: OSError) -> str:
    """``ConnectionRefusedError``, or the errno's name for a plain OSError (``EHOSTUNREACH``)."""
    if type(exc) is OSError and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def udp_once(ip: str, port: int, timeout: float, tries: int = 3) -> str:
    """One UDP exchange (run inside a namespace) from a fresh socket connected to
    ``ip:port`` (a new flow; only answers from ``ip:port`` are taken, as a resolver takes
    them), resent up to ``tries`` times on the same flow: the answer (``NAME SOURCE``),
    ``!<error>`` (an ICMP error: ``!ConnectionRefusedError``), else :data:`NO_ANSWER`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        for _ in range(tries):
            try:
                sock.send(b"?")
                return sock.recv(256).decode()
            except TimeoutError:
                continue
            except OSError as exc:
                return f"!{_error(exc)}"
    return NO_ANSWER


def _exchanges(once: Callable[[], str], count: int, give_up: int) -> Counter[str]:
    """``count`` exchanges, fewer once ``give_up`` of them got no answer (a data path that
    is gone should not cost a timeout per exchange); how many each answer got."""
    hits: Counter[str] = Counter()
    for _ in range(count):
        hits[once()] += 1
        if hits[NO_ANSWER] >= give_up:
            break
    return hits


def tcp_hits(client: RunningPod, ip: str, port: int, count: int,
             timeout: float = 2.0, give_up: int = 3) -> Counter[str]:
    """``count`` TCP connections from ``client``: how many each answer (name) got."""
    return run_in_netns(client.netns, lambda: _exchanges(
        lambda: tcp_once(ip, port, timeout), count, give_up))


def udp_hits(client: RunningPod, ip: str, port: int, count: int,
             timeout: float = 0.5, give_up: int = 3) -> Counter[str]:
    """``count`` UDP flows from ``client``: how many each answering name got."""
    return run_in_netns(client.netns, lambda: _exchanges(
        lambda: udp_once(ip, port, timeout).split(" ")[0], count, give_up))


def tcp_try(client: RunningPod, ip: str, port: int, timeout: float) -> tuple[str, float]:
    """One TCP connect from ``client``: how it ended (``connected``, ``timeout`` or the
    error's name) and after how many seconds."""

    def attempt() -> tuple[str, float]:
        start = time.monotonic()
        try:
            socket.create_connection((ip, port), timeout=timeout).close()
            outcome = "connected"
        except TimeoutError:
            outcome = "timeout"
        except OSError as exc:
            outcome = _error(exc)
        return outcome, time.monotonic() - start

    return run_in_netns(client.netns, attempt)


class TcpStream:
    """TCP connections from a pod one after another until stopped: (start time, answer)
    of each, in a thread of its own inside the pod's namespace."""

    def __init__(self, client: RunningPod, ip: str, port: int, timeout: float = 0.5,
                 pace: float = 0.02) -> None:
        """``pace``: seconds from one connection's start to the next's at the least."""
        self.client, self.ip, self.port, self.timeout = client, ip, port, timeout
        self.pace = pace
        self.hits: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{client.name}",
                                        daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            enter_netns(self.client.netns)
            while not self._stop.is_set():
                start = time.monotonic()
                self.hits.append((start, tcp_once(self.ip, self.port, self.timeout)))
                self._stop.wait(max(0.0, start + self.pace - time.monotonic()))
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> TcpStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def seen(self) -> set[str]:
        return {answer for _, answer in list(self.hits)}


class UdpNamers:
    """For each pod given, a thread inside its namespace answering every datagram on
    :data:`UDP_PORT` with ``NAME SOURCE-IP`` (the address the datagram came from)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, pod: RunningPod) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                enter_netns(pod.netns)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind(("0.0.0.0", UDP_PORT))
                    sock.settimeout(0.2)
                    ready.set()
                    while not self._stop.is_set():
                        try:
                            _, peer = sock.recvfrom(256)
                        except TimeoutError:
                            continue
                        sock.sendto(f"{pod.name} {peer[0]}".encode(), peer)
            except BaseException as exc:
                failure.append(exc)
                ready.set()

        thread = threading.Thread(target=serve, name=f"udp-{pod.name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        assert ready.wait(10) and not failure, failure

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


class TcpEchoes:
    """For each pod given, a thread inside its namespace accepting TCP connections on
    :data:`ECHO_PORT` and answering each message on them with ``NAME:MESSAGE``, for as long
    as the client keeps the connection (the containers' ``nc -e echo`` closes at once)."""

    def __init__(self, *pods: RunningPod) -> None:
        self.pods = pods
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TcpEchoes:
        for pod in self.pods:
            ready = threading.Event()
            thread = threading.Thread(target=self._serve, args=(pod, ready), daemon=True,
                                      name=f"echo-{pod.name}")
            thread.start()
            self._threads.append(thread)
            assert ready.wait(10), f"no echo server in {pod.name}"
        return self

    def _serve(self, pod: RunningPod, ready: threading.Event) -> None:
        enter_netns(pod.netns)
        with socket.create_server(("0.0.0.0", ECHO_PORT)) as server:
            server.settimeout(0.2)
            ready.set()
            while not self._stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._echo, args=(pod, conn), daemon=True).start()

    def _echo(self, pod: RunningPod, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    data = conn.recv(256)
                except TimeoutError:
                    continue
                if not data:
                    return
                conn.sendall(pod.name.encode() + b":" + data)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


# --- the lab --------------------------------------------------------------------------


class ServicesLab:
    """The running lab: Pods, Services and slices through the API; the NB's rows read."""

    def __init__(self, lab: Lab, state: LabState, engines: dict[str, Containerd]) -> None:
        self.lab, self.state, self.engines = lab, state, engines
        self.pods: dict[str, RunningPod] = {}
        self.udp = UdpNamers()
        self.timings: dict[str, float] = {}
        self.aborts: list[str] = []
        """The tests retried after an ovs-vswitchd abort, with its log line."""

    def api(self, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> Any:
        return kube.request(self.state, method, path, body, content_type)

    # -- pods ------------------------------------------------------------------------
    def make_pods(self, specs: list[PodSpec]) -> dict[str, RunningPod]:
        """Create the Pods through the API; once all are Ready, their IPs and namespaces
        (UDP namers started for those that want one)."""
        for spec in specs:
            self.api("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod_manifest(spec))
        names = {s.name for s in specs}

        def ready() -> dict[str, Any]:
            items = self.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
            found = {p["metadata"]["name"]: p for p in items if p["metadata"]["name"] in names}
            return found if len(found) == len(names) and all(
                kube_demo._ready(p) for p in found.values()) else {}

        found = wait_until(f"Pods {sorted(names)} Ready", ready, READY_TIMEOUT)
        for spec in specs:
            pod = found[spec.name]
            path = kube_demo._sandbox_netns(self.engines[spec.node], str(pod["metadata"]["uid"]))
            self.pods[spec.name] = RunningPod(spec.name, spec.node, str(pod["status"]["podIP"]),
                                              path)
            if spec.udp:
                self.udp.start(self.pods[spec.name])
        return {s.name: self.pods[s.name] for s in specs}

    def pod(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"))

    def set_ready(self, name: str, ready: bool) -> None:
        """Patch the Pod's status conditions Ready and ContainersReady, as kubelet does
        when a readiness probe changes its mind (the stand-in never writes a Pod's status
        again once it reported it Ready)."""
        flag = "True" if ready else "False"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [dict(c, status=flag, lastTransitionTime=now)
                      if c.get("type") in ("Ready", "ContainersReady") else c
                      for c in self.pod(name)["status"]["conditions"]]
        self.api("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/status",
                 {"status": {"conditions": conditions}}, "application/merge-patch+json")

    # -- services and slices ---------------------------------------------------------
    def create_service(self, name: str, ports: list[dict[str, Any]],
                       selector: dict[str, str] | None = None, **spec: Any) -> str:
        """Create a ClusterIP Service; its ClusterIP."""
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"ports": ports, **({"selector": selector} if selector else {}),
                         **spec}}
        made = self.api("POST", f"/api/v1/namespaces/{NAMESPACE}/services", body)
        return str(made["spec"]["clusterIP"])

    def delete_service(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):  # 404: gone already
            self.api("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/{name}")

    @contextlib.contextmanager
    def service(self, name: str, ports: list[dict[str, Any]],
                selector: dict[str, str] | None = None, **spec: Any) -> Iterator[str]:
        """A Service for the block (deleted after it); yields its ClusterIP."""
        ip = self.create_service(name, ports, selector, **spec)
        try:
            yield ip
        finally:
            self.delete_service(name)

    def create_slice(self, name: str, service: str, ports: list[dict[str, Any]],
                     endpoints: list[RunningPod]) -> None:
        """An EndpointSlice written as a user writes one for a Service without selector."""
        self.api("POST", f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [p.ip], "conditions": {"ready": True},
                           "nodeName": p.node} for p in endpoints]})

    def delete_slice(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.api("DELETE",
                     f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices/{name}")

    # -- the NB ----------------------------------------------------------------------
    def rows(self, service: str) -> dict[str, dict[str, Any]]:
        """The controller's Load_Balancer rows of Service ``service`` (its name in
        :data:`NAMESPACE`) by row name: ``vips`` (VIP -> set of backends), ``options``,
        ``selection_fields``."""
        out = json.loads(nbctl(self.state.nb, "--format=json", "--columns=name,vips,options,"
                               "selection_fields,external_ids", "list", "Load_Balancer"))
        rows = {}
        for name, vips, options, fields, ext in out["data"]:
            if dict(ext[1]).get("ovn-underlay:service") != f"{NAMESPACE}/{service}":
                continue
            rows[name] = {"vips": {k: set(filter(None, v.split(","))) for k, v in vips[1]},
                          "options": dict(options[1]),
                          "selection_fields": [fields] if isinstance(fields, str)
                          else fields[1]}
        return rows

    def wait_rows(self, service: str, want: Callable[[dict[str, dict[str, Any]]], bool],
                  what: str) -> dict[str, dict[str, Any]]:
        """Wait until the rows of ``service`` satisfy ``want``, then until every chassis
        has the flows (``--wait=hv``); the rows."""
        start = time.monotonic()

        def check() -> tuple[dict[str, dict[str, Any]]] | None:
            rows = self.rows(service)
            return (rows,) if want(rows) else None

        (rows,) = wait_until(f"{service}: {what}", check, PROGRAMMED_TIMEOUT)
        self.timings[f"{service}: {what}"] = time.monotonic() - start
        self.hv_sync()
        return dict(rows)

    def wait_backends(self, service: str, vip: str,
                      backends: dict[str | None, set[str]]) -> dict[str, dict[str, Any]]:
        """Wait until ``vip`` (``IP:PORT``) has exactly ``backends`` (``IP:PORT``s) in the
        Service's row of each node given (None: the cluster-wide row), then for the
        chassis."""

        def want(rows: dict[str, dict[str, Any]]) -> bool:
            by_node = {name.split("_node_")[1] if "_node_" in name else None: row
                       for name, row in rows.items() if vip in row["vips"]}
            return all(node in by_node and by_node[node]["vips"][vip] == wanted
                       for node, wanted in backends.items())

        return self.wait_rows(service, want, f"{vip} -> {backends}")

    def wait_gone(self, service: str) -> None:
        self.wait_rows(service, lambda rows: not rows, "no rows")

    def hv_sync(self) -> None:
        nbctl(self.state.nb, "--wait=hv", "sync")

    def restart_hv_vswitchd(self) -> float:
        """Start the hypervisor's ovs-vswitchd again, as the monitor of ovs-ctl would after
        a crash, and wait until pods reach each other again; seconds it took."""
        start = time.monotonic()
        start_hv_vswitchd(self.state)  # with the lab's conntrack workaround, as at lab up
        c1, w1 = self.pods["c1"], self.pods["w1"]
        wait_until("pods reach each other after ovs-vswitchd's restart",
                   lambda: tcp_hits(c1, w1.ip, TCP_PORT, 1, timeout=0.5) == Counter(w1=1),
                   PROGRAMMED_TIMEOUT)
        self.hv_sync()
        return time.monotonic() - start

    def recover(self, what: str) -> bool:
        """If the hypervisor's ovs-vswitchd aborted in its conntrack
        (:data:`OVS_CONNTRACK_ABORT`), start it again, record and print it: True.  False
        when the data path runs, or stopped for another reason (left as it is)."""
        problem = self.datapath_problem()
        if problem is None or OVS_CONNTRACK_ABORT not in problem:
            return False
        took = self.restart_hv_vswitchd()
        self.aborts.append(f"{what}: {problem}")
        print(f"OVS ABORT: {what}, because {problem}; ovs-vswitchd started again, pods "
              f"reaching each other {took:.1f}s later", flush=True)
        return True

    def datapath_problem(self) -> str | None:
        """Why the lab's data path is gone (an ovs-vswitchd that is no longer running, with
        the EMER lines of its log), or None.

        OVS 3.1.0's userspace conntrack can abort ovs-vswitchd under many short NATed
        connections (``conntrack.c:1063: assertion conn->conn_type ==
        CT_CONN_TYPE_DEFAULT failed in conn_update_state()``, seen here after 2,000 to
        10,000 connections through a ClusterIP); the hypervisor's instance carries every
        pod's traffic, so after that nothing answers.  The lab's workaround
        (:func:`ovn_underlay.lab.topology.hide_ct_zero_snat`) keeps it from happening
        (no abort in ~200,000 connections); this stays as the net should it come back.
        """
        pidfiles = [("hypervisor", self.state.daemons.get("vswitchd", ""))]
        pidfiles += [(vm.name, vm.daemons.get("vswitchd", "")) for vm in self.state.vms]
        for where, pidfile in pidfiles:
            if pidfile and read_live_pid(Path(pidfile)) is None:
                log = Path(pidfile).with_suffix(".log")
                lines = log.read_text(errors="replace").splitlines() if log.exists() else []
                last = [line for line in lines if "|EMER|" in line] or lines[-1:]
                return f"ovs-vswitchd of the {where} is not running; its log ends: {last}"
        return None


def bring_up(lab: Lab, pods: list[PodSpec]) -> Iterator[ServicesLab]:
    """The lab as ``make demo`` makes it, with ``pods`` Ready; taken down after the yield
    (for a fixture: ``yield from bring_up(...)``)."""
    skip_unless_lab_possible()
    skip_unless_containerd_possible()
    lab.down()  # what a killed run left
    started = time.monotonic()
    state = lab.up(2, kube=True)
    running: ServicesLab | None = None
    try:
        timings = {"lab up": time.monotonic() - started}
        kube_demo._start_cluster_mode(lab, state)
        timings["controller and agents"] = time.monotonic() - started - sum(timings.values())
        engines = {vm.name: kube.start_node(lab, state, vm) for vm in state.vms}
        timings["containerd and kubelets"] = time.monotonic() - started - sum(timings.values())
        running = ServicesLab(lab, state, engines)
        running.make_pods(pods)
        timings[f"{len(pods)} Pods Ready"] = time.monotonic() - started - sum(timings.values())
        print("lab " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()), flush=True)
        yield running
        if running.aborts:
            print(f"ovs-vswitchd of the hypervisor aborted {len(running.aborts)} time(s): "
                  f"{running.aborts}", flush=True)
    finally:
        if running is not None:
            running.udp.stop()
        lab.down()


OVS_CONNTRACK_ABORT = "assertion conn->conn_type == CT_CONN_TYPE_DEFAULT failed"
"""What OVS 3.1.0's ovs-vswitchd logs when its userspace conntrack aborts it (see
:meth:`ServicesLab.datapath_problem`)."""

Test = TypeVar("Test", bound=Callable[..., None])


def retried_after_ovs_abort(test: Test) -> Test:
    """Run ``test`` (its first argument the :class:`ServicesLab`) once more, and say so,
    when it failed because the hypervisor's ovs-vswitchd aborted in its conntrack
    (:data:`OVS_CONNTRACK_ABORT`): ovs-vswitchd is started again first, as ovs-ctl's
    monitor would.  Any other failure, or a second abort, fails the test."""

    @functools.wraps(test)
    def run(svc_lab: ServicesLab, *args: Any, **kwargs: Any) -> None:
        try:
            test(svc_lab, *args, **kwargs)
            return
        except Exception as exc:
            if not svc_lab.recover(f"{test.__name__} failed ({type(exc).__name__}: "
                                   f"{str(exc)[:200]})"):
                raise
        print(f"RETRIED: {test.__name__}", flush=True)
        test(svc_lab, *args, **kwargs)

    return cast(Test, run)


PODS = [
    *(PodSpec(name, node, {"app": "web", "at": node}, udp=True)
      for name, node in (("w1", "vm1"), ("w2", "vm1"), ("w3", "vm2"))),
    *(PodSpec(name, node, {"role": "client"}) for name, node in (("c1", "vm1"),
                                                                  ("c2", "vm2"))),
    *(PodSpec(name, node, {"app": "named"}, port=port, port_name="srv")
      for name, node, port in (("n1", "vm1", 9001), ("n2", "vm2", 9002))),
    *(PodSpec(name, node, {"app": "flip"}) for name, node in (("r1", "vm1"), ("r2", "vm2"))),
]
"""The module's Pods: backends ``w*`` (``app=web``; TCP 8080 and UDP 8081) two on vm1 and
one on vm2, clients ``c1`` (vm1) and ``c2`` (vm2), ``n*`` whose TCP port named ``srv`` is
9001 on vm1 and 9002 on vm2, and ``r*`` for the readiness test alone."""


@pytest.fixture(scope="module")
def svc_lab(lab_rundir: Path) -> Iterator[ServicesLab]:
    """The module's lab (:func:`bring_up`) with :data:`PODS` Ready."""
    yield from bring_up(Lab(f"st{os.getpid() % 1000}", lab_rundir), PODS)
