"""The RBAC in deploy/ against what the real controller and node agent ask of the API.

A lab VM (``lab up --kube``) with a test API server of this test's own, in the
hypervisor's namespace beside the lab's, that knows three static tokens: an admin's, and
one for each ServiceAccount of ``deploy/``, whose user names are those the API server
gives their tokens.  ``ovn-k8s-underlay controller`` runs in the hypervisor and
``ovn-k8s-underlay agent`` in the VM, each as its workload runs it (its settings the
ConfigMap's files; the lab's paths and NB on the command line) with its own token.  The
scenario: the node is set up (NetworkUnavailable False), a pod is started and deleted,
a pod asks for security groups (the controller checks it against the Pod and its
Namespace, then refuses: OVN has none), the agent and the controller stop (the agent
reports it, the controller releases the Lease).  Then the server's request log must hold
no request of either user that the RBAC rules bound to it do not allow
(tests/deploy/rbac.py), and every permission a rule grants must have been used or be
named in :data:`NOT_EXERCISED` with the reason this scenario does not need it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab import netns
from ovn_underlay.lab.cluster import CLUSTER_SUBNET, CniReply, CniRuntime, Node
from ovn_underlay.lab.neutron import hv_mgmt_ip, in_netns
from ovn_underlay.lab.topology import Lab, LabState
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION
from tests.conftest import skip_unless_lab_possible
from tests.deploy import rbac

pytestmark = pytest.mark.lab
NAMESPACE = "ovn-underlay"
AGENT, CONTROLLER = "ovn-underlay-agent", "ovn-underlay-controller"
TOKENS = {"admin": "admin-token", AGENT: "agent-token", CONTROLLER: "controller-token"}
PORT = lab_kube.API_PORT + 1
READY_WITHIN = 120.0
NOT_EXERCISED = {
    (CONTROLLER, "delete", "underlaynodes"):
        "an UnderlayNode goes only once its Node is deleted and the VM's port is gone from "
        "the control plane: the VM outlives this scenario",
    (CONTROLLER, "get", "underlaynodes"):
        "only when creating one answers 409 (made already, not in the cache yet)",
    (AGENT, "get", "namespaces"):
        "only for a pod's Namespace that the agent's watch has not delivered yet "
        "(kube/node_cache.py): here the Namespace is made long before its pod",
}
"""(ServiceAccount, verb, resource) granted but not needed here, and why."""


def token_file(path: Path) -> Path:
    """Static tokens: an admin, and each ServiceAccount as its tokens authenticate."""
    lines = [f"{TOKENS['admin']},admin,admin-uid,system:masters"]
    for account in (AGENT, CONTROLLER):
        lines.append(f'{TOKENS[account]},{rbac.service_account_user(NAMESPACE, account)},'
                     f'{account}-uid,"system:serviceaccounts,'
                     f'system:serviceaccounts:{NAMESPACE}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def kubeconfig(path: Path, url: str, token: str) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    path.chmod(0o600)
    return str(path)


def config_map_files(name: str, directory: Path) -> Path:
    """The ConfigMap ``name`` of deploy/ as its volume lays it out."""
    config_map = next(o for o in rbac.load_manifests()
                      if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in config_map["data"].items():
        (directory / key).write_text(value)
    return directory


@dataclass
class Cluster:
    """The lab, its VM as a Node, and this test's API server with tokens."""

    state: LabState
    node: Node
    url: str
    request_log: Path
    workdir: Path

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """One request with the admin's token, from the hypervisor's namespace."""
        data = None if body is None else json.dumps(body).encode()

        def call() -> Any:
            req = urllib.request.Request(
                self.url + path, data=data, method=method,
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {TOKENS['admin']}"})
            with urllib.request.urlopen(req, timeout=30) as reply:
                return json.loads(reply.read() or b"null")

        return in_netns(self.state.hv_netns, call)

    def network_condition(self) -> dict[str, Any]:
        obj = self.admin("GET", f"/api/v1/nodes/{self.node.vm.name}")
        return next((c for c in obj.get("status", {}).get("conditions") or []
                     if c["type"] == "NetworkUnavailable"), {})


@pytest.fixture(scope="module")
def cluster(lab_rundir: Path) -> Iterator[Cluster]:
    skip_unless_lab_possible()
    lab = Lab(f"rb{os.getpid() % 1000}", lab_rundir)
    state = lab.up(1, kube=True)
    workdir = lab_rundir / f"{state.name}-rbac"
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "requests.log"
    server = subprocess.Popen(
        ["nsenter", f"--net={netns.path(state.hv_netns)}", sys.executable, "-m",
         "ovn_underlay.lab.kubeapi", "--listen", f"{hv_mgmt_ip()}:{PORT}",
         "--tokens", str(token_file(workdir / "tokens.csv")), "--request-log", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), url
        made = Cluster(state, Node(state, state.vms[0]), url, log, workdir)
        made.admin("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                   yaml.safe_load(lab_kube.CRD_FILE.read_text()))
        made.admin("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": NAMESPACE}})
        made.admin("POST", "/api/v1/nodes", lab_kube.node_object(made.node.vm))
        yield made
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        lab.down()


class Process:
    """One of the project's commands, run until stopped with SIGTERM."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def alive_or_fail(self) -> None:
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"exited ({self.proc.returncode}): {err}\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def start_controller(cluster: Cluster) -> Process:
    """``controller`` in the hypervisor's network namespace, as the Deployment runs it."""
    settings = config_map_files(CONTROLLER, cluster.workdir / "controller-settings")
    config = kubeconfig(cluster.workdir / "controller.kubeconfig", cluster.url,
                        TOKENS[CONTROLLER])
    log = cluster.workdir / "controller.log"
    return Process(["nsenter", f"--net={netns.path(cluster.state.hv_netns)}", sys.executable,
                    "-m", "ovn_underlay.cli", "controller", "--config-dir", str(settings),
                    "--kubeconfig", config, "--nb", cluster.state.nb,
                    "--cluster-subnet", CLUSTER_SUBNET, "--resync", "1",
                    "--log-file", str(log)], log)


def start_agent(cluster: Cluster) -> Process:
    """``agent`` in the VM, as the DaemonSet runs it (the lab's directories instead of the
    host's, as the DaemonSet's hostPath mounts would give them)."""
    node = cluster.node
    settings = config_map_files(AGENT, cluster.workdir / "agent-settings")
    config = kubeconfig(cluster.workdir / "agent.kubeconfig", cluster.url, TOKENS[AGENT])
    rundir = Path(node.vm.rundir)
    log = rundir / "rbac-agent.log"
    return Process(node.cli_argv(
        "agent", "--config-dir", str(settings), "--node-name", node.vm.name,
        "--kubeconfig", config, "--uplink", "eth1", "--cluster-subnet", CLUSTER_SUBNET,
        "--state-dir", str(node.state_dir), "--cni-bin-dir", str(node.cni_bin_dir),
        "--cni-conf-dir", str(node.cni_conf_dir),
        "--daemon-socket", str(rundir / "rbac" / "cni.sock"), "--metrics-address", "off",
        "--log-file", str(log)), log)


def wait(check: Callable[[], bool], processes: list[Process], what: str) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while not check():
        for process in processes:
            process.alive_or_fail()
        if time.monotonic() > deadline:
            logs = "\n".join(p.text()[-3000:] for p in processes)
            raise AssertionError(f"{what}: not within {READY_WITHIN:g} s\n{logs}")
        time.sleep(0.2)


def add_until_answered(runtime: CniRuntime, container: str, path: str,
                       pod: tuple[str, str]) -> CniReply:
    """ADD, again while the answer is 11 (try again), as a kubelet retries it."""
    deadline = time.monotonic() + READY_WITHIN
    while True:
        reply = runtime.call("ADD", container, path, pod=pod)
        if (reply.output or {}).get("code") != 11 or time.monotonic() > deadline:
            return reply
        runtime.delete(container, path)
        time.sleep(0.5)


def run_scenario(cluster: Cluster) -> None:
    """The controller and the agent through a node's life (module docstring)."""
    controller = start_controller(cluster)
    agent = start_agent(cluster)
    try:
        wait(lambda: cluster.network_condition().get("status") == "False",
             [controller, agent], "NetworkUnavailable False")
        runtime = CniRuntime(cluster.node)
        path = cluster.node.pod_netns("rbac")
        try:
            runtime.add("ctr-rbac-1", path, ("default", "plain"))
            assert runtime.delete("ctr-rbac-1", path).code == 0
            cluster.admin("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "apps", "annotations": {ALLOWED_ANNOTATION: "web"}}})
            cluster.admin("POST", "/api/v1/namespaces/apps/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": "apps",
                             "annotations": {ANNOTATION: "web"}},
                "spec": {"nodeName": cluster.node.vm.name,
                         "containers": [{"name": "c", "image": "registry.example/app:1"}]}})
            refused = add_until_answered(runtime, "ctr-rbac-2", path, ("apps", "web-0"))
            assert "need the neutron backend" in json.dumps(refused.output), (
                refused, agent.text()[-3000:], controller.text()[-3000:])
            # A Service outside default that cannot be fully served (an FQDN slice): the
            # controller's Warning Event goes to the Service's own namespace.
            cluster.admin("POST", "/api/v1/namespaces/apps/services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "legacy"},
                "spec": {"ports": [{"name": "http", "port": 80}]}})
            cluster.admin("POST", "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices", {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "legacy-1",
                             "labels": {"kubernetes.io/service-name": "legacy"}},
                "addressType": "FQDN", "ports": [{"name": "http", "port": 80}],
                "endpoints": [{"addresses": ["legacy.example"]}]})
            wait(lambda: any(e["reason"] == "ServicePartlyProgrammed" for e in cluster.admin(
                "GET", "/api/v1/namespaces/apps/events")["items"]), [controller, agent],
                "a Warning Event on Service apps/legacy")
        finally:
            runtime.delete("ctr-rbac-2", path)
            netns.destroy(path.rsplit("/", 1)[1])
        assert agent.stop() == 0, agent.text()[-3000:]
        assert cluster.network_condition()["reason"] == "AgentStopped"
        assert controller.stop() == 0, controller.text()[-3000:]
    finally:
        agent.stop()
        controller.stop()


