"""The demo: bring a lab up, show connectivity through OVN, tear it down."""

from __future__ import annotations

import sys
import time

from ovn_underlay.lab import probe
from ovn_underlay.lab.topology import Lab, LabState


def vm_matrix(state: LabState) -> list[probe.Check]:
    """Ping and TCP between every ordered pair of VMs."""
    ends = [probe.Endpoint(vm.name, vm.netns, vm.ip) for vm in state.vms]
    return [probe.check("vm-vm", a, b) for a in ends for b in ends if a != b]


def run_demo(lab: Lab, vms: int = 2, keep: bool = False) -> int:
    """Run the demo on ``lab``; 0 when every check is green."""
    started = time.monotonic()
    print(f"bringing lab {lab.name!r} up with {vms} VMs ...", flush=True)
    state = lab.up(vms)
    try:
        print(f"lab up in {time.monotonic() - started:.1f}s: NB {state.nb}", flush=True)
        checks = vm_matrix(state)
        print(probe.render(checks), flush=True)
        return 0 if all(c.ok for c in checks) else 1
    finally:
        if keep:
            print("lab left running (--keep); 'ovn-k8s-underlay lab down' removes it")
        else:
            lab.down()
            print("lab down: nothing left running", file=sys.stderr)
