"""One Service's incremental sync through OvnLoadBalancers, against the Services present.

    .venv/bin/python bench/ovn_lb_sync.py [--services 100 1000 5000] [--endpoints 10]
        [--switches 20] [--changes 100] [--complete 5] [--local-every 0]

For each count of ``--services`` (default 100, 1000 and 5000), on a fresh NB
ovsdb-server of the bench's own (a unix socket in a temporary directory; no northd, no
VMs): ``--switches`` node switches (default 20, ``sw-n<i>`` for nodes ``n<i>``, made
with one ovn-nbctl call), then that many Services of one TCP port with ``--endpoints``
endpoints each (default 10, spread over the nodes) written by
``OvnLoadBalancers.sync(..., complete=True)`` (untimed but reported).  ``--local-every
K`` makes every K-th Service ``internalTrafficPolicy: Local`` (a row per node; default 0,
none).  Then, timed, on the same connection as the controller uses it:

* ``incremental``: ``--changes`` (default 100) incremental syncs of one Service each
  (``complete=False``), Services picked across the whole set, each with one endpoint
  replaced by a new address: one row updated per sync;
* ``complete, unchanged``: ``--complete`` (default 5) complete syncs of every Service
  with nothing to change (nothing written);
* ``index``: an OvnLoadBalancers made on a second connection holding every row (what a
  new leader term does), which builds its index of the rows by Service.

Each sync is timed from the call to its return (its NB commit included): the p50 and
p99 wall milliseconds, and the CPU milliseconds of the whole bench process over the
same span (``time.process_time``, the IDL thread's included) at p50.  Prints a table
and writes JSON to ``bench/results/ovn_lb_sync-<time>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

TARGET = "one Service's incremental sync: no growth with the Services present"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, nargs="+", default=[100, 1000, 5000],
                   help="Service counts, each on a fresh NB (default: 100 1000 5000)")
    p.add_argument("--endpoints", type=int, default=10,
                   help="endpoints per Service (default: 10)")
    p.add_argument("--switches", type=int, default=20, help="node switches (default: 20)")
    p.add_argument("--changes", type=int, default=100,
                   help="incremental syncs timed per count (default: 100)")
    p.add_argument("--complete", type=int, default=5,
                   help="unchanged complete syncs timed per count (default: 5)")
    p.add_argument("--local-every", type=int, default=0, metavar="K",
                   help="every K-th Service internalTrafficPolicy Local (default: 0, none)")
    p.add_argument("--json", type=Path, help="where to write the results (default: "
                   "bench/results/ovn_lb_sync-<time>.json)")
    args = p.parse_args(argv)
    if not 1 <= args.switches <= 250 or not 1 <= args.endpoints <= 250:
        p.error("--switches and --endpoints must be 1..250")
    if min(args.services) < 1 or max(args.services) > 60000:
        p.error("--services must be 1..60000")
    if args.changes < 1 or args.complete < 1 or args.local_every < 0:
        p.error("--changes and --complete must be at least 1, --local-every at least 0")
    return args


def services(count: int, endpoints: int, nodes: list[str], local_every: int) -> list[Any]:
    """``count`` Services ``bench/s<i>``, ClusterIPs from 198.18.128.0/17, one TCP port,
    ``endpoints`` endpoints each on the nodes in turn."""
    from ovn_underlay.control.services import Endpoint, ServicePort, ServiceState

    states = []
    for i in range(count):
        vip = f"198.18.{128 + i // 250}.{i % 250 + 2}"
        eps = tuple(sorted(
            Endpoint(f"10.{(i * endpoints + k) // 62500 % 200}."
                     f"{(i * endpoints + k) // 250 % 250}.{(i * endpoints + k) % 250 + 2}",
                     8080, nodes[(i + k) % len(nodes)])
            for k in range(endpoints)))
        states.append(ServiceState("bench", f"s{i}", (vip,),
                                   (ServicePort("tcp", 80, "http", eps),),
                                   local_only=local_every > 0 and i % local_every == 0))
    return states


def moved(state: Any, k: int) -> Any:
    """``state`` with its first endpoint replaced by an address no other has (the k-th)."""
    from ovn_underlay.control.services import Endpoint

    port = state.ports[0]
    new = Endpoint(f"10.250.{k // 250 % 250}.{k % 250 + 2}", 8080, port.endpoints[0].node)
    return dataclasses.replace(state, ports=(dataclasses.replace(
        port, endpoints=tuple(sorted((*port.endpoints[1:], new)))),))


def timed(call: Any) -> tuple[float, float, Any]:
    """Wall and process CPU milliseconds of ``call()``, and its result."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    return ((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, result)


def summary(wall: list[float], cpu: list[float]) -> dict[str, float]:
    """p50 and p99 of the wall times, p50 of the CPU times (ms)."""
    return {"p50_ms": benchlib.percentile(wall, 50), "p99_ms": benchlib.percentile(wall, 99),
            "cpu_p50_ms": benchlib.percentile(cpu, 50), "max_ms": max(wall)}


