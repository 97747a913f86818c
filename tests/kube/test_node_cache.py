"""The daemon's cache of its node's Pods and the Namespaces, and the lookups it answers.

"No GET" is checked on the relay every request of the code under test goes through.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.types import PatchType

from ovn_underlay.config import NodeConfig, key_of
from ovn_underlay.control.base import ControlPlaneUnavailable
from ovn_underlay.daemon.agent import NodeAgent
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.kube.node_cache import NodeCache, node_name
from ovn_underlay.lab import daemons
from ovn_underlay.pods.pool import PodInterface
from ovn_underlay.pods.security_groups import (
    ALLOWED_ANNOTATION,
    GroupNotAllowed,
    PodSecurityGroups,
)
from tests.kube.support import Relay, eventually, namespace, pod

NODE = "node1"


def gets(relay: Relay) -> list[str]:
    """The GETs of single objects that went through the relay."""
    return [r for r in relay.requests if r.startswith("GET ") and "?" not in r
            and r.split(" ")[1].split("/")[-2] in ("pods", "namespaces")]


@pytest.fixture
def cache(kubeconfig: str) -> Iterator[NodeCache]:
    node_cache = NodeCache(kubeconfig, NODE)
    node_cache.start()
    assert node_cache.pods.wait_for_sync(5) and node_cache.namespaces.wait_for_sync(5)
    yield node_cache
    node_cache.stop()


@pytest.fixture
def web(admin: Client) -> str:
    """Namespace web, whose pods may name the groups web and db."""
    admin.create(namespace("web", {ALLOWED_ANNOTATION: "web,db"}))
    return "web"


def lookup(kubeconfig: str, cache: NodeCache) -> PodSecurityGroups:
    return PodSecurityGroups(NodeConfig(kubeconfig=kubeconfig), cache)


def att(name: str, namespace: str = "web") -> PodInterface:
    return PodInterface(f"c-{name}", "eth0", "/ns", namespace, name)


def test_node_name_is_the_setting_else_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: " Worker-7.Example \n")
    assert node_name("") == "worker-7.example"
    assert node_name("node1") == "node1"


def test_a_pod_of_this_node_is_answered_from_the_cache(
        admin: Client, web: str, kubeconfig: str, relay: Relay, cache: NodeCache) -> None:
    admin.create(pod("front", web, NODE, {"security-group": "web, db"}))
    admin.create(pod("elsewhere", web, "node2", {"security-group": "db"}))
    eventually(lambda: cache.pods.get(web, "front") is not None)
    eventually(lambda: cache.namespaces.get("", web) is not None)
    assert cache.pods.get(web, "elsewhere") is None
    assert lookup(kubeconfig, cache).groups_for(att("front")) == ("web", "db")
    assert gets(relay) == []
    assert lookup(kubeconfig, cache).groups_for(att("elsewhere")) == ("db",)
    assert gets(relay) == ["GET /api/v1/namespaces/web/pods/elsewhere HTTP/1.1"]


def test_a_pod_newer_than_the_cache_is_read_with_a_get(
        admin: Client, web: str, kubeconfig: str, relay: Relay, cache: NodeCache) -> None:
    eventually(lambda: cache.namespaces.get("", web) is not None)
    cache.pods.stop()  # nothing new reaches the cache of pods
    admin.create(pod("new", web, NODE, {"security-group": "web"}))
    assert lookup(kubeconfig, cache).groups_for(att("new")) == ("web",)
    assert gets(relay) == ["GET /api/v1/namespaces/web/pods/new HTTP/1.1"]


def test_a_pod_being_deleted_is_read_with_a_get(
        admin: Client, web: str, kubeconfig: str, relay: Relay, cache: NodeCache) -> None:
    admin.create(pod("old", web, NODE, {"security-group": "web"}))
    admin.delete(Pod, "old", namespace=web, grace_period=30)
    eventually(lambda: (cached := cache.pods.get(web, "old")) is not None
               and cached.metadata is not None and cached.metadata.deletionTimestamp is not None)
    assert lookup(kubeconfig, cache).groups_for(att("old")) == ("web",)
    assert gets(relay) == ["GET /api/v1/namespaces/web/pods/old HTTP/1.1"]


def test_when_neither_cache_nor_api_can_answer_the_add_fails(
        admin: Client, web: str, kubeconfig: str, relay: Relay, cache: NodeCache) -> None:
    relay.refusing = True
    relay.cut()
    admin.create(pod("unseen", web, NODE, {"security-group": "web"}))
    with pytest.raises(ControlPlaneUnavailable, match="cannot read the annotations of pod "
                       "web/unseen: cannot reach the Kubernetes API"):
        lookup(kubeconfig, cache).groups_for(att("unseen"))


def test_the_allowlist_follows_the_namespace_as_the_admin_changes_it(
        admin: Client, web: str, kubeconfig: str, relay: Relay, cache: NodeCache) -> None:
    admin.create(pod("front", web, NODE, {"security-group": "db"}))
    eventually(lambda: cache.pods.get(web, "front") is not None)
    groups = lookup(kubeconfig, cache)
    assert groups.groups_for(att("front")) == ("db",)
    admin.patch(Namespace, web, {"metadata": {"annotations": {ALLOWED_ANNOTATION: "web"}}},
                patch_type=PatchType.MERGE)
    eventually(lambda: cache.namespace_annotations(web) == {ALLOWED_ANNOTATION: "web"})
    with pytest.raises(GroupNotAllowed, match="names security group\\(s\\) db, which "
                       "namespace web does not allow"):
        groups.groups_for(att("front"))
    assert gets(relay) == []


# -- the node daemon's agent holds the cache -----------------------------------------------
@pytest.fixture
def node_db(ovsdb_factory: Any, tmp_path: Path, kubeconfig: str) -> str:
    """A node's OVS database with a kubeconfig and a node name set."""
    db = str(ovsdb_factory("conf", daemons.OVS_SCHEMA))
    subprocess.run(["ovs-vsctl", f"--db={db}", "--no-wait", "init"], check=True,
                   capture_output=True, timeout=30)
    (tmp_path / "state").mkdir()
    settings(db, state_dir=str(tmp_path / "state"), kubeconfig=kubeconfig, node_name=NODE)
    return db


