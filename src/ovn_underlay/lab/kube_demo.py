"""``lab demo --kube`` (``make demo``): the demo the Kubernetes way, in cluster mode.

A lab with the test API server (``lab up --kube``); the UnderlayNode CRD and the
project's namespace applied; ``ovn-k8s-underlay controller`` in the hypervisor (the only
process with the control plane's address or credentials) and ``ovn-k8s-underlay agent``
on each VM, the entry points the manifests in ``deploy/`` run; each agent sets its node
up from the controller's answer and reports ``NetworkUnavailable=False`` on its Node.
The lab gives the router (made once by the controller) its gateway to the lab's
external namespace, as a cloud's operator would.  Then containerd and a kubelet
stand-in per VM as lab processes (:func:`ovn_underlay.lab.kube.start_node`).
Two Pods per VM are created as API objects; the stand-ins run them through
containerd's CRI, whose libcni calls the installed CNI plugin.  Once they are
Ready with their IPs, the connectivity matrix of the plain demo runs between
them (each sandbox's network namespace bind-mounted under /var/run/netns as
``<lab>-<vm>-k<letter>`` for the probes), the Pods are deleted through the
API, every pool port must be free again, and the lab goes down.  The matrix includes
pods to every VM's primary address and back and pods to the external host (seen as the
router's SNAT address).

After the matrix, a ClusterIP Service over the four Pods (:mod:`ovn_underlay.lab.demo_service`):
created through the API (``selector: app=demo``, port 80 -> 8080), its ClusterIP and
EndpointSlice made by the test API server, its OVN load balancer by the controller; from
one pod per VM :data:`~ovn_underlay.lab.demo_service.REQUESTS` HTTP GETs to the ClusterIP,
a table of the hits per backend (each Pod's page names it), and one check per client that
every backend answered, counted into the demo's total.  The Service is deleted before the
Pods: the controller removes its rows and the ClusterIP stops answering.  With Neutron
(``lab demo --neutron --kube``, ``make demo-neutron``) the controller makes the Service an
Octavia load balancer (the OVN provider writes its row) and the rest is the same.
"""

from __future__ import annotations

import itertools
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ovn_underlay.lab import demo_service, external, kube, netns, probe
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, Node
from ovn_underlay.lab.containerd import Containerd
from ovn_underlay.lab.daemons import DaemonError, read_live_pid, run
from ovn_underlay.lab.demo import PODS_PER_NODE, matrix, outside, primaries, reach
from ovn_underlay.lab.topology import Lab, LabState

PORT = 8080
READY_TIMEOUT = 90.0
AGENT_TIMEOUT = 90.0
DELETE_TIMEOUT = 60.0


def _say(text: str) -> None:
    print(text, flush=True)


def require_tools() -> None:
    """Refuse, naming what is missing, unless containerd and the CRI client can run."""
    from ovn_underlay.lab.containerd import missing_python_packages, missing_tools

    missing = missing_tools()
    if missing:
        raise DaemonError(f"missing for lab demo --kube: {', '.join(missing)} (Debian: "
                          "containerd runc busybox-static containernetworking-plugins)")
    packages = missing_python_packages()
    if packages:
        raise DaemonError(f"PyPI packages missing for the CRI client: {', '.join(packages)} "
                          f"(pip install {' '.join(packages)})")


