"""Kubernetes in the lab (``lab up --kube``): the test API server, Node objects, kubelets.

The test API server (:mod:`ovn_underlay.lab.kubeapi`, ``python -m
ovn_underlay.lab.kubeapi``) runs as a lab process in the hypervisor namespace,
listening on the hypervisor's address of the management network (198.18.1.1,
the Linux bridge ``br-mgmt`` that a Neutron lab has too, see
:mod:`ovn_underlay.lab.neutron`), port 6443, plain HTTP without tokens: every
VM reaches it over its ``eth0``.  ``lab up --kube`` writes a kubeconfig
naming it (``hv/kubeapi/kubeconfig`` in the run directory) and creates one
Node object per VM.

Cluster mode (what the manifests in ``deploy/`` run): :func:`install_cluster_mode` creates
the UnderlayNode CRD (``deploy/crd.yaml``) and the project's namespace,
:func:`start_controller` runs ``ovn-k8s-underlay controller`` in the hypervisor (where
the NB and the API server are; it alone gets the control plane's address or
credentials) and :func:`start_agent` runs ``ovn-k8s-underlay agent`` in a VM's network
namespace with the VM's own directories passed as options, as a DaemonSet's hostPath
mounts would give them, and no control-plane settings at all.
:func:`wait_network_available` waits for the agent's ``NetworkUnavailable=False``.

Per VM, :func:`start_node` runs the VM's containerd
(:mod:`ovn_underlay.lab.containerd`) and a kubelet stand-in (``python -m
ovn_underlay.lab.kubelet``, in the VM's network namespace) as lab processes:
their pid files are recorded in ``lab.json``, so ``lab down`` stops them.
That needs the node's CNI installed first (``node-init --install-cni``), which
is why ``lab demo --kube`` starts them, not ``lab up``.

The lab's code runs in the machine's namespace, where 198.18.1.1 is not
reachable: :func:`request` makes its HTTP request from a thread inside the
hypervisor's namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovn_underlay.lab import netns
from ovn_underlay.lab.daemons import DaemonError, alive, read_live_pid
from ovn_underlay.lab.neutron import (
    add_mgmt_bridge,
    hv_mgmt_ip,
    in_netns,
)

if TYPE_CHECKING:
    from ovn_underlay.lab.containerd import Containerd
    from ovn_underlay.lab.topology import Lab, LabState, VmInfo

API_PORT = 6443
CLUSTER_NAMESPACE = "ovn-underlay"
UNDERLAY_NODES = "/apis/ovn-underlay.io/v1alpha1/underlaynodes"
"""The UnderlayNodes' API path (ovn_underlay.kube.underlay_node's, which the lab, a layer
beside the product's Kubernetes client, does not import)."""
CRD_FILE = Path(__file__).resolve().parents[3] / "deploy" / "crd.yaml"
"""The UnderlayNode CRD of the source tree (the lab runs from a checkout)."""
CONTROLLER_OPENRC = """\
# Neutron of lab {lab}, for the cluster controller (noauth: the lab's neutron-server).
export OS_AUTH_TYPE=none
export OS_NETWORK_ENDPOINT_OVERRIDE={url}
"""
CONTROLLER_OPENRC_OCTAVIA = """\
# ... and its Octavia (noauth: load balancers are made in the Service subnet's project).
export OS_LOAD_BALANCER_ENDPOINT_OVERRIDE={url}
"""
READY_TIMEOUT = 20.0
HTTP_TIMEOUT = 30.0


def api_url() -> str:
    """The lab's Kubernetes API, as the VMs reach it."""
    return f"http://{hv_mgmt_ip()}:{API_PORT}"


def _spawn(name: str, argv: list[str], workdir: Path, ns: str, net_only: bool = False) -> Path:
    """Start a program in namespace ``ns``; write its pid file; return the file.

    With ``net_only`` only its network namespace is switched (``nsenter --net``):
    ``ip netns exec`` gives it a mount namespace of its own, where the sandboxes'
    namespace files that containerd mounts later may not show.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pidfile = workdir / f"{name}.pid"
    enter = (["nsenter", f"--net={netns.path(ns)}"] if net_only
             else ["ip", "netns", "exec", ns])
    with open(workdir / f"{name}.log", "ab") as out:
        proc = subprocess.Popen([*enter, *argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True, close_fds=True)
    pidfile.write_text(f"{proc.pid}\n")
    return pidfile


def request(state: LabState, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> Any:
    """One request to the lab's API server, made from the hypervisor's namespace."""
    data = None if body is None else json.dumps(body).encode()
    url = state.kube.get("url") or api_url()

    def call() -> Any:
        req = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as reply:
            return json.loads(reply.read() or b"null")

    return in_netns(state.hv_netns, call)


def kubeconfig(url: str, lab: str) -> str:
    """A kubeconfig (JSON, which is YAML) for ``url``: no credentials, plain HTTP."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": lab, "cluster": {"server": url}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": lab, "context": {"cluster": lab, "user": "lab",
                                               "namespace": "default"}}],
        "current-context": lab}, indent=2) + "\n"


