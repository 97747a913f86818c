"""Command line of ovn-k8s-underlay: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ovn_underlay import __version__, nb_ssl
from ovn_underlay.cli import agent as agent_cmds
from ovn_underlay.cli import controller as controller_cmds
from ovn_underlay.cli import daemon as daemon_cmds
from ovn_underlay.cli import kubelet as kubelet_cmds
from ovn_underlay.cli import lab as lab_cmds
from ovn_underlay.cli import lswitch as lswitch_cmds
from ovn_underlay.cli import node_config as config_cmds
from ovn_underlay.cli import node_init as node_init_cmds
from ovn_underlay.cli import pool as pool_cmds
from ovn_underlay.config import (
    CHILD_PORT_MODES,
    DEFAULT_DAEMON_SOCKET,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_MGMT_TAG,
    DEFAULT_OVSDB,
    DEFAULT_POOL_BATCH,
    DEFAULT_POOL_HIGH,
    DEFAULT_POOL_LOW,
    METRICS_OFF,
)

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_lab(sub: SubParsers) -> None:
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
    up.add_argument("--neutron", action="store_true", help="also run a real neutron-server "
                    "(ML2/OVN, with its MariaDB) that makes the VMs' ports, and Octavia "
                    "(octavia-api, its driver agent, the OVN provider) with a Service network")
    up.add_argument("--no-octavia", action="store_true", help="with --neutron: without "
                    "Octavia (starts ~5 s faster, ~275 MiB less)")
    up.add_argument("--kube", action="store_true", help="also run the test Kubernetes API "
                    "server (reachable from the VMs) with a Node per VM, and write a "
                    "kubeconfig")
    up.set_defaults(func=lab_cmds.cmd_lab_up)
    verbs.add_parser("down", help="stop and remove everything the lab made"
                     ).set_defaults(func=lab_cmds.cmd_lab_down)
    status = verbs.add_parser("status", help="what runs: pids, sockets, NB/SB connections")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=lab_cmds.cmd_lab_status)
    demo = verbs.add_parser("demo", help="up, node setup, pods, connectivity matrix, down")
    demo.add_argument("--vms", type=int, default=2, help="number of VMs (default: %(default)s)")
    demo.add_argument("--keep", action="store_true", help="leave the lab running")
    demo.add_argument("--neutron", action="store_true", help="the same through a real "
                      "neutron-server (VM 1 trunk subports, VM 2 binding:profile)")
    demo.add_argument("--kube", action="store_true", help="Pods made through the test "
                      "Kubernetes API, run by a kubelet stand-in and containerd per VM; "
                      "after the matrix a ClusterIP Service over them (OVN backend): the "
                      "hits per backend from a pod on each VM")
    demo.set_defaults(func=lab_cmds.cmd_lab_demo)
    run = verbs.add_parser(
        "exec", help="run a command on a VM, with that VM's own paths and OVS database",
        description="Run COMMAND as on the VM: in its network namespace, with /sys showing "
                    "its interfaces, in a mount namespace where a node's documented paths "
                    "(/var/lib/ovn-underlay, /opt/cni/bin, /etc/cni/net.d, /run/ovn-underlay, "
                    "/run/openvswitch/db.sock) are the VM's own directories under its run "
                    "directory, with OVN_UNDERLAY_OVSDB set to its database and this "
                    "installation's commands first on PATH. All lab VMs share the machine's "
                    "filesystem: without this, their node-init would share one conflist. "
                    "Example: lab exec vm1 -- ovn-k8s-underlay config show")
    run.add_argument("vm", metavar="VM", help="vm1, vm2, ...")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    run.set_defaults(func=lab_cmds.cmd_lab_exec)


def _add_node_init(sub: SubParsers) -> None:
    p = sub.add_parser(
        "node-init", help="prepare this node: settings, br-int, uplink (idempotent)",
        description="Record the node's settings in the local Open_vSwitch external_ids, "
                    "create br-int and put the uplink NIC in place. Options not given keep "
                    "their recorded value. Each change is printed; --dry-run only prints.")
    p.add_argument("--backend", choices=["ovn", "neutron"], help="control plane: OVN "
                   "Northbound, or Neutron (ML2/OVN) with OpenStack credentials (default: ovn)")
    p.add_argument("--nb", help="OVN Northbound connection, e.g. tcp:HOST:6641, "
                   "ssl:HOST:6641 (with the three --nb-* files) or unix:PATH")
    _add_nb_ssl(p, _path_or_empty, " ('' clears it)")
    p.add_argument("--parent", help="this VM's own logical port (pods' ports are its "
                   "children)")
    p.add_argument("--bridge", help="integration bridge (default: br-int)")
    p.add_argument("--datapath", choices=["auto", "system", "netdev"],
                   help="OVS datapath; auto = system if the kernel module is loaded")
    p.add_argument("--uplink", help="NIC on the VMs' OVN network (default: eth1)")
    p.add_argument("--uplink-mode", choices=["ovs", "linux-bridge"],
                   help="ovs (default): NIC inside OVS; linux-bridge: the seed's breth1, "
                   "needs bridge vlan_filtering")
    p.add_argument("--state-dir", help="where the pool lives (default: /var/lib/ovn-underlay)")
    p.add_argument("--mtu", type=int, help="pod MTU (default: the uplink's)")
    p.add_argument("--cluster-subnet", help="all pods' addresses, routed via the router "
                   "from the management port, e.g. 198.19.0.0/16; without it the node reaches "
                   "only its own pods, and only they reach it (a warning says so)")
    p.add_argument("--mgmt-tag", type=int, help=f"VLAN of the management port (default: "
                   f"{DEFAULT_MGMT_TAG})")
    p.add_argument("--dry-run", action="store_true", help="print the changes, make none")
    p.add_argument("--install-cni", action="store_true",
                   help="link the ovn-underlay CNI plugin into --cni-bin-dir and write its "
                   "conflist into --cni-conf-dir")
    p.add_argument("--cni-bin-dir", default="/opt/cni/bin", help="(default: %(default)s)")
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d", help="(default: %(default)s)")
    p.add_argument("--cni-version", default="1.0.0",
                   help="cniVersion of the conflist (the plugin speaks 0.3.0-1.1.0). The "
                   "default, %(default)s, is what current runtimes accept: containerd 1.6 "
                   "(libcni 1.1.2) fails every pod with 'unsupported CNI result version' at "
                   "1.1.0, and podman 4.3 rejects 1.1.0 results. STATUS and GC need 1.1.0: "
                   "choose it only for a runtime that speaks 1.1.0 (e.g. containerd 2.x)")
    p.add_argument("--cni-log-file", type=os.path.abspath,
                   help="the plugin's log file, created 0600 (default: stderr)")
    _add_daemon_settings(p)
    _add_neutron_settings(p)
    p.set_defaults(func=node_init_cmds.cmd_node_init)


def _add_daemon_settings(p: argparse.ArgumentParser) -> None:
    """node-init's settings of the node daemon (recorded like the others)."""
    p.add_argument("--daemon-socket", help=f"unix socket of the node daemon, baked into the "
                   f"installed CNI binary (default: {DEFAULT_DAEMON_SOCKET})")
    p.add_argument("--metrics-address", help="HOST:PORT where the daemon serves Prometheus "
                   f"metrics, or '{METRICS_OFF}' (default: {DEFAULT_METRICS_ADDRESS})")
    p.add_argument("--pool-low", type=int, help="the daemon adds ports when fewer are free "
                   f"(0: never; default: {DEFAULT_POOL_LOW})")
    p.add_argument("--pool-high", type=int, help="... until this many are free; ports are "
                   "never deleted: freed ones stay in the pool, lswitch-destroy removes them "
                   f"all (default: {DEFAULT_POOL_HIGH})")
    p.add_argument("--pool-batch", type=int, help="ports per control-plane request of the "
                   f"refill (default: {DEFAULT_POOL_BATCH})")


