"""Pod start-up through Kubernetes: create to IP in status and gateway reachable, ours vs reference.

    .venv/bin/python bench/pod_ready.py [--pods 100] [--modes daemon reference]

Brings up a two-VM lab (``--lab``, default ``bp1``), makes both VMs nodes
(node-init + lswitch-setup through the CLI, a pool big enough for every pod
at once, refill off), runs the test API server in this process and, per VM,
containerd (:mod:`ovn_underlay.lab.containerd`) with a kubelet stand-in
(:mod:`ovn_underlay.lab.kubelet`), as tests/e2e/test_containerd.py wires them.
The stand-in gets one worker per pod (``--workers``, kubelet's pod workers
run concurrently; the stand-in's default is 4).

Then, per mode, N Pods (``--pods``) split over both nodes are POSTed at once
(8 client threads) and a watch on the pods records, per pod, from the
moment its POST returned:

* ``ip``: the status update carrying ``podIP`` (the stand-in sets it after
  RunPodSandbox, CreateContainer, StartContainer and PodSandboxStatus);
* ``gateway``: the first answer to a ping of the pod's default gateway, sent
  from the pod's network namespace by this script as soon as the IP shows
  (one ``ping -c 1 -W 1`` after another);
* ``ready``: the status update with Ready=True (the stand-in's TCP connect to
  podIP:8080 from the pod's own namespace, every 0.2 s: it proves the
  container listens, not the network);
* ``pod ready``: the later of ``gateway`` and ``ready``, the headline figure.

The modes, each behind the same containerd (restarted in between):

* ``daemon``: our CNI binary (the native shim) forwarding to the node daemon
  (``ovn-k8s-underlay daemon``, the fast path);
* ``reference``: Debian's ``bridge`` + ``host-local`` (/usr/lib/cni) from a
  conflist that sorts first in the VM's CNI conf dir (containerd takes one):
  a bridge with ``isGateway``, 198.18.10<i>.0/24 on VM i and a default
  route via the bridge (host-local ``routes``); pods reach only
  their own node, which is enough for timing.

The CNI share: containerd's CNI bin dir links the main plugin to a bash
wrapper that notes ``$EPOCHREALTIME`` around the real binary (bridge calls
host-local inside it; containerd's loopback call, the same in both modes, is
not counted; the wrapper's own start, ~1-2 ms, is not in the figure).  The
daemon's own time per ADD (its log line "ADD ... in X ms") is reported too.

Prints a table (p50, p99, max in ms; pods/s from the first create to the
last pod ready) and the ratios ours / reference, and writes everything as
JSON to ``bench/results/pod_ready-<time>.json`` (``--json``).  The lab is
removed at the end (``--keep`` leaves it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import benchlib

MODES = ("daemon", "reference")
NAMESPACE = "default"
PORT = 8080
POSTERS = 8
GATEWAY_CHECKERS = 8
WAIT = 600.0
DELETE_WAIT = 300.0
REFERENCE_PLUGINS = Path("/usr/lib/cni")
REFERENCE_CONFLIST = "00-bench-reference.conflist"
REFERENCE_BRIDGE = "cnibench0"
CNI_VERSION = "1.0.0"
DAEMON_LINE = re.compile(r"ADD (\w+)/eth0 pod [^/]+/(\S+): port .* in ([\d.]+) ms")
FIGURES = ("ip", "gateway", "ready", "pod_ready")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=100, help="pods per mode (default: 100)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="what to time (default: both)")
    p.add_argument("--workers", type=int, default=0,
                   help="kubelet stand-in workers per node (default: one per pod)")
    benchlib.add_lab_options(p, "bp1", "pod_ready")
    args = p.parse_args(argv)
    if not 2 <= args.pods <= 400:
        p.error("--pods must be 2..400 (two /24 node subnets)")
    return args


# -- the cluster ----------------------------------------------------------------------------

class KubeNode:
    """One VM as a Kubernetes node: the lab Node, its containerd, its kubelet stand-in."""

    def __init__(self, node: Any, engine: Any) -> None:
        self.node = node
        self.engine = engine
        self.kubelet: Any = None
        self.wrap_dir = Path(node.vm.rundir) / "bench-pod-ready"
        self.timing_log = self.wrap_dir / "cni-times.log"

    def start(self, api_url: str, plugin: str, workers: int) -> None:
        """containerd with ``plugin`` wrapped for timing, then a kubelet stand-in."""
        from ovn_underlay.lab.kubelet import KubeletStandIn

        self.engine.prepare()
        self._wrap(plugin)
        sock = self.engine.start()
        self.kubelet = KubeletStandIn(api_url, self.node.vm.name, str(sock),
                                      node_ip=self.node.vm.ip)
        # kubelet runs each pod's worker concurrently; the stand-in's pool has 4 threads
        self.kubelet._pool.shutdown(wait=False)
        self.kubelet._pool = ThreadPoolExecutor(max_workers=workers,
                                                thread_name_prefix=f"kubelet-{self.node.vm.name}")
        self.kubelet.start()

    def _wrap(self, plugin: str) -> None:
        """Link containerd's CNI bin dir's ``plugin`` to a wrapper timing the real one."""
        self.wrap_dir.mkdir(parents=True, exist_ok=True)
        real = (self.node.cni_bin_dir / plugin if (self.node.cni_bin_dir / plugin).exists()
                else REFERENCE_PLUGINS / plugin)
        wrapper = self.wrap_dir / f"timed-{plugin}"
        wrapper.write_text(
            "#!/bin/bash\n"
            "s=$EPOCHREALTIME\n"
            f"{real} \"$@\"\n"
            "rc=$?\n"
            "e=$EPOCHREALTIME\n"
            f"echo \"$CNI_COMMAND $CNI_CONTAINERID $s $e $rc\" >> {self.timing_log}\n"
            "exit $rc\n")
        wrapper.chmod(0o755)
        links = {plugin: wrapper}
        if plugin == "bridge":
            links["host-local"] = REFERENCE_PLUGINS / "host-local"
        for name, target in links.items():
            link = self.engine.cni_bin_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(target)

    def unwrap(self) -> None:
        """Give containerd's CNI bin dir back its plain links."""
        for name in ("bridge", "host-local"):
            (self.engine.cni_bin_dir / name).unlink(missing_ok=True)
        for plugin in self.node.cni_bin_dir.iterdir():
            link = self.engine.cni_bin_dir / plugin.name
            link.unlink(missing_ok=True)
            link.symlink_to(plugin)

    def stop(self) -> None:
        """Stop the kubelet stand-in and containerd (removing what sandboxes are left)."""
        try:
            if self.kubelet is not None:
                self.kubelet.stop()
                self.kubelet = None
        finally:
            self.engine.close()

    def cni_times(self) -> dict[str, list[float]]:
        """Sandbox id -> durations (ms) of its CNI ADDs, from the wrapper's log."""
        out: dict[str, list[float]] = {}
        if not self.timing_log.exists():
            return out
        for line in self.timing_log.read_text().splitlines():
            command, sandbox, start, end, code = line.split()
            if command == "ADD" and code == "0":
                out.setdefault(sandbox, []).append((float(end) - float(start)) * 1000)
        return out


