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

from tests.conftest import (
    skip_unless_containerd_possible,
    skip_unless_lab_possible,
    skip_unless_octavia_possible,
)
from tests.e2e.test_lab import CLI, all_pids, assert_gone, cli, status

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
    # 50 of the matrix, then one per client of the ClusterIP Service: every backend reached.
    assert "52/52 checks green" in demo.stdout, demo.stdout
    assert "every pool port free ok" in demo.stdout, demo.stdout
    for vm in ("vm1", "vm2"):  # set up by the agents, from the controller's answer
        assert f"{vm}: NetworkUnavailable=False (OvnUnderlayReady)" in demo.stdout, demo.stdout
    assert json.loads(cli(rundir, name, "status", "--json", check=False).stdout)["up"] is False
    assert_gone(rundir, name, [])
    assert_service_spread(demo.stdout)


def assert_service_spread(out: str) -> None:
    """The demo's Service part: allocated, sliced, programmed, spread over all four Pods on
    both VMs from a pod on each VM, and deleted (rows gone, ClusterIP silent)."""
    cluster_ip = service_created(out)
    assert (f"OVN Load_Balancer Service_default/demo_tcp (written by the controller): "
            f"{cluster_ip}:80 -> 4 backends, in group ovn-underlay-services on switches "
            "node-vm1, node-vm2") in out, out
    assert_spread_and_teardown(out, cluster_ip, "rows removed by the controller")


def service_created(out: str) -> str:
    """The demo Service's ClusterIP, once its creation and slice are said."""
    created = [line for line in out.splitlines()
               if line.startswith("Service default/demo created")]
    assert len(created) == 1 and "type ClusterIP" in created[0], out
    cluster_ip = created[0].rsplit("ClusterIP ", 1)[1]
    assert cluster_ip.startswith("198.18.1"), out  # the API server's service range
    assert "EndpointSlice demo-" in out and "4 ready endpoints" in out, out
    return cluster_ip


def assert_spread_and_teardown(out: str, cluster_ip: str, removed: str) -> None:
    """The hits table (every backend from both clients, 40 answers each), the checks, and
    the Service deleted before the Pods, ``removed`` said and the ClusterIP silent."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("backend "))
    assert lines[head].split()[-4:] == ["from", "pod-vm1-a", "from", "pod-vm2-a"], out
    rows = {line.split()[0]: line.split() for line in lines[head + 1:head + 5]}
    assert sorted(rows) == ["pod-vm1-a", "pod-vm1-b", "pod-vm2-a", "pod-vm2-b"], out
    for name, row in rows.items():
        assert row[1] == name.split("-")[1], out  # the backend's VM
        assert int(row[3]) > 0 and int(row[4]) > 0, out  # hit from each client
    for column in (3, 4):
        assert sum(int(row[column]) for row in rows.values()) == 40, out
    assert lines[head + 5].split()[-2:] == ["0", "0"], out  # no answer / other
    for client in ("pod-vm1-a", "pod-vm2-a"):
        assert any(line.startswith(f"service every backend  {client} ")
                   and line.endswith(f"demo ({cluster_ip}:80)  ok: 4/4 backends, "
                                     "40/40 answered") for line in lines), out
    gone = [line for line in lines if line.startswith("teardown: Service default/demo")]
    assert len(gone) == 1 and removed in gone[0], out
    assert f"{cluster_ip}:80 silent for pod-vm1-a" in gone[0] and gone[0].endswith(": ok")
    assert lines.index(gone[0]) < next(i for i, line in enumerate(lines)
                                       if line.startswith("teardown: 4 Pods deleted")), out


def test_demo_neutron_the_kubernetes_way_spreads_its_service_through_octavia(
        fresh: tuple[Path, str]) -> None:
    """``make demo-neutron``: the same 52 checks on Neutron, the Service an Octavia load
    balancer made by the controller, whose row the OVN provider writes."""
    skip_unless_containerd_possible()
    skip_unless_octavia_possible()
    rundir, name = fresh
    demo = subprocess.run([*CLI, "lab", "--name", name, "--rundir", str(rundir), "demo",
                           "--neutron", "--kube"], capture_output=True, text=True,
                          timeout=400, check=False)  # ~110 s here: 96 Neutron ports
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "52/52 checks green" in out and "every pool port free ok" in out, out
    cluster_ip = service_created(out)
    assert (f"Octavia load balancer ovn-underlay:default/demo (made by the controller, "
            f"provider ovn): ACTIVE, VIP {cluster_ip}, listener TCP 80, 4 members") in out, out
    assert ("(written by Octavia's OVN provider): "
            f"{cluster_ip}:80 -> 4 backends, on switches of networks node-vm1, node-vm2, "
            "services") in out, out
    assert_spread_and_teardown(out, cluster_ip, "its Octavia load balancer and the "
                               "provider's OVN row removed by the controller")
    assert_gone(rundir, name, [])