def up(state: LabState, lab_dir: Path, service_range: str = "") -> None:
    """The management bridge (unless Neutron made it) and the API server, ready.

    ``service_range``: its ``--service-cluster-ip-range`` (default: the API server's),
    recorded as ``state.kube["service_range"]`` for the controller and the agents.
    """
    from ovn_underlay.lab.kubeapi.api import Config

    workdir = lab_dir / "hv" / "kubeapi"
    if not state.neutron:
        add_mgmt_bridge(state)
    log = workdir / "kubeapi.log"
    service_range = service_range or Config.service_cluster_ip_range
    pidfile = _spawn("kubeapi", [sys.executable, "-m", "ovn_underlay.lab.kubeapi", "--listen",
                                 f"{hv_mgmt_ip()}:{API_PORT}", "--advertise-address",
                                 hv_mgmt_ip(), "--request-log",
                                 str(workdir / "requests.log"), "--service-cluster-ip-range",
                                 service_range], workdir,
                     state.hv_netns)
    state.daemons["kubeapi"] = str(pidfile)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            request(state, "GET", "/version")
            break
        except (OSError, ValueError):
            if not alive(pid):
                raise DaemonError(f"the test API server exited during start-up; see {log}"
                                  ) from None
            if time.monotonic() > deadline:
                raise DaemonError(f"the test API server did not answer within "
                                  f"{READY_TIMEOUT:.0f}s; see {log}") from None
            time.sleep(0.05)
    config = workdir / "kubeconfig"
    config.write_text(kubeconfig(api_url(), state.name))
    state.kube.update(url=api_url(), kubeconfig=str(config), log=str(log),
                      request_log=str(workdir / "requests.log"), service_range=service_range)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_object(vm: VmInfo) -> dict[str, Any]:
    """The Node of a VM, as kubelet registers it (InternalIP: its address on vmnet)."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": vm.name, "labels": {"kubernetes.io/hostname": vm.name,
                                                     "kubernetes.io/os": "linux"}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady", "lastHeartbeatTime": _now(),
                                       "lastTransitionTime": _now()}],
                       "addresses": [{"type": "InternalIP", "address": vm.ip},
                                     {"type": "Hostname", "address": vm.name}]}}


def register_nodes(state: LabState) -> None:
    """One Node object per VM (an existing one is kept)."""
    for vm in state.vms:
        try:
            request(state, "POST", "/api/v1/nodes", node_object(vm))
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise


# --- cluster mode: the controller and the node agents --------------------------------------


def install_cluster_mode(state: LabState) -> None:
    """The UnderlayNode CRD and the project's namespace (existing ones are kept)."""
    import yaml

    if not CRD_FILE.is_file():
        raise DaemonError(f"{CRD_FILE} is missing: the lab's cluster mode runs from a source "
                          "checkout")
    for path, body in (("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                        yaml.safe_load(CRD_FILE.read_text())),
                       ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": CLUSTER_NAMESPACE}})):
        try:
            request(state, "POST", path, body)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ovn_underlay.cli", *args]


def start_controller(state: LabState, lab_dir: Path, cluster_subnet: str, router: str,
                     name: str = "cluster-controller") -> Path:
    """``ovn-k8s-underlay controller`` in the hypervisor, with the lab's control plane.

    ``--service-cidr``, the test API server's Service range.  NB lab: the NB address
    (the router drops the range); Neutron lab: the admin openrc the lab wrote, with
    Octavia's endpoint when the lab runs Octavia, and then ``--service-subnet`` (the
    lab's Service subnet, :data:`ovn_underlay.lab.octavia.SERVICE_NETWORK_NAME`, which
    holds that range): Services through Octavia.  Metrics on a free port of the
    hypervisor's loopback (two controllers may run at once; the log says where).
    Returns its pid file (recorded in the lab's state as ``name``; not ``controller``,
    the hypervisor's ovn-controller's).
    """
    workdir = lab_dir / "hv" / name
    backend = ["--backend", "ovn", "--nb", state.nb,
               "--service-cidr", state.kube["service_range"]]
    if state.neutron:
        workdir.mkdir(parents=True, exist_ok=True)
        openrc = workdir / "openrc"
        fd = os.open(openrc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(CONTROLLER_OPENRC.format(lab=state.name, url=state.neutron["url"]))
            if state.octavia.get("service_subnet"):
                handle.write(CONTROLLER_OPENRC_OCTAVIA.format(url=state.octavia["url"]))
        backend = ["--backend", "neutron", "--neutron-config", str(openrc)]
        if state.octavia.get("service_subnet"):
            from ovn_underlay.lab.octavia import SERVICE_NETWORK_NAME

            backend += ["--service-subnet", SERVICE_NETWORK_NAME,
                        "--service-cidr", state.kube["service_range"]]
    pidfile = _spawn(name, _cli("controller", "--config-dir", str(workdir / "settings"),
                                "--kubeconfig", state.kube["kubeconfig"], *backend,
                                "--cluster-subnet", cluster_subnet, "--router", router,
                                "--namespace", CLUSTER_NAMESPACE,
                                "--metrics-address", "127.0.0.1:0",
                                "--log-file", str(workdir / f"{name}.log")),
                     workdir, state.hv_netns, net_only=True)
    state.daemons[name] = str(pidfile)
    return pidfile


def start_agent(state: LabState, vm: VmInfo, cluster_subnet: str) -> Path:
    """``ovn-k8s-underlay agent`` in ``vm``: its directories as options, no control plane.

    The Service range routed from its management port is the test API server's
    ``--service-cluster-ip-range``.  Returns its pid file (recorded as the VM's ``agent``).
    """
    from ovn_underlay.lab.cluster import Node

    node = Node(state, vm)
    workdir = Path(vm.rundir) / "agent"
    pidfile = _spawn("agent", _cli("--ovsdb", vm.ovsdb, "agent",
                                   "--config-dir", str(workdir / "settings"),
                                   "--node-name", vm.name,
                                   "--kubeconfig", state.kube["kubeconfig"],
                                   "--state-dir", str(node.state_dir),
                                   "--cluster-subnet", cluster_subnet,
                                   "--service-cidr", state.kube["service_range"],
                                   "--daemon-socket", str(Path(vm.rundir) / "run" / "cni.sock"),
                                   "--metrics-address", "off",
                                   "--cni-bin-dir", str(node.cni_bin_dir),
                                   "--cni-conf-dir", str(node.cni_conf_dir),
                                   "--cni-log-file", str(Path(vm.rundir) / "cni.log"),
                                   "--log-file", str(workdir / "agent.log")),
                     workdir, vm.netns, net_only=True)
    vm.daemons["agent"] = str(pidfile)
    return pidfile


def network_condition(state: LabState, node: str) -> dict[str, Any]:
    """The Node's NetworkUnavailable condition ({} while it has none)."""
    obj = request(state, "GET", f"/api/v1/nodes/{node}")
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == "NetworkUnavailable":
            return dict(cond)
    return {}


def wait_network_available(state: LabState, vm: VmInfo, timeout: float) -> dict[str, Any]:
    """Wait for the VM's Node to say NetworkUnavailable=False; its condition.

    Raises DaemonError with the last condition and the agent's log when it does not come,
    or when the agent exited.
    """
    deadline = time.monotonic() + timeout
    pid = read_live_pid(Path(vm.daemons["agent"]))
    log = Path(vm.rundir) / "agent" / "agent.log"
    while True:
        cond = network_condition(state, vm.name)
        if cond.get("status") == "False":
            return cond
        if pid is None or not alive(pid):
            raise DaemonError(f"the node agent of {vm.name} exited; see {log}")
        if time.monotonic() > deadline:
            raise DaemonError(f"{vm.name}: NetworkUnavailable still {cond or 'unset'} after "
                              f"{timeout:.0f}s; see {log}")
        time.sleep(0.2)


# --- per node: containerd and the kubelet stand-in ---------------------------------------


def start_node(lab: Lab, state: LabState, vm: VmInfo) -> Containerd:
    """containerd and a kubelet stand-in for ``vm`` as lab processes (node-init done)."""
    from ovn_underlay.lab.cluster import Node
    from ovn_underlay.lab.containerd import Containerd

    engine = Containerd(Node(state, vm))
    vm.daemons["containerd"] = str(engine.pidfile)
    lab.save(state)
    socket = engine.start()
    pidfile = _spawn("kubelet", [sys.executable, "-m", "ovn_underlay.lab.kubelet", "--api",
                                 state.kube["url"], "--node", vm.name, "--cri-socket",
                                 str(socket), "--node-ip", vm.ip],
                     Path(vm.rundir) / "kubelet", vm.netns, net_only=True)
    vm.daemons["kubelet"] = str(pidfile)
    lab.save(state)
    return engine


def stop_node(vm: VmInfo) -> None:
    """Stop the VM's kubelet stand-in (its sandboxes stay: see Containerd.close)."""
    from ovn_underlay.lab.daemons import stop_pid

    pidfile = vm.daemons.get("kubelet")
    pid = read_live_pid(Path(pidfile)) if pidfile else None
    if pid is not None:
        stop_pid(pid, timeout=HTTP_TIMEOUT)


def release_sandboxes(state: LabState) -> list[str]:
    """Before ``lab down``: stop the kubelets, remove containerd's sandboxes (CNI DEL each).

    Otherwise the Pods' processes would outlive the lab and containerd's mounts
    would stay in the run directory.  Returns what was done.
    """
    from ovn_underlay.lab.cluster import Node
    from ovn_underlay.lab.containerd import Containerd

    done = []
    for vm in state.vms:
        pidfile = vm.daemons.get("containerd")
        if not pidfile or read_live_pid(Path(pidfile)) is None:
            continue
        stop_node(vm)
        try:
            Containerd(Node(state, vm)).close()
            done.append(f"containerd sandboxes of {vm.name}")
        except Exception as exc:  # down carries on: it kills what is left
            done.append(f"containerd sandboxes of {vm.name} NOT removed ({exc})")
    return done
