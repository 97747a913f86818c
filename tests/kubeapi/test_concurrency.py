"""Item 4: optimistic concurrency, and leader election on a Lease built on it."""

from __future__ import annotations

import threading
from typing import Any

from .conftest import Http, configmap

CM = "/api/v1/namespaces/default/configmaps"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"


def test_stale_put_and_patch_get_409(api: Http) -> None:
    """A PUT, or a patch carrying metadata.resourceVersion, older than the object: 409.

    https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions and the
    optimistic-concurrency rule of the API conventions ("the object has been modified;
    please apply your changes to the latest version and try again").
    """
    made = api.create(CM, configmap("c", v="1"))
    status, fresh = api.request("PUT", f"{CM}/c", made | {"data": {"v": "2"}})
    assert status == 200
    status, body = api.request("PUT", f"{CM}/c", made | {"data": {"v": "3"}})
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    stale = {"metadata": {"resourceVersion": made["metadata"]["resourceVersion"]},
             "data": {"v": "4"}}
    status, body = api.request("PATCH", f"{CM}/c", stale, "application/merge-patch+json")
    assert (status, body["reason"]) == (409, "Conflict")
    current = {"metadata": {"resourceVersion": fresh["metadata"]["resourceVersion"]},
               "data": {"v": "5"}}
    status, body = api.request("PATCH", f"{CM}/c", current, "application/merge-patch+json")
    assert status == 200 and body["data"]["v"] == "5"
    assert api.get(f"{CM}/c")["data"]["v"] == "5"


def test_unconditional_put_depends_on_the_resource(api: Http) -> None:
    """PUT without resourceVersion overwrites where the registry allows it (ConfigMaps),
    and is 422 where it does not (Leases, custom resources), as their strategies'
    AllowUnconditionalUpdate say (pkg/registry/coordination/lease/strategy.go: false).
    A PUT to a missing Lease creates it (AllowCreateOnUpdate true); to a ConfigMap, 404.
    """
    api.create(CM, configmap("free", v="1"))
    status, body = api.request("PUT", f"{CM}/free", configmap("free", v="2"))
    assert status == 200 and body["data"]["v"] == "2"
    status, body = api.request("PUT", f"{CM}/missing", configmap("missing"))
    assert status == 404
    lease = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}
    status, created = api.request("PUT", f"{LEASES}/l", lease)
    assert status == 201, created
    status, body = api.request("PUT", f"{LEASES}/l", lease)
    assert (status, body["reason"]) == (422, "Invalid")
    assert "must be specified for an update" in body["message"]


def test_lightkube_replace_with_a_stale_object_conflicts(kube: Any) -> None:
    """lightkube's replace() sends the object's resourceVersion: stale means ApiError 409."""
    from lightkube import ApiError
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ConfigMap

    made = kube.create(ConfigMap(metadata=ObjectMeta(name="r"), data={"v": "1"}))
    first = kube.get(ConfigMap, "r")
    first.data = {"v": "2"}
    kube.replace(first)
    made.data = {"v": "3"}
    try:
        kube.replace(made)
    except ApiError as exc:
        assert exc.status.code == 409 and exc.status.reason == "Conflict"
    else:
        raise AssertionError("a stale replace succeeded")


def acquire(api: Http, candidate: str, results: dict[str, int],
            read: threading.Barrier) -> None:
    """One round of leader election: read the Lease, then (all having read) take it."""
    status, lease = api.request("GET", f"{LEASES}/leader")
    read.wait()
    if status == 404:
        status, _ = api.request("POST", LEASES, {
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": candidate, "leaseDurationSeconds": 15}})
    else:
        lease["spec"] = {"holderIdentity": candidate, "leaseDurationSeconds": 15}
        status, _ = api.request("PUT", f"{LEASES}/leader", lease)
    results[candidate] = status


def test_leader_election_has_one_winner(api: Http) -> None:
    """Candidates racing for a Lease: one create or update succeeds, the rest get 409.

    Leader election (client-go's resourcelock.LeaseLock and ours) is only safe because a
    create of an existing name is AlreadyExists and an update from a stale read is a
    Conflict; an emulator that lets the last writer win elects several leaders.
    """
    for round_ in range(2):
        results: dict[str, int] = {}
        read = threading.Barrier(8)
        threads = [threading.Thread(target=acquire, args=(api, f"r{round_}c{i}", results, read))
                   for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [c for c, status in results.items() if status in (200, 201)]
        assert len(winners) == 1, results
        assert all(status == 409 for c, status in results.items() if c not in winners), results
        holder = api.get(f"{LEASES}/leader")["spec"]["holderIdentity"]
        assert holder == winners[0]