def _path_or_empty(value: str) -> str:
    """An absolute path (the CNI plugin runs elsewhere), or '' to clear a setting."""
    return os.path.abspath(value) if value else ""


def _add_nb_ssl(p: argparse.ArgumentParser, path: Callable[[str], str],
                clear: str = "") -> None:
    """The client's SSL files of an ``ssl:`` --nb, each of type ``path``."""
    for option, what in zip(nb_ssl.OPTIONS, nb_ssl.HELP, strict=True):
        p.add_argument(option, type=path, metavar="FILE",
                       help=f"with an ssl: --nb: {what}{clear}")


def _add_neutron_settings(p: argparse.ArgumentParser) -> None:
    """node-init's settings of the Neutron backend and of the pod annotations."""
    p.add_argument("--neutron-config", type=os.path.abspath, metavar="OPENRC",
                   help="openrc file with the Neutron credentials and OS_VIF_ID (this VM's "
                   "port), the seed's external_ids:neutron-config")
    p.add_argument("--neutron-cloud", metavar="CLOUD", help="a clouds.yaml cloud instead of "
                   "an openrc (else OS_* environment variables are used)")
    p.add_argument("--child-ports", choices=CHILD_PORT_MODES,
                   help="how Neutron makes the pods' ports children of this VM's port: "
                   "trunk subports (default; a tenant may) or the seed's binding:profile "
                   "(needs admin)")
    p.add_argument("--kubeconfig", type=_path_or_empty,
                   help="kubeconfig of the Kubernetes API, read for the pods' "
                   "'security-group' annotation (without it, or with '', the annotation is "
                   "ignored)")
    p.add_argument("--node-name", help="this node's Kubernetes Node name; the daemon watches "
                   "the pods bound to it (default: the hostname in lower case, as the "
                   "kubelet takes it)")


