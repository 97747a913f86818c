"""``ovn-k8s-underlay agent`` on a lab VM, with the real cluster controller: the Kubernetes way.

``lab up --kube`` gives OVN (NB, northd, ovn-controller), a VM and the test API server on
the management network with a Node for the VM.  The controller runs in this process, in
threads inside the hypervisor's namespace (where the API server and the NB are); the
agent runs in the VM as the DaemonSet would run it, with its settings in a directory (a
ConfigMap's files), no NB address and no Neutron credentials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.cni.host_install import is_static, settings_path
from ovn_underlay.control.base import ControlPlane
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.controller.main import Controller, ControllerConfig
from ovn_underlay.controller.nodes import Settings
from ovn_underlay.dataplane.nsenter import enter_netns
from ovn_underlay.kube.client import load_config
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab import netns
from ovn_underlay.lab.cluster import CLUSTER_SUBNET, CniRuntime, Node, pod_ip
from ovn_underlay.lab.topology import LabState
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION
from tests.conftest import cluster_mode_lab

READY_WITHIN = 90.0


@pytest.fixture(scope="module")
def kube_lab(lab_rundir: Path) -> Iterator[LabState]:
    """A lab of two VMs with the test API server, the UnderlayNode CRD and the controller's
    namespace."""
    yield from cluster_mode_lab(lab_rundir, "ag", 2)


class InHypervisor:
    """The cluster controller, run in threads inside the lab hypervisor's namespace, on the
    lab's NB (or the control plane ``connect`` makes)."""

    def __init__(self, state: LabState,
                 connect: Callable[[], ControlPlane] | None = None) -> None:
        self.state = state
        self.connect = connect or (lambda: OvnNbControlPlane(state.nb, timeout=5))
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._stop.clear()
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name="controller-in-hv")
        self._thread.start()
        assert self._started.wait(30), self.error

    def _run(self) -> None:
        try:
            enter_netns(netns.path(self.state.hv_netns))  # the threads it starts stay there
            config = ControllerConfig(
                settings=Settings(cluster_subnet=CLUSTER_SUBNET, pool_size=4,
                                  max_pool_ports=24, pool_batch=8),
                identity="lab-controller", lease_duration=2, renew_deadline=1.0,
                renew_interval=0.3, retry_period=0.1, resync=1.0)
            controller = Controller(load_config(self.state.kube["kubeconfig"]), config,
                                    self.connect)
            controller.start()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._started.set()
        self._stop.wait()
        controller.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


@pytest.fixture
def controller(kube_lab: LabState) -> Iterator[InHypervisor]:
    running = InHypervisor(kube_lab)
    yield running
    running.stop()


class Agent:
    """``ovn-k8s-underlay agent`` on the lab's VM, settings in a directory of files."""

    def __init__(self, state: LabState, tmp: Path, vm: int = 0) -> None:
        self.node = Node(state, state.vms[vm])
        self.name = self.node.vm.name
        self.settings = tmp / f"agent-settings-{self.name}"
        self.settings.mkdir(exist_ok=True)
        rundir = Path(self.node.vm.rundir)
        for option, value in {
                "uplink": "eth1", "pool-high": "8", "pool-low": "3", "pool-batch": "4",
                "cluster-subnet": CLUSTER_SUBNET, "state-dir": str(self.node.state_dir),
                "cni-bin-dir": str(self.node.cni_bin_dir),
                "cni-conf-dir": str(self.node.cni_conf_dir),
                "daemon-socket": str(rundir / "daemon" / "cni.sock"),
                "metrics-address": "off"}.items():
            (self.settings / option).write_text(f"{value}\n")
        self.log = rundir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.node.cli_argv("agent", "--config-dir", str(self.settings),
                               "--kubeconfig", self.node.state.kube["kubeconfig"],
                               "--node-name", self.name, "--log-file", str(self.log)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def condition(self) -> dict[str, Any]:
        node = lab_kube.request(self.node.state, "GET", f"/api/v1/nodes/{self.name}")
        return next((c for c in (node.get("status") or {}).get("conditions") or []
                     if c["type"] == "NetworkUnavailable"), {})

    def wait_condition(self, check: Callable[[dict[str, Any]], bool],
                       timeout: float = READY_WITHIN) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            cond = self.condition()
            if check(cond):
                return cond
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"the agent exited ({self.proc.returncode}): {err}"
                                     f"{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"NetworkUnavailable is {cond} after {timeout:g} s:\n"
                                     f"{self.log_text()}")
            time.sleep(0.2)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def ready(self) -> dict[str, Any]:
        return self.wait_condition(lambda c: c.get("status") == "False")


@pytest.fixture
def agent(kube_lab: LabState, tmp_path: Path) -> Iterator[Agent]:
    made = Agent(kube_lab, tmp_path)
    yield made
    if made.proc is not None and made.proc.poll() is None:
        made.stop()