def pod_manifest(name: str, node: str) -> dict[str, Any]:
    """A Pod bound to ``node`` serving HTTP on :data:`PORT` (the image's httpd), a page
    naming the Pod (:data:`ovn_underlay.lab.demo_service.POD_COMMAND`)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                         "labels": dict(demo_service.SELECTOR)},
            "spec": {"nodeName": node, "containers": [
                {"name": "web", "image": "oul-busybox:lab",
                 "command": list(demo_service.POD_COMMAND),
                 "ports": [{"containerPort": PORT, "protocol": "TCP"}]}]}}


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def _pods(state: LabState) -> dict[str, dict[str, Any]]:
    query = urllib.parse.urlencode({"labelSelector": "app=demo"})
    items = kube.request(state, "GET", f"/api/v1/namespaces/default/pods?{query}")["items"]
    return {str(p["metadata"]["name"]): p for p in items}


def _wait_ready(state: LabState, names: list[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        pods = _pods(state)
        if all(_ready(pods.get(n, {})) for n in names):
            return pods
        if time.monotonic() > deadline:
            late = [n for n in names if not _ready(pods.get(n, {}))]
            logs = ", ".join(f"{vm.rundir}/kubelet/kubelet.log" for vm in state.vms)
            raise TimeoutError(f"Pods not Ready within {READY_TIMEOUT:.0f}s: "
                               f"{', '.join(late)}; see {logs}")
        time.sleep(0.2)


def _sandbox_netns(engine: Containerd, uid: str) -> str:
    """The network namespace path of the sandbox containerd runs for the Pod ``uid``."""
    from ovn_underlay.lab.cri import CriClient

    with CriClient(str(engine.socket), timeout=30) as client:
        for sandbox in client.list_pod_sandbox():
            if sandbox.metadata.uid == uid:
                return client.pod_sandbox_status(sandbox.id).netns
    raise RuntimeError(f"containerd has no sandbox for Pod uid {uid}")


def _bind_netns(name: str, path: str) -> None:
    """Make the namespace at ``path`` known to ``ip netns`` as ``name``."""
    target = netns.NETNS_DIR / name
    target.touch()
    run(["mount", "--bind", path, str(target)])


def _unbind_netns(name: str) -> None:
    """Forget the name (``ip netns del``: unmount and unlink; no process is stopped)."""
    if netns.exists(name):
        run(["ip", "netns", "del", name])


def _delete_pods(state: LabState, names: list[str]) -> bool:
    for name in names:
        kube.request(state, "DELETE", f"/api/v1/namespaces/default/pods/{name}")
    deadline = time.monotonic() + DELETE_TIMEOUT
    while _pods(state):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _start_cluster_mode(lab: Lab, state: LabState) -> list[Node]:
    """The controller, then an agent per VM, until every Node says its network is there."""
    kube.install_cluster_mode(state)
    t0 = time.monotonic()
    controller = kube.start_controller(state, lab.dir, CLUSTER_SUBNET, CLUSTER_ROUTER)
    for vm in state.vms:
        kube.start_agent(state, vm, CLUSTER_SUBNET)
    lab.save(state)
    _say(f"controller (pid {read_live_pid(controller)}, the only "
         f"holder of the control plane's {'credentials' if state.neutron else 'address'}) "
         f"and {len(state.vms)} node agents (no control-plane settings) started")
    nodes = []
    for vm in state.vms:
        cond = kube.wait_network_available(state, vm, AGENT_TIMEOUT)
        status = kube.request(state, "GET", f"{kube.UNDERLAY_NODES}/{vm.name}")["status"]
        _say(f"  {vm.name}: NetworkUnavailable=False ({cond.get('reason', '')}) after "
             f"{time.monotonic() - t0:.1f}s: switch {status['switch']} {status['subnet']} "
             f"via {status['gatewayIP']}, VM port {status['parent']}, management port "
             f"{status.get('mgmt', {}).get('ip', '-')}, {len(status['ports'])} pool ports")
        nodes.append(Node(state, vm))
    return nodes


def run_kube_demo(lab: Lab, vms: int = 2, keep: bool = False, neutron: bool = False) -> int:
    """Run the demo the Kubernetes way on ``lab``; 0 when every check is green."""
    started = time.monotonic()
    _say(f"bringing lab {lab.name!r} up with {vms} VMs, the test Kubernetes API server"
         f"{' and Neutron' if neutron else ''} ...")
    state = lab.up(vms, neutron=neutron, kube=True)
    engines: list[tuple[Node, Containerd]] = []
    bound: list[str] = []
    service: demo_service.DemoService | None = None
    try:
        _say(f"lab up in {time.monotonic() - started:.1f}s: NB {state.nb}, Kubernetes API "
             f"{state.kube['url']} (kubeconfig {state.kube['kubeconfig']})")
        nodes_listed = kube.request(state, "GET", "/api/v1/nodes")["items"]
        _say(f"  Nodes: {', '.join(n['metadata']['name'] for n in nodes_listed)}")
        vm_ends = primaries(state)
        vm_checks = [probe.check("vm-vm", a, b) for a, b in itertools.permutations(vm_ends, 2)]
        node_ends = []
        for node in _start_cluster_mode(lab, state):
            cfg = node.config()
            node_ends.append(probe.Endpoint(f"node {node.vm.name}", node.vm.netns,
                                            cfg["mgmt_ip"]))
            t0 = time.monotonic()
            engines.append((node, kube.start_node(lab, state, node.vm)))
            pids = {d: read_live_pid(Path(node.vm.daemons[d]))
                    for d in ("containerd", "kubelet")}
            _say(f"{node.vm.name}: containerd (pid {pids['containerd']}) and the kubelet "
                 f"stand-in (pid {pids['kubelet']}) in {time.monotonic() - t0:.1f}s")
        snat_ip = external.attach(state, CLUSTER_ROUTER, [CLUSTER_SUBNET])
        _say(f"router {CLUSTER_ROUTER} (made once by the controller): gateway on "
             f"{external.EXT_SWITCH}, the cluster subnet {CLUSTER_SUBNET} SNATed to {snat_ip}")
        before = {node.vm.name: node.pool()["stats"] for node, _ in engines}
        owners: dict[str, tuple[Node, Containerd, str]] = {}
        t0 = time.monotonic()
        for node, engine in engines:
            for letter in "ab"[:PODS_PER_NODE]:
                name = f"pod-{node.vm.name}-{letter}"
                owners[name] = (node, engine, letter)
                kube.request(state, "POST", "/api/v1/namespaces/default/pods",
                             pod_manifest(name, node.vm.name))
        _say(f"created {len(owners)} Pods through the API")
        pods = _wait_ready(state, list(owners))
        _say(f"all Ready in {time.monotonic() - t0:.1f}s:")
        ends: list[tuple[Node, probe.Endpoint]] = []
        for name, (node, engine, letter) in owners.items():
            pod = pods[name]
            ip = str(pod["status"]["podIP"])
            _say(f"  Pod default/{name} on {pod['spec']['nodeName']}: Ready, IP {ip}")
            ns_name = f"{state.name}-{node.vm.name}-k{letter}"
            _bind_netns(ns_name, _sandbox_netns(engine, str(pod["metadata"]["uid"])))
            bound.append(ns_name)
            ends.append((node, probe.Endpoint(name, ns_name, ip)))
        checks = (vm_checks + matrix(ends, node_ends)
                  + reach(ends, vm_ends, outside(state), snat_ip))
        _say(probe.table(checks))
        oks = [c.ok for c in checks]
        clients = [pod for i, (node, pod) in enumerate(ends)
                   if all(n is not node for n, _ in ends[:i])]  # one pod per VM
        if state.neutron and not state.octavia:
            _say("Services: none with the Neutron backend without Octavia (a tenant cannot "
                 "write OVN's Northbound; the controller programs no Service and says so)")
        else:
            service = demo_service.DemoService(state, {
                name: (str(pods[name]["spec"]["nodeName"]), str(pods[name]["status"]["podIP"]))
                for name in owners})
            if service.show_programmed(clients[0]):
                oks += [s.ok for s in service.spread(clients)]
            else:
                oks += [False] * len(clients)
        _say(probe.verdict(oks))
        if keep:
            return 0 if all(oks) else 1
        service_gone = service is None or service.delete(clients[0])
        for ns_name in bound:
            _unbind_netns(ns_name)
        bound.clear()
        deleted = _delete_pods(state, list(owners))
        free = True
        for node, _ in engines:
            stats = node.pool()["stats"]
            if stats["free"] != stats["total"]:
                free = False
                _say(f"  {node.vm.name}: pool not all free: {stats} (before the Pods: "
                     f"{before[node.vm.name]})")
        _say(f"teardown: {len(owners)} Pods deleted through the API "
             f"{'ok' if deleted else 'FAILED'}, every pool port free "
             f"{'ok' if free else 'FAILED'}")
        return 0 if all(oks) and service_gone and deleted and free else 1
    finally:
        if keep:
            _say("lab left running (--keep); 'ovn-k8s-underlay lab down' removes it")
        else:
            if service is not None and service.created:
                try:
                    service.delete(None)
                except Exception as exc:  # lab down removes it with the rest
                    _say(f"Service {demo_service.NAMESPACE}/{demo_service.NAME} not "
                         f"deleted ({exc})")
            for ns_name in bound:
                _unbind_netns(ns_name)
            for node, engine in engines:
                kube.stop_node(node.vm)
                engine.close()
            lab.down()
            _say("lab down: nothing left running")
