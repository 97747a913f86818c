"""Command line of ovn-k8s-underlay: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ovn_underlay import __version__

if TYPE_CHECKING:
    from ovn_underlay.lab.topology import Lab

Handler = Callable[[argparse.Namespace], int]


def _lab(args: argparse.Namespace) -> Lab:
    from ovn_underlay.lab.topology import Lab

    return Lab(args.name, Path(args.rundir))


def cmd_lab_up(args: argparse.Namespace) -> int:
    """``lab up``: start the lab (no-op when healthy)."""
    from ovn_underlay.lab.topology import require_tools

    require_tools()
    state = _lab(args).up(args.vms)
    print(f"lab {state.name!r} is up: {len(state.vms)} VMs")
    print(f"  NB: {state.nb}\n  SB: {state.sb}")
    for vm in state.vms:
        print(f"  {vm.name}: netns {vm.netns}, port {vm.port}, {vm.ip}, OVS {vm.ovsdb}")
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    """``lab down``: remove everything the lab made."""
    removed = _lab(args).down()
    print("\n".join(f"removed {r}" for r in removed) or f"lab {args.name!r} was not up")
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    """``lab status``: what runs, as text or JSON; exit 1 when not up."""
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
    for owner, pids in status["pids"].items():
        running = ", ".join(f"{n}={p or 'DEAD'}" for n, p in pids.items())
        print(f"  {owner}: {running}")
    for vm in status["vms"]:
        print(f"  {vm['name']}: netns {vm['netns']}, port {vm['port']} {vm['mac']} "
              f"{vm['ip']}, OVS {vm['ovsdb']}")
    return 0 if status["up"] else 1


def cmd_lab_demo(args: argparse.Namespace) -> int:
    """``lab demo``: up, connectivity matrix, down."""
    from ovn_underlay.lab.demo import run_demo
    from ovn_underlay.lab.topology import require_tools

    require_tools()
    return run_demo(_lab(args), args.vms, keep=args.keep)


def _add_lab_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser(
        "lab", help="an emulated OVN cloud on this machine (for demos and tests)",
        description="A hypervisor and N VMs as network namespaces, with real OVN NB/SB, "
                    "ovn-northd, ovn-controller and userspace ovs-vswitchd daemons. Nothing "
                    "outside the lab's namespaces, run directory and processes is changed.")
    lab.add_argument("--name", default=os.environ.get("OVN_UNDERLAY_LAB", "oul"),
                     help="lab name, prefix of its namespaces (default: %(default)s)")
    lab.add_argument("--rundir", default=os.environ.get("OVN_UNDERLAY_LAB_DIR",
                                                        "/run/ovn-underlay-lab"),
                     help="where labs keep sockets, databases and logs (default: %(default)s)")
    verbs = lab.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="start the lab; a no-op when it is already healthy")
    up.add_argument("--vms", type=int, default=2, help="number of VMs (default: %(default)s)")
    up.set_defaults(func=cmd_lab_up)
    verbs.add_parser("down", help="stop and remove everything the lab made"
                     ).set_defaults(func=cmd_lab_down)
    status = verbs.add_parser("status", help="what runs: pids, sockets, NB/SB connections")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_lab_status)
    demo = verbs.add_parser("demo", help="up, VM-to-VM checks through OVN, down")
    demo.add_argument("--vms", type=int, default=2, help="number of VMs (default: %(default)s)")
    demo.add_argument("--keep", action="store_true", help="leave the lab running")
    demo.set_defaults(func=cmd_lab_demo)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="ovn-k8s-underlay",
        description="Kubernetes pods on OVN logical ports that are children of their VM's "
                    "port: node setup, per-node switches and port pools, and the lab.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_lab_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ovn-k8s-underlay``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"ovn-k8s-underlay: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