def request(api_url: str, method: str, path: str, body: Any = None) -> Any:
    """One request to the test API server."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api_url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as reply:
        return json.loads(reply.read() or b"null")


def pod_manifest(name: str, node: str) -> dict[str, Any]:
    """A Pod bound to ``node`` (no scheduler), serving HTTP on PORT."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
            "spec": {"nodeName": node, "containers": [
                {"name": "web", "image": "oul-busybox:lab",
                 "ports": [{"containerPort": PORT, "protocol": "TCP"}]}]}}


def is_ready(pod: dict[str, Any]) -> bool:
    """Whether the Pod's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


# -- one timed burst ------------------------------------------------------------------------

class Burst:
    """N pods created at once; when each got its IP, reached its gateway, became Ready."""

    def __init__(self, api_url: str, nodes: list[KubeNode], names: list[str]) -> None:
        self.api_url = api_url
        self.nodes = nodes
        self.names = names
        self.node_of = {name: nodes[i % len(nodes)] for i, name in enumerate(names)}
        self.created: dict[str, float] = {}
        self.post_started = 0.0
        self.times: dict[str, dict[str, float]] = {n: {} for n in names}
        self.uids: dict[str, str] = {}
        self.gateways: dict[str, str] = {}
        self.pings: dict[str, int] = {}
        """Pod name -> pings sent until its gateway answered."""
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._checkers = ThreadPoolExecutor(GATEWAY_CHECKERS, thread_name_prefix="gw")

    def run(self) -> None:
        """Create the pods, wait for all to be ready (or fail)."""
        listing = request(self.api_url, "GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
        watcher = threading.Thread(target=self._watch,
                                   args=(listing["metadata"]["resourceVersion"],), daemon=True)
        watcher.start()
        self.post_started = time.monotonic()
        with ThreadPoolExecutor(POSTERS) as posters:
            list(posters.map(self._create, self.names))
        deadline = time.monotonic() + WAIT
        while not self._done.wait(0.5):
            errors = [e for k in self.nodes for e in k.kubelet.errors]
            if errors:
                raise RuntimeError(f"the kubelet stand-in failed: {errors[:3]}")
            if time.monotonic() > deadline:
                late = [n for n in self.names if "pod_ready" not in self.times[n]]
                raise RuntimeError(f"{len(late)} pods not ready within {WAIT:.0f}s: {late[:5]}")
        self._checkers.shutdown(wait=True)

    def _create(self, name: str) -> None:
        pod = request(self.api_url, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods",
                      pod_manifest(name, self.node_of[name].node.vm.name))
        with self._lock:
            self.created[name] = time.monotonic()
            self.uids[name] = pod["metadata"]["uid"]

    def _watch(self, resource_version: str) -> None:
        query = urllib.parse.urlencode({"watch": "true", "resourceVersion": resource_version,
                                        "timeoutSeconds": str(int(WAIT) + 60)})
        url = f"{self.api_url}/api/v1/namespaces/{NAMESPACE}/pods?{query}"
        with urllib.request.urlopen(url, timeout=WAIT + 60) as stream:
            for line in stream:
                if not line.strip():
                    continue
                now = time.monotonic()
                event = json.loads(line)
                pod = event.get("object") or {}
                name = pod.get("metadata", {}).get("name")
                if name not in self.times or event.get("type") != "MODIFIED":
                    continue
                seen = self.times[name]
                if "ip" not in seen and pod.get("status", {}).get("podIP"):
                    seen["ip"] = now
                    self._checkers.submit(self._gateway, name, pod["metadata"]["uid"])
                if "ready" not in seen and is_ready(pod):
                    seen["ready"] = now
                    self._maybe_done(name)
                if self._done.is_set():
                    return

    def _gateway(self, name: str, uid: str) -> None:
        try:
            netns = self.node_of[name].kubelet.netns[uid]
            route = subprocess.run(["nsenter", f"--net={netns}", "ip", "-4", "-j", "route",
                                    "show", "default"], capture_output=True, text=True,
                                   check=True).stdout
            gateway = json.loads(route)[0]["gateway"]
            self.gateways[name] = gateway
            deadline = time.monotonic() + 60
            self.pings[name] = 1
            while subprocess.run(["nsenter", f"--net={netns}", "ping", "-c", "1", "-W", "1",
                                  "-q", gateway], capture_output=True,
                                 check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway {gateway} did not answer within 60 s")
                self.pings[name] += 1
            self.times[name]["gateway"] = time.monotonic()
        except Exception as exc:
            with self._lock:
                self.problems.append(f"{name}: {exc}")
            self.times[name]["gateway"] = float("nan")
        self._maybe_done(name)

    def _maybe_done(self, name: str) -> None:
        with self._lock:
            seen = self.times[name]
            if "ready" in seen and "gateway" in seen and "pod_ready" not in seen:
                seen["pod_ready"] = max(seen["ready"], seen["gateway"])
                if all("pod_ready" in self.times[n] for n in self.names):
                    self._done.set()

    def delete(self) -> float:
        """Delete every pod; seconds until the API server holds none."""
        started = time.monotonic()
        with ThreadPoolExecutor(POSTERS) as posters:
            list(posters.map(lambda n: request(
                self.api_url, "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{n}"),
                self.names))
        deadline = time.monotonic() + DELETE_WAIT
        while request(self.api_url, "GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods still there {DELETE_WAIT:.0f}s after DELETE")
            time.sleep(0.2)
        return time.monotonic() - started

    def samples(self) -> dict[str, list[float]]:
        """Per figure, ms from each pod's create."""
        return {fig: [(self.times[n][fig] - self.created[n]) * 1000 for n in self.names]
                for fig in FIGURES}


