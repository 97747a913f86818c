"""deploy/admission-policy.yaml: a node agent writes only its own UnderlayNode's spec and its
own Node's NetworkUnavailable condition (evaluated offline: tests/deploy/admission.py)."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Node

from ovn_underlay.daemon.node_agent import Condition, NodeReporter
from ovn_underlay.kube.client import KubeClient, load_config
from tests.deploy.admission import Decision, admit, request
from tests.deploy.rbac import load_manifests, service_account_user

MANIFESTS = load_manifests()
POLICY = next(o for o in MANIFESTS if o["kind"] == "ValidatingAdmissionPolicy")
BINDING = next(o for o in MANIFESTS if o["kind"] == "ValidatingAdmissionPolicyBinding")
AGENT = service_account_user("ovn-underlay", "ovn-underlay-agent")
CONTROLLER = service_account_user("ovn-underlay", "ovn-underlay-controller")
NODE_NAME = "authentication.kubernetes.io/node-name"


def underlay(name: str, pool: int = 4, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "ovn-underlay.io/v1alpha1", "kind": "UnderlayNode",
            "metadata": {"name": name, "resourceVersion": "7", **meta},
            "spec": {"poolPorts": pool}, "status": {"subnet": "198.19.1.0/24"}}


def node(name: str) -> dict[str, Any]:
    """A Node as a kubelet keeps it, NetworkUnavailable True (its second condition)."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": "198.19.1.0/24"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}],
                "capacity": {"cpu": "2"}, "allocatable": {"cpu": "2"},
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"kubeletVersion": "v1.30.2"},
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
                    {"type": "NetworkUnavailable", "status": "True",
                     "reason": "WaitingForUnderlay"}]}}


def agent_on(node_name: str | None) -> dict[str, list[str]]:
    return {} if node_name is None else {NODE_NAME: [node_name]}


def write_underlay(target: str, *, token_node: str | None = "n1", user: str = AGENT,
                   operation: str = "UPDATE", subresource: str = "",
                   change: Any = None) -> Decision:
    old = underlay(target)
    new = copy.deepcopy(old)
    if change is not None:
        change(new)
    else:
        new["spec"]["poolPorts"] = 8
    req = request(user=user, operation=operation, resource="underlaynodes", name=target,
                  group="ovn-underlay.io", version="v1alpha1", subresource=subresource,
                  extra=agent_on(token_node))
    if operation == "CREATE":
        return admit(POLICY, req, new, None)
    if operation == "DELETE":
        return admit(POLICY, req, None, old)
    return admit(POLICY, req, new, old)


def patch_node_status(target: str, change: Any, *, token_node: str | None = "n1",
                      user: str = AGENT) -> Decision:
    old = node(target)
    new = copy.deepcopy(old)
    change(new)
    req = request(user=user, operation="UPDATE", resource="nodes", name=target,
                  subresource="status", extra=agent_on(token_node))
    return admit(POLICY, req, new, old)


def network_available(obj: dict[str, Any]) -> None:
    condition = obj["status"]["conditions"][1]
    condition.update(status="False", reason="UnderlayReady", message="pool of 16 ports")


def test_the_binding_denies_with_this_policy() -> None:
    assert BINDING["spec"]["policyName"] == POLICY["metadata"]["name"]
    assert BINDING["spec"]["validationActions"] == ["Deny"]
    assert POLICY["spec"]["failurePolicy"] == "Fail"


def test_agent_patches_its_own_underlay_node_spec() -> None:
    assert write_underlay("n1") == Decision(True)


@pytest.mark.parametrize("operation", ["UPDATE", "CREATE", "DELETE"])
def test_agent_cannot_write_another_nodes_underlay_node(operation: str) -> None:
    decision = write_underlay("n2", operation=operation)
    assert not decision.allowed
    assert decision.message == ("the ovn-underlay-agent of node n1 may write only its own "
                                "underlaynodes, not n2")


@pytest.mark.parametrize("extra", [None, [], ["n1", "n2"]],
                         ids=["no-extra", "empty", "two-nodes"])
def test_a_token_without_one_node_name_writes_nothing(extra: list[str] | None) -> None:
    req = request(user=AGENT, operation="UPDATE", resource="underlaynodes", name="n1",
                  group="ovn-underlay.io", version="v1alpha1",
                  extra=None if extra is None else {NODE_NAME: extra})
    decision = admit(POLICY, req, underlay("n1", 8), underlay("n1"))
    assert not decision.allowed
    assert "names no node" in decision.message


def test_agent_cannot_write_the_status_of_its_own_underlay_node() -> None:
    def status(obj: dict[str, Any]) -> None:
        obj["status"]["subnet"] = "0.0.0.0/0"
    decision = write_underlay("n1", subresource="status", change=status)
    assert not decision.allowed
    assert "controller writes an UnderlayNode's status" in decision.message


