"""Shared fixtures: skips with a reason where the machine lacks root or namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.lab import daemons, netns
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.cluster import CniRuntime, Node
from ovn_underlay.lab.topology import Lab, LabState


def _netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, OVS daemons)"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"oul-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


NETNS_SKIP_REASON = _netns_unavailable_reason()
needs_netns = pytest.mark.skipif(NETNS_SKIP_REASON is not None,
                                 reason=NETNS_SKIP_REASON or "")


@pytest.fixture
def ovsdb_factory(tmp_path: Path) -> Iterator[object]:
    """Start real ovsdb-servers (no namespace) for a test; all stopped afterwards.

    Usage: ``conn = ovsdb_factory("nb", daemons.NB_SCHEMA)`` returns "unix:/...sock".
    """
    if shutil.which("ovsdb-server") is None:
        pytest.skip("ovsdb-server is not installed (make deps)")
    started: list[daemons.Daemon] = []

    def start(name: str, schema: Path) -> str:
        daemon, conn = daemons.start_ovsdb_server(name, tmp_path / name, schema)
        started.append(daemon)
        return conn

    yield start
    for daemon in started:
        pid = daemon.pid()
        if pid is not None:
            daemons.stop_pid(pid)


LAB_TOOLS = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "ethtool")


def skip_unless_lab_possible() -> None:
    """Skip (with the reason) where the machine cannot run the lab at all."""
    if NETNS_SKIP_REASON is not None:
        pytest.skip(NETNS_SKIP_REASON)
    missing = [t for t in LAB_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"lab programs missing: {', '.join(missing)} (make deps installs them)")


def skip_unless_octavia_possible() -> None:
    """Skip (with the reason) where the lab cannot run, or Neutron's or Octavia's
    programs lack."""
    from ovn_underlay.lab import neutron as lab_neutron
    from ovn_underlay.lab import octavia as lab_octavia

    skip_unless_lab_possible()
    missing = lab_neutron.missing_tools() + lab_octavia.missing_tools()
    if missing:
        pytest.skip(f"Neutron/Octavia lab programs missing: {', '.join(missing)} (make deps "
                    "installs them)")


def cluster_mode_lab(rundir: Path, prefix: str, vms: int) -> Iterator[LabState]:
    """A lab of ``vms`` VMs named ``<prefix><pid>`` with the test API server, the
    UnderlayNode CRD and the controller's namespace (lab.kube.install_cluster_mode);
    down again afterwards.  For a module fixture: ``yield from cluster_mode_lab(...)``."""
    from ovn_underlay.lab import kube

    skip_unless_lab_possible()
    lab = Lab(f"{prefix}{os.getpid() % 1000}", rundir)
    lab.down()
    state = lab.up(vms, kube=True)
    try:
        kube.install_cluster_mode(state)
        yield state
    finally:
        lab.down()


def skip_unless_containerd_possible() -> None:
    """Skip (with the reason) where containerd, its tools or the CRI client's packages lack."""
    from ovn_underlay.lab.containerd import missing_python_packages, missing_tools

    missing = missing_tools()
    if missing:
        pytest.skip(f"containerd programs missing: {', '.join(missing)} "
                    "(Debian packages containerd, runc, busybox-static, "
                    "containernetworking-plugins)")
    packages = missing_python_packages()
    if packages:
        pytest.skip(f"PyPI packages missing for the CRI client: {', '.join(packages)} "
                    f"(pip install {' '.join(packages)})")


@pytest.fixture(scope="session")
def lab_rundir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory for the labs of this test session (short: socket paths)."""
    return tmp_path_factory.mktemp("labs")


@pytest.fixture(scope="session")
def lab(lab_rundir: Path) -> Iterator[LabState]:
    """One lab with 2 VMs shared by the session's end-to-end tests."""
    skip_unless_lab_possible()
    the_lab = Lab(f"s{os.getpid() % 10000}", lab_rundir)
    state = the_lab.up(2)
    yield state
    the_lab.down()


def own_lab(letter: str, lab_rundir: Path, vms: int) -> Iterator[LabState]:
    """A module's lab of its own with ``vms`` VMs, named ``letter`` and a digit of the pid:
    what a killed run left of it is taken down first, and it is taken down after the yield
    (for a fixture: ``yield from own_lab(...)``)."""
    skip_unless_lab_possible()
    the_lab = Lab(f"{letter}{1 + os.getpid() % 9}", lab_rundir)
    the_lab.down()
    yield the_lab.up(vms)
    the_lab.down()


@pytest.fixture(scope="session")
def neutron_lab(lab_rundir: Path) -> Iterator[LabState]:
    """One lab with 2 VMs and a real neutron-server, shared by the session's Neutron tests."""
    skip_unless_lab_possible()
    missing = lab_neutron.missing_tools()
    if missing:
        pytest.skip(f"Neutron lab programs missing: {', '.join(missing)} (make deps "
                    "installs them)")
    the_lab = Lab(f"q{os.getpid() % 10000}", lab_rundir)  # one per session: sessions overlap
    state = the_lab.up(2, neutron=True, octavia=False)  # none of them needs Octavia (~5 s)
    yield state
    the_lab.down()


@pytest.fixture
def neutron_nodes(neutron_lab: LabState) -> Iterator[tuple[Node, Node]]:
    """Both VMs of the Neutron lab as nodes; whatever switches a test made are destroyed."""
    both = (Node(neutron_lab, neutron_lab.vms[0]), Node(neutron_lab, neutron_lab.vms[1]))
    yield both
    for node in both:
        if node.state_dir.exists():
            node.cli("lswitch-destroy", node.switch, "--force", check=False)


@pytest.fixture(scope="session")
def nodes(lab: LabState) -> tuple[Node, Node]:
    """Both lab VMs initialised as nodes: vm1 with a pool of 24 ports, vm2 with 6."""
    first, second = Node(lab, lab.vms[0]), Node(lab, lab.vms[1])
    for node, size in ((first, 24), (second, 6)):
        node.init()
        node.setup_switch(pool_size=size)
    return first, second


class PodFactory:
    """Pods made through CNI ADD in a test; all deleted (CNI DEL) when it ends."""

    def __init__(self) -> None:
        self.made: list[tuple[CniRuntime, str, str, str]] = []
        self.counter = 0

    def netns(self, node: Node) -> tuple[str, str]:
        """A fresh pod namespace and container id on ``node``."""
        self.counter += 1
        name = f"t{os.getpid() % 10000}x{self.counter}"
        return node.pod_netns(name), f"ctr{name}"

    def add(self, node: Node, runtime: CniRuntime | None = None,
            ifname: str = "eth0") -> tuple[str, str, dict[str, Any]]:
        """ADD a new pod; returns (netns path, container id, result)."""
        runtime = runtime or CniRuntime(node)
        path, cid = self.netns(node)
        self.track(runtime, cid, path, ifname)
        return path, cid, runtime.add(cid, path, ("default", cid), ifname)

    def track(self, runtime: CniRuntime, cid: str, path: str, ifname: str = "eth0") -> None:
        """Make sure ``cid`` is deleted at the end of the test."""
        self.made.append((runtime, cid, path, ifname))

    def cleanup(self) -> None:
        """DEL every pod and remove its namespace."""
        for runtime, cid, path, ifname in self.made:
            runtime.delete(cid, path, ifname)
            netns.destroy(path.rsplit("/", 1)[1])


@pytest.fixture
def pods() -> Iterator[PodFactory]:
    """Per-test pods, removed afterwards even when the test fails."""
    factory = PodFactory()
    yield factory
    factory.cleanup()
