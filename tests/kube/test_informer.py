"""The informer against the test API server: cache, handlers, resume, relist, bookmarks, stop."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Pod
from lightkube.types import PatchType

from ovn_underlay.kube.client import load_config
from ovn_underlay.kube.informer import Informer, retry_after
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.kube.support import Relay, bind, eventually, pod


class Recorder:
    """Handlers that note what they were told: ("add"|"update"|"delete", name, version)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def handlers(self) -> dict[str, Any]:
        return {"on_add": lambda obj: self._note("add", obj),
                "on_update": lambda old, new: self._note("update", new, old),
                "on_delete": lambda obj: self._note("delete", obj)}

    def _note(self, kind: str, obj: Pod, old: Pod | None = None) -> None:
        assert obj.metadata is not None
        if old is not None:  # an update always goes from an older to a newer version
            assert old.metadata is not None
            assert int(old.metadata.resourceVersion or 0) < int(obj.metadata.resourceVersion or 0)
        self.events.append((kind, str(obj.metadata.name), str(obj.metadata.resourceVersion)))

    def names(self, kind: str | None = None) -> list[tuple[str, str]]:
        return [(k, n) for k, n, _ in self.events if kind in (None, k)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def informers() -> Iterator[list[Informer[Any]]]:
    """Informers a test starts, all stopped afterwards."""
    started: list[Informer[Any]] = []
    yield started
    for informer in started:
        informer.stop()


def start(informers: list[Informer[Any]], kubeconfig: str, resource: Any = Pod,
          **options: Any) -> Informer[Any]:
    informer: Informer[Any] = Informer(functools.partial(load_config, kubeconfig), resource,
                                       **options)
    informers.append(informer)
    informer.start()
    assert informer.wait_for_sync(5)
    return informer


def names_in(informer: Informer[Any]) -> set[str]:
    return {p.metadata.name for p in informer.list()}


def rv(obj: Any) -> str:
    return str(obj.metadata.resourceVersion)


def relabel(admin: Client, name: str, value: str) -> Pod:
    return admin.patch(Pod, name, {"metadata": {"labels": {"v": value}}}, namespace="default",
                       patch_type=PatchType.MERGE)


def test_the_cache_follows_creates_updates_and_deletes(
        admin: Client, kubeconfig: str, recorder: Recorder,
        informers: list[Informer[Any]]) -> None:
    admin.create(pod("before"))
    informer = start(informers, kubeconfig, namespace="default", **recorder.handlers())
    assert informer.has_synced() and names_in(informer) == {"before"}
    assert recorder.names() == [("add", "before")]

    made = admin.create(pod("a"))
    eventually(lambda: informer.get("default", "a") is not None)
    changed = relabel(admin, "a", "2")
    eventually(lambda: rv(informer.get("default", "a")) == rv(changed))
    assert informer.get("default", "a") == changed
    admin.delete(Pod, "before", namespace="default", grace_period=0)
    eventually(lambda: informer.get("default", "before") is None)
    assert names_in(informer) == {"a"}
    assert recorder.names() == [("add", "before"), ("add", "a"), ("update", "a"),
                                ("delete", "before")]
    assert recorder.events[1][2] == rv(made) and recorder.events[2][2] == rv(changed)
    assert informer.get("kube-system", "a") is None


def test_namespace_and_selectors_narrow_what_is_cached(
        admin: Client, server: KubeApiServer, kubeconfig: str, recorder: Recorder,
        informers: list[Informer[Any]]) -> None:
    admin.create(pod("here", node="node1"))
    admin.create(pod("there", node="node2"))
    admin.create(pod("unbound"))
    informer = start(informers, kubeconfig, fields={"spec.nodeName": "node1"},
                     **recorder.handlers())
    labelled = start(informers, kubeconfig, resource=ConfigMap, namespace="kube-system",
                     labels={"app": "x"})
    assert names_in(informer) == {"here"}
    admin.create(pod("late", node="node1"))
    bind(server, "default", "unbound", "node1")
    admin.create(ConfigMap(metadata=ObjectMeta(name="m", namespace="kube-system",
                                               labels={"app": "x"})))
    admin.create(ConfigMap(metadata=ObjectMeta(name="m", namespace="default",
                                               labels={"app": "x"})))
    admin.create(ConfigMap(metadata=ObjectMeta(name="n", namespace="kube-system")))
    eventually(lambda: names_in(informer) == {"here", "late", "unbound"})
    eventually(lambda: [(c.metadata.namespace, c.metadata.name) for c in labelled.list()]
               == [("kube-system", "m")])
    assert recorder.names() == [("add", "here"), ("add", "late"), ("add", "unbound")]


def test_a_watch_the_server_ends_is_resumed_without_listing_again(
        admin: Client, kubeconfig: str, relay: Relay, recorder: Recorder,
        informers: list[Informer[Any]]) -> None:
    informer = start(informers, kubeconfig, namespace="default", watch_timeout=1,
                     **recorder.handlers())
    made = []
    for index in range(6):  # over ~3 s: across two or three watches the server ended
        made.append(f"p{index}")
        admin.create(pod(made[-1]))
        time.sleep(0.5)
    eventually(lambda: len(relay.watches("pods")) >= 3)
    admin.delete(Pod, "p0", namespace="default", grace_period=0)
    eventually(lambda: names_in(informer) == set(made[1:]))
    assert recorder.names() == [("add", n) for n in made] + [("delete", "p0")]
    assert len(relay.lists("pods")) == 1
    watches = relay.watches("pods")
    assert all(relay.query(w)["resourceVersion"] and relay.query(w)["timeoutSeconds"] == "1"
               for w in watches)


def test_a_dropped_connection_is_resumed_from_the_last_version(
        admin: Client, kubeconfig: str, relay: Relay, recorder: Recorder,
        informers: list[Informer[Any]]) -> None:
    admin.create(pod("a"))
    informer = start(informers, kubeconfig, namespace="default", **recorder.handlers())
    eventually(lambda: len(relay.watches("pods")) == 1)
    last_seen = informer.resource_version
    relay.refusing = True
    relay.cut()
    missed = admin.create(pod("made-while-cut"))
    admin.delete(Pod, "a", namespace="default", grace_period=0)
    relay.refusing = False
    eventually(lambda: names_in(informer) == {"made-while-cut"})
    assert recorder.names() == [("add", "a"), ("add", "made-while-cut"), ("delete", "a")]
    assert recorder.events[1][2] == rv(missed)
    assert len(relay.lists("pods")) == 1
    assert relay.query(relay.watches("pods")[-1])["resourceVersion"] == last_seen


def test_after_410_gone_it_lists_again_and_emits_the_differences(
        admin: Client, server: KubeApiServer, kubeconfig: str, relay: Relay,
        recorder: Recorder, informers: list[Informer[Any]]) -> None:
    for name in ("stays", "changes", "goes"):
        admin.create(pod(name))
    informer = start(informers, kubeconfig, namespace="default", **recorder.handlers())
    relay.refusing = True
    relay.cut()
    changed = relabel(admin, "changes", "2")
    admin.delete(Pod, "goes", namespace="default", grace_period=0)
    admin.create(pod("new"))
    server.compact()
    relay.refusing = False
    eventually(lambda: len(relay.lists("pods")) == 2)
    eventually(lambda: names_in(informer) == {"stays", "changes", "new"})
    assert rv(informer.get("default", "changes")) == rv(changed)
    assert sorted(recorder.names()[3:]) == [("add", "new"), ("delete", "goes"),
                                            ("update", "changes")]
    later = admin.create(pod("later"))  # and it watches again, from the new list
    eventually(lambda: informer.get("default", "later") is not None)
    assert recorder.events[-1] == ("add", "later", rv(later))


def test_bookmarks_advance_the_resource_version(
        admin: Client, kubeconfig: str, relay: Relay, informers: list[Informer[Any]]) -> None:
    informer = start(informers, kubeconfig, namespace="default")
    elsewhere = admin.create(ConfigMap(metadata=ObjectMeta(name="elsewhere",
                                                           namespace="default")))
    assert int(informer.resource_version) < int(rv(elsewhere))
    eventually(lambda: informer.resource_version == rv(elsewhere))
    assert all(relay.query(w)["allowWatchBookmarks"] == "true" for w in relay.watches("pods"))
    relay.cut()  # the next watch starts from the bookmark's version
    eventually(lambda: len(relay.watches("pods")) == 2)
    assert relay.query(relay.watches("pods")[1])["resourceVersion"] == rv(elsewhere)


def test_stop_ends_a_quiet_watch_at_once(kubeconfig: str, relay: Relay,
                                         informers: list[Informer[Any]]) -> None:
    informer = start(informers, kubeconfig, namespace="default")
    eventually(lambda: len(relay.watches("pods")) == 1)
    threads = {t.name for t in threading.enumerate()}
    assert informer.name in threads
    began = time.monotonic()
    informer.stop()
    assert time.monotonic() - began < 1.0
    assert informer.name not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="started already"):
        informer.start()


