"""Item 6: the patch types clients send.

https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
"""

from __future__ import annotations

from typing import Any

from ovn_underlay.lab.kubeapi.patch import strategic_merge
from ovn_underlay.lab.kubeapi.resources import POD_SCHEMA

from .conftest import Http, configmap, pod

PODS = "/api/v1/namespaces/default/pods"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"


def test_strategic_merge_merges_containers_by_name(api: Http) -> None:
    """Strategic merge: containers merge by name (the others are kept; a JSON merge patch
    would replace the list), ports by containerPort, env by name, volumeMounts by
    mountPath — the page's "Notes on the strategic merge patch".  A pod's spec beyond
    images is immutable, so the env/ports part is checked on the patch function with the
    Pod's merge keys, and the server must refuse it on a live pod (422 Forbidden).
    """
    two_containers(api)
    status, body = api.request("PATCH", f"{PODS}/p", {"spec": {"containers": [
        {"name": "side", "image": "side:2"}]}}, SMP)
    assert status == 200, body
    assert [(c["name"], c["image"]) for c in body["spec"]["containers"]] == [
        ("app", "app:1"), ("side", "side:2")]
    env_patch = {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
         "ports": [{"containerPort": 81}], "volumeMounts": [{"mountPath": "/d", "name": "d"}]}]}}
    status, refused = api.request("PATCH", f"{PODS}/p", env_patch, SMP)
    assert (status, refused["reason"]) == (422, "Invalid")
    assert "pod updates may not change fields" in refused["message"]
    merged = strategic_merge(two_containers_manifest(), env_patch, POD_SCHEMA)
    app = merged["spec"]["containers"][0]
    assert [(e["name"], e["value"]) for e in app["env"]] == [("A", "1"), ("B", "3"), ("C", "4")]
    assert [p["containerPort"] for p in app["ports"]] == [80, 81]
    assert len(merged["spec"]["containers"]) == 2


