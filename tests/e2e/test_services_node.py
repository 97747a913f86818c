"""ClusterIPs and the node itself, on a kube lab with the real controller and node agents.

Two VMs, the test API server, the controller in the hypervisor and ``ovn-k8s-underlay
agent`` on each VM with ``--service-cidr`` set to the API server's
``--service-cluster-ip-range``; pods plumbed through the installed CNI binary as a runtime
calls it.  Services and EndpointSlices go through the API server as a user writes them
(no selector: the test says where the endpoints are).

- *node to ClusterIP*: the VM (a process in its namespace, and one in a host-network
  pod's own mount and pid namespaces) reaches a ClusterIP over the Service-range route
  of the management port, TCP and UDP, with the VM's primary address as the source the
  backend sees; the route follows the setting across agent restarts and a simulated
  reboot;
- the same with kube-proxy's nftables-mode rules emulated in the VM (DNAT in the nat
  output hook, masquerade marked for sources outside the cluster CIDR): kube-proxy's
  DNAT wins, the packet then takes the cluster-subnet route, the backend sees the
  management port's address (masqueraded) or, without the masquerade mark, the VM's;
- *a host-network endpoint*: a Service whose EndpointSlice names a VM's primary
  address, served by a process in that VM, reached by pods on both VMs.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.dataplane.mgmt import RTPROT_OVN_UNDERLAY
from ovn_underlay.lab import daemons, netns
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab.cluster import CLUSTER_SUBNET, CniRuntime, pod_ip
from ovn_underlay.lab.kubeapi.api import Config
from ovn_underlay.lab.topology import LabState, VmInfo
from ovn_underlay.names import MGMT_IFNAME
from tests.agent.test_agent_lab import Agent, InHypervisor
from tests.agent.test_agent_reboot import lose_host_state, start_ovs, stop_ovs
from tests.conftest import cluster_mode_lab

SERVICE_RANGE = Config.service_cluster_ip_range
"""The test API server's --service-cluster-ip-range: what the agents are given."""
PROGRAMMED_WITHIN = 20.0
"""Seconds from a Service's EndpointSlice written to its ClusterIP answering."""

WHO = """
import selectors, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
tcp = socket.create_server((ip, port))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((ip, port))
sel = selectors.DefaultSelector()
sel.register(tcp, selectors.EVENT_READ)
sel.register(udp, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is tcp:
            conn, peer = tcp.accept()
            with conn:
                conn.sendall(peer[0].encode())
        else:
            data, peer = udp.recvfrom(64)
            udp.sendto(peer[0].encode(), peer)
"""
"""Answers every TCP connection and UDP datagram on IP:PORT with the source address it
came from, until killed."""
ASK = """
import json, socket, sys, time
proto, ip, port, within = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
start = time.monotonic()
error = ""
while time.monotonic() - start < within:
    try:
        if proto == "tcp":
            with socket.create_connection((ip, port), timeout=0.3) as conn:
                conn.settimeout(2)
                seen, peer = conn.recv(64).decode(), conn.getpeername()[0]
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.5)
                sock.sendto(b"?", (ip, port))
                data, (peer, _) = sock.recvfrom(64)
                seen = data.decode()
        if seen:
            print(json.dumps({"seen": seen, "peer": peer, "at": time.time(),
                              "after": round(time.monotonic() - start, 3)}))
            sys.exit(0)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
print(json.dumps({"error": error}))
sys.exit(1)
"""
"""Asks IP:PORT over PROTO until answered or WITHIN seconds passed; prints JSON: the
source address the server saw, who answered, when (``at``, the wall clock) and after
how many seconds of asking (or the last error)."""


@pytest.fixture(scope="module")
def kube_lab(lab_rundir: Path) -> Iterator[LabState]:
    """Two VMs, the test API server, the UnderlayNode CRD and the controller's namespace."""
    yield from cluster_mode_lab(lab_rundir, "sn", 2)


