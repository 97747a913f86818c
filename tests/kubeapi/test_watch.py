"""Item 3: watches (initial state, replay, 410, bookmarks, timeout, selectors)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, configmap

CM = "/api/v1/namespaces/default/configmaps"


def names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


def test_watch_without_version_starts_with_the_state(api: Http) -> None:
    """resourceVersion unset: synthetic ADDED for every object, then live changes.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#semantics-for-watch
    ("Get State and Start at Most Recent"); the stream is chunked JSON lines
    (#efficient-detection-of-changes); ``watch=1`` works like ``watch=true``.
    """
    api.create(CM, configmap("before"))
    watch = api.watch(f"{CM}?watch=1")
    assert watch.status == 200 and watch.headers["Transfer-Encoding"] == "chunked"
    assert names([watch.next()]) == [("ADDED", "before")]
    api.create(CM, configmap("after"))
    api.request("PATCH", f"{CM}/after", {"data": {"a": "1"}}, "application/merge-patch+json")
    api.request("DELETE", f"{CM}/after")
    events = [watch.next() for _ in range(3)]
    assert names(events) == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3
    watch.close()


def test_watch_from_a_version_replays_what_came_after(api: Http) -> None:
    """resourceVersion=N: exactly the changes after N, no synthetic ADDED ("Start at Exact").

    The classic list-then-watch: changes made between the list and the watch are not lost.
    """
    api.create(CM, configmap("old"))
    listed = api.get(CM)
    api.create(CM, configmap("missed"))
    api.request("DELETE", f"{CM}/old")
    watch = api.watch(f"{CM}?watch=true&resourceVersion={listed['metadata']['resourceVersion']}")
    assert names([watch.next(), watch.next()]) == [("ADDED", "missed"), ("DELETED", "old")]
    watch.close()


def test_watch_from_a_compacted_version_gets_410(server: KubeApiServer, api: Http) -> None:
    """A version older than the history: an ERROR event with a 410 Expired Status, then end.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#410-gone-responses; on an
    established watch the real server (its watch cache) answers HTTP 200 and an ERROR
    event, which is what client-go's reflector and lightkube handle by relisting.
    """
    old = api.create(CM, configmap("x"))["metadata"]["resourceVersion"]
    api.create(CM, configmap("y"))
    server.compact()
    watch = api.watch(f"{CM}?watch=true&resourceVersion={old}")
    event = watch.next()
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    assert event["object"]["message"].startswith(f"too old resource version: {old}")
    assert watch.ended()


def test_history_window_is_bounded() -> None:
    """--watch-history N: a watch needing more than the last N events of a resource gets
    410 (with N=3 after a,b,c,d,e: from a's version it would need b..e)."""
    with KubeApiServer(watch_history=3) as small:
        api = Http(small)
        first = api.create(CM, configmap("a"))["metadata"]["resourceVersion"]
        for name in "bcde":
            api.create(CM, configmap(name))
        watch = api.watch(f"{CM}?watch=true&resourceVersion={first}")
        assert watch.next()["object"]["code"] == 410
        recent = api.get(CM)["metadata"]["resourceVersion"]
        ok = api.watch(f"{CM}?watch=true&resourceVersion={recent}&timeoutSeconds=1")
        api.create(CM, configmap("f"))
        assert names([ok.next()]) == [("ADDED", "f")]


def test_bookmarks_carry_the_current_version(server: KubeApiServer, api: Http) -> None:
    """allowWatchBookmarks=true: BOOKMARK events with only metadata.resourceVersion set.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks; the
    bookmark's version moves on with writes to other resources, so a client restarting from
    it skips nothing and replays nothing.
    """
    start = api.get(CM)["metadata"]["resourceVersion"]
    watch = api.watch(f"{CM}?watch=true&allowWatchBookmarks=true&resourceVersion={start}")
    api.create("/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}})
    bookmark = watch.until(lambda e: e["type"] == "BOOKMARK")
    assert bookmark["object"]["kind"] == "ConfigMap"
    assert set(bookmark["object"]["metadata"]) == {"resourceVersion"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) > int(start)
    watch.close()
    plain = api.watch(f"{CM}?watch=true&resourceVersion={start}&timeoutSeconds=1")
    assert plain.ended()


def test_timeout_seconds_ends_the_stream(api: Http) -> None:
    """timeoutSeconds: the server closes the stream (cleanly, chunked end) after it."""
    began = time.monotonic()
    watch = api.watch(f"{CM}?watch=true&timeoutSeconds=1&resourceVersion=1")
    assert watch.ended()
    assert 0.9 <= time.monotonic() - began < 5


def test_selectors_apply_to_watches_with_transitions(api: Http) -> None:
    """An object that stops matching a label selector is DELETED for that watch; one that
    starts matching is ADDED.

    The watch cache's convertToWatchEvent (k8s.io/apiserver/pkg/storage/cacher) compares
    the old and new object against the selector; an emulator filtering on the new object
    alone never tells the watcher the object left its set.
    """
    api.create(CM, {"metadata": {"name": "m", "labels": {"app": "web"}}})
    watch = api.watch(f"{CM}?watch=true&labelSelector=app%3Dweb")
    assert names([watch.next()]) == [("ADDED", "m")]
    api.request("PATCH", f"{CM}/m", {"metadata": {"labels": {"app": "db"}}},
                "application/merge-patch+json")
    left = watch.next()
    assert names([left]) == [("DELETED", "m")]
    assert left["object"]["metadata"]["labels"] == {"app": "web"}  # its last matching state
    api.request("PATCH", f"{CM}/m", {"data": {"ignored": "yes"}}, "application/merge-patch+json")
    api.request("PATCH", f"{CM}/m", {"metadata": {"labels": {"app": "web"}}},
                "application/merge-patch+json")
    assert names([watch.next()]) == [("ADDED", "m")]
    fields = api.watch(f"{CM}?watch=true&fieldSelector=metadata.name%3Dother")
    api.create(CM, configmap("other"))
    assert names([fields.next()]) == [("ADDED", "other")]
    watch.close()
    fields.close()


def test_send_initial_events_ends_with_a_bookmark(api: Http) -> None:
    """sendInitialEvents=true (streaming lists): ADDED events, then a BOOKMARK annotated
    ``k8s.io/initial-events-end`` (https://kubernetes.io/docs/reference/using-api/
    api-concepts/#streaming-lists); without resourceVersionMatch=NotOlderThan it is 400."""
    api.create(CM, configmap("one"))
    status, _ = api.request("GET", f"{CM}?watch=true&sendInitialEvents=true")
    assert status == 400
    watch = api.watch(f"{CM}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
                      "&resourceVersionMatch=NotOlderThan")
    assert names([watch.next()]) == [("ADDED", "one")]
    end = watch.next()
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    watch.close()


def test_lightkube_watch_from_version_and_410(server: KubeApiServer, kube: Any) -> None:
    """lightkube's ``watch(..., resource_version=...)`` replays from the version, and an
    expired version surfaces as ApiError 410 (which its on_error handlers relist on)."""
    from lightkube import ApiError
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap

    start = kube.create(ConfigMap(metadata=ObjectMeta(name="w1"))).metadata.resourceVersion
    kube.create(ConfigMap(metadata=ObjectMeta(name="w2")))
    seen: list[tuple[str, str]] = []
    for kind, obj in kube.watch(ConfigMap, namespace="default", resource_version=start):
        seen.append((kind, obj.metadata.name))
        break
    assert seen == [("ADDED", "w2")]
    server.compact()
    with pytest.raises(ApiError) as raised:
        for _ in kube.watch(ConfigMap, namespace="default", resource_version=start):
            break
    assert raised.value.status.code == 410


def test_watch_across_namespaces_and_concurrent_writers(api: Http) -> None:
    """An all-namespaces watch sees every write exactly once, in resourceVersion order,
    while several clients write at once."""
    watch = api.watch("/api/v1/configmaps?watch=true&resourceVersion=1")
    total = 40

    def writer(namespace: str) -> None:
        for index in range(total // 2):
            api.create(f"/api/v1/namespaces/{namespace}/configmaps", configmap(f"c{index}"))

    threads = [threading.Thread(target=writer, args=(ns,)) for ns in ("default", "kube-system")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = [watch.next() for _ in range(total)]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == total
    watch.close()