def settings(db: str, **values: str) -> None:
    """Set node settings (NodeConfig field names) in the OVS database."""
    ovs = Ovs(db, timeout=5)
    try:
        ovs.set_config({key_of(name): value for name, value in values.items() if value})
        ovs.remove_config(key_of(name) for name, value in values.items() if not value)
    finally:
        ovs.close()


def test_the_daemons_agent_watches_its_node_and_hands_the_cache_to_add(
        admin: Client, web: str, node_db: str, relay: Relay) -> None:
    admin.create(pod("front", web, NODE, {"security-group": "web"}))
    agent = NodeAgent(node_db)
    try:
        cache = agent.kube_cache(agent.config())
        assert cache is not None and cache.node == NODE
        assert cache.pods.wait_for_sync(5) and cache.namespaces.wait_for_sync(5)
        attacher = agent.attacher(node_db, 1.0, need_network=False)
        assert attacher.security_groups.source is cache
        assert attacher.security_groups.groups_for(att("front")) == ("web",)
        assert gets(relay) == []
        settings(node_db, node_name="node2")
        eventually(lambda: agent.config().node_name == "node2")
        moved = agent.kube_cache(agent.config())
        assert moved is not cache and moved is not None and moved.node == "node2"
        eventually(lambda: cache.pods.name not in {t.name for t in threading.enumerate()},
                   timeout=15)  # the old informer's thread ends (slower on a loaded machine)
    finally:
        agent.close()
    # A request of the new informer still awaiting its answer is not cut by the stop (the
    # socket is known once the answer's headers are in): it ends within the client's 5 s
    # timeout, which on a loaded machine can outlast stop's 5 s join.
    eventually(lambda: moved.pods.name not in {t.name for t in threading.enumerate()},
               timeout=15)


def test_without_a_kubeconfig_the_agent_watches_nothing(node_db: str) -> None:
    settings(node_db, kubeconfig="")
    agent = NodeAgent(node_db)
    try:
        assert agent.kube_cache(agent.config()) is None
        attacher = agent.attacher(node_db, 1.0, need_network=False)
        assert attacher.security_groups.source is None
    finally:
        agent.close()