@pytest.fixture(scope="module")
def agents(kube_lab: LabState, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[list[Agent]]:
    """The controller (in the hypervisor) and a ready agent on each VM, the Service range
    in each agent's settings directory."""
    controller = InHypervisor(kube_lab)
    controller.start()
    tmp = tmp_path_factory.mktemp("agents")
    made = [Agent(kube_lab, tmp, vm=i) for i in range(2)]
    try:
        for agent in made:
            (agent.settings / "service-cidr").write_text(f"{SERVICE_RANGE}\n")
            agent.start()
        for agent in made:
            agent.ready()
        yield made
    finally:
        for agent in made:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.stop()
        controller.stop()


class Pods:
    """Pods made through the installed CNI binary; all deleted at the end."""

    def __init__(self) -> None:
        self.made: list[tuple[CniRuntime, str, str]] = []

    def add(self, agent: Agent, name: str) -> tuple[str, str]:
        """A pod ``name`` on ``agent``'s VM: its namespace's name and its address."""
        runtime = CniRuntime(agent.node)
        path = agent.node.pod_netns(name)
        self.made.append((runtime, f"ctr-{name}", path))
        result = runtime.add(f"ctr-{name}", path, ("default", name))
        return path.rsplit("/", 1)[1], pod_ip(result)

    def close(self) -> None:
        for runtime, cid, path in self.made:
            runtime.delete(cid, path)
            netns.destroy(path.rsplit("/", 1)[1])


@pytest.fixture
def pods() -> Iterator[Pods]:
    made = Pods()
    yield made
    made.close()


@contextmanager
def who_server(ns: str, ip: str, port: int) -> Iterator[None]:
    """:data:`WHO` serving ``ip:port`` in namespace ``ns`` while the block runs."""
    proc = subprocess.Popen(daemons.netns_argv(ns, [sys.executable, "-c", WHO, ip,
                                                    str(port)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", \
            proc.stderr.read() if proc.stderr else ""
        yield
    finally:
        proc.kill()
        proc.wait()


def ask(argv_prefix: list[str], proto: str, ip: str, port: int,
        within: float = 5.0) -> dict[str, Any]:
    """:data:`ASK` run under ``argv_prefix`` (a namespace's ``ip netns exec``...)."""
    out = subprocess.run([*argv_prefix, sys.executable, "-c", ASK, proto, ip, str(port),
                          str(within)], capture_output=True, text=True, timeout=within + 15,
                         check=False)
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    return dict(json.loads(lines[-1]))


def in_netns(ns: str) -> list[str]:
    """The argv prefix of a process in namespace ``ns`` (the VM's shell, or a pod)."""
    return ["ip", "netns", "exec", ns]


def host_network_pod(vm: VmInfo) -> list[str]:
    """The argv prefix of a process as a host-network pod's container runs: the VM's
    network namespace, but mount and pid namespaces of its own (``unshare``)."""
    return ["nsenter", f"--net={netns.path(vm.netns)}", "unshare", "--mount", "--pid",
            "--fork"]


def create_service(state: LabState, name: str, ports: list[tuple[str, int]],
                   endpoints: list[tuple[str, str]]) -> str:
    """A Service without selector with ``ports`` ((protocol, port), target port the same)
    and one EndpointSlice of ``endpoints`` ((address, node)), as a user writes them; its
    ClusterIP."""
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": f"{proto}-{port}", "protocol": proto.upper(),
                                "port": port, "targetPort": port}
                               for proto, port in ports]}}
    service = lab_kube.request(state, "POST", "/api/v1/namespaces/default/services", body)
    lab_kube.request(state, "POST",
                     "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", {
                         "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                         "metadata": {"name": f"{name}-1", "namespace": "default",
                                      "labels": {"kubernetes.io/service-name": name,
                                                 "endpointslice.kubernetes.io/managed-by":
                                                     "tests"}},
                         "addressType": "IPv4",
                         "ports": [{"name": f"{proto}-{port}", "protocol": proto.upper(),
                                    "port": port} for proto, port in ports],
                         "endpoints": [{"addresses": [address], "nodeName": node,
                                        "conditions": {"ready": True}}
                                       for address, node in endpoints]})
    cluster_ip = str(service["spec"]["clusterIP"])
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(SERVICE_RANGE)
    return cluster_ip


