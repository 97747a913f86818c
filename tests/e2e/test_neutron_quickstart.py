"""The README's Neutron quick-start, run as the README writes it, on a two-node Neutron lab.

The commands are read from the fenced block of the README's "With Neutron"
section, so the documentation and this test cannot drift apart.  Per VM only
the placeholders are replaced (the openrc path, the switch name, its subnet),
and node-init gets the VM's own state and CNI directories: all the lab's VMs
share this machine's file system, so the defaults (/var/lib/ovn-underlay,
/opt/cni/bin, /etc/cni/net.d) would be one directory for both nodes, and the
machine's own.  Each command runs inside each VM, on a node that has recorded
nothing yet, as on a fresh VM.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ovn_underlay.config import NodeConfig, key_of
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import probe
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, Node, pod_ip
from ovn_underlay.lab.daemons import run
from ovn_underlay.lab.topology import LabState
from tests.conftest import PodFactory
from tests.e2e.test_neutron import nb_view, neutron_view

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "With Neutron"
PROGRAM = "ovn-k8s-underlay"
OPENRC, SWITCH, SUBNET = "/root/openrc", "node1", "198.19.1.0/24"
"""The quick-start's placeholders: the VM's openrc, its node switch and that switch's subnet."""
DROPPED = "--kubeconfig"
"""Dropped with its value: it names the Kubernetes API the plugin would ask for each pod's
security-group annotation, and the lab has no Kubernetes API (with one, an ADD of a pod the
API does not know fails)."""
WARNING = "WARNING"


def quickstart() -> list[list[str]]:
    """The quick-start's commands (argv lists) as the README's "With Neutron" block has them."""
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^## {SECTION}\n(.*?)(?=^## )", text, re.M | re.S)
    assert section is not None, f"README.md has no section {SECTION!r}"
    block = re.search(r"^```\n(.*?)^```$", section.group(1), re.M | re.S)
    assert block is not None, f"README.md's section {SECTION!r} has no code block"
    commands = [shlex.split(line, comments=True)
                for line in block.group(1).replace("\\\n", " ").splitlines()]
    commands = [argv for argv in commands if argv]
    assert commands and all(argv[0] == PROGRAM for argv in commands), commands
    words = [word for argv in commands for word in argv]
    for placeholder in (OPENRC, SWITCH, SUBNET):
        assert placeholder in words, f"the quick-start no longer has {placeholder}"
    return commands


def on_node(argv: list[str], node: Node) -> list[str]:
    """``argv`` (without the program) with the placeholders of ``node``, and its directories."""
    values = {OPENRC: node.vm.openrc, SWITCH: node.switch, SUBNET: node.subnet}
    out: list[str] = []
    words = iter(argv[1:])
    for word in words:
        if word == DROPPED:
            next(words)
            continue
        out.append(values.get(word, word))
    if out[0] == "node-init":
        out += ["--state-dir", str(node.state_dir), "--cni-bin-dir", str(node.cni_bin_dir),
                "--cni-conf-dir", str(node.cni_conf_dir)]
    return out


def forget_settings(node: Node) -> None:
    """Remove every setting the node has recorded: it is a fresh node again."""
    ovs = Ovs(node.vm.ovsdb)
    try:
        ovs.remove_config([key_of(f.name) for f in fields(NodeConfig)])
    finally:
        ovs.close()


@dataclass(frozen=True)
class Step:
    """One command run in one VM: what ran, what it printed, how long it took."""

    node: Node
    argv: list[str]
    proc: subprocess.CompletedProcess[str]
    seconds: float


def run_on(node: Node, argv: list[str]) -> Step:
    started = time.monotonic()
    proc = node.cli(*argv)
    return Step(node, argv, proc, time.monotonic() - started)


def router_id(state: LabState, name: str) -> str:
    def read(conn: Any) -> str:
        return str(conn.network.find_router(name).id)
    return lab_neutron.call(state, read)


def test_the_readme_quickstart_gives_two_nodes_whose_pods_each_node_reaches(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node], pods: PodFactory) -> None:
    commands = quickstart()
    for node in neutron_nodes:
        forget_settings(node)
    before = (neutron_view(neutron_lab), nb_view(neutron_lab))
    steps = [run_on(node, on_node(argv, node)) for argv in commands for node in neutron_nodes]
    timings = ", ".join(f"{s.node.vm.name} {s.argv[0]} {s.seconds:.1f}s" for s in steps)
    print(f"quick-start: {timings}")
    for step in steps:
        assert WARNING not in step.proc.stderr, (step.argv, step.proc.stderr)
    pool_size = next(int(argv[argv.index("--pool-size") + 1]) for argv in commands
                     if "--pool-size" in argv)
    cluster = router_id(neutron_lab, CLUSTER_ROUTER)
    for step in steps:
        if step.argv[0] == "lswitch-setup":
            assert f" on router {CLUSTER_ROUTER} ({cluster}) via " in step.proc.stdout
        if step.argv[:2] == ["pool", "fill"]:
            assert f"{pool_size} ports (wanted {pool_size})" in step.proc.stdout
    for node in neutron_nodes:
        cfg = node.config()
        assert (cfg["cluster_subnet"], cfg["child_ports"]) == (CLUSTER_SUBNET, "trunk")
        assert node.pool()["stats"]["total"] == pool_size
    first, second = neutron_nodes
    ips = {node.vm.name: pod_ip(pods.add(node)[2]) for node in neutron_nodes}
    for src, dst in ((first, second), (second, first)):
        assert probe.ping(src.vm.netns, ips[dst.vm.name]), \
            f"{src.vm.name} cannot ping the pod of {dst.vm.name} ({ips[dst.vm.name]})"
    pods.cleanup()
    for node in neutron_nodes:
        node.cli("lswitch-destroy", node.switch)
    assert (neutron_view(neutron_lab), nb_view(neutron_lab)) == before


def cluster_route(node: Node) -> str:
    return run(["ip", "route", "show", CLUSTER_SUBNET], netns=node.vm.netns).strip()


def test_without_the_cluster_subnet_the_node_warns_and_the_fix_it_names_works(
        neutron_lab: LabState, neutron_nodes: tuple[Node, Node]) -> None:
    node = neutron_nodes[0]
    forget_settings(node)
    init = node.cli("node-init", *node.control_args(), "--state-dir", str(node.state_dir),
                    "--install-cni", "--cni-bin-dir", str(node.cni_bin_dir),
                    "--cni-conf-dir", str(node.cni_conf_dir))
    setup = node.cli("lswitch-setup", node.switch, node.subnet, CLUSTER_ROUTER,
                     "--pool-size", "2")
    for proc in (init, setup):
        assert f"{WARNING}: no cluster subnet is set" in proc.stderr
        assert "node-init --cluster-subnet CIDR" in proc.stderr
        assert WARNING not in proc.stdout
    assert cluster_route(node) == ""
    fixed = node.cli("node-init", "--cluster-subnet", CLUSTER_SUBNET)
    again = node.cli("lswitch-setup", node.switch, node.subnet, CLUSTER_ROUTER,
                     "--pool-size", "2")
    assert WARNING not in fixed.stderr + again.stderr
    assert cluster_route(node).startswith(f"{CLUSTER_SUBNET} via 198.19.{node.index}.1 dev ")
    node.cli("lswitch-destroy", node.switch)
