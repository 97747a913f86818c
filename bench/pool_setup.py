"""Time to make a node's pool of child ports: our backends against the seed's way.

    .venv/bin/python bench/pool_setup.py [--ports 250] [--backends ovn neutron]

Brings up a one-VM lab (``--lab``, default ``bd2``; with a real neutron-server
when the Neutron backend and Debian's neutron packages are there) and, for
each case, makes a fresh node network with no pool ports (untimed), then
times making ``--ports`` pool ports and recording them in a node pool file,
and removes the node network again (untimed):

OVN Northbound (ovsdbapp, the lab's NB)
  * ``one transaction``: ``add_pool_ports(N)``, as ``lswitch-setup`` does;
  * ``refill batches``: ``add_pool_ports(16)`` until N, as the daemon refills;
  * ``seed: one per port``: ``add_pool_ports(1)`` N times, in sequence.
Neutron (openstacksdk, from inside the VM as a node talks to it)
  * ``seed: one per port``: one ``create_port`` with ``binding:profile`` per
    port, in sequence, as the seed's script did.  It runs first: in a lab
    the bench starts, neutron-server has then deleted no network yet (below);
  * ``bulk, trunk`` and ``bulk, binding-profile``: the backend's
    ``add_pool_ports(N)`` (concurrent bulk POSTs) in each child-port mode;
  * ``refill batches of 16, trunk``: ``add_pool_ports(16)`` until N, as
    ``pool fill`` and the daemon's refill do (default child-port mode).

A neutron-server worker that has deleted a network once does an extra lookup
for every port it creates whose ``device_owner`` is not ``compute:...`` (its
routed-network inventory notifier), which the seed's ports are.  Running the
seed's case first spares it that in this bench: the figures against it are
conservative.

Prints a table (seconds, ports/s, speed-up over the seed's way, and the CPU
the whole machine was busy for, per port: the lab's neutron-server, MariaDB
and OVN share its CPUs) and writes
JSON to ``bench/results/pool_setup-<time>.json``.  A backend that cannot run
here is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib

BACKENDS = ("ovn", "neutron")
ROUTER = "bench-router"
REFILL_BATCH = 16
SUBNETS = (f"198.19.{200 + i}.0/24" for i in range(50))
TARGETS = "OVN: 250 ports in under 1 s; Neutron: at least 3x faster than the seed's way"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ports", type=int, default=250, help="pool ports per case (default: 250)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                   help="what to time (default: both)")
    benchlib.add_lab_options(p, "bd2", "pool_setup")
    args = p.parse_args(argv)
    if not 1 <= args.ports <= 250:
        p.error("--ports must be 1..250 (one /24 node subnet)")
    return args


# -- inside the VM: the timed cases ---------------------------------------------------------

def inside(plan: dict[str, Any]) -> int:
    """Run the cases of one backend (we are in the VM's namespace); print results as JSON."""
    cases = _ovn_cases(plan) if plan["backend"] == "ovn" else _neutron_cases(plan)
    json.dump(cases, sys.stdout)
    return 0


def _timed(control: Any, name: str, parent: str, count: int,
           make: Callable[[str], list[Any]]) -> dict[str, Any]:
    """Make node network ``name`` (untimed), time ``make(name)`` plus the pool records."""
    from ovn_underlay.pods.pool import Pool

    subnet = next(SUBNETS)
    control.create_node_network(name, subnet, ROUTER, parent, 0, mgmt_tag=None)
    with tempfile.TemporaryDirectory() as state, Pool(Path(state) / "pool.db") as pool:
        try:
            cpu_before = benchlib.cpu_by_process()
            started = time.perf_counter()
            ports = make(name)
            pool.add_ports(ports)
            seconds = time.perf_counter() - started
            cpu = benchlib.cpu_delta(cpu_before, benchlib.cpu_by_process(), least=0.1)
        finally:
            control.destroy_node_network(name)
    if len(ports) != count or len({p.tag for p in ports}) != count:
        raise RuntimeError(f"{name}: made {len(ports)} ports, wanted {count} distinct")
    busy = cpu.pop("(all CPUs busy)", 0.0)
    return {"seconds": seconds, "ports": count, "ports_per_s": count / seconds,
            "cpu_ms_per_port": 1000 * busy / count, "cpus_busy": busy / seconds,
            "cpu_s_by_command": cpu}


def _ovn_cases(plan: dict[str, Any]) -> dict[str, Any]:
    from ovn_underlay.control.ovn_nb import OvnNbControlPlane

    n, parent = plan["ports"], plan["parent"]
    control = OvnNbControlPlane(plan["nb"], timeout=60)
    try:
        def batches(switch: str) -> list[Any]:
            made: list[Any] = []
            while len(made) < n:
                made += control.add_pool_ports(switch, min(REFILL_BATCH, n - len(made)))
            return made

        return {
            "one transaction": _timed(control, "bo1", parent, n,
                                      lambda sw: list(control.add_pool_ports(sw, n))),
            f"refill batches of {REFILL_BATCH}": _timed(control, "bo2", parent, n, batches),
            "seed: one per port": _timed(control, "bo3", parent, n, lambda sw: [
                p for _ in range(n) for p in control.add_pool_ports(sw, 1)]),
        }
    finally:
        control.close()


def _neutron_cases(plan: dict[str, Any]) -> dict[str, Any]:
    from ovn_underlay.control import neutron
    from ovn_underlay.control.credentials import load_openrc

    creds = load_openrc(plan["openrc"])
    n, parent = plan["ports"], creds.vif_id
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as locks:
        controls = {mode: neutron.NeutronControlPlane(
            creds, child_ports=mode, lock_path=str(Path(locks) / "lock"), timeout=120)
            for mode in (neutron.TRUNK, neutron.BINDING_PROFILE)}
        trunk, profile = controls[neutron.TRUNK], controls[neutron.BINDING_PROFILE]

        def batches(switch: str) -> list[Any]:
            made: list[Any] = []
            while len(made) < n:
                made += trunk.add_pool_ports(switch, min(REFILL_BATCH, n - len(made)))
            return made

        try:
            out["seed: one per port"] = _timed(profile, "bn-seed", parent, n,
                                               lambda sw: _seed_ports(profile, sw, parent, n))
            for mode, control in controls.items():
                out[f"bulk, {mode}"] = _timed(control, f"bn-{mode[:5]}", parent, n,
                                              lambda sw, c=control: list(c.add_pool_ports(sw, n)))
            out[f"refill batches of {REFILL_BATCH}, trunk"] = _timed(trunk, "bn-refl", parent,
                                                                     n, batches)
        finally:
            for control in controls.values():
                control.close()
    return out


def _bodies(control: Any, switch: str, parent: str, count: int) -> list[dict[str, Any]]:
    """Port bodies for ``count`` children of ``parent`` (binding:profile) on ``switch``."""
    from ovn_underlay.control.planning import gateway_ip, plan_pool

    conn = control.conn
    network = conn.network.find_network(switch)
    subnet = next(conn.network.subnets(network_id=network.id))
    return [{"network_id": network.id, "name": f"{switch}-p{tag}",
             "fixed_ips": [{"subnet_id": subnet.id, "ip_address": ip}],
             "binding_profile": {"parent_name": parent, "tag": tag}}
            for ip, tag in plan_pool(subnet.cidr, count, {gateway_ip(subnet.cidr)}, set())]


def _seed_ports(control: Any, switch: str, parent: str, count: int) -> list[Any]:
    """The seed's way: one create_port per address, in sequence."""
    from ovn_underlay.control.base import ChildPort
    from ovn_underlay.control.planning import parse_subnet

    net = control.get_node_network(switch)
    prefixlen = parse_subnet(net.subnet).prefixlen
    return [ChildPort(port.id, port.mac_address, port.fixed_ips[0]["ip_address"], prefixlen,
                      net.gateway_ip, port.binding_profile["tag"])
            for port in (control.conn.network.create_port(**body)
                         for body in _bodies(control, switch, parent, count))]


# -- outside: the lab -----------------------------------------------------------------------

def neutron_unavailable() -> str | None:
    """Why the Neutron part cannot run here, or None."""
    if importlib.util.find_spec("ovn_underlay.control.neutron") is None:
        return "neutron backend not available (no ovn_underlay.control.neutron)"
    try:
        from ovn_underlay.lab import neutron as lab_neutron
    except ImportError as exc:
        return f"neutron backend not available (no lab support: {exc})"
    missing = lab_neutron.missing_tools()
    if missing:
        return f"neutron backend not available (missing {', '.join(missing)}; make deps)"
    return None


def outside(args: argparse.Namespace) -> int:
    """Set the lab up, run each backend's cases inside the VM, report."""
    from ovn_underlay.lab.topology import Lab

    skipped: dict[str, str] = {}
    want_neutron = "neutron" in args.backends
    reason = neutron_unavailable() if want_neutron else None
    if reason is not None:
        skipped["neutron"] = reason
    lab = Lab(args.lab, Path(args.rundir))
    state = lab.up(1, neutron=want_neutron and reason is None)
    results: dict[str, Any] = {}
    try:
        vm = state.vms[0]
        for backend in args.backends:
            if backend in skipped:
                continue
            print(f"{backend}: {args.ports} pool ports per case ...", flush=True)
            plan = {"backend": backend, "ports": args.ports, "nb": state.nb,
                    "parent": vm.port, "openrc": str(Path(vm.rundir) / "openrc")}
            results[backend] = benchlib.run_inside_vm(__file__, vm.netns, plan)
    finally:
        if not args.keep:
            lab.down()
    report = _report(args, results, skipped)
    benchlib.write_report(args.json, "pool_setup", report)
    return 0



def _report(args: argparse.Namespace, results: dict[str, Any],
            skipped: dict[str, str]) -> dict[str, Any]:
    print(f"\n{'backend':8s} {'case':30s} {'seconds':>8s} {'ports/s':>8s} {'vs seed':>8s} "
          f"{'CPU ms/port':>11s} {'CPUs busy':>9s}   ({args.ports} ports)")
    for backend, cases in results.items():
        seed = cases.get("seed: one per port", {}).get("seconds")
        for case, res in cases.items():
            speedup = f"{seed / res['seconds']:7.1f}x" if seed else "-"
            print(f"{backend:8s} {case:30s} {res['seconds']:8.2f} {res['ports_per_s']:8.1f} "
                  f"{speedup:>8s} {res['cpu_ms_per_port']:11.0f} {res['cpus_busy']:9.2f}")
            if seed:
                res["speedup_vs_seed"] = seed / res["seconds"]
    for backend, reason in skipped.items():
        print(f"{backend:8s} skipped: {reason}")
    print(f"targets: {TARGETS}")
    return {"machine": benchlib.machine(),
            "params": {"ports": args.ports, "backends": args.backends, "lab": args.lab},
            "results": results, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.inside:
        return inside(json.loads(args.inside))
    return outside(args)


if __name__ == "__main__":
    sys.exit(main())
