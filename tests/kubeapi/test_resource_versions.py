"""Item 2: resourceVersion, generation, system metadata, list resourceVersion semantics."""

from __future__ import annotations

from typing import Any

import pytest

from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.lab.kubeapi import api as api_module

from .conftest import Http, configmap, pod

CM = "/api/v1/namespaces/default/configmaps"


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def test_one_counter_across_resources(api: Http) -> None:
    """Every write takes the next value of one counter, across resource types.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions: the
    list's ``metadata.resourceVersion`` is the version the list was built at, so a list of
    configmaps must report a version past writes to other types (a per-type counter fails).
    """
    first = api.create(CM, configmap("a"))
    other = api.create("/api/v1/namespaces/default/pods", pod("p"))
    second = api.create(CM, configmap("b"))
    assert rv(first) < rv(other) < rv(second)
    assert isinstance(first["metadata"]["resourceVersion"], str)
    listed = api.get(CM)
    assert int(listed["metadata"]["resourceVersion"]) >= rv(second)
    api.create("/api/v1/namespaces/default/pods", pod("q"))
    assert int(api.get(CM)["metadata"]["resourceVersion"]) > int(
        listed["metadata"]["resourceVersion"])


def test_system_metadata(api: Http) -> None:
    """uid, creationTimestamp, namespace from the path, generateName, RV and uid not settable.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#generated-values
    (generateName: a random suffix) and ObjectMeta's read-only fields; a create carrying a
    resourceVersion is refused ("resourceVersion should not be set on objects to be
    created", 500), as the real storage layer does.
    """
    made = api.create(CM, {"metadata": {"generateName": "gen-", "uid": "mine"}, "data": {}})
    name = made["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5
    assert made["metadata"]["uid"] != "mine" and made["metadata"]["namespace"] == "default"
    assert made["metadata"]["creationTimestamp"].endswith("Z")
    status, body = api.request("POST", CM, {"metadata": {"name": "x", "resourceVersion": "5"}})
    assert status == 500 and "should not be set" in body["message"]
    status, body = api.request("POST", CM, {"metadata": {"name": "y", "namespace": "kube-system"}})
    assert status == 400 and body["reason"] == "BadRequest"
    made["metadata"]["uid"] = "changed"
    made["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    status, updated = api.request("PUT", f"{CM}/{name}", made)
    assert status == 200
    assert updated["metadata"]["uid"] != "changed"
    assert updated["metadata"]["creationTimestamp"] != "2000-01-01T00:00:00Z"


def test_generation_follows_spec_not_status_or_metadata(api: Http) -> None:
    """metadata.generation: 1 on create, +1 on a spec change, same on status/metadata.

    ObjectMeta.generation "a sequence number representing a specific generation of the
    desired state" (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/
    object-meta/); NetworkPolicies bump it on spec changes only.
    """
    path = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"
    made = api.create(path, {"metadata": {"name": "np"}, "spec": {"podSelector": {}}})
    assert made["metadata"]["generation"] == 1
    status, labelled = api.request("PATCH", f"{path}/np", {"metadata": {"labels": {"a": "b"}}},
                                   "application/merge-patch+json")
    assert status == 200 and labelled["metadata"]["generation"] == 1
    assert rv(labelled) > rv(made)
    status, changed = api.request("PATCH", f"{path}/np",
                                  {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}},
                                  "application/merge-patch+json")
    assert changed["metadata"]["generation"] == 2
    pods = api.create("/api/v1/namespaces/default/pods", pod("g"))
    status, after = api.request("PATCH", "/api/v1/namespaces/default/pods/g/status",
                                {"status": {"phase": "Running"}}, "application/merge-patch+json")
    assert after["metadata"]["generation"] == pods["metadata"]["generation"] == 1


def test_noop_update_keeps_the_version(api: Http) -> None:
    """A write that changes nothing is not a write: same resourceVersion, no event.

    The storage layer compares the encoded object before writing (etcd3 GuaranteedUpdate);
    a naive emulator bumps the version and wakes every watcher for nothing.
    """
    made = api.create(CM, configmap("same", a="1"))
    status, again = api.request("PUT", f"{CM}/same", made)
    assert status == 200 and rv(again) == rv(made)


def test_list_resource_version_semantics(api: Http) -> None:
    """resourceVersion / resourceVersionMatch on list, as the docs' table has them.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#semantics-for-get-and-list:
    unset = most recent, "0" = any, N + NotOlderThan = at least N, N + Exact = exactly N
    (the objects as they were then, from the history), Exact older than the history
    window = 410 Gone, resourceVersionMatch without resourceVersion = 400.
    """
    a = api.create(CM, configmap("a", v="1"))
    at_a = rv(a)
    api.request("PATCH", f"{CM}/a", {"data": {"v": "2"}}, "application/merge-patch+json")
    api.create(CM, configmap("b"))
    now = api.get(CM)
    assert [i["metadata"]["name"] for i in now["items"]] == ["a", "b"]
    assert api.get(f"{CM}?resourceVersion=0")["metadata"]["resourceVersion"] == now[
        "metadata"]["resourceVersion"]
    exact = api.get(f"{CM}?resourceVersion={at_a}&resourceVersionMatch=Exact")
    assert exact["metadata"]["resourceVersion"] == str(at_a)
    assert [(i["metadata"]["name"], i["data"]["v"]) for i in exact["items"]] == [("a", "1")]
    newer = api.get(f"{CM}?resourceVersion={at_a}&resourceVersionMatch=NotOlderThan")
    assert len(newer["items"]) == 2
    status, body = api.request("GET", f"{CM}?resourceVersionMatch=Exact")
    assert status == 400, body
    status, body = api.request("GET", f"{CM}?resourceVersion=0&resourceVersionMatch=Exact")
    assert status == 400, body
    api.server.compact()
    status, body = api.request("GET", f"{CM}?resourceVersion={at_a}&resourceVersionMatch=Exact")
    assert (status, body["reason"]) == (410, "Expired"), body


def test_too_large_resource_version(api: Http, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version the server has not reached: wait briefly, then 504 "Too large resource
    version" (https://kubernetes.io/docs/reference/using-api/api-concepts/
    #unavailable-resource-versions)."""
    monkeypatch.setattr(api_module, "TOO_LARGE_WAIT", 0.2)
    status, body = api.request("GET", f"{CM}?resourceVersion=999999")
    assert status == 504 and "Too large resource version" in body["message"], body
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_paged_list_is_a_consistent_snapshot(api: Http) -> None:
    """limit/continue pages all come from the first page's version.

    https://kubernetes.io/docs/reference/using-api/api-concepts/
    #retrieving-large-results-sets-in-chunks: "the resourceVersion of the list remains
    constant across each request ... Pods that are created, updated, or deleted after
    version 10245 would not be shown" — an emulator that pages the live map shows them.
    """
    for index in range(5):
        api.create(CM, configmap(f"c{index}"))
    first = api.get(f"{CM}?limit=2")
    assert [i["metadata"]["name"] for i in first["items"]] == ["c0", "c1"]
    assert first["metadata"]["remainingItemCount"] == 3
    api.request("DELETE", f"{CM}/c3")
    api.create(CM, configmap("c5"))
    token = first["metadata"]["continue"]
    second = api.get(f"{CM}?limit=10&continue={token}")
    assert [i["metadata"]["name"] for i in second["items"]] == ["c2", "c3", "c4"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert "continue" not in second["metadata"]
    status, _ = api.request("GET", f"{CM}?limit=2&continue=garbage")
    assert status == 400


def test_lightkube_list_reports_the_collection_version(server: KubeApiServer,
                                                       kube: Any) -> None:
    """lightkube's ListIterable.resourceVersion is the list's metadata.resourceVersion."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap

    made = [kube.create(ConfigMap(metadata=ObjectMeta(name=f"l{i}"), data={"i": str(i)}))
            for i in range(3)]
    listed = kube.list(ConfigMap, namespace="default")
    names = [c.metadata.name for c in listed]
    assert names == ["l0", "l1", "l2"]
    assert int(listed.resourceVersion) >= int(made[-1].metadata.resourceVersion)
    assert len(list(kube.list(ConfigMap, namespace="default", chunk_size=2))) == 3