# -- outside: the lab, the nodes, the modes -------------------------------------------------

def main_run(args: argparse.Namespace) -> int:
    """Set the lab up, run every mode, report."""
    from ovn_underlay.lab.cluster import Node
    from ovn_underlay.lab.containerd import Containerd, missing_python_packages, missing_tools
    from ovn_underlay.lab.kubeapi import KubeApiServer
    from ovn_underlay.lab.topology import Lab

    missing = missing_tools() + missing_python_packages()
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    lab = Lab(args.lab, Path(args.rundir))
    state = lab.up(2)
    server = KubeApiServer().start()
    nodes: list[KubeNode] = []
    runs: dict[str, dict[str, Any]] = {}
    try:
        per_node = -(-args.pods // 2)
        pool = per_node + 4
        for vm in state.vms:
            node = Node(state, vm)
            sock = f"{vm.rundir}/daemon/cni.sock"
            node.init("--daemon-socket", sock, "--pool-low", "0", "--pool-high", str(pool),
                      "--metrics-address", "off")
            node.setup_switch(pool_size=pool)
            nodes.append(KubeNode(node, Containerd(node)))
        workers = args.workers or per_node
        for mode in args.modes:
            runs[mode] = _run_mode(args, server.url, nodes, mode, workers)
    finally:
        try:
            for kube_node in nodes:
                with contextlib.suppress(Exception):
                    kube_node.stop()
                with contextlib.suppress(Exception):
                    kube_node.unwrap()
                (kube_node.node.cni_conf_dir / REFERENCE_CONFLIST).unlink(missing_ok=True)
        finally:
            server.stop()
            if not args.keep:
                lab.down()
    report = _report(args, runs)
    benchlib.write_report(args.json, "pod_ready", report)
    return 0


def _run_mode(args: argparse.Namespace, api_url: str, nodes: list[KubeNode], mode: str,
              workers: int) -> dict[str, Any]:
    print(f"{mode}: {args.pods} pods over {len(nodes)} nodes ...", flush=True)
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        for kube_node in nodes:
            conf = kube_node.node.cni_conf_dir / REFERENCE_CONFLIST
            if mode == "reference":
                plugin = "bridge"
                conf.write_text(json.dumps(_reference_conflist(kube_node)))
            else:
                conf.unlink(missing_ok=True)
                ours = json.loads((kube_node.node.cni_conf_dir / "10-ovn-underlay.conflist")
                                  .read_text())
                plugin = ours["plugins"][0]["type"]
                daemons.append(benchlib.start_daemon(
                    kube_node.node, f"{kube_node.node.vm.rundir}/daemon/cni.sock"))
            kube_node.timing_log.unlink(missing_ok=True)
            kube_node.start(api_url, plugin, workers)
        _warm_up(api_url, nodes, mode)
        names = [f"{mode[:3]}-{i}" for i in range(args.pods)]
        burst = Burst(api_url, nodes, names)
        cpu_before = benchlib.cpu_by_process()
        burst.run()
        cpu = benchlib.cpu_delta(cpu_before, benchlib.cpu_by_process())
        sandboxes = {n: burst.node_of[n].kubelet.sandboxes[burst.uids[n]] for n in names}
        deleted_s = burst.delete()
        cni = {}
        for kube_node in nodes:
            cni.update(kube_node.cni_times())
        cni_ms = {n: sum(cni.get(sandboxes[n], [])) for n in names}
        daemon_ms = _daemon_times(nodes, sandboxes) if mode == "daemon" else {}
        first = burst.post_started
        last = max(t["pod_ready"] for t in burst.times.values())
        return {"samples_ms": burst.samples(), "cni_add_ms": [cni_ms[n] for n in names],
                "daemon_add_ms": [daemon_ms[n] for n in names if n in daemon_ms],
                "cni_adds_per_pod": [len(cni.get(sandboxes[n], [])) for n in names],
                "wall_s": last - first, "pods_per_s": len(names) / (last - first),
                "post_s": max(burst.created.values()) - first,
                "delete_all_s": deleted_s,
                "pings_per_pod": [burst.pings.get(n, 0) for n in names],
                "gateways": sorted(set(burst.gateways.values())),
                "problems": burst.problems,
                "cpu_s": {k: v for k, v in cpu.items() if v >= 0.1}}
    finally:
        for kube_node in nodes:
            kube_node.stop()
        for daemon in daemons:
            benchlib.stop_daemon(daemon)


def _reference_conflist(kube_node: KubeNode) -> dict[str, Any]:
    index = kube_node.node.index
    return {"cniVersion": CNI_VERSION, "name": "bench-ref", "plugins": [{
        "type": "bridge", "bridge": REFERENCE_BRIDGE, "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "dataDir": str(kube_node.wrap_dir / "host-local"),
                 "ranges": [[{"subnet": f"198.18.{100 + index}.0/24"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}}]}


def _warm_up(api_url: str, nodes: list[KubeNode], mode: str) -> None:
    """One pod per node, untimed: containerd's first sandbox, the plugin's first call."""
    burst = Burst(api_url, nodes, [f"warm-{mode[:3]}-{i}" for i in range(len(nodes))])
    burst.run()
    burst.delete()
    if burst.problems:
        raise RuntimeError(f"warm-up: {burst.problems}")
    for kube_node in nodes:
        kube_node.timing_log.unlink(missing_ok=True)


def _daemon_times(nodes: list[KubeNode], sandboxes: dict[str, str]) -> dict[str, float]:
    """Pod name -> the daemon's own time for its ADD (its log line), last one wins."""
    out: dict[str, float] = {}
    wanted = {sandbox[:12]: name for name, sandbox in sandboxes.items()}
    for kube_node in nodes:
        log = Path(kube_node.node.vm.rundir) / "daemon.log"
        for line in log.read_text(errors="replace").splitlines():
            match = DAEMON_LINE.search(line)
            if match and match.group(1) in wanted:
                out[wanted[match.group(1)]] = float(match.group(3))
    return out


# -- report ---------------------------------------------------------------------------------

def _stats(samples: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(samples), "p99": benchlib.percentile(samples, 99),
            "max": max(samples)}


def _report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    print(f"\n{'mode':10s} {'from create to':16s} {'p50':>7s} {'p99':>7s} {'max':>7s}"
          f"   (ms; {args.pods} pods over 2 nodes)")
    for mode, run in runs.items():
        table[mode] = {fig: _stats(run["samples_ms"][fig]) for fig in FIGURES}
        table[mode]["cni_add"] = _stats(run["cni_add_ms"])
        if run["daemon_add_ms"]:
            table[mode]["daemon_add"] = _stats(run["daemon_add_ms"])
        table[mode]["pods_per_s"] = run["pods_per_s"]
        table[mode]["cni_share"] = sum(run["cni_add_ms"]) / sum(run["samples_ms"]["pod_ready"])
        for fig in (*FIGURES, "cni_add", "daemon_add"):
            if fig in table[mode]:
                st = table[mode][fig]
                label = {"cni_add": "(CNI ADD itself)", "daemon_add": "(daemon's ADD)"}.get(
                    fig, fig.replace("_", " "))
                print(f"{mode:10s} {label:16s} {st['p50']:7.0f} {st['p99']:7.0f} "
                      f"{st['max']:7.0f}")
        print(f"{mode:10s} {run['pods_per_s']:.1f} pods/s ({args.pods} in {run['wall_s']:.1f} s, "
              f"POSTs took {run['post_s']:.2f} s); CNI ADD = "
              f"{table[mode]['cni_share'] * 100:.1f} % of the pods' ready time; all deleted "
              f"in {run['delete_all_s']:.1f} s; gateways {', '.join(run['gateways'])}, "
              f"answered the first ping for {run['pings_per_pod'].count(1)} of {args.pods}")
        if run["problems"]:
            print(f"{mode}: WARNING: {run['problems'][:5]}")
        top = sorted(run["cpu_s"].items(), key=lambda kv: -kv[1])[:8]
        print(f"{mode:10s} CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    ratios = {}
    if "daemon" in table and "reference" in table:
        ours, ref = table["daemon"], table["reference"]
        for fig in (*FIGURES, "cni_add"):
            ratios[f"{fig} p50"] = ours[fig]["p50"] / ref[fig]["p50"]
            ratios[f"{fig} p99"] = ours[fig]["p99"] / ref[fig]["p99"]
        ratios["pods/s"] = ours["pods_per_s"] / ref["pods_per_s"]
        print("\nours / reference:")
        for key, value in ratios.items():
            print(f"  {key:16s} {value:6.2f}")
    return {"machine": benchlib.machine(), "params": {k: v for k, v in vars(args).items()
                                              if k not in ("inside", "json")},
            "table": table, "ratios": ratios, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if shutil.which("nsenter") is None:
        print("nsenter missing", file=sys.stderr)
        return 2
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
