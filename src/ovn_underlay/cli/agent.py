"""``ovn-k8s-underlay agent``: the node agent of cluster mode (what the DaemonSet runs).

Settings come from a directory of files, one per option, named as the option without
its dashes (a mounted ConfigMap: ``uplink``, ``mtu``, ``pool-low``, ...; default
:data:`DEFAULT_CONFIG_DIR`), and from the command line, which wins.  The Node is
``--node-name``, else the ``NODE_NAME`` environment variable (the downward API's
``spec.nodeName``), else the hostname in lower case.  The Kubernetes API is the
``--kubeconfig``, else the pod's service account: then a kubeconfig naming the service
account's token file (read again when it rotates) and CA is written into the state
directory, so that the daemon, which reads the node's settings, finds the API too.
The work itself is :class:`~ovn_underlay.daemon.node_agent.ClusterAgent`'s.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from ovn_underlay.cli.settings_dir import read_settings_dir
from ovn_underlay.config import DEFAULT_STATE_DIR, ConfigError, NodeConfig

DEFAULT_CONFIG_DIR = "/etc/ovn-underlay/agent"
IN_CLUSTER_KUBECONFIG = "kubeconfig"
"""The file in the state directory that names the pod's service account."""
SETTINGS = ("uplink", "uplink_mode", "bridge", "datapath", "mtu", "state_dir",
            "cluster_subnet", "pool_low", "pool_high", "pool_batch", "metrics_address",
            "daemon_socket", "cni_conf_dir", "cni_version", "cni_log_file")
"""The agent's options that are node settings (recorded in external_ids as node-init does)."""
CNI_DEFAULTS = {"cni_bin_dir": "/opt/cni/bin", "cni_conf_dir": "/etc/cni/net.d",
                "cni_version": "1.0.0"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The agent's options (also the names of the settings directory's files)."""
    p.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR,
                   help="directory of settings, one file per option (a mounted ConfigMap; "
                   "missing is fine; default: %(default)s)")
    p.add_argument("--node-name", help="this node's Node (default: env NODE_NAME, else the "
                   "hostname in lower case)")
    p.add_argument("--kubeconfig", help="kubeconfig of the API (default: the pod's service "
                   "account)")
    p.add_argument("--uplink", help="NIC on the VMs' network (default: eth1)")
    p.add_argument("--uplink-mode", choices=["ovs", "linux-bridge"], help="(default: ovs)")
    p.add_argument("--bridge", help="integration bridge (default: br-int)")
    p.add_argument("--datapath", choices=["auto", "system", "netdev"],
                   help="OVS datapath (default: auto: system if the kernel module is loaded)")
    p.add_argument("--mtu", type=int, help="pod MTU (default: the uplink's)")
    p.add_argument("--state-dir", help=f"the pool's directory (default: {DEFAULT_STATE_DIR})")
    p.add_argument("--cluster-subnet", help="all pods' addresses, routed from the "
                   "management port (the controller's cluster-subnet)")
    p.add_argument("--service-cidr", metavar="CIDR", help="the Services' ClusterIP range "
                   "(IPv4; kube-apiserver's --service-cluster-ip-range), routed from the "
                   "management port so that the node's own processes (host-network pods, "
                   "kubelet, the API server's webhooks) reach ClusterIPs (default: none: "
                   "they reach them only through kube-proxy's rules, where it runs)")
    p.add_argument("--pool-low", type=int, help="refill below this many free ports")
    p.add_argument("--pool-high", type=int, help="... up to this many; also the pool "
                   "asked of the controller at start")
    p.add_argument("--pool-batch", type=int, help="ports per request of the refill")
    p.add_argument("--metrics-address", help="HOST:PORT of /metrics, or 'off'")
    p.add_argument("--daemon-socket", help="the daemon's unix socket")
    p.add_argument("--install-cni", choices=["yes", "no"], help="install the CNI binary "
                   "and conflist once the node can serve pods (default: yes)")
    p.add_argument("--cni-bin-dir", help=f"(default: {CNI_DEFAULTS['cni_bin_dir']})")
    p.add_argument("--cni-conf-dir", help=f"(default: {CNI_DEFAULTS['cni_conf_dir']})")
    p.add_argument("--cni-version", help=f"(default: {CNI_DEFAULTS['cni_version']}, see "
                   "node-init --help)")
    p.add_argument("--cni-log-file", help="the plugin's log file (default: stderr)")
    p.add_argument("--ready-timeout", type=float, help="give up (exit 1) when the node is "
                   "not set up after this many seconds (default: 0, never)")
    p.add_argument("--log-file", help="log here instead of stderr")


def with_config_dir(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the options it lacks taken from the settings directory's files
    (:func:`~ovn_underlay.cli.settings_dir.read_settings_dir`), then the CNI directories'
    defaults, :data:`CNI_DEFAULTS`, for those neither gives."""
    return _merged(args, read_settings_dir(Path(args.config_dir), add_arguments, "agent"))


def _merged(args: argparse.Namespace, lower: dict[str, Any]) -> argparse.Namespace:
    """``args`` with its unset options from ``lower``, then the CNI directories' defaults."""
    merged = dict(vars(args))
    for dest, value in lower.items():
        if merged.get(dest) is None and value is not None:
            merged[dest] = value
    for dest, value in CNI_DEFAULTS.items():
        if merged.get(dest) is None:
            merged[dest] = value
    return argparse.Namespace(**merged)


