"""The CNI binary a node agent installs on a host, against a real daemon on a lab node.

The binary is the native shim installed by
:func:`~ovn_underlay.cni.host_install.install_host_binary` into a directory of
its own, beside its settings file, and executed as a runtime on a host
without Python executes it: ``env -i`` with the CNI_* variables only (no
PATH, so no Python could be found, and no venv), stdin the node's network
configuration.  The lab is this module's, one VM whose daemon runs inside it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.cni import host_install, shim
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import CniRuntime, Node
from ovn_underlay.lab.topology import LabState
from tests.conftest import PodFactory, own_lab
from tests.e2e.test_daemon import DaemonProcess, daemon, running

__all__ = ["daemon", "running"]

NOT_RUNNING = "the ovn-underlay node agent is not running on this node"


@pytest.fixture(scope="module")
def lab(lab_rundir: Path) -> Iterator[LabState]:
    yield from own_lab("h", lab_rundir, 1)


@pytest.fixture(scope="module")
def node(lab: LabState) -> Node:
    node = Node(lab, lab.vms[0])
    node.init("--daemon-socket", f"{node.vm.rundir}/daemon/cni.sock")
    node.setup_switch(pool_size=4)
    return node


@pytest.fixture(scope="module")
def host_bin(node: Node, daemon: DaemonProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host's CNI bin directory with the binary the agent installs, for the daemon's socket."""
    shim_path = host_install.native_shim()
    if shim_path is None:
        pytest.skip(f"the native shim is not built (make src/ovn_underlay/cni/{shim.NATIVE_SHIM})")
    bin_dir = tmp_path_factory.mktemp("host") / "opt" / "cni" / "bin"
    assert len(host_install.install_host_binary(bin_dir, daemon.sock, 30.0)) == 2
    return bin_dir


def call(bin_dir: Path, node: Node, command: str, container_id: str, netns_path: str,
         **conf: Any) -> tuple[int, dict[str, Any] | None, float]:
    """Execute the host's binary with the CNI_* variables only; exit code, output, seconds."""
    runtime = CniRuntime(node)
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path,
           "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir),
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}"}
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           str(bin_dir / "ovn-underlay")],
                          input=json.dumps(runtime.netconf(**conf)).encode(),
                          capture_output=True, timeout=120, check=False)
    elapsed = time.monotonic() - started
    assert proc.stderr == b"", proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, elapsed


def attached(node: Node) -> int:
    """How many of the node's pool ports hold a pod."""
    return int(node.pool()["stats"]["attached"])


def test_the_host_binary_adds_and_deletes_a_pod_through_the_daemon(
        running: DaemonProcess, node: Node, host_bin: Path, pods: PodFactory) -> None:
    path, cid = pods.netns(node)
    pods.track(CniRuntime(node), cid, path)
    before = attached(node)
    code, result, _ = call(host_bin, node, "ADD", cid, path)
    assert code == 0 and result is not None, result
    assert result["cniVersion"] == CniRuntime(node).cni_version
    assert attached(node) == before + 1
    assert probe.ping(path.rsplit("/", 1)[1], result["ips"][0]["gateway"], attempts=3)
    code, output, _ = call(host_bin, node, "DEL", cid, path, prev_result=result)
    assert (code, output) == (0, None)
    assert attached(node) == before


@pytest.mark.parametrize(("stop", "why"), [("stop", "No such file or directory"),
                                           ("kill", "Connection refused")])
def test_with_no_daemon_the_host_binary_answers_try_again_and_changes_nothing(
        running: DaemonProcess, node: Node, host_bin: Path, pods: PodFactory, stop: str,
        why: str) -> None:
    getattr(running, stop)()
    assert Path(running.sock).exists() == (stop == "kill"), "a killed daemon leaves its socket"
    path, cid = pods.netns(node)
    pods.track(CniRuntime(node), cid, path)
    before = attached(node)
    for command in ("ADD", "DEL"):
        code, error, seconds = call(host_bin, node, command, cid, path, cniVersion="0.4.0")
        assert (code, error) == (1, {"cniVersion": "0.4.0", "code": shim.ERR_TRY_AGAIN,
                                     "msg": NOT_RUNNING,
                                     "details": f"nothing listens on {running.sock}: {why}"})
        assert seconds < 1.0, f"{command} took {seconds:.3f}s"
    assert attached(node) == before
    running.start()
    code, result, _ = call(host_bin, node, "ADD", cid, path)
    assert code == 0 and result is not None, "the runtime's retry succeeds once the agent runs"
