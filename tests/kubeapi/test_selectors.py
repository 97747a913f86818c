"""Item 5: label and field selectors on lists (watches: see test_watch)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from .conftest import Http, pod

PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
def labelled(api: Http) -> Http:
    for name, labels in (("a", {"app": "web", "tier": "front"}),
                         ("b", {"app": "web", "tier": "back"}),
                         ("c", {"app": "db"}),
                         ("d", {})):
        api.create(PODS, pod(name, labels))
    return api


def selected(api: Http, query: str) -> list[str]:
    return [i["metadata"]["name"] for i in api.get(f"{PODS}?{query}")["items"]]


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["a", "b"]),
    ("app==web", ["a", "b"]),
    ("app!=web", ["c", "d"]),
    ("app in (web,db)", ["a", "b", "c"]),
    ("tier notin (front)", ["b", "c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
    ("app=web,tier=back", ["b"]),
    ("app=web,!tier", []),
])
def test_label_selectors(labelled: Http, selector: str, expected: list[str]) -> None:
    """https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/
    #label-selectors: ``!=`` and ``notin`` also select objects without the key (the
    documented semantics a naive ``labels[k] != v`` misses), comma is AND."""
    assert selected(labelled, "labelSelector=" + quote(selector)) == expected


def test_bad_label_selector_is_400(labelled: Http) -> None:
    status, body = labelled.request("GET", f"{PODS}?labelSelector=" + quote("app in (web"))
    assert (status, body["reason"]) == (400, "BadRequest")


def test_field_selectors(labelled: Http) -> None:
    """https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/:
    metadata.name/namespace everywhere, spec.nodeName and status.phase on pods; an
    unsupported field is 400 as the real server answers ("field label not supported")."""
    labelled.request("PATCH", f"{PODS}/c/status", {"status": {"phase": "Running"}},
                     "application/merge-patch+json")
    labelled.create(PODS, pod("e", {}, nodeName="node1"))
    assert selected(labelled, "fieldSelector=metadata.name%3Da") == ["a"]
    assert selected(labelled, "fieldSelector=status.phase%3DRunning") == ["c"]
    assert selected(labelled, "fieldSelector=status.phase!%3DRunning,spec.nodeName%3D") == [
        "a", "b", "d"]
    assert selected(labelled, "fieldSelector=spec.nodeName%3Dnode1") == ["e"]
    assert selected(labelled, "fieldSelector=metadata.namespace%3Ddefault&labelSelector="
                    "app%3Ddb") == ["c"]
    all_ns = labelled.get("/api/v1/pods?fieldSelector=metadata.namespace%3Dkube-system")
    assert all_ns["items"] == []
    status, body = labelled.request("GET", f"{PODS}?fieldSelector=spec.foo%3Dbar")
    assert status == 400 and "field label not supported: spec.foo" in body["message"]
    status, body = labelled.request("GET", "/api/v1/nodes?fieldSelector=metadata.namespace%3Dx")
    assert status == 400, body


def test_service_field_selectors(api: Http) -> None:
    """Services support spec.type and spec.clusterIP selectors (pkg/apis/core/v1/
    conversion.go); ConfigMaps only metadata ones, with the generic message."""
    api.create("/api/v1/namespaces/default/services", {
        "metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    names = [s["metadata"]["name"] for s in api.get(
        "/api/v1/services?fieldSelector=spec.type%3DNodePort")["items"]]
    assert names == ["np"]
    status, body = api.request("GET", "/api/v1/configmaps?fieldSelector=data.x%3Dy")
    assert status == 400 and "is not a known field selector" in body["message"]


def test_lightkube_selectors(labelled: Http, kube: Any) -> None:
    """lightkube's labels/fields arguments (its own selector encoding) select the same."""
    from lightkube.operators import not_in
    from lightkube.resources.core_v1 import Pod

    web = [p.metadata.name for p in kube.list(Pod, labels={"app": "web"})]
    assert web == ["a", "b"]
    not_front = [p.metadata.name for p in kube.list(Pod, labels={"tier": not_in(["front"])})]
    assert not_front == ["b", "c", "d"]
    assert [p.metadata.name for p in kube.list(Pod, fields={"metadata.name": "c"})] == ["c"]
