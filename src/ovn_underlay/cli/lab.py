"""lab up / down / status / demo."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ovn_underlay.lab.topology import Lab


def _lab(args: argparse.Namespace) -> Lab:
    from pathlib import Path

    from ovn_underlay.lab.topology import Lab

    return Lab(args.name, Path(args.rundir))


def cmd_lab_up(args: argparse.Namespace) -> int:
    """Start the lab (no-op when healthy)."""
    octavia = args.neutron and not args.no_octavia
    _require_tools(args.neutron, octavia)
    state = _lab(args).up(args.vms, neutron=args.neutron, kube=args.kube, octavia=octavia)
    print(f"lab {state.name!r} is up: {len(state.vms)} VMs")
    print(f"  NB: {state.nb}\n  SB: {state.sb}")
    if state.neutron:
        print(_neutron_line(state.neutron))
    if state.octavia:
        print(_octavia_line(state.octavia))
    if state.kube:
        print(_kube_line(state.kube))
    for vm in state.vms:
        print(f"  {vm.name}: netns {vm.netns}, port {vm.port}, {vm.ip}, OVS {vm.ovsdb}")
        if vm.openrc:
            print(_openrc_line(vm.openrc, vm.mgmt_ip))
        elif vm.mgmt_ip:
            print(f"       management address {vm.mgmt_ip}")
    return 0


def _kube_line(kube: dict[str, str]) -> str:
    """Where a --kube lab's API server is (``lab up`` and ``lab status``)."""
    rest = (f", kubeconfig {kube['kubeconfig']}, log {kube['log']}" if "kubeconfig" in kube
            else "")  # up not finished
    return f"  Kubernetes API: {kube['url']} (test API server, no auth; the VMs reach it on " \
           f"eth0){rest}"


def _neutron_line(neutron: dict[str, str]) -> str:
    """Where a Neutron lab's API is (``lab up`` and ``lab status``)."""
    log = f", log {neutron['log']}" if "log" in neutron else ""  # up not finished: none yet
    return f"  Neutron: {neutron['url']} (noauth; the VMs reach it on eth0){log}"


def _octavia_line(octavia: dict[str, str]) -> str:
    """Where a Neutron lab's Octavia is (``lab up`` and ``lab status``)."""
    if "log" not in octavia:  # up not finished
        return f"  Octavia: {octavia['url']} (noauth, provider ovn)"
    return (f"  Octavia: {octavia['url']} (noauth, provider ovn; creates name project_id "
            f"{octavia['project_id']}), log {octavia['log']}\n"
            f"       openrc {octavia['openrc']}, clouds.yaml {octavia['clouds']}\n"
            f"       Service range {octavia['service_range']} in the Neutron subnet "
            f"{octavia['service_subnet']}")


def _openrc_line(openrc: str, mgmt_ip: str) -> str:
    """A Neutron lab VM's openrc (``node-init --neutron-config``) and management address."""
    return f"       openrc {openrc}, management address {mgmt_ip}"


def cmd_lab_down(args: argparse.Namespace) -> int:
    """Remove everything the lab made."""
    removed = _lab(args).down()
    print("\n".join(f"removed {r}" for r in removed) or f"lab {args.name!r} was not up")
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    """What runs, as text or JSON; exit 1 when not up."""
    import json

    status = _lab(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status["up"] else 1
    if "phase" not in status:
        print(f"lab {args.name!r} is not up (run dir {status['rundir']})")
        return 1
    print(f"lab {status['name']!r}: {'up' if status['up'] else 'NOT HEALTHY'}")
    for problem in status["problems"]:
        print(f"  problem: {problem}")
    print(f"  NB: {status['nb']}\n  SB: {status['sb']}\n  chassis: {status['chassis']}")
    if status["neutron"]:
        print(_neutron_line(status["neutron"]))
    if status.get("octavia"):
        print(_octavia_line(status["octavia"]))
    if status.get("kube"):
        print(_kube_line(status["kube"]))
    for owner, pids in status["pids"].items():
        running = ", ".join(f"{n}={p or 'DEAD'}" for n, p in pids.items())
        print(f"  {owner}: {running}")
    for vm in status["vms"]:
        print(f"  {vm['name']}: netns {vm['netns']}, port {vm['port']} {vm['mac']} "
              f"{vm['ip']}, OVS {vm['ovsdb']}")
        if vm["openrc"]:
            print(_openrc_line(vm["openrc"], vm["mgmt_ip"]))
        elif vm["mgmt_ip"]:
            print(f"       management address {vm['mgmt_ip']}")
    return 0 if status["up"] else 1


def cmd_lab_demo(args: argparse.Namespace) -> int:
    """Up, connectivity matrix, down."""
    from ovn_underlay.lab.demo import run_demo

    _require_tools(args.neutron, args.neutron)
    if args.kube:
        from ovn_underlay.lab.kube_demo import require_tools, run_kube_demo

        require_tools()
        return run_kube_demo(_lab(args), args.vms, keep=args.keep, neutron=args.neutron)
    return run_demo(_lab(args), args.vms, keep=args.keep, neutron=args.neutron)


def _require_tools(neutron: bool, octavia: bool = False) -> None:
    """Refuse, naming what is missing, unless the lab's programs are installed."""
    from ovn_underlay.lab import neutron as lab_neutron
    from ovn_underlay.lab import octavia as lab_octavia
    from ovn_underlay.lab.topology import require_tools

    require_tools()
    if neutron:
        lab_neutron.require_tools()
    if octavia:
        lab_octavia.require_tools()


def cmd_lab_exec(args: argparse.Namespace) -> int:
    """Replace this process with the command, run on the VM (never returns on success)."""
    from ovn_underlay.lab.topology import LabError
    from ovn_underlay.lab.vm_exec import exec_on_vm, find_vm

    state = _lab(args).load()
    if state is None:
        raise LabError(f"lab {args.name} is not up: run 'lab up' first")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    exec_on_vm(find_vm(state, args.vm), command)
