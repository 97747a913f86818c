"""``ovn-k8s-underlay controller``: the cluster controller (what the Deployment runs).

Settings come from a directory of files, one per option, named as the long option
without its dashes (a mounted ConfigMap: ``cluster-subnet``, ``nb``, ``router``, ...;
default :data:`DEFAULT_CONFIG_DIR`, missing is fine), and from the command line, which
wins; then the defaults.  The Kubernetes API is ``--kubeconfig``, else the pod's service
account.  The controller alone holds the control-plane credentials: the NB address
(``--nb``, with an ``ssl:`` one the client's files ``--nb-private-key``,
``--nb-certificate`` and ``--nb-ca-cert``), or Neutron's (``--neutron-config``, an
openrc file, else ``--neutron-cloud``, else the ``OS_*`` variables).  The work is
:class:`~ovn_underlay.controller.main.Controller`'s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovn_underlay import nb_ssl
from ovn_underlay.cli.settings_dir import read_settings_dir
from ovn_underlay.config import CHILD_PORT_MODES, DEFAULT_CHILD_PORTS, ConfigError

if TYPE_CHECKING:
    from ovn_underlay.control.base import ControlPlane

DEFAULT_CONFIG_DIR = "/etc/ovn-underlay/controller"
NB_SSL_DIR = "/etc/ovn-underlay/nb-ssl"
"""Where deploy/controller.yaml mounts the Secret of the NB SSL files (for --help)."""
DEFAULTS: dict[str, Any] = {
    "backend": "ovn", "nb": "", "nb_private_key": "", "nb_certificate": "", "nb_ca_cert": "",
    "neutron_config": "", "neutron_cloud": "",
    "child_ports": DEFAULT_CHILD_PORTS, "cluster_subnet": "", "node_subnet_size": 24,
    "router": "ovn-underlay", "pool_size": 16, "max_pool_ports": 128, "pool_batch": 32,
    "namespace": "ovn-underlay", "resync": 30.0, "kubeconfig": "",
    "metrics_address": "127.0.0.1:9477", "service_subnet": "", "service_cidr": ""}
"""Each option's value when neither the command line nor a settings file gives one (the
controller's own defaults, which a test holds these to: this module imports no controller
code until the command runs)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The controller's options (also the names of the settings directory's files)."""
    p.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR,
                   help="directory of settings, one file per option named without its "
                   "dashes, e.g. cluster-subnet (a mounted ConfigMap; missing is fine; the "
                   "command line wins; default: %(default)s)")
    p.add_argument("--kubeconfig", help="kubeconfig of the Kubernetes API (default: the "
                   "pod's service account, in a cluster)")
    p.add_argument("--backend", choices=["ovn", "neutron"], help="the control plane: OVN "
                   "Northbound (plain OVN), or Neutron (OpenStack with ML2/OVN) (default: "
                   "ovn)")
    p.add_argument("--nb", help="with --backend ovn: the OVN Northbound connection, e.g. "
                   "tcp:HOST:6641, ssl:HOST:6641 (with the three --nb-* files) or unix:PATH; "
                   "only the controller connects to it")
    for option, what in zip(nb_ssl.OPTIONS, nb_ssl.HELP, strict=True):
        p.add_argument(option, metavar="FILE", help=f"with an ssl: --nb: {what}; in the "
                       "Deployment a key of the Secret ovn-underlay-nb-ssl, mounted at "
                       f"{NB_SSL_DIR}")
    p.add_argument("--neutron-config", metavar="OPENRC", help="with --backend neutron: an "
                   "openrc file with the Neutron credentials (else --neutron-cloud, else "
                   "OS_* variables)")
    p.add_argument("--neutron-cloud", metavar="CLOUD", help="with --backend neutron: a cloud "
                   "of clouds.yaml")
    p.add_argument("--child-ports", choices=CHILD_PORT_MODES, help="with --backend neutron: "
                   "trunk subports (a tenant may make them) or binding:profile (needs admin) "
                   f"(default: {DEFAULT_CHILD_PORTS})")
    p.add_argument("--cluster-subnet", metavar="CIDR", help="every pod's address; a Node "
                   "without spec.podCIDR gets a block of it (recorded on the Node as "
                   "annotation ovn-underlay.io/node-subnet), and podCIDRs must lie in it "
                   "(default: none: every Node needs spec.podCIDR)")
    p.add_argument("--node-subnet-size", type=int, metavar="PREFIX", help="the prefix length "
                   "of the blocks allocated from --cluster-subnet (default: 24)")
    p.add_argument("--router", metavar="NAME", help="the cluster router, made once, to which "
                   "every node switch is attached (default: ovn-underlay)")
    p.add_argument("--pool-size", type=int, metavar="N", help="pool ports made with a node's "
                   "network; the node agent asks for more (default: 16)")
    p.add_argument("--max-pool-ports", type=int, metavar="N", help="the most pool ports a "
                   "node gets, whatever it asks: a node cannot exhaust the cloud's quota "
                   "(default: 128)")
    p.add_argument("--pool-batch", type=int, metavar="N", help="pool ports per control-plane "
                   "request when a pool grows (default: 32)")
    p.add_argument("--namespace", metavar="NS", help="namespace of the leader-election Lease "
                   "ovn-underlay-controller (default: ovn-underlay)")
    p.add_argument("--resync", type=float, metavar="SECONDS", help="every node is reconciled "
                   "again this often; how soon a deleted Node's network goes once its VM "
                   "port is gone (default: 30)")
    p.add_argument("--service-subnet", metavar="NAME_OR_ID", help="with --backend neutron: "
                   "the Neutron subnet holding the Service range, where Octavia's VIPs are "
                   "(its allocation pool and gateway outside the range); attached to the "
                   "router at every term's start; ClusterIP Services go through Octavia's "
                   "OVN provider (needs --service-cidr) (default: none: no Services on "
                   "Neutron)")
    p.add_argument("--service-cidr", metavar="CIDR", help="the Services' ClusterIP range, "
                   "kube-apiserver's --service-cluster-ip-range (IPv4, apart from "
                   "--cluster-subnet); with --backend ovn the router drops it (a packet "
                   "for an address no Service holds is not routed out through the "
                   "gateway); with --service-subnet every pool port gets the security "
                   "group ovn-underlay-services, whose one rule admits it (a pod reaching "
                   "itself through its Service) (default: none)")
    p.add_argument("--metrics-address", metavar="HOST:PORT", help="where Prometheus "
                   "scrapes /metrics (port 0: any free one, logged), or 'off' (default: "
                   "127.0.0.1:9477; the Deployment runs on the host network)")
    p.add_argument("--log-file", help="log here (created 0600) instead of stderr")


def with_config_dir(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the options it lacks from the settings directory's files
    (:func:`~ovn_underlay.cli.settings_dir.read_settings_dir`), then :data:`DEFAULTS`."""
    from_files = read_settings_dir(Path(args.config_dir), add_arguments, "controller")
    merged = dict(vars(args))
    for dest, default in DEFAULTS.items():
        if merged.get(dest) is None:
            value = from_files.get(dest)
            merged[dest] = value if value is not None else default
    return argparse.Namespace(**merged)