def test_a_failing_handler_does_not_stop_the_informer(
        admin: Client, kubeconfig: str, informers: list[Informer[Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    def refuse(obj: Pod) -> None:
        raise RuntimeError("handler bug")

    informer = start(informers, kubeconfig, namespace="default", on_add=refuse)
    admin.create(pod("first"))
    admin.create(pod("second"))
    eventually(lambda: names_in(informer) == {"first", "second"})
    # the cache changes before the handler runs: wait for the second handler's log line
    eventually(lambda: sum("a handler failed on default/" in m for m in caplog.messages) >= 2)
    assert sum("a handler failed on default/" in m for m in caplog.messages) == 2


def test_an_unreachable_server_is_retried_with_backoff(
        admin: Client, kubeconfig: str, relay: Relay, informers: list[Informer[Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    relay.refusing = True
    informer: Informer[Any] = Informer(functools.partial(load_config, kubeconfig), Pod)
    informers.append(informer)
    informer.start()
    eventually(lambda: sum("again in" in m for m in caplog.messages) >= 2)
    assert not informer.has_synced() and informer.list() == []
    assert "again in 0.5 s" in caplog.text and "again in 1.0 s" in caplog.text
    admin.create(pod("p"))
    relay.refusing = False
    assert informer.wait_for_sync(5)
    assert names_in(informer) == {"p"}


def test_a_429_is_retried_after_the_servers_retry_after_not_a_growing_backoff(
        admin: Client, server: KubeApiServer, kubeconfig: str, relay: Relay,
        informers: list[Informer[Any]], caplog: pytest.LogCaptureFixture) -> None:
    """The watch cache re-initialising answers 429 with Retry-After 1 for as long as it
    takes: the informer asks again each second (a doubling backoff would be waiting 8 s
    by the time the server is ready after 8 s) and says so without a warning."""
    informer = start(informers, kubeconfig, namespace="default")
    caplog.set_level("INFO", logger="ovn_underlay.kube.informer")
    server.drop_watches()
    eventually(lambda: sum("asks to wait" in m for m in caplog.messages) >= 1)
    time.sleep(8)
    server.resume_watches()
    resumed = time.monotonic()
    admin.create(pod("after"))
    eventually(lambda: informer.get("default", "after") is not None, timeout=10)
    back = time.monotonic() - resumed
    waits = [r for r in caplog.records if "asks to wait 1 s" in r.getMessage()]
    print(f"after 8 s of 429s the informer had the next event {back:.2f}s after the "
          f"resume; {len(waits)} retries")
    assert back < 2.5
    assert len(waits) >= 6
    assert not [r for r in caplog.records if r.levelname == "WARNING"
                and r.name == "ovn_underlay.kube.informer"]


@pytest.mark.parametrize(("status", "header", "wait"), [
    (429, "1", 1.0), (503, "2.5", 2.5), (429, "120", 30.0), (429, None, None),
    (429, "Wed, 21 Oct 2026 07:28:00 GMT", None), (429, "-1", None), (500, "1", None)])
def test_retry_after_is_read_from_429_and_503_answers_only(
        status: int, header: str | None, wait: float | None) -> None:
    request = httpx2.Request("GET", "http://api.invalid/api/v1/pods")
    headers = {"Retry-After": header} if header is not None else {}
    response = httpx2.Response(status, headers=headers, request=request)
    assert retry_after(httpx2.HTTPStatusError("x", request=request, response=response)) == wait
    assert retry_after(ValueError("not an answer")) is None
