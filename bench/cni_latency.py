"""CNI call latency on the lab: the reference plugins against ours, called as a runtime calls them.

    .venv/bin/python bench/cni_latency.py [--pods 100] [--concurrency 1 2 8]

Brings up a one-VM lab (``--lab``, default ``bd1``), makes it a node with a
pool big enough for every pod at once (refill idle: low 0, high = pool), and
times ADD, CHECK and DEL for

* ``reference``: Debian's bridge + host-local plugins (/usr/lib/cni), a bridge
  with ``isGateway`` and no masquerade, addresses from 198.18.100.0/24;
* ``daemon``: our CNI binary (the launcher ``node-init --install-cni`` writes)
  forwarding to ``ovn-k8s-underlay daemon``;
* ``in-process``: the same binary with no daemon running (it does the work itself).

Each mode runs N pods (``--pods``) one caller at a time, then with 2 and 8
concurrent callers (``--concurrency``): ADD of every pod, then CHECK of every
pod (with the ADD result as prevResult), then DEL.  A call is one fork+exec
of the plugin binary, from inside the VM's network namespace, with the
CNI_* environment (``env -i`` style) and the network configuration on stdin,
as containerd or podman do.  Our ADD returns once the pod's gateway answered
ARP; after the first ADD of each mode the harness also pings the gateway
from the pod (untimed) to check the plugin's work.

Prints a table (p50, p90, p99, max in ms and calls/s) and the ratios ours /
reference, and writes everything (machine, samples) as JSON to
``bench/results/cni_latency-<time>.json`` (``--json``).  The lab is removed
at the end (``--keep`` leaves it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import benchlib

MODES = ("reference", "daemon", "in-process")
COMMANDS = ("ADD", "CHECK", "DEL")
REFERENCE_PLUGINS = "/usr/lib/cni"
REFERENCE_SUBNET = "198.18.100.0/24"
REFERENCE_GATEWAY = "198.18.100.1"
CNI_VERSION = "1.0.0"
TARGETS = "ADD p50 <= 3x reference, ADD p99 < 100 ms, DEL p50 <= reference, " \
          "8 callers >= 60 % of the reference's calls/s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=100, help="pods per phase (default: 100)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 8],
                   help="concurrent callers of each phase (default: 1 2 8)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="what to time (default: all)")
    benchlib.add_lab_options(p, "bd1", "cni_latency")
    args = p.parse_args(argv)
    if not 1 <= args.pods <= 240:
        p.error("--pods must be 1..240 (one /24 node subnet)")
    return args


# -- inside the VM: the timed calls ---------------------------------------------------------

def inside(plan: dict[str, Any]) -> int:
    """Run one mode's phases (we are in the VM's namespace); print the samples as JSON."""
    phases = []
    for callers in plan["concurrency"]:
        phases.append(_phase(plan, callers))
    json.dump({"phases": phases}, sys.stdout)
    return 0


def _phase(plan: dict[str, Any], callers: int) -> dict[str, Any]:
    pods: list[str] = plan["pods"]
    ids = [f"{plan['prefix']}c{callers}n{i}" for i in range(len(pods))]
    results: dict[int, dict[str, Any]] = {}
    out: dict[str, Any] = {"callers": callers, "commands": {}}

    def add(i: int) -> float:
        took, result = _call(plan, "ADD", ids[i], pods[i])
        results[i] = result
        return took

    def check(i: int) -> float:
        return _call(plan, "CHECK", ids[i], pods[i], results[i])[0]

    def delete(i: int) -> float:
        return _call(plan, "DEL", ids[i], pods[i], results[i])[0]

    for command, step in (("ADD", add), ("CHECK", check), ("DEL", delete)):
        out["commands"][command] = _timed_stage(step, len(pods), callers)
        if command == "ADD" and callers == plan["concurrency"][0]:
            out["gateway_ping"] = _ping(pods[0], plan["gateway"] or _gateway(results[0]))
    return out


def _timed_stage(step: Callable[[int], float], count: int, callers: int) -> dict[str, Any]:
    cpu_before, plugin_before = benchlib.cpu_by_process(), _children_cpu()
    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        samples = list(pool.map(step, range(count)))
    wall = time.perf_counter() - started
    cpu = benchlib.cpu_delta(cpu_before, benchlib.cpu_by_process())
    cpu["plugin binary"] = _children_cpu() - plugin_before
    return {"samples_ms": [s * 1000 for s in samples], "wall_s": wall,
            "calls_per_s": count / wall,
            "cpu_ms_per_call": {k: v * 1000 / count for k, v in cpu.items()}}


def _children_cpu() -> float:
    """CPU seconds of the plugin processes this harness ran and waited for."""
    times = os.times()
    return times.children_user + times.children_system


def _call(plan: dict[str, Any], command: str, container_id: str, netns: str,
          prev: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": plan["cni_path"],
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container_id}",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    conf = dict(plan["netconf"])
    if prev is not None:
        conf["prevResult"] = prev
    stdin = json.dumps(conf).encode()
    started = time.perf_counter()
    proc = subprocess.run([plan["binary"]], input=stdin, env=env, capture_output=True,
                          check=False)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{command} {container_id} failed ({proc.returncode}): "
                           f"{proc.stdout.decode()} {proc.stderr.decode()[-800:]}")
    return took, json.loads(proc.stdout) if proc.stdout.strip() else {}


def _gateway(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["gateway"])


def _ping(netns: str, address: str) -> bool:
    argv = ["ip", "netns", "exec", netns.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "2",
            "-q", address]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


# -- outside: the lab, the node, the daemon -------------------------------------------------

def outside(args: argparse.Namespace) -> int:
    """Set the lab up, run every mode inside the VM, report."""
    from ovn_underlay.lab import netns
    from ovn_underlay.lab.cluster import Node
    from ovn_underlay.lab.topology import Lab

    lab = Lab(args.lab, Path(args.rundir))
    state = lab.up(1)
    try:
        node = Node(state, state.vms[0])
        sock = f"{node.vm.rundir}/daemon/cni.sock"
        pool = args.pods + 4
        node.init("--daemon-socket", sock, "--pool-low", "0", "--pool-high", str(pool),
                  "--metrics-address", "off")
        node.setup_switch(pool_size=pool)
        pods = []
        for i in range(args.pods):
            name = f"{args.lab}-vm1-b{i}"
            netns.create(name)
            pods.append(netns.path(name))
        runs = {mode: _run_mode(args, node, mode, pods, sock) for mode in args.modes}
    finally:
        if not args.keep:
            lab.down()
    report = _report(args, runs)
    benchlib.write_report(args.json, "cni_latency", report)
    return 0


def _run_mode(args: argparse.Namespace, node: Any, mode: str, pods: list[str],
              sock: str) -> dict[str, Any]:
    print(f"{mode}: {args.pods} pods x {args.concurrency} callers ...", flush=True)
    plan = {"pods": pods, "concurrency": args.concurrency, "prefix": mode[:3],
            "gateway": None}
    if mode == "reference":
        data_dir = Path(node.vm.rundir) / "host-local"
        plan.update(binary=f"{REFERENCE_PLUGINS}/bridge", cni_path=REFERENCE_PLUGINS,
                    gateway=REFERENCE_GATEWAY,
                    netconf={"cniVersion": CNI_VERSION, "name": "bench-ref", "type": "bridge",
                             "bridge": "cnibench0", "isGateway": True, "ipMasq": False,
                             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                                      "ranges": [[{"subnet": REFERENCE_SUBNET}]]}})
    else:
        conflist = json.loads((node.cni_conf_dir / "10-ovn-underlay.conflist").read_text())
        plugin = conflist["plugins"][0]
        plan.update(binary=str(node.cni_bin_dir / plugin["type"]),
                    cni_path=str(node.cni_bin_dir),
                    netconf={**plugin, "cniVersion": CNI_VERSION, "name": conflist["name"]})
    daemon = benchlib.start_daemon(node, sock) if mode == "daemon" else None
    try:
        return benchlib.run_inside_vm(__file__, node.vm.netns, plan)
    finally:
        if daemon is not None:
            benchlib.stop_daemon(daemon)


# -- report ---------------------------------------------------------------------------------

def _stats(stage: dict[str, Any]) -> dict[str, float]:
    s = stage["samples_ms"]
    return {"p50": statistics.median(s), "p90": benchlib.percentile(s, 90),
            "p99": benchlib.percentile(s, 99),
            "max": max(s), "calls_per_s": stage["calls_per_s"]}


def _report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    print(f"\n{'mode':11s} {'callers':>7s} {'cmd':5s} {'p50':>7s} {'p90':>7s} {'p99':>7s} "
          f"{'max':>7s} {'calls/s':>8s}   (ms; {args.pods} pods)")
    for mode, run in runs.items():
        table[mode] = {}
        for phase in run["phases"]:
            callers = str(phase["callers"])
            table[mode][callers] = {}
            for command in COMMANDS:
                st = _stats(phase["commands"][command])
                table[mode][callers][command] = st
                print(f"{mode:11s} {callers:>7s} {command:5s} {st['p50']:7.1f} {st['p90']:7.1f} "
                      f"{st['p99']:7.1f} {st['max']:7.1f} {st['calls_per_s']:8.1f}")
            if "gateway_ping" in phase and not phase["gateway_ping"]:
                print(f"{mode}: WARNING: the first pod did not reach its gateway")
    _print_cpu(runs)
    ratios = _ratios(table)
    if ratios:
        print("\nours / reference:")
        for key, value in ratios.items():
            print(f"  {key:34s} {value:6.2f}")
        print(f"targets: {TARGETS}")
    return {"machine": benchlib.machine(), "params": {k: v for k, v in vars(args).items()
                                              if k not in ("inside", "json")},
            "table": table, "ratios": ratios, "runs": runs}


def _print_cpu(runs: dict[str, dict[str, Any]]) -> None:
    """Where the CPU of one ADD went, with the most callers, by process."""
    print("\nCPU per ADD (ms), most callers, by process:")
    for mode, run in runs.items():
        phase = run["phases"][-1]
        cpu = phase["commands"]["ADD"]["cpu_ms_per_call"]
        busy = cpu.pop("(all CPUs busy)", 0.0)
        top = sorted(cpu.items(), key=lambda kv: -kv[1])[:6]
        print(f"  {mode:11s} machine {busy:5.1f}: "
              + ", ".join(f"{name} {used:.1f}" for name, used in top))


def _ratios(table: dict[str, Any]) -> dict[str, float]:
    ref = table.get("reference")
    if ref is None:
        return {}
    out = {}
    for mode in ("daemon", "in-process"):
        ours = table.get(mode)
        if ours is None:
            continue
        for callers, commands in ours.items():
            for command, st in commands.items():
                base = ref.get(callers, {}).get(command)
                if base is None:
                    continue
                out[f"{mode} {command} p50, {callers} caller(s)"] = st["p50"] / base["p50"]
                if callers != "1":
                    out[f"{mode} {command} calls/s, {callers} callers"] = (
                        st["calls_per_s"] / base["calls_per_s"])
    return out



def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.inside:
        return inside(json.loads(args.inside))
    return outside(args)


if __name__ == "__main__":
    sys.exit(main())
