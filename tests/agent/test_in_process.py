"""A node between the modes: the CNI plugin in-process (no daemon answers) in cluster mode
answers 11 at once, and the agent leaves a standalone node's network alone.

Only the node agent's daemon has the relay to the controller; the plugin run by the
launcher must not plumb anything, nor try the OVN NB named in a stale setting.
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ovn_underlay.cni.runner import run
from ovn_underlay.config import NodeConfig
from ovn_underlay.daemon.node_agent import AgentSettings, ClusterAgent, SetupFailed
from ovn_underlay.kube.client import load_config
from ovn_underlay.lab import daemons, netns
from ovn_underlay.pods.cni_plugin import make_plugin
from ovn_underlay.pods.pool import Pool
from tests.conftest import needs_netns
from tests.functional.test_ovs import vsctl


@needs_netns
def test_add_in_process_in_cluster_mode_is_try_again_before_any_work(
        ovsdb_factory: Callable[[str, Path], str], tmp_path: Path) -> None:
    conn = ovsdb_factory("conf", daemons.OVS_SCHEMA)
    vsctl(conn, "init")
    state = tmp_path / "state"
    settings = {"backend": "cluster", "nb": "tcp:192.0.2.1:6641", "state-dir": str(state),
                "switch": "node-n1", "subnet": "198.19.0.0/24", "gateway-ip": "198.19.0.1"}
    vsctl(conn, "set", "Open_vSwitch", ".",
          *(f'external_ids:"ovn-underlay:{k}"="{v}"' for k, v in settings.items()))
    out = io.BytesIO()
    name = f"agip{os.getpid() % 100000}"
    netns.create(name)
    try:
        code = run(make_plugin, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee",
                                 "CNI_NETNS": netns.path(name), "CNI_IFNAME": "eth0",
                                 "CNI_PATH": "/opt/cni/bin"},
                   json.dumps({"cniVersion": "1.0.0", "name": "ovn-underlay",
                               "type": "ovn-underlay", "ovsdb": conn}).encode(), out)
    finally:
        netns.destroy(name)
    answer = json.loads(out.getvalue())
    assert code != 0 and answer["code"] == 11, answer
    assert "cluster mode" in answer["msg"] and "agent" in answer["msg"]
    with Pool(str(state / "pool.db")) as pool:
        assert pool.stats().total == 0 and not pool.leases()


def test_the_agent_leaves_a_standalone_node_alone(
        ovsdb_factory: Callable[[str, Path], str], tmp_path: Path, kubeconfig: str) -> None:
    """A node still holding a standalone network keeps its settings and credentials (they
    are what removes that network), and the agent says what to do."""
    conn = ovsdb_factory("conf", daemons.OVS_SCHEMA)
    vsctl(conn, "init")
    vsctl(conn, "set", "Open_vSwitch", ".", 'external_ids:"ovn-underlay:backend"="ovn"',
          'external_ids:"ovn-underlay:nb"="tcp:192.0.2.1:6641"',
          'external_ids:"ovn-underlay:switch"="node1"')
    agent = ClusterAgent(AgentSettings(conn, "n1", NodeConfig(state_dir=str(tmp_path))),
                         functools.partial(load_config, kubeconfig))
    try:
        with pytest.raises(SetupFailed, match="lswitch-destroy node1 --force"):
            agent.setup()
    finally:
        agent.close()
    assert vsctl(conn, "get", "Open_vSwitch", ".", 'external_ids:"ovn-underlay:nb"') == \
        '"tcp:192.0.2.1:6641"'
