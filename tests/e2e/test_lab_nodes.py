"""Lab VMs as separate nodes: lab exec gives each its own paths; readiness as a runtime sees it.

All lab VMs share the machine's filesystem, so a node's documented defaults
(/etc/cni/net.d, /opt/cni/bin, /var/lib/ovn-underlay, /run/ovn-underlay) would
be one set for all of them.  ``lab exec VM -- CMD`` runs CMD with the VM's own;
node-init refuses to take over another VM's conflist or daemon socket; and the
conflist, which containerd takes as "the network is ready", appears only once
the node can serve pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, Node
from ovn_underlay.lab.topology import Lab, LabState
from tests.conftest import skip_unless_lab_possible

CONFLIST = "10-ovn-underlay.conflist"


@pytest.fixture(scope="module")
def lab(lab_rundir: Path) -> Iterator[LabState]:
    skip_unless_lab_possible()
    the_lab = Lab(f"x{os.getpid() % 10000}", lab_rundir)
    yield the_lab.up(2)
    the_lab.down()


def lab_exec(state: LabState, vm: str, *argv: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ovn-k8s-underlay lab exec VM -- ARGV``, as a user types it."""
    proc = subprocess.run([sys.executable, "-m", "ovn_underlay.cli", "lab", "--name", state.name,
                           "--rundir", str(Path(state.rundir).parent), "exec", vm, "--", *argv],
                          capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_lab_exec_gives_each_vm_its_own_paths_database_and_interfaces(lab: LabState) -> None:
    for vm in lab.vms:
        lab_exec(lab, vm.name, "ovn-k8s-underlay", "node-init", "--nb", lab.nb, "--parent",
                 vm.port, "--cluster-subnet", CLUSTER_SUBNET, "--install-cni")
    for index, vm in enumerate(lab.vms, start=1):
        shown = json.loads(lab_exec(lab, vm.name, "ovn-k8s-underlay", "config", "show",
                                    "--json").stdout)
        assert shown["parent"] == vm.port, "the default --ovsdb is the VM's own database"
        lab_exec(lab, vm.name, "ovn-k8s-underlay", "lswitch-setup", f"node{index}",
                 f"198.19.{index}.0/24", CLUSTER_ROUTER, "--pool-size", "4")
        own = Path(vm.rundir)
        conf = json.loads((own / "cni" / "net.d" / CONFLIST).read_text())
        assert conf["plugins"][0]["ovsdb"] == vm.ovsdb
        assert (own / "cni" / "bin" / "ovn-underlay").exists()
        assert (own / "state" / "pool.db").exists()
        seen = lab_exec(lab, vm.name, "cat", f"/etc/cni/net.d/{CONFLIST}").stdout
        assert json.loads(seen) == conf, "inside, the documented path is the VM's own file"
        assert "eth1" in lab_exec(lab, vm.name, "ls", "/sys/class/net").stdout.split()
    for index, vm in enumerate(lab.vms, start=1):
        lab_exec(lab, vm.name, "ovn-k8s-underlay", "lswitch-destroy", f"node{index}")
    assert lab_exec(lab, "vm9", "true", check=False).returncode == 1


def test_node_init_refuses_another_nodes_conflist(lab: LabState, tmp_path: Path) -> None:
    first, second = (Node(lab, vm) for vm in lab.vms)
    shared = tmp_path / "net.d"
    first.init("--cni-conf-dir", str(shared))
    first.setup_switch(pool_size=2)
    try:
        before = (shared / CONFLIST).read_text()
        refused = second.init("--cni-conf-dir", str(shared), check=False)
        assert refused.returncode == 1
        assert "belongs to another node" in refused.stderr and first.vm.ovsdb in refused.stderr
        assert (shared / CONFLIST).read_text() == before
    finally:
        first.cli("lswitch-destroy", first.switch)


def test_the_conflist_appears_only_once_the_node_can_serve_pods(lab: LabState) -> None:
    node = Node(lab, lab.vms[1])
    conf = node.cni_conf_dir / CONFLIST
    conf.unlink(missing_ok=True)
    node.init()
    assert (node.cni_bin_dir / "ovn-underlay").exists()
    assert not conf.exists(), "containerd would take the node as ready before it is"
    node.setup_switch(pool_size=2)
    assert json.loads(conf.read_text())["plugins"][0]["ovsdb"] == node.vm.ovsdb
    node.cli("lswitch-destroy", node.switch)
    assert conf.exists(), "never removed: containerd 1.6 then fails every pod's teardown"
