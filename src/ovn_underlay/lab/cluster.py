"""Nodes and pods on a lab: node-init, lswitch-setup, and CNI calls made as a runtime makes them.

A runtime executes the plugin binary named by the conflist's ``type`` from
CNI_PATH, in the node's network namespace, with the CNI_* variables set and
the network configuration (``cniVersion`` and ``name`` copied in from the
list, plus ``prevResult`` where one applies) on stdin.  :class:`CniRuntime`
does exactly that, so the tests and the demo go through the same entry point
as kubelet or podman.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovn_underlay.lab import netns
from ovn_underlay.lab.daemons import netns_argv
from ovn_underlay.lab.topology import LabState, VmInfo

CONFLIST = "10-ovn-underlay.conflist"
CLUSTER_ROUTER = "cluster"
CLUSTER_SUBNET = "198.19.0.0/16"


class ClusterError(RuntimeError):
    """A node command or a CNI call failed where it should have worked."""


@dataclass(frozen=True)
class CniReply:
    """What the plugin answered: exit code, parsed stdout (if any) and stderr."""

    code: int
    output: dict[str, Any] | None
    stderr: str


class Node:
    """One lab VM used as a Kubernetes node."""

    def __init__(self, state: LabState, vm: VmInfo) -> None:
        self.state = state
        self.vm = vm
        base = Path(vm.rundir)
        self.state_dir = base / "state"
        self.cni_bin_dir = base / "cni" / "bin"
        self.cni_conf_dir = base / "cni" / "net.d"
        self.index = int(vm.name[2:])

    @property
    def switch(self) -> str:
        """The node's logical switch name."""
        return f"node{self.index}"

    @property
    def subnet(self) -> str:
        """The node's pod subnet, inside the cluster subnet."""
        return f"198.19.{self.index}.0/24"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ovn-k8s-underlay ARGS`` inside the VM, on the VM's own OVS database."""
        proc = subprocess.run(self.cli_argv(*args), capture_output=True, text=True, timeout=120,
                              check=False)
        if check and proc.returncode != 0:
            raise ClusterError(f"{self.vm.name}: ovn-k8s-underlay {' '.join(args)} failed: "
                               f"{proc.stderr.strip()}")
        return proc

    def cli_argv(self, *args: str) -> list[str]:
        """The argv of ``ovn-k8s-underlay ARGS`` inside the VM, on the VM's OVS database."""
        return netns_argv(self.vm.netns, [sys.executable, "-m", "ovn_underlay.cli",
                                          "--ovsdb", self.vm.ovsdb, *args])

    def init(self, *extra: str, check: bool = True,
             child_ports: str = "trunk") -> subprocess.CompletedProcess[str]:
        """node-init with the lab's control plane, and the CNI installed.

        That is the lab's NB with this VM's port as parent, or in a Neutron lab
        the VM's openrc (whose OS_VIF_ID is the parent) and ``child_ports``.
        """
        return self.cli("node-init", *self.control_args(child_ports),
                        "--cluster-subnet", CLUSTER_SUBNET, "--state-dir", str(self.state_dir),
                        "--install-cni", "--cni-bin-dir", str(self.cni_bin_dir),
                        "--cni-conf-dir", str(self.cni_conf_dir),
                        "--cni-log-file", str(Path(self.vm.rundir) / "cni.log"), *extra,
                        check=check)

    def control_args(self, child_ports: str = "trunk") -> list[str]:
        """node-init's control-plane options for this lab."""
        if self.state.neutron:
            return ["--backend", "neutron", "--neutron-config", self.vm.openrc,
                    "--child-ports", child_ports]
        return ["--nb", self.state.nb, "--parent", self.vm.port]

    def setup_switch(self, pool_size: int = 16) -> subprocess.CompletedProcess[str]:
        """lswitch-setup of this node's switch on the cluster router."""
        return self.cli("lswitch-setup", self.switch, self.subnet, CLUSTER_ROUTER,
                        "--pool-size", str(pool_size))

    def config(self) -> dict[str, Any]:
        """The node's settings (``config show --json``)."""
        data: dict[str, Any] = json.loads(self.cli("config", "show", "--json").stdout)
        return data

    def pool(self) -> dict[str, Any]:
        """The node's pool (``pool show --json``): stats and every port with its holder."""
        data: dict[str, Any] = json.loads(self.cli("pool", "show", "--json").stdout)
        return data

    def pod_netns(self, pod: str) -> str:
        """Create (if needed) the namespace of pod ``pod``; return its path."""
        name = f"{self.state.name}-{self.vm.name}-{pod}"
        netns.create(name)
        return netns.path(name)


class CniRuntime:
    """Calls the installed plugin of a node exactly as a container runtime does."""

    def __init__(self, node: Node, cni_version: str | None = None) -> None:
        self.node = node
        conflist = json.loads((node.cni_conf_dir / CONFLIST).read_text())
        self.plugin_conf: dict[str, Any] = dict(conflist["plugins"][0])
        self.name = str(conflist["name"])
        self.cni_version = cni_version or str(conflist["cniVersion"])

    def netconf(self, prev_result: dict[str, Any] | None = None,
                **overrides: Any) -> dict[str, Any]:
        """The plugin's network configuration as a runtime derives it from the list."""
        conf = {**self.plugin_conf, "cniVersion": self.cni_version, "name": self.name,
                **overrides}
        if prev_result is not None:
            conf["prevResult"] = prev_result
        return conf

    def call(self, command: str, container_id: str = "", netns_path: str = "",
             ifname: str = "eth0", pod: tuple[str, str] | None = None,
             stdin: bytes | None = None, env: dict[str, str] | None = None,
             **conf: Any) -> CniReply:
        """One plugin execution; ``stdin`` replaces the generated configuration."""
        variables = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
                     "CNI_NETNS": netns_path, "CNI_IFNAME": ifname,
                     "CNI_PATH": str(self.node.cni_bin_dir), "PATH": "/usr/sbin:/usr/bin:/bin"}
        if pod is not None:
            variables["CNI_ARGS"] = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod[0]};"
                                     f"K8S_POD_NAME={pod[1]}")
        variables.update(env or {})
        payload = stdin if stdin is not None else json.dumps(self.netconf(**conf)).encode()
        binary = str(self.node.cni_bin_dir / str(self.plugin_conf["type"]))
        proc = subprocess.run(netns_argv(self.node.vm.netns, ["env", "-i",
                              *(f"{k}={v}" for k, v in variables.items()), binary]),
                              input=payload, capture_output=True, timeout=60, check=False)
        out = proc.stdout.decode()
        return CniReply(proc.returncode, json.loads(out) if out.strip() else None,
                        proc.stderr.decode())

    def add(self, container_id: str, netns_path: str, pod: tuple[str, str],
            ifname: str = "eth0") -> dict[str, Any]:
        """ADD that must succeed; returns the result."""
        reply = self.call("ADD", container_id, netns_path, ifname, pod=pod)
        if reply.code != 0 or reply.output is None:
            raise ClusterError(f"ADD {container_id} failed ({reply.code}): {reply.output} "
                               f"{reply.stderr[-500:]}")
        return reply.output

    def delete(self, container_id: str, netns_path: str, ifname: str = "eth0",
               prev_result: dict[str, Any] | None = None) -> CniReply:
        """DEL (as runtimes do, with the cached result as prevResult)."""
        return self.call("DEL", container_id, netns_path, ifname, prev_result=prev_result)


def pod_ip(result: dict[str, Any]) -> str:
    """The pod's address from an ADD result."""
    return str(result["ips"][0]["address"]).split("/")[0]