def delete_service(state: LabState, name: str) -> None:
    """The Service ``name`` and its EndpointSlice deleted (either may be missing)."""
    for path in (f"/api/v1/namespaces/default/services/{name}",
                 f"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/{name}-1"):
        try:
            lab_kube.request(state, "DELETE", path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


def mgmt_routes(vm: VmInfo) -> dict[str, dict[str, Any]]:
    """The VM's IPv4 routes through the management port, by destination ({} while the
    port is missing)."""
    if MGMT_IFNAME not in daemons.run(["ip", "-o", "link"], netns=vm.netns):
        return {}
    out = daemons.run(["ip", "-j", "-4", "route", "show", "dev", MGMT_IFNAME],
                      netns=vm.netns)
    return {r["dst"]: r for r in json.loads(out or "[]")}


def node_config(agent: Agent) -> dict[str, Any]:
    """The node's settings as ``config show`` gives them (its network's too)."""
    return agent.node.config()


# --- node to ClusterIP ------------------------------------------------------------------

def test_node_to_cluster_ip_over_the_service_route(kube_lab: LabState, agents: list[Agent],
                                                   pods: Pods) -> None:
    """No kube-proxy: the VMs route the Service range via the management port (the
    gateway, the primary address as preferred source); from each VM's shell and from a
    host-network pod's process, TCP and UDP to a ClusterIP whose backend is a pod on the
    second VM answer, the backend seeing the VM's primary address and the answer coming
    from the ClusterIP."""
    for agent in agents:
        cfg = node_config(agent)
        route = mgmt_routes(agent.node.vm)[SERVICE_RANGE]
        assert (route["gateway"], route.get("prefsrc")) == (cfg["gateway_ip"],
                                                             agent.node.vm.ip), route
        assert route["protocol"] == str(RTPROT_OVN_UNDERLAY), route
        assert CLUSTER_SUBNET in mgmt_routes(agent.node.vm)
    backend_ns, backend_ip = pods.add(agents[1], "nodebe")
    try:
        with who_server(backend_ns, backend_ip, 7801):
            created = time.time()
            vip = create_service(kube_lab, "node-path", [("tcp", 7801), ("udp", 7801)],
                                 [(backend_ip, agents[1].name)])
            first = ask(in_netns(agents[0].node.vm.netns), "tcp", vip, 7801,
                        PROGRAMMED_WITHIN)
            assert first.get("seen") == agents[0].node.vm.ip, first
            print(f"Service created to the first TCP answer from the VM: "
                  f"{first['at'] - created:.3f} s")
            for agent in agents:  # the backend's own VM too
                vm = agent.node.vm
                for how in (in_netns(vm.netns), host_network_pod(vm)):
                    for proto in ("tcp", "udp"):
                        got = ask(how, proto, vip, 7801)
                        assert (got.get("seen"), got.get("peer")) == (vm.ip, vip), \
                            (vm.name, how[0], proto, got)
    finally:
        delete_service(kube_lab, "node-path")


def test_the_service_route_follows_the_setting_restarts_and_a_reboot(
        kube_lab: LabState, agents: list[Agent], pods: Pods) -> None:
    """The first VM's agent restarted with another range: the old route is gone, the new
    one there, the ClusterIP (outside it) unreachable from the VM; without the setting:
    no route, unreachable, and the start says so; with it again: reachable.  Then a
    simulated power cut (the VM's OVS devices, the management port with its routes and
    the nftables rules lost): the same routes are back and the ClusterIP answers.  A
    route somebody else put on the management port stays through the restarts."""
    agent, vm = agents[0], agents[0].node.vm
    setting = agent.settings / "service-cidr"
    other = "198.18.160.0/20"
    backend_ns, backend_ip = pods.add(agents[1], "restartbe")
    vip = create_service(kube_lab, "restarts", [("tcp", 7802)],
                         [(backend_ip, agents[1].name)])
    try:
        with who_server(backend_ns, backend_ip, 7802):
            assert ask(in_netns(vm.netns), "tcp", vip, 7802, PROGRAMMED_WITHIN).get(
                "seen") == vm.ip
            daemons.run(["ip", "route", "add", OPERATORS_ROUTE, "dev", MGMT_IFNAME,
                         "proto", "static"], netns=vm.netns)
            for value, routed in ((other, other), ("", None),
                                  (SERVICE_RANGE, SERVICE_RANGE)):
                assert agent.stop() == 0
                if value:
                    setting.write_text(f"{value}\n")
                else:
                    setting.unlink()
                agent.start()
                agent.ready()
                routes = mgmt_routes(vm)
                assert {SERVICE_RANGE, other} & set(routes) == (
                    {routed} if routed else set()), routes
                assert CLUSTER_SUBNET in routes and OPERATORS_ROUTE in routes
                if not value:
                    assert "cannot reach ClusterIPs" in agent.log_text()
                got = ask(in_netns(vm.netns), "tcp", vip, 7802, 3.0)
                assert (got.get("seen") == vm.ip) == (routed == SERVICE_RANGE), (value, got)

            daemons.run(["ip", "route", "del", OPERATORS_ROUTE, "dev", MGMT_IFNAME],
                        netns=vm.netns)
            before = mgmt_routes(vm)
            agent.kill()
            stop_ovs(vm)
            lose_host_state(vm)
            assert MGMT_IFNAME not in daemons.run(["ip", "-o", "link"], netns=vm.netns)
            start_ovs(vm)
            started = time.monotonic()
            agent.start()
            agent.wait_condition(lambda c: c.get("status") == "False"
                                 and SERVICE_RANGE in mgmt_routes(vm))
            print(f"power cut: agent start to the Service route back: "
                  f"{time.monotonic() - started:.2f} s")
            assert mgmt_routes(vm) == before
            got = ask(in_netns(vm.netns), "tcp", vip, 7802, PROGRAMMED_WITHIN)
            assert got.get("seen") == vm.ip, got
    finally:
        delete_service(kube_lab, "restarts")
        setting.write_text(f"{SERVICE_RANGE}\n")
        if agent.proc is None or agent.proc.poll() is not None:
            agent.start()
        agent.ready()


OPERATORS_ROUTE = "198.51.100.0/24"
"""A route an operator's tooling adds on the management port (``proto static``, as
netplan's or NetworkManager's): not ours, so it stays."""


# --- with kube-proxy's rules ------------------------------------------------------------

KUBE_PROXY_TABLE = "oul-test-kube-proxy"
"""The nftables table (family ip) emulating kube-proxy's ``ip kube-proxy`` table."""


def kube_proxy_ruleset(vip: str, backend: str, port: int, cluster_cidr: str | None) -> str:
    """kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go) for one Service with one
    endpoint on TCP and UDP ``port``: base chains nat-prerouting and nat-output (priority
    -100, dstnat; this nft takes the keyword for prerouting only) jumping to
    ``services``, nat-postrouting (100, srcnat) to ``masquerading``; the
    service-ips verdict map; per service port a chain that marks for masquerade what
    comes from outside ``cluster_cidr`` (kube-proxy's --cluster-cidr local detector; None:
    no detector, nothing marked) and picks an endpoint by ``numgen``; per endpoint a
    chain marking hairpin traffic and DNATing to the endpoint.  A counter on each
    endpoint chain shows what it caught."""
    chains = []
    elements = []
    for proto in ("tcp", "udp"):
        svc, ep = f"service-{proto}", f"endpoint-{proto}"
        elements.append(f"{vip} . {proto} . {port} : goto {svc}")
        masq = (f"ip daddr {vip} {proto} dport {port} ip saddr != {cluster_cidr} "
                "jump mark-for-masquerade\n" if cluster_cidr else "")
        chains.append(f"chain {svc} {{\n{masq}numgen random mod 1 vmap {{ 0 : goto {ep} }}\n}}")
        chains.append(f"chain {ep} {{\ncounter\nip saddr {backend} jump mark-for-masquerade\n"
                      f"meta l4proto {proto} dnat to {backend}:{port}\n}}")
    body = "\n".join(chains)
    return f"""
table ip {KUBE_PROXY_TABLE} {{
map service-ips {{
type ipv4_addr . inet_proto . inet_service : verdict
elements = {{ {", ".join(elements)} }}
}}
chain nat-prerouting {{
type nat hook prerouting priority -100; policy accept;
jump services
}}
chain nat-output {{
type nat hook output priority -100; policy accept;
jump services
}}
chain nat-postrouting {{
type nat hook postrouting priority 100; policy accept;
jump masquerading
}}
chain services {{
ip daddr . meta l4proto . th dport vmap @service-ips
}}
chain mark-for-masquerade {{
mark set mark or 0x4000
}}
chain masquerading {{
mark and 0x4000 == 0 return
mark set mark xor 0x4000
masquerade fully-random
}}
{body}
}}
"""


def caught(vm: VmInfo) -> dict[str, int]:
    """Packets each emulated endpoint chain counted."""
    out = json.loads(daemons.run(["nft", "-j", "list", "table", "ip", KUBE_PROXY_TABLE],
                                 netns=vm.netns))
    counts = {}
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"].startswith("endpoint-"):
            for expr in rule["expr"]:
                if "counter" in expr:
                    counts[rule["chain"]] = int(expr["counter"]["packets"])
    return counts


@pytest.mark.parametrize("cluster_cidr", [CLUSTER_SUBNET, None],
                         ids=["cluster-cidr", "no-local-detector"])
def test_node_to_cluster_ip_with_kube_proxys_rules(kube_lab: LabState, agents: list[Agent],
                                                   pods: Pods, cluster_cidr: str | None
                                                   ) -> None:
    """kube-proxy's nftables rules for the Service emulated in the first VM: its DNAT in
    the output hook takes the VM's packets to the ClusterIP first (the endpoint chains
    count them), they leave over the cluster-subnet route and reach the backend; with
    --cluster-cidr the VM's address is outside it, so kube-proxy masquerades and the
    backend sees the management port's address, without a detector it sees the VM's
    primary address.  Both TCP and UDP, from the VM's shell and a host-network pod.  The
    table is removed at the end: the VM reaches the ClusterIP over OVN again."""
    vm = agents[0].node.vm
    cfg = node_config(agents[0])
    expected = cfg["mgmt_ip"] if cluster_cidr else vm.ip
    backend_ns, backend_ip = pods.add(agents[1], "kpbe")
    after_dnat = json.loads(daemons.run(["ip", "-j", "route", "get", backend_ip],
                                        netns=vm.netns))[0]
    assert (after_dnat["dev"], after_dnat["gateway"]) == (MGMT_IFNAME, cfg["gateway_ip"])
    vip = create_service(kube_lab, "kube-proxy", [("tcp", 7803), ("udp", 7803)],
                         [(backend_ip, agents[1].name)])
    try:
        with who_server(backend_ns, backend_ip, 7803):
            assert ask(in_netns(vm.netns), "tcp", vip, 7803, PROGRAMMED_WITHIN).get(
                "seen") == vm.ip  # OVN's load balancer first
            subprocess.run(["ip", "netns", "exec", vm.netns, "nft", "-f", "-"],
                           input=kube_proxy_ruleset(vip, backend_ip, 7803, cluster_cidr),
                           text=True, check=True, capture_output=True)
            try:
                for how in (in_netns(vm.netns), host_network_pod(vm)):
                    for proto in ("tcp", "udp"):
                        before = caught(vm).get(f"endpoint-{proto}", 0)
                        got = ask(how, proto, vip, 7803)
                        assert (got.get("seen"), got.get("peer")) == (expected, vip), \
                            (how[0], proto, got)
                        assert caught(vm)[f"endpoint-{proto}"] > before, (how[0], proto)
            finally:
                daemons.run(["nft", "delete", "table", "ip", KUBE_PROXY_TABLE],
                            netns=vm.netns)
            tables = daemons.run(["nft", "list", "tables"], netns=vm.netns)
            assert KUBE_PROXY_TABLE not in tables
            got = ask(in_netns(vm.netns), "udp", vip, 7803)
            assert got.get("seen") == vm.ip, got
    finally:
        delete_service(kube_lab, "kube-proxy")


# --- a host-network endpoint ------------------------------------------------------------

def test_pods_reach_a_host_network_endpoint_through_its_cluster_ip(
        kube_lab: LabState, agents: list[Agent], pods: Pods) -> None:
    """A Service without selector whose EndpointSlice names the first VM's primary address
    (as the ``kubernetes`` Service names kube-apiserver's), served by a process in that
    VM: a pod on each VM, one of them on the endpoint's own VM, connects over TCP to the
    ClusterIP; the server sees the pod's own address, the answer comes from the
    ClusterIP."""
    vm = agents[0].node.vm
    clients = [pods.add(agent, f"hn{i}") for i, agent in enumerate(agents)]
    try:
        with who_server(vm.netns, vm.ip, 7804):
            created = time.time()
            vip = create_service(kube_lab, "host-endpoint", [("tcp", 7804)],
                                 [(vm.ip, vm.name)])
            for i, (ns, ip) in enumerate(clients):
                got = ask(in_netns(ns), "tcp", vip, 7804, PROGRAMMED_WITHIN if i == 0
                          else 5.0)
                assert (got.get("seen"), got.get("peer")) == (ip, vip), (i, got)
                if i == 0:
                    print(f"Service created to the first answer from a pod: "
                          f"{got['at'] - created:.3f} s")
    finally:
        delete_service(kube_lab, "host-endpoint")
