"""The node agent's settings (a ConfigMap's files under the command line), the condition
it reports on its Node and how it follows the controller's verdict, against the test API
server."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.models.core_v1 import NodeCondition, NodeStatus
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from ovn_underlay.cli import agent
from ovn_underlay.cli.main import build_parser
from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.daemon.node_agent import (
    CONDITION,
    READY_REASON,
    AgentSettings,
    ClusterAgent,
    Condition,
    NodeReporter,
)
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.pods.controller_relay import UnderlayNode
from tests.agent.support import create_underlay_node, install_crd
from tests.kube.support import eventually


def parsed(*argv: str) -> object:
    return build_parser().parse_args(["agent", *argv])


def test_files_fill_what_the_command_line_leaves(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "uplink").write_text("ens4\n")
    (tmp_path / "mtu").write_text("1400")
    (tmp_path / "pool-low").write_text(" 4 ")
    (tmp_path / "..data").mkdir()  # a ConfigMap volume's own entries are skipped
    (tmp_path / "..2026_12_01").write_text("x")
    args = agent.with_config_dir(parsed("--config-dir", str(tmp_path), "--mtu", "1500",
                                        "--kubeconfig", "/k"))
    assert (args.uplink, args.mtu, args.pool_low, args.pool_high) == ("ens4", 1500, 4, None)
    monkeypatch.setenv("NODE_NAME", "worker-7")
    assert agent.node_name(args) == "worker-7"
    assert agent.node_name(parsed("--node-name", "w1")) == "w1"
    monkeypatch.delenv("NODE_NAME")
    assert agent.node_name(args) and agent.node_name(args) == agent.node_name(args).lower()
    cfg = agent.node_settings(args, "worker-7")
    assert (cfg.uplink, cfg.mtu, cfg.pool_low, cfg.node_name, cfg.kubeconfig) == \
        ("ens4", 1500, 4, "worker-7", "/k")
    assert cfg.cni_conf_dir == "/etc/cni/net.d" and cfg.backend == "ovn"  # agent: cluster


def test_a_misspelt_or_malformed_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pool_lo").write_text("4")
    with pytest.raises(ConfigError, match="no agent setting is called 'pool_lo'"):
        agent.with_config_dir(parsed("--config-dir", str(tmp_path)))
    (tmp_path / "pool_lo").unlink()
    (tmp_path / "mtu").write_text("big")
    with pytest.raises(ConfigError, match="mtu"):
        agent.with_config_dir(parsed("--config-dir", str(tmp_path)))


def test_no_directory_is_no_settings() -> None:
    args = agent.with_config_dir(parsed("--config-dir", "/nonexistent/agent"))
    assert args.uplink is None


def test_without_kubeconfig_outside_a_pod_it_says_so(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="service account"):
        agent.in_cluster_kubeconfig(str(tmp_path))


def test_in_a_pod_the_service_account_becomes_the_nodes_kubeconfig(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t0ken")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    path = agent.in_cluster_kubeconfig(str(tmp_path / "state"), str(account))
    assert path == str(tmp_path / "state" / "kubeconfig")
    config = load_config(path)
    assert config.cluster.server == "https://10.96.0.1:443"
    assert config.user is not None and config.user.token_file == str(account / "token")
    assert agent.in_cluster_kubeconfig(str(tmp_path / "state"), str(account)) == path


def test_network_unavailable_is_reported_on_the_node(admin: Client, kubeconfig: str) -> None:
    admin.create(Node(metadata=ObjectMeta(name="w1")))
    admin.patch(Node.Status, "w1", {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}})
    kube = KubeClient(load_config(kubeconfig))
    reporter = NodeReporter(kube, "w1")
    reporter.report(Condition(True, "WaitingForController", "no UnderlayNode yet"))
    first = conditions(admin)
    assert first[CONDITION].status == "True"
    assert first[CONDITION].reason == "WaitingForController"
    assert first["Ready"].reason == "KubeletNotReady"  # strategic merge: by type
    reporter.report(Condition(False, "OvnUnderlayReady", "serving"))
    second = conditions(admin)[CONDITION]
    assert (second.status, second.reason, second.message) == ("False", "OvnUnderlayReady",
                                                              "serving")
    assert second.lastTransitionTime is not None
    kube.close()


def conditions(admin: Client) -> dict[str, NodeCondition]:
    status = admin.get(Node, "w1").status or NodeStatus()
    return {c.type: c for c in status.conditions or []}


def test_the_serving_agent_follows_the_controllers_verdict(admin: Client,
                                                          kubeconfig: str) -> None:
    """Ready turning False on the UnderlayNode (here NodeDeleted) shows on the Node, and
    Ready again clears it."""
    install_crd(admin)
    create_underlay_node(admin, "w2")
    admin.create(Node(metadata=ObjectMeta(name="w2")))
    agent = ClusterAgent(AgentSettings("unix:/nonexistent", "w2", NodeConfig()),
                         functools.partial(load_config, kubeconfig))
    follower = threading.Thread(target=agent.follow_controller)
    follower.start()
    try:
        set_ready(admin, "w2", "True", "NetworkReady", "switch node-w2")
        eventually(lambda: condition_of(admin, "w2").reason == READY_REASON)
        set_ready(admin, "w2", "False", "NodeDeleted", "the Node is gone")
        eventually(lambda: condition_of(admin, "w2").reason == "NodeDeleted")
        cond = condition_of(admin, "w2")
        assert (cond.status, cond.message) == ("True", "the Node is gone")
        set_ready(admin, "w2", "True", "NetworkReady", "switch node-w2")
        eventually(lambda: condition_of(admin, "w2").status == "False")
    finally:
        agent.stop()
        follower.join(5)
        agent.close()
    assert not follower.is_alive()


def set_ready(admin: Client, name: str, status: str, reason: str, message: str) -> None:
    admin.patch(UnderlayNode.Status, name, {"status": {"conditions": [
        {"type": "Ready", "status": status, "reason": reason, "message": message}]}},
        patch_type=PatchType.MERGE)


def condition_of(admin: Client, name: str) -> NodeCondition:
    status = admin.get(Node, name).status or NodeStatus()
    return next((c for c in status.conditions or [] if c.type == CONDITION),
                NodeCondition(type=CONDITION, status="Unknown"))


def test_the_service_range_from_a_file_or_the_command_line(tmp_path: Path) -> None:
    """The file ``service-cidr`` gives it, the command line wins; the network is
    normalised; without either there is none."""
    (tmp_path / "service-cidr").write_text(" 10.96.0.0/12\n")
    (tmp_path / "cluster-subnet").write_text("198.19.0.0/16\n")
    args = agent.with_config_dir(parsed("--config-dir", str(tmp_path)))
    assert agent.service_cidr(args) == "10.96.0.0/12"
    args = agent.with_config_dir(parsed("--config-dir", str(tmp_path), "--service-cidr",
                                        "198.18.128.0/20"))
    assert agent.service_cidr(args) == "198.18.128.0/20"
    assert agent.service_cidr(parsed("--config-dir", "/nonexistent/agent")) == ""


@pytest.mark.parametrize(("value", "says"), [
    ("banana", "is not a CIDR"),
    ("10.96.0.1", "is not a CIDR"),
    ("10.96.0.0/33", "is not an IPv4 CIDR"),
    ("10.96.0.1/12", "has host bits set"),
    ("fd00:10:96::/108", "IPv6 Service ranges are not supported yet"),
    ("10.96.0.0/12,fd00:10:96::/108", "IPv6 Service ranges are not supported yet"),
    ("198.19.128.0/20", "overlaps --cluster-subnet 198.19.0.0/16"),
])
def test_a_bad_service_range_is_refused_by_option_and_value(tmp_path: Path, value: str,
                                                           says: str) -> None:
    (tmp_path / "service-cidr").write_text(value)
    args = agent.with_config_dir(parsed("--config-dir", str(tmp_path), "--cluster-subnet",
                                        "198.19.0.0/16"))
    with pytest.raises(ConfigError, match="service-cidr") as refused:
        agent.service_cidr(args)
    assert repr(value) in str(refused.value) and says in str(refused.value)


@pytest.mark.parametrize("services", ["", "198.18.128.0/20"])
def test_the_agent_says_at_start_whether_the_node_reaches_cluster_ips(
        kubeconfig: str, caplog: pytest.LogCaptureFixture, services: str) -> None:
    """One line at start: the range routed (INFO), or no range, so host-network processes
    cannot reach ClusterIPs (WARNING)."""
    made = ClusterAgent(AgentSettings("unix:/nonexistent", "w3", NodeConfig(),
                                      service_cidr=services),
                        functools.partial(load_config, kubeconfig))
    made.stop()  # run() says it, then finds itself stopped before set-up
    with caplog.at_level(logging.INFO, logger="ovn_underlay.daemon.node_agent"):
        assert made.run() == 0
    said = [r for r in caplog.records if "ClusterIPs" in r.getMessage()]
    assert len(said) == 1
    if services:
        assert said[0].levelno == logging.INFO and services in said[0].getMessage()
    else:
        assert said[0].levelno == logging.WARNING
        assert "cannot reach ClusterIPs" in said[0].getMessage()