def service_cidr(args: argparse.Namespace) -> str:
    """--service-cidr checked and normalised ("" when not given); ConfigError naming the
    option and the value when it is not an IPv4 network (an IPv6 or dual-stack range is
    refused as not supported yet), or when it overlaps --cluster-subnet."""
    value = (args.service_cidr or "").strip()
    if not value:
        return ""
    where = f"--service-cidr (file 'service-cidr') {value!r}"
    if "," in value:
        raise ConfigError(f"{where}: give the IPv4 range only; IPv6 Service ranges are not "
                          "supported yet")
    if "/" not in value:
        raise ConfigError(f"{where} is not a CIDR (ADDRESS/PREFIX, e.g. 10.96.0.0/12)")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where} is not an IPv4 CIDR: {exc}") from None
    if net.version != 4:
        raise ConfigError(f"{where}: IPv6 Service ranges are not supported yet (IPv4 only)")
    cluster = getattr(args, "cluster_subnet", None)
    if cluster:
        try:
            pods = ipaddress.ip_network(cluster, strict=False)
        except ValueError:
            pods = None
        if pods is not None and net.overlaps(pods):
            raise ConfigError(f"{where} overlaps --cluster-subnet {cluster}: the Service "
                              "range and the pods' addresses must be apart")
    return str(net)


def node_name(args: argparse.Namespace) -> str:
    """--node-name, else NODE_NAME (the downward API), else the hostname in lower case."""
    return (args.node_name or os.environ.get("NODE_NAME", "")
            or socket.gethostname().strip().lower())


def in_cluster_kubeconfig(state_dir: str, service_account: str = "") -> str:
    """Write (if changed) a kubeconfig naming the pod's service account (its token file and
    CA, default :data:`~ovn_underlay.kube.client.SERVICE_ACCOUNT`); its path."""
    from ovn_underlay.kube.client import SERVICE_ACCOUNT, in_cluster

    account = service_account or SERVICE_ACCOUNT
    if not in_cluster(account):
        raise ConfigError("no Kubernetes API: give --kubeconfig, or run the agent in a pod "
                          "with a service account (the DaemonSet)")
    import yaml

    host = os.environ["KUBERNETES_SERVICE_HOST"]
    server = f"https://[{host}]" if ":" in host else f"https://{host}"
    text = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": f"{server}:{os.environ['KUBERNETES_SERVICE_PORT']}",
            "certificate-authority": f"{account}/ca.crt"}}],
        "users": [{"name": "agent", "user": {"tokenFile": f"{account}/token"}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster",
                                                        "user": "agent"}}]})
    path = Path(state_dir) / IN_CLUSTER_KUBECONFIG
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return str(path)


def node_settings(args: argparse.Namespace, node: str) -> NodeConfig:
    """The node's settings from the agent's options; defaults as node-init's."""
    from ovn_underlay.cli.node_init import with_host_defaults

    values: dict[str, Any] = {name: getattr(args, name) for name in SETTINGS
                              if getattr(args, name, None) is not None}
    cfg = replace(NodeConfig(), **values, node_name=node)
    if args.install_cni != "no":
        cfg = replace(cfg, cni_conf_dir=os.path.abspath(args.cni_conf_dir),
                      cni_version=args.cni_version)
    cfg = with_host_defaults(cfg)
    kubeconfig = os.path.abspath(args.kubeconfig) if args.kubeconfig else \
        in_cluster_kubeconfig(cfg.state_dir)
    return replace(cfg, kubeconfig=kubeconfig)


def cmd_agent(args: argparse.Namespace) -> int:
    """Set the node up from the cluster controller's answer, then serve as its daemon."""
    import functools

    from ovn_underlay.cli.daemon import _setup_logging, stop_on_signals
    from ovn_underlay.daemon.node_agent import AgentSettings, ClusterAgent
    from ovn_underlay.kube.client import load_config

    args = with_config_dir(args)
    _setup_logging(args.log_file, args.verbose)
    services = service_cidr(args)
    node = node_name(args)
    cfg = node_settings(args, node)
    settings = AgentSettings(args.ovsdb, node, cfg, args.ready_timeout or 0.0, services)
    install = None if args.install_cni == "no" else functools.partial(_install_cni, args)
    agent = ClusterAgent(settings, functools.partial(load_config, cfg.kubeconfig), install)

    stop_on_signals(agent.stop)
    return agent.run()


def _install_cni(args: argparse.Namespace, cfg: NodeConfig) -> list[str]:
    """The CNI binary into --cni-bin-dir as a host runs it: the statically linked native
    shim in host mode with its settings beside it (no Python, no venv; code 11 while no
    daemon answers), each file written then renamed (:mod:`ovn_underlay.cni.host_install`).
    The conflist is the daemon's, once it serves."""
    from ovn_underlay.cli.cni_install import check_cni_targets
    from ovn_underlay.cni.host_install import HostInstallError, install_host_binary

    args.cni_conf_dir = cfg.cni_conf_dir
    check_cni_targets(args)
    try:
        return install_host_binary(Path(args.cni_bin_dir), cfg.daemon_socket)
    except HostInstallError as exc:
        raise ConfigError(str(exc)) from exc