@pytest.mark.parametrize("field", ["labels", "annotations", "finalizers", "ownerReferences"])
def test_agent_cannot_change_its_underlay_nodes_metadata(field: str) -> None:
    values: dict[str, Any] = {"labels": {"a": "b"}, "annotations": {"a": "b"},
                              "finalizers": ["ovn-underlay.io/hold"],
                              "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                   "name": "n1", "uid": "u"}]}

    def add(obj: dict[str, Any]) -> None:
        obj["metadata"][field] = values[field]
    decision = write_underlay("n1", change=add)
    assert not decision.allowed
    assert "labels, annotations, finalizers or owner references" in decision.message


def test_the_controller_is_not_restricted() -> None:
    decision = write_underlay("n2", user=CONTROLLER, token_node=None, subresource="status")
    assert decision == Decision(True, applied=False)


def test_agent_sets_network_unavailable_on_its_own_node() -> None:
    assert patch_node_status("n1", network_available) == Decision(True)


def test_agent_adds_network_unavailable_when_its_node_has_none() -> None:
    def add(obj: dict[str, Any]) -> None:
        obj["status"]["conditions"].append({"type": "NetworkUnavailable", "status": "True"})
    old = node("n1")
    del old["status"]["conditions"][1]
    new = copy.deepcopy(old)
    add(new)
    req = request(user=AGENT, operation="UPDATE", resource="nodes", name="n1",
                  subresource="status", extra=agent_on("n1"))
    assert admit(POLICY, req, new, old) == Decision(True)


def test_agent_cannot_patch_another_nodes_status() -> None:
    decision = patch_node_status("n2", network_available)
    assert not decision.allowed
    assert "not n2" in decision.message


def test_agent_cannot_change_another_condition() -> None:
    def ready(obj: dict[str, Any]) -> None:
        obj["status"]["conditions"][0].update(status="True", reason="KubeletReady")
    decision = patch_node_status("n1", ready)
    assert not decision.allowed
    assert decision.message == ("a node agent may change only its Node's NetworkUnavailable "
                                "condition")


@pytest.mark.parametrize(("field", "value"), [
    ("addresses", [{"type": "InternalIP", "address": "10.0.0.12"}]),
    ("capacity", {"cpu": "64"}),
    ("allocatable", {"cpu": "64"}),
    ("nodeInfo", {"kubeletVersion": "v1.99.0"}),
    ("images", [{"names": ["registry.example/app:1"]}]),
    ("phase", "Running"),
])
def test_agent_cannot_change_other_status_fields(field: str, value: Any) -> None:
    def change(obj: dict[str, Any]) -> None:
        obj["status"][field] = value
    decision = patch_node_status("n1", change)
    assert not decision.allowed
    assert "no other part of its status" in decision.message


def test_agent_cannot_change_its_nodes_labels_through_the_status() -> None:
    def label(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
    decision = patch_node_status("n1", label)
    assert not decision.allowed
    assert "labels" in decision.message


def test_policy_compares_every_node_status_field_of_kubernetes_1_30() -> None:
    """The fields of NodeStatus in 1.30's schema, but conditions (compared apart), are
    exactly those the policy keeps unchanged: a field added to the API in 1.30 would
    otherwise be writable, a field the API lacks would fail every write."""
    schema = kubernetes_validate.utils.schema_contents(
        "kubernetes-json-schema/v1.30.0-local-strict/nodestatus-v1.json", "1.30")
    expression = next(v for v in POLICY["spec"]["variables"]
                      if v["name"] == "otherStatusUnchanged")["expression"]
    compared = set(re.findall(r"\bobject\.status\.(\w+)", expression))
    assert compared == set(schema["properties"]) - {"conditions"}


def test_the_agents_own_condition_writes_are_admitted(admin: Client, kubeconfig: str) -> None:
    """The agent's NodeReporter patching a Node of the test API server: each write, the
    Node before and after it, passes the policy for the agent of that node (and would
    not for the agent of another)."""
    created = node("n1")
    del created["status"]["conditions"][1]
    del created["status"]["nodeInfo"]  # lightkube's model wants all of a real one
    admin.create(Node.from_dict(created))
    kube = KubeClient(load_config(kubeconfig))
    reporter = NodeReporter(kube, "n1")
    try:
        for cond in (Condition(True, "WaitingForController", "no UnderlayNode yet"),
                     Condition(False, "OvnUnderlayReady", "serving"),
                     Condition(True, "AgentStopped", "the agent stopped")):
            before = admin.get(Node, "n1").to_dict()
            reporter.report(cond)
            after = admin.get(Node, "n1").to_dict()
            assert after != before
            for token_node, allowed in (("n1", True), ("n2", False)):
                req = request(user=AGENT, operation="UPDATE", resource="nodes", name="n1",
                              subresource="status", extra=agent_on(token_node))
                assert admit(POLICY, req, after, before).allowed is allowed, cond
    finally:
        kube.close()