def run_count(args: argparse.Namespace, count: int) -> dict[str, Any]:
    """The figures for ``count`` Services, on a fresh NB."""
    from ovn_underlay.control.ovn_lb import OvnLoadBalancers
    from ovn_underlay.control.ovn_nb import OvnNbControlPlane
    from ovn_underlay.lab import daemons

    rundir = Path(tempfile.mkdtemp(prefix="ovn_lb_sync-"))
    daemon, remote = daemons.start_ovsdb_server("nb", rundir, daemons.NB_SCHEMA)
    try:
        nodes = [f"n{i}" for i in range(args.switches)]
        switches = {node: f"sw-{node}" for node in nodes}
        nbctl = ["ovn-nbctl", f"--db={remote}"]
        for node in nodes:
            nbctl += ["ls-add", switches[node], "--"]
        subprocess.run(nbctl[:-1], check=True, capture_output=True)
        states = services(count, args.endpoints, nodes, args.local_every)
        plane = OvnNbControlPlane(remote, timeout=300)
        try:
            lbs = OvnLoadBalancers(plane)
            write_ms, _, written = timed(lambda: lbs.sync(states, switches, complete=True))
            wall, cpu, updated = [], [], 0
            for k in range(args.changes):
                index = (k * 7919) % count
                states[index] = moved(states[index], k)
                change = states[index]
                ms, cpu_ms, result = timed(
                    lambda change=change: lbs.sync([change], switches, complete=False))
                wall.append(ms)
                cpu.append(cpu_ms)
                updated += result.updated
            full_wall, full_cpu, full_writes = [], [], 0
            for _ in range(args.complete):
                ms, cpu_ms, result = timed(lambda: lbs.sync(states, switches, complete=True))
                full_wall.append(ms)
                full_cpu.append(cpu_ms)
                full_writes += result.created + result.updated + result.deleted
        finally:
            plane.close()
        second = OvnNbControlPlane(remote, timeout=300)
        try:
            index_ms = timed(lambda: OvnLoadBalancers(second))[0]
        finally:
            second.close()
    finally:
        pid = daemon.pid()
        if pid is not None:
            daemons.stop_pid(pid)
        shutil.rmtree(rundir, ignore_errors=True)
    return {"services": count, "rows": written.created, "write_s": write_ms / 1000,
            "write_transactions": written.transactions, "index_ms": index_ms,
            "incremental": {**summary(wall, cpu), "rows_updated": updated,
                            "samples_ms": wall},
            "complete_unchanged": {**summary(full_wall, full_cpu), "writes": full_writes,
                                   "samples_ms": full_wall}}


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    """The table."""
    local = f", every {args.local_every}th Local" if args.local_every else ""
    print(f"\nOvnLoadBalancers.sync on a bare NB, {args.switches} switches, "
          f"{args.endpoints} endpoints a Service{local}; ms")
    print(f"{'Services':>8s} {'rows':>6s} {'write s':>7s} | {'incremental p50':>15s} "
          f"{'p99':>6s} {'CPU p50':>7s} | {'complete p50':>12s} {'p99':>7s} {'CPU p50':>7s}"
          f" | {'index':>6s}")
    for run in runs:
        inc, full = run["incremental"], run["complete_unchanged"]
        print(f"{run['services']:8d} {run['rows']:6d} {run['write_s']:7.2f} | "
              f"{inc['p50_ms']:15.2f} {inc['p99_ms']:6.2f} {inc['cpu_p50_ms']:7.2f} | "
              f"{full['p50_ms']:12.1f} {full['p99_ms']:7.1f} {full['cpu_p50_ms']:7.1f} | "
              f"{run['index_ms']:6.1f}")
    for run in runs:
        if run["incremental"]["rows_updated"] != args.changes:
            print(f"WARNING: {run['services']} Services: "
                  f"{run['incremental']['rows_updated']} rows updated by {args.changes} "
                  "changes")
        if run["complete_unchanged"]["writes"]:
            print(f"WARNING: {run['services']} Services: the unchanged complete syncs "
                  f"wrote {run['complete_unchanged']['writes']} rows")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    missing = [t for t in ("ovsdb-server", "ovsdb-tool", "ovn-nbctl") if shutil.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} (make deps)", file=sys.stderr)
        return 2
    runs = []
    for count in args.services:
        print(f"{count} Services x {args.endpoints} endpoints over {args.switches} "
              "switches ...", flush=True)
        runs.append(run_count(args, count))
    report(args, runs)
    benchlib.write_report(args.json, "ovn_lb_sync", {
        "machine": benchlib.machine(), "target": TARGET,
        "params": {k: v for k, v in vars(args).items() if k != "json"}, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