def two_containers_manifest() -> dict[str, Any]:
    return pod("p", {"a": "1"}, containers=[
        {"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "name": "http"}],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "side", "image": "side:1"}])


def two_containers(api: Http) -> dict[str, Any]:
    created: dict[str, Any] = api.create(PODS, two_containers_manifest())
    return created


def test_strategic_merge_directives(api: Http) -> None:
    """``$patch: delete`` removes a list element by its merge key, ``$patch: replace``
    replaces a list, ``$deleteFromPrimitiveList`` removes finalizers, finalizers merge as a
    set, ``null`` deletes a key, lists without a merge key (tolerations) are replaced
    (sig-api-machinery strategic-merge-patch.md)."""
    cm = "/api/v1/namespaces/default/configmaps"
    api.create(cm, configmap("f") | {"metadata": {"name": "f", "finalizers": ["a/x", "a/y"],
                                                  "labels": {"k": "v", "gone": "1"}}})
    _, body = api.request("PATCH", f"{cm}/f", {"metadata": {
        "finalizers": ["a/z"], "labels": {"gone": None}}}, SMP)
    assert body["metadata"]["finalizers"] == ["a/x", "a/y", "a/z"]
    assert body["metadata"]["labels"] == {"k": "v"}
    _, body = api.request("PATCH", f"{cm}/f", {"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["a/x", "a/z"]}}, SMP)
    assert body["metadata"]["finalizers"] == ["a/y"]
    manifest = two_containers_manifest()
    manifest["spec"]["tolerations"] = [{"key": "t1", "operator": "Exists"}]
    merged = strategic_merge(manifest, {"spec": {
        "containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]},
                       {"name": "side", "$patch": "delete"}],
        "tolerations": [{"key": "t2", "operator": "Exists"}]}}, POD_SCHEMA)
    assert [c["name"] for c in merged["spec"]["containers"]] == ["app"]
    assert [e["name"] for e in merged["spec"]["containers"][0]["env"]] == ["B"]
    assert [t["key"] for t in merged["spec"]["tolerations"]] == ["t2"]
    replaced = strategic_merge(manifest, {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "only", "image": "x"}]}}, POD_SCHEMA)
    assert [c["name"] for c in replaced["spec"]["containers"]] == ["only"]


def test_merge_patch_replaces_lists(api: Http) -> None:
    """RFC 7386 JSON merge patch: objects merge, lists are replaced, null deletes."""
    made = api.create("/api/v1/namespaces/default/services", {
        "metadata": {"name": "s", "labels": {"a": "1", "b": "2"}},
        "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}})
    status, body = api.request("PATCH", "/api/v1/namespaces/default/services/s", {
        "metadata": {"labels": {"a": None}}, "spec": {"ports": [{"name": "c", "port": 82}]}},
        MERGE)
    assert status == 200
    assert body["metadata"]["labels"] == {"b": "2"}
    assert [p["port"] for p in body["spec"]["ports"]] == [82]
    assert body["spec"]["clusterIP"] == made["spec"]["clusterIP"]  # kept, not reallocated
    status, body = api.request("PATCH", "/api/v1/namespaces/default/services/s", {
        "spec": {"ports": [{"name": "d", "port": 83}]}}, SMP)
    assert [p["port"] for p in body["spec"]["ports"]] == [82, 83]  # service ports by port


def test_json_patch(api: Http) -> None:
    """RFC 6902: add/remove/replace/move/copy/test; a failed test is 422, a malformed
    patch 400."""
    cm = "/api/v1/namespaces/default/configmaps"
    api.create(cm, configmap("j", a="1", b="2"))
    status, body = api.request("PATCH", f"{cm}/j", [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/metadata/labels", "value": {"a.b/c": "1"}},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
        {"op": "move", "from": "/data/c", "path": "/data/d"}], JSON)
    assert status == 200, body
    assert body["data"] == {"a": "10", "d": "10"}
    status, body = api.request("PATCH", f"{cm}/j", [
        {"op": "test", "path": "/data/a", "value": "nope"}], JSON)
    assert status == 422, body
    status, body = api.request("PATCH", f"{cm}/j", {"not": "a list"}, JSON)
    assert status == 400, body
    status, body = api.request("PATCH", f"{cm}/j", [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}], JSON)
    assert status == 409, body  # a patched resourceVersion is a precondition


def test_unsupported_patch_types_are_415(api: Http) -> None:
    """Server-side apply is not implemented (415, listing what is accepted), and custom
    resources refuse strategic merge patches (415), as the real server does for them."""
    api.create("/api/v1/namespaces/default/configmaps", configmap("u"))
    status, body = api.request("PATCH", "/api/v1/namespaces/default/configmaps/u?"
                               "fieldManager=me", {"data": {}}, "application/apply-patch+yaml")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    assert "application/merge-patch+json" in body["message"]
    api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {
        "metadata": {"name": "things.lab.example.com"},
        "spec": {"group": "lab.example.com", "scope": "Cluster",
                 "names": {"plural": "things", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": True, "storage": True}]}})
    api.create("/apis/lab.example.com/v1/things", {"apiVersion": "lab.example.com/v1",
                                                   "kind": "Thing", "metadata": {"name": "t"}})
    status, body = api.request("PATCH", "/apis/lab.example.com/v1/things/t",
                               {"spec": {"a": 1}}, SMP)
    assert status == 415
    status, body = api.request("PATCH", "/apis/lab.example.com/v1/things/t",
                               {"spec": {"a": 1}}, MERGE)
    assert status == 200 and body["spec"] == {"a": 1}


def test_lightkube_patch_types(kube: Any, api: Http) -> None:
    """lightkube's patch() with its PatchType values reaches the same semantics."""
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType

    two_containers(api)
    patched = kube.patch(Pod, "p", {"spec": {"containers": [{"name": "side",
                                                             "image": "side:2"}]}})
    assert [c.image for c in patched.spec.containers] == ["app:1", "side:2"]
    patched = kube.patch(Pod, "p", {"metadata": {"labels": {"a": None, "b": "2"}}},
                         patch_type=PatchType.MERGE)
    assert patched.metadata.labels == {"b": "2"}
    patched = kube.patch(Pod, "p", [{"op": "add", "path": "/metadata/labels/c", "value": "3"}],
                         patch_type=PatchType.JSON)
    assert patched.metadata.labels == {"b": "2", "c": "3"}
