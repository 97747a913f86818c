"""What the bench scripts share: lab options, running a part inside a VM, the report file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def add_lab_options(parser: argparse.ArgumentParser, lab: str, results: str) -> None:
    """--lab, --rundir, --json, --keep and the hidden --inside of a bench script."""
    parser.add_argument("--lab", default=lab, help=f"lab name (default: {lab})")
    parser.add_argument("--rundir", default="/run/ovn-underlay-lab", help="labs' run directory")
    parser.add_argument("--json", type=Path, help="where to write the results (default: "
                        f"bench/results/{results}-<time>.json)")
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    parser.add_argument("--inside", help=argparse.SUPPRESS)


def run_inside_vm(script: str, vm_netns: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --inside PLAN`` in the VM's namespace; its JSON output."""
    proc = subprocess.run(["ip", "netns", "exec", vm_netns, sys.executable, script,
                           "--inside", json.dumps(plan)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"timing run failed: {proc.stderr.decode()[-3000:]}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "load_avg": os.getloadavg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_report(path: Path | None, name: str, report: dict[str, Any]) -> None:
    """Write the JSON report (default: bench/results/NAME-<time>.json) and say where."""
    target = path or RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {target}")


def cpu_by_process() -> dict[str, tuple[str, float]]:
    """CPU seconds used so far by every live process: pid -> (command, seconds).

    Kernel workers rename themselves after their current queue, so they are
    all called "kworker"; "(all CPUs busy)" is the machine's total from /proc/stat.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[pid] = (comm.split("/", 1)[0] if comm.startswith("kworker") else comm,
                    (int(fields[11]) + int(fields[12])) / tick)
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    out["all"] = ("(all CPUs busy)", (sum(ticks) - ticks[3] - ticks[4]) / tick)
    return out


def cpu_delta(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]],
              least: float = 0.02) -> dict[str, float]:
    """CPU seconds used between two cpu_by_process() snapshots, by command (>= ``least``)."""
    delta: dict[str, float] = {}
    for pid, (comm, used) in after.items():
        delta[comm] = delta.get(comm, 0.0) + used - before.get(pid, (comm, 0.0))[1]
    return {comm: used for comm, used in sorted(delta.items(), key=lambda kv: -kv[1])
            if used >= least}


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


DAEMON_START_TIMEOUT = 30.0


def start_daemon(node: Any, sock: str) -> subprocess.Popen[bytes]:
    """``ovn-k8s-underlay daemon`` inside the lab node's VM, serving ``sock``; log: daemon.log.

    It enters only the VM's network namespace (``nsenter --net``): in the
    mount namespace of ``ip netns exec`` the daemon would not see the pods'
    namespace files that containerd bind-mounts later under its state dir
    (this machine's / is a private mount, nothing propagates).
    """
    from ovn_underlay.daemon.server import is_serving

    log = open(Path(node.vm.rundir) / "daemon.log", "ab")  # noqa: SIM115 (the daemon's)
    proc = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{node.vm.netns}", sys.executable,
                             "-m", "ovn_underlay.cli", "--ovsdb", node.vm.ovsdb, "daemon"],
                            stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while not is_serving(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the daemon did not start; see {node.vm.rundir}/daemon.log")
        time.sleep(0.05)
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon from :func:`start_daemon` and wait for it."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
