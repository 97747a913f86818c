"""The demo: a lab, two nodes with two pods each, a connectivity matrix, teardown.

The matrix covers pods with each other and with the nodes' management ports,
then what a cluster needs besides (:func:`reach`): the VMs' primary addresses,
from pods (a host-network server answering from that address) and to pods (the
VM's own address as the source), and the external host behind the cluster
router's gateway (seen from there as the SNAT address).

Every step goes through the entry points a user or a runtime uses: the
``ovn-k8s-underlay`` command inside each VM, and the installed CNI plugin
executed as a container runtime executes it.
"""

from __future__ import annotations

import itertools
import time

from ovn_underlay.lab import external, netns, probe
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, CniRuntime, Node, pod_ip
from ovn_underlay.lab.topology import Lab, LabState

PODS_PER_NODE = 2
CHILD_PORTS = ("trunk", "binding-profile")
"""With Neutron, odd VMs make trunk subports and even ones binding:profile children."""


def _say(text: str) -> None:
    print(text, flush=True)


def matrix(pods: list[tuple[Node, probe.Endpoint]], nodes: list[probe.Endpoint]
           ) -> list[probe.Check]:
    """Pod-pod on one VM and across VMs, node to pods and pods to node, both ways."""
    checks = []
    for (na, a), (nb, b) in itertools.permutations(pods, 2):
        kind = "pod-pod same VM" if na is nb else "pod-pod across VMs"
        checks.append(probe.check(kind, a, b))
    for node in nodes:
        for _, pod in pods:
            checks.append(probe.check("node-pod", node, pod))
            checks.append(probe.check("pod-node", pod, node))
    return checks


def reach(pods: list[tuple[Node, probe.Endpoint]], vms: list[probe.Endpoint],
          outside: probe.Endpoint, snat_ip: str) -> list[probe.Check]:
    """Pods to every VM's primary address and back, and to the outside, addresses checked.

    ``vms`` are the VMs' primary addresses in their namespaces (where a
    host-network server listens); ``outside`` is the external host, which must
    see a pod as ``snat_ip``.
    """
    checks = []
    for _, pod in pods:
        for vm in vms:
            checks.append(probe.check("pod-node primary", pod, vm, expect_seen=pod.ip))
    for vm in vms:
        for _, pod in pods:
            checks.append(probe.check("node primary-pod", vm, pod, expect_seen=vm.ip))
    for _, pod in pods:
        checks.append(probe.check("pod-external", pod, outside, expect_seen=snat_ip))
    return checks


def primaries(state: LabState) -> list[probe.Endpoint]:
    """Every VM's primary address (its address on the VMs' network) in its namespace."""
    return [probe.Endpoint(vm.name, vm.netns, vm.ip) for vm in state.vms]


def outside(state: LabState) -> probe.Endpoint:
    """The external host."""
    return probe.Endpoint("external host", external.namespace(state.name), external.EXT_HOST)


def container_id(pod: str) -> str:
    """The demo's container id of a pod."""
    return pod.replace("-", "")


def start_pods(state: LabState) -> tuple[list[tuple[Node, probe.Endpoint]],
                                         list[probe.Endpoint]]:
    """node-init and lswitch-setup on every VM, then pods added through CNI."""
    pods, nodes = [], []
    for vm in state.vms:
        node = Node(state, vm)
        node.init(child_ports=CHILD_PORTS[(node.index - 1) % len(CHILD_PORTS)])
        setup = node.setup_switch()
        cfg = node.config()
        _say(f"{vm.name}: node-init done, switch {node.switch} {node.subnet} via "
             f"{cfg['gateway_ip']}, management port {cfg['mgmt_ip']}")
        if state.neutron:
            _say(f"  Neutron, {cfg['child_ports']} child ports:")
            for line in setup.stdout.splitlines():
                _say(f"    {line}")
        nodes.append(probe.Endpoint(f"node {vm.name}", vm.netns, cfg["mgmt_ip"]))
        runtime = CniRuntime(node)
        for letter in "ab"[:PODS_PER_NODE]:
            name = f"pod-{vm.name}-{letter}"
            netns_path = node.pod_netns(letter)
            started = time.monotonic()
            result = runtime.add(container_id(name), netns_path, ("default", name))
            ip = pod_ip(result)
            _say(f"  CNI ADD {name}: {ip} in {(time.monotonic() - started) * 1000:.0f} ms")
            pods.append((node, probe.Endpoint(name, netns_path.rsplit("/", 1)[1], ip)))
    return pods, nodes


def teardown(pods: list[tuple[Node, probe.Endpoint]], container_ids: dict[str, str]) -> bool:
    """CNI DEL of every pod, then lswitch-destroy on every node; True when all worked."""
    ok = True
    for node, pod in pods:
        reply = CniRuntime(node).delete(container_ids[pod.label], netns.path(pod.netns))
        ok &= reply.code == 0
    for node in {id(n): n for n, _ in pods}.values():
        ok &= node.cli("lswitch-destroy", node.switch, check=False).returncode == 0
    _say(f"teardown: {len(pods)} pods deleted through CNI, switches destroyed: "
         f"{'ok' if ok else 'FAILED'}")
    return ok


def run_demo(lab: Lab, vms: int = 2, keep: bool = False, neutron: bool = False) -> int:
    """Run the demo on ``lab`` (through a real neutron-server with ``neutron``).

    Returns 0 when every check is green.
    """
    started = time.monotonic()
    _say(f"bringing lab {lab.name!r} up with {vms} VMs{' and Neutron' if neutron else ''} ...")
    state = lab.up(vms, neutron=neutron)
    try:
        _say(f"lab up in {time.monotonic() - started:.1f}s: NB {state.nb}")
        if state.neutron:
            _say(f"Neutron at {state.neutron['url']}: the VMs' ports were made through it")
        vm_ends = primaries(state)
        vm_checks = [probe.check("vm-vm", a, b) for a, b in itertools.permutations(vm_ends, 2)]
        pods, nodes = start_pods(state)
        snat_ip = external.attach(state, CLUSTER_ROUTER, [CLUSTER_SUBNET])
        _say(f"router {CLUSTER_ROUTER}: gateway on {external.EXT_SWITCH}, the cluster subnet "
             f"{CLUSTER_SUBNET} SNATed to {snat_ip}")
        checks = vm_checks + matrix(pods, nodes) + reach(pods, vm_ends, outside(state), snat_ip)
        _say(probe.render(checks))
        torn_down = keep or teardown(pods, {p.label: container_id(p.label) for _, p in pods})
        return 0 if all(c.ok for c in checks) and torn_down else 1
    finally:
        if keep:
            _say("lab left running (--keep); 'ovn-k8s-underlay lab down' removes it")
        else:
            lab.down()
            _say("lab down: nothing left running")