@pytest.fixture(scope="module")
def request_log(cluster: Cluster) -> list[dict[str, Any]]:
    run_scenario(cluster)
    return rbac.read_log(cluster.request_log)


@pytest.mark.parametrize("account", [AGENT, CONTROLLER])
def test_rbac_allows_every_request_the_code_made(request_log: list[dict[str, Any]],
                                                 account: str) -> None:
    manifests = rbac.load_manifests()
    made = rbac.requests_of(request_log, rbac.service_account_user(NAMESPACE, account))
    assert len(made) >= 5, made
    assert not any(e.get("code") == 401 for e in request_log), "a token was refused"
    missing = rbac.uncovered(made, rbac.grants_for(manifests, NAMESPACE, account))
    assert not missing, rbac.describe(missing, NAMESPACE, account)


@pytest.mark.parametrize("account", [AGENT, CONTROLLER])
def test_rbac_grants_nothing_the_code_does_not_use(request_log: list[dict[str, Any]],
                                                   account: str) -> None:
    made = rbac.requests_of(request_log, rbac.service_account_user(NAMESPACE, account))
    grants = rbac.grants_for(rbac.load_manifests(), NAMESPACE, account)
    unused = [p for p in rbac.unexercised(made, grants)
              if (account, p.verb, p.resource) not in NOT_EXERCISED]
    assert not unused, "granted, never used:\n" + "\n".join(f"  - {p}" for p in unused)