def test_killed_during_setup_and_restarted_the_agent_converges(
        agent: Agent, controller: InHypervisor) -> None:
    """No controller yet: the node is prepared, then waits (NetworkUnavailable True,
    WaitingForController); killed there and started again with the controller up, it
    sets the node up and serves (False, OvnUnderlayReady); killed while serving and
    started again, it serves again with the same pool."""
    agent.start()
    waiting = agent.wait_condition(lambda c: c.get("reason") == "WaitingForController")
    assert waiting["status"] == "True"
    agent.kill()
    config = agent.node.config()
    assert config["backend"] == "cluster" and config["bridge"] == "br-int"
    controller.start()
    agent.start()
    assert agent.ready()["reason"] == "OvnUnderlayReady"
    ports = {p["lport"] for p in agent.node.pool()["ports"]}
    assert len(ports) >= 8
    agent.kill()
    down = CniRuntime(agent.node).call("ADD", "ctr-down", agent.node.pod_netns("down"),
                                       pod=("default", "down"))
    netns.destroy(f"{agent.node.state.name}-{agent.name}-down")
    assert (down.output or {}).get("code") == 11, down  # the host binary: no Python
    agent.start()
    serve_one_pod(agent, "restarted")
    assert {p["lport"] for p in agent.node.pool()["ports"]} == ports
    assert agent.stop() == 0
    assert agent.condition()["reason"] == "AgentStopped"


def serve_one_pod(agent: Agent, pod: str, timeout: float = READY_WITHIN) -> dict[str, Any]:
    """ADD (retried while the answer is 11, try again: no daemon serves yet) and DEL."""
    runtime = CniRuntime(agent.node)
    path = agent.node.pod_netns(pod)
    cid = f"ctr-{pod}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            reply = runtime.call("ADD", cid, path, pod=("default", pod))
            if reply.code == 0 and reply.output is not None:
                return reply.output
            code = (reply.output or {}).get("code")
            assert code == 11 and time.monotonic() < deadline, (reply, agent.log_text())
            time.sleep(0.5)
    finally:
        assert runtime.delete(cid, path).code == 0
        netns.destroy(path.rsplit("/", 1)[1])


def test_the_agent_serves_pods_with_no_control_plane_credentials(
        agent: Agent, controller: InHypervisor, kube_lab: LabState) -> None:
    controller.start()
    agent.start()
    agent.ready()
    config = agent.node.config()
    assert config["backend"] == "cluster"
    assert not config["nb"] and not config["neutron_config"] and not config["neutron_cloud"]
    assert config["switch"] == f"node-{agent.name}" and config["mgmt_ip"]
    assert len(agent.node.pool()["ports"]) >= 8  # pool-high, asked of the controller
    assert (agent.node.cni_conf_dir / "10-ovn-underlay.conflist").exists()
    binary = agent.node.cni_bin_dir / "ovn-underlay"
    assert is_static(binary) and settings_path(binary).is_file()  # the host's CNI binary
    runtime = CniRuntime(agent.node)
    ns_name = f"agp{os.getpid() % 10000}"
    path = agent.node.pod_netns(ns_name)
    try:
        result = runtime.add("ctr-agent-1", path, ("default", "plain"))
        assert pod_ip(result).startswith(config["subnet"].rsplit(".", 2)[0])
        assert runtime.delete("ctr-agent-1", path).code == 0
        lab_kube.request(kube_lab, "POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "apps", "annotations": {ALLOWED_ANNOTATION: "web"}}})
        lab_kube.request(kube_lab, "POST", "/api/v1/namespaces/apps/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "apps",
                         "annotations": {ANNOTATION: "web"}},
            "spec": {"nodeName": agent.name,
                     "containers": [{"name": "c", "image": "registry.example/app:1"}]}})
        refused = runtime.call("ADD", "ctr-agent-2", path, pod=("apps", "web-0"))
        assert refused.code != 0
        assert "need the neutron backend" in json.dumps(refused.output), refused.output
        free = agent.node.pool()
        assert all(p["allocation"] is None for p in free["ports"]), free
    finally:
        runtime.delete("ctr-agent-2", path)
        netns.destroy(ns_name)


def test_killed_at_any_point_of_setup_the_agent_converges(
        kube_lab: LabState, controller: InHypervisor, tmp_path: Path) -> None:
    """On a fresh VM, with the controller up: killed (SIGKILL) again and again early in its
    run (in one run's log: the first kill fell in the middle of moving the uplink's
    addresses to br-int, which the next start made again; later ones around the daemon's
    start), each restart carries on from what is there; the last one serves pods."""
    controller.start()
    agent = Agent(kube_lab, tmp_path, vm=1)
    try:
        for delay in (0.5, 0.3, 0.4, 0.45, 0.5):
            agent.start()
            time.sleep(delay)
            agent.kill()
        agent.start()
        agent.ready()
        serve_one_pod(agent, "afterkills")
        config = agent.node.config()
        assert config["backend"] == "cluster" and config["switch"] == f"node-{agent.name}"
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()