def _add_daemon(sub: SubParsers) -> None:
    p = sub.add_parser(
        "daemon", help="the node daemon: serves the CNI plugin's calls, refills the pool",
        description="Run in the foreground until SIGTERM or SIGINT: serve the CNI plugin's "
                    "calls on a unix socket (the plugin does the work itself while no daemon "
                    "runs), keep the pool between its watermarks and export Prometheus "
                    "metrics. Refuses to start if another daemon serves the socket.")
    p.add_argument("--socket", help="unix socket to serve (default: the node's daemon-socket "
                   f"setting, else {DEFAULT_DAEMON_SOCKET})")
    p.add_argument("--metrics-address", help="HOST:PORT of /metrics, or 'off' (default: the "
                   f"node's metrics-address setting, else {DEFAULT_METRICS_ADDRESS})")
    p.add_argument("--workers", type=int, help="CNI calls served at once (default: 32)")
    p.add_argument("--reclaim-after", type=float, default=30.0, metavar="SECONDS",
                   help="free the port of a pod whose netns has been gone this long without "
                   "a DEL (default: %(default)s)")
    p.add_argument("--log-file", help="log here instead of stderr")
    p.set_defaults(func=daemon_cmds.cmd_daemon)


def _add_agent(sub: SubParsers) -> None:
    p = sub.add_parser(
        "agent", help="the node agent of cluster mode (the DaemonSet): set the node up from "
        "the cluster controller's answer, then serve as its daemon",
        description="Record the node's settings (backend cluster: no control-plane "
                    "credentials on the node), prepare it as node-init does, wait for its "
                    "UnderlayNode to be Ready, set up the node network and management port "
                    "from it, install the CNI binary, then run the node daemon until SIGTERM. "
                    "Reports NetworkUnavailable on the Node. Settings: the files of "
                    "--config-dir, then the options given here.")
    agent_cmds.add_arguments(p)
    p.set_defaults(func=agent_cmds.cmd_agent)


