"""``lab up --kube`` and ``lab demo --kube`` through the CLI a user runs.

The test API server runs as a lab process in the hypervisor namespace; a VM
lists the Nodes over its management link with the kubeconfig ``lab up``
wrote, and ``lab down`` leaves nothing behind.  The demo runs Pods made
through the API on containerd and a kubelet stand-in per VM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_unless_containerd_possible, skip_unless_lab_possible
from tests.e2e.test_lab import all_pids, assert_gone, cli, status

LIST_NODES = """\
import sys
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Node
client = Client(KubeConfig.from_file(sys.argv[1]))
print(" ".join(sorted(node.metadata.name for node in client.list(Node))))
"""


@pytest.fixture
def fresh(lab_rundir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    """A lab name of its own in the session's short run directory (unix socket paths)."""
    skip_unless_lab_possible()
    name = f"k{os.getpid() % 1000}{request.node.name[5]}"
    yield lab_rundir, name
    cli(lab_rundir, name, "down", check=False)


def test_up_kube_serves_nodes_to_the_vms_and_down_removes_it(fresh: tuple[Path, str]) -> None:
    rundir, name = fresh
    up = cli(rundir, name, "up", "--vms", "2", "--kube")
    assert "Kubernetes API: http://198.18.1.1:6443" in up.stdout, up.stdout
    st = status(rundir, name)
    assert st["up"], st["problems"]
    kube = st["kube"]
    assert kube["url"] == "http://198.18.1.1:6443"
    assert Path(kube["kubeconfig"]).is_file()
    assert Path(kube["kubeconfig"]).is_relative_to(rundir / name)
    assert st["pids"]["hypervisor"]["kubeapi"]
    assert [vm["mgmt_ip"] for vm in st["vms"]] == ["198.18.1.11", "198.18.1.12"]
    text = cli(rundir, name, "status").stdout
    assert f"kubeconfig {kube['kubeconfig']}" in text and "kubeapi=" in text, text
    # From inside a VM: lightkube, with the kubeconfig, over the VM's eth0.
    listed = subprocess.run(["ip", "netns", "exec", st["vms"][1]["netns"], sys.executable,
                             "-c", LIST_NODES, kube["kubeconfig"]],
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["vm1", "vm2"]
    again = cli(rundir, name, "up", "--vms", "2", check=False)
    assert again.returncode != 0 and "--kube" in again.stderr, again.stderr
    pids = all_pids(st)
    cli(rundir, name, "down")
    assert_gone(rundir, name, pids)


def test_demo_the_kubernetes_way_is_all_green_and_leaves_nothing(fresh: tuple[Path, str]) -> None:
    skip_unless_containerd_possible()
    rundir, name = fresh
    demo = cli(rundir, name, "demo", "--kube", check=False)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "50/50 checks green" in demo.stdout, demo.stdout
    assert "every pool port free ok" in demo.stdout, demo.stdout
    for vm in ("vm1", "vm2"):  # set up by the agents, from the controller's answer
        assert f"{vm}: NetworkUnavailable=False (OvnUnderlayReady)" in demo.stdout, demo.stdout
    assert json.loads(cli(rundir, name, "status", "--json", check=False).stdout)["up"] is False
    assert_gone(rundir, name, [])
