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