def cmd_controller(args: argparse.Namespace) -> int:
    """Run the controller until SIGTERM or SIGINT (then release the Lease)."""
    from ovn_underlay.cli.agent import service_cidr
    from ovn_underlay.cli.daemon import _setup_logging, stop_on_signals
    from ovn_underlay.config import METRICS_OFF
    from ovn_underlay.controller.main import Controller, ControllerConfig
    from ovn_underlay.controller.metrics import ControllerMetrics
    from ovn_underlay.controller.nodes import Settings
    from ovn_underlay.kube.client import load_config
    from ovn_underlay.metrics_http import serve, split_address

    _setup_logging(args.log_file, args.verbose)
    args = with_config_dir(args)
    if args.backend == "ovn" and not args.nb:
        raise ConfigError("--backend ovn needs --nb (the OVN Northbound connection), on the "
                          "command line or as the file 'nb' in the settings directory")
    check_nb_ssl(args)
    if args.metrics_address != METRICS_OFF:
        try:
            split_address(args.metrics_address)
        except ValueError as exc:
            raise ConfigError(f"--metrics-address: {exc} (or 'off')") from None
    services = service_cidr(args)
    if args.service_subnet and args.backend != "neutron":
        raise ConfigError("--service-subnet is a Neutron subnet: it needs --backend neutron "
                          "(with --backend ovn Services are OVN's own load balancers)")
    if args.service_subnet and not services:
        raise ConfigError("--service-subnet needs --service-cidr (kube-apiserver's "
                          "--service-cluster-ip-range): without the hairpin rule a pod "
                          "could not reach itself through its Service")
    settings = Settings(router=args.router, cluster_subnet=args.cluster_subnet,
                        pool_size=args.pool_size, max_pool_ports=args.max_pool_ports,
                        pool_batch=args.pool_batch)
    config = ControllerConfig(settings=settings, node_prefix=args.node_subnet_size,
                              namespace=args.namespace, resync=args.resync,
                              service_subnet=args.service_subnet, service_cidr=services)
    metrics = ControllerMetrics()
    controller = Controller(load_config(args.kubeconfig), config, lambda: _connect(args),
                            metrics)
    if args.metrics_address != METRICS_OFF:
        serve(metrics.registry, args.metrics_address)

    stop_on_signals(controller.stop)
    controller.start()
    controller.wait()
    return 0


def check_nb_ssl(args: argparse.Namespace) -> None:
    """Raise ConfigError unless the merged settings' NB SSL files fit their backend and
    --nb (:func:`~ovn_underlay.nb_ssl.nb_ssl`: all three for an ssl: --nb, readable and
    matching; none otherwise), saying where they are set."""
    files = (args.nb_private_key, args.nb_certificate, args.nb_ca_cert)
    where = f"on the command line or as files of the settings directory {args.config_dir}"
    if args.backend != "ovn":
        given = [o for o, value in zip(nb_ssl.OPTIONS, files, strict=True) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} given ({where}): they are the OVN NB's, "
                              "for --backend ovn only")
        return
    try:
        nb_ssl.nb_ssl(args.nb, *files)
    except ConfigError as exc:
        raise ConfigError(f"{exc} ({where})") from None


def _connect(args: argparse.Namespace) -> ControlPlane:
    """A new connection to the control plane the settings name."""
    from ovn_underlay.config import NodeConfig
    from ovn_underlay.control.factory import connect

    return connect(NodeConfig(
        backend=args.backend, nb=args.nb, nb_private_key=args.nb_private_key,
        nb_certificate=args.nb_certificate, nb_ca_cert=args.nb_ca_cert,
        neutron_config=args.neutron_config, neutron_cloud=args.neutron_cloud,
        child_ports=args.child_ports,
        state_dir=str(Path(tempfile.gettempdir()) / "ovn-underlay-controller")),
        ssl_options=nb_ssl.OPTIONS)
