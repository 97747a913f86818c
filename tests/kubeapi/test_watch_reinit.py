"""The watch cache re-initializing: open watches end, 429 meanwhile, 410 from older versions.

kube-apiserver's cacher (k8s.io/apiserver/pkg/storage/cacher), when its watch of etcd
breaks (etcd compacted past it, etcd restarted), ends every watcher
(``terminateAllWatchers``), answers watches with ``errors.NewTooManyRequests("storage is
(re)initializing", 1)`` until it has listed etcd again, and then serves a history that
begins at that list: a watch resuming from an older resourceVersion gets "too old
resource version" (410).  ``KubeApiServer.drop_watches`` and ``resume_watches`` (SIGUSR1
and SIGUSR2 to the program) do that on demand, so tests can drop the watches of a
controller running in another process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from ovn_underlay.lab.kubeapi import KubeApiServer

from .conftest import Http, configmap

CM = "/api/v1/namespaces/default/configmaps"


def test_dropped_watches_end_answer_429_then_410_from_an_older_version(
        server: KubeApiServer, api: Http) -> None:
    api.create(CM, configmap("before"))
    rv = api.get(CM)["metadata"]["resourceVersion"]
    watch = api.watch(f"{CM}?watch=true&resourceVersion={rv}")
    assert watch.status == 200

    assert server.drop_watches() == 1
    assert watch.ended()  # a clean end (the chunked terminator), as at a timeout
    watch.close()
    status, body = api.request("GET", f"{CM}?watch=true&resourceVersion={rv}")
    assert (status, body["reason"], body["message"]) == (
        429, "TooManyRequests", "storage is (re)initializing"), body
    assert body["details"]["retryAfterSeconds"] == 1
    raw = Http(server).connection()
    raw.request("GET", f"{CM}?watch=true")
    answer = raw.getresponse()
    assert (answer.status, answer.getheader("Retry-After")) == (429, "1")
    raw.close()
    made = api.create(CM, configmap("while-down"))  # writes and lists go on
    assert {i["metadata"]["name"] for i in api.get(CM)["items"]} == {"before", "while-down"}

    begins = server.resume_watches()
    assert begins >= int(made["metadata"]["resourceVersion"])
    old = api.watch(f"{CM}?watch=true&resourceVersion={rv}")
    assert old.status == 200
    event = old.next()
    assert (event["type"], event["object"]["code"], event["object"]["reason"]) == (
        "ERROR", 410, "Expired"), event
    assert old.ended()
    old.close()
    fresh = api.watch(f"{CM}?watch=true&resourceVersion={begins}")
    api.create(CM, configmap("after"))
    assert fresh.next()["object"]["metadata"]["name"] == "after"
    fresh.close()


def test_watches_opened_after_a_resume_are_not_ended_by_an_earlier_drop(
        server: KubeApiServer, api: Http) -> None:
    server.drop_watches()
    server.resume_watches()
    watch = api.watch(f"{CM}?watch=true")
    api.create(CM, configmap("one"))
    assert watch.next()["object"]["metadata"]["name"] == "one"
    assert server.drop_watches() == 1
    assert watch.ended()
    watch.close()
    server.resume_watches()


def test_the_program_drops_on_sigusr1_and_resumes_on_sigusr2() -> None:
    process = subprocess.Popen([sys.executable, "-m", "ovn_underlay.lab.kubeapi", "--listen",
                                "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()

        def watch_status() -> int:
            try:
                with urllib.request.urlopen(f"{url}{CM}?watch=true&timeoutSeconds=1",
                                            timeout=10) as reply:
                    reply.read()
                    return int(reply.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert watch_status() == 200
        process.send_signal(signal.SIGUSR1)
        assert process.stdout.readline().startswith("watches dropped: ")
        assert watch_status() == 429
        process.send_signal(signal.SIGUSR2)
        said = process.stdout.readline()
        assert said.startswith("watches resumed: history begins at resourceVersion "), said
        begins = int(said.split()[-1])
        with urllib.request.urlopen(f"{url}{CM}?watch=true&resourceVersion={begins - 1}",
                                    timeout=10) as reply:
            event = json.loads(reply.readline())
        assert (event["type"], event["object"]["code"]) == ("ERROR", 410), event
        assert watch_status() == 200
    finally:
        process.terminate()
    assert process.wait(10) == 0