def _add_controller(sub: SubParsers) -> None:
    p = sub.add_parser(
        "controller", help="the cluster controller of cluster mode (the Deployment): every "
        "Node's network, from the control plane's credentials only it holds",
        description="Contend for the Lease ovn-underlay-controller (one replica acts; a "
                    "stopped one hands over at once, a dead one within the lease time); the "
                    "leader fences the control plane with its epoch, makes the cluster router "
                    "once, and for each Node: its subnet (spec.podCIDR, else allocated from "
                    "--cluster-subnet and recorded on the Node), its VM's port (the one "
                    "holding the Node's InternalIP), its switch, management port and pool, "
                    "and the answers in its UnderlayNode's status (pool ports, checked "
                    "security groups, owners); a deleted Node's network goes once its VM "
                    "port is gone. Runs until SIGTERM, which releases the Lease. Settings: "
                    "the files of --config-dir, then the options given here.")
    controller_cmds.add_arguments(p)
    p.set_defaults(func=controller_cmds.cmd_controller)


def _add_node_commands(sub: SubParsers) -> None:
    _add_node_init(sub)
    show = sub.add_parser("config", help="the node's settings").add_subparsers(
        dest="verb", required=True, metavar="VERB").add_parser(
        "show", help="print the node's settings (no secrets are stored)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=config_cmds.cmd_config_show)
    setup = sub.add_parser(
        "lswitch-setup", help="create this node's switch, router port, pool and mgmt port",
        description="Create the logical switch SWITCH with SUBNET, attach it to ROUTER "
                    "(created if missing), pre-create the pool of child ports of this VM's "
                    "port and the node's management port. All or nothing.")
    setup.add_argument("switch", metavar="SWITCH")
    setup.add_argument("subnet", metavar="SUBNET", help="e.g. 198.19.1.0/24")
    setup.add_argument("router", metavar="ROUTER")
    setup.add_argument("--pool-size", type=int,
                       help="ports to pre-create (default: one per free address)")
    setup.add_argument("--no-create-router", action="store_true",
                       help="fail if ROUTER does not exist instead of creating it")
    setup.add_argument("--first-batch", type=int, help="with Neutron: ports made before "
                       "returning; the rest is made in the background (default: 8)")
    setup.add_argument("--wait", action="store_true", help="with Neutron: make the whole "
                       "pool before returning, with a progress bar on a terminal")
    setup.set_defaults(func=lswitch_cmds.cmd_lswitch_setup)
    destroy = sub.add_parser("lswitch-destroy", help="remove what lswitch-setup made")
    destroy.add_argument("switch", metavar="SWITCH")
    destroy.add_argument("--force", action="store_true",
                         help="also detach pods that still hold ports")
    destroy.set_defaults(func=lswitch_cmds.cmd_lswitch_destroy)
    gateway = sub.add_parser(
        "router-gateway", help="give ROUTER its gateway to the outside, with SNAT",
        description="Give ROUTER a gateway on the external network EXTERNAL that SNATs the "
                    "pods' addresses (the cluster subnet, else this node's subnet), through "
                    "this node's control plane; idempotent. OVN NB: a distributed gateway "
                    "port with --address on the external logical switch, on the "
                    "--gateway-chassis, a default route via --next-hop. Neutron: the "
                    "router's external gateway with SNAT, as a tenant router has (Neutron "
                    "picks address, next hop and chassis).")
    gateway.add_argument("router", metavar="ROUTER")
    gateway.add_argument("external", metavar="EXTERNAL",
                         help="the external logical switch (NB) or network (Neutron)")
    gateway.add_argument("--address", default="",
                         help="the gateway's address with prefix, e.g. 203.0.113.2/24 "
                         "(needed with OVN NB; with Neutron an external fixed IP, admin only)")
    gateway.add_argument("--next-hop", default="", help="OVN NB: the default route's next hop")
    gateway.add_argument("--gateway-chassis", action="append", default=[], metavar="CHASSIS",
                         help="OVN NB: a chassis for the gateway port, highest priority "
                         "first (repeat)")
    gateway.add_argument("--snat", action="append", default=[], metavar="SUBNET",
                         help="subnets to SNAT (repeat; default: the cluster subnet)")
    plane = gateway.add_mutually_exclusive_group()
    plane.add_argument("--nb", default="", help="the OVN NB to write to instead of this "
                       "node's control plane (where the node has none: cluster mode); an "
                       "ssl:HOST:PORT one with the three --nb-* files")
    plane.add_argument("--neutron-config", default="", metavar="OPENRC",
                       help="the openrc of the Neutron to write to instead of this node's")
    _add_nb_ssl(gateway, str)
    gateway.set_defaults(nb_private_key="", nb_certificate="", nb_ca_cert="")
    gateway.set_defaults(func=lswitch_cmds.cmd_router_gateway)
    pool_verbs = sub.add_parser("pool", help="the node's port pool").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    pool = pool_verbs.add_parser("show", help="every port of the pool, free or held by which "
                                 "pod")
    pool.add_argument("--json", action="store_true", help="print JSON")
    pool.set_defaults(func=pool_cmds.cmd_pool_show)
    fill = pool_verbs.add_parser(
        "fill", help="create ports until the pool has its size (what lswitch-setup's "
        "background filler does; waits for a running one)")
    fill.add_argument("--size", type=int, help="ports wanted (default: the size lswitch-setup "
                      "was given)")
    fill.add_argument("--batch", type=int, help="ports per request (default: the node's "
                      "pool-batch setting)")
    fill.set_defaults(func=pool_cmds.cmd_pool_fill)


def _add_kubelet_verbs(sub: SubParsers) -> None:
    sub.add_parser("init", help="kubelet exec plugin: check the node is ready for pods"
                   ).set_defaults(func=kubelet_cmds.cmd_init)
    for verb, text, handler in (
            ("setup", "attach a pod's eth0", kubelet_cmds.cmd_setup),
            ("status", "print {\"ip\": ...} of a pod", kubelet_cmds.cmd_status),
            ("teardown", "detach a pod's eth0", kubelet_cmds.cmd_teardown)):
        p = sub.add_parser(verb, help=f"kubelet exec plugin: {text}")
        p.add_argument("namespace", metavar="NAMESPACE")
        p.add_argument("pod", metavar="POD")
        p.add_argument("container_id", metavar="CONTAINER_ID")
        p.add_argument("--netns", help="the container's netns path (default: ask the engine)")
        p.add_argument("--engine-socket", default=os.environ.get(
            "OVN_UNDERLAY_ENGINE_SOCKET", "/var/run/docker.sock"),
            help="Docker-compatible engine API socket (default: %(default)s)")
        p.set_defaults(func=handler)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="ovn-k8s-underlay",
        description="Kubernetes pods on OVN logical ports that are children of their VM's "
                    "port: node setup, per-node switches and port pools, the seed's kubelet "
                    "verbs, and a one-machine lab.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--ovsdb", default=os.environ.get("OVN_UNDERLAY_OVSDB", DEFAULT_OVSDB),
                        help="the node's local Open_vSwitch database (default: %(default)s; "
                        "env OVN_UNDERLAY_OVSDB)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_node_commands(sub)
    _add_kubelet_verbs(sub)
    _add_daemon(sub)
    _add_agent(sub)
    _add_controller(sub)
    _add_lab(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ovn-k8s-underlay``."""
    args = build_parser().parse_args(argv)
    import logging

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.verbose:
            raise
        print(f"ovn-k8s-underlay: error: {exc}{_hint(exc, args)}", file=sys.stderr)
        return 1


def _hint(exc: Exception, args: argparse.Namespace) -> str:
    """What to try when the error is the node's OVS database being out of reach."""
    from ovn_underlay.dataplane.ovs import OvsUnavailable

    if not isinstance(exc, OvsUnavailable):
        return ""
    return (f"\n  is {args.ovsdb} this node's Open_vSwitch database? Name it with --ovsdb or "
            "OVN_UNDERLAY_OVSDB (on a lab VM, run the command with "
            "'ovn-k8s-underlay lab exec VM -- ...', which sets it)")


if __name__ == "__main__":
    sys.exit(main())
