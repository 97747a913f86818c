"""Item 12: concurrent clients, and the burst measurement at a small scale."""

from __future__ import annotations

import threading

from ovn_underlay.lab.kubeapi import bench

from .conftest import Http, configmap


def test_concurrent_writers_get_distinct_versions(api: Http) -> None:
    """Eight clients creating and updating at once: every write gets its own
    resourceVersion and no update is lost (the store's single lock)."""
    versions: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for index in range(25):
            made = api.create("/api/v1/namespaces/default/configmaps",
                              configmap(f"w{worker}-{index}"))
            with lock:
                versions.append(int(made["metadata"]["resourceVersion"]))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(versions)) == 200
    listed = api.get("/api/v1/namespaces/default/configmaps")
    assert len(listed["items"]) == 200


def test_burst_measurement_runs() -> None:
    """The bench (``python -m ovn_underlay.lab.kubeapi.bench``, 1000 x 10 by default) at
    20 Services x 5 endpoints: every slice converges and the figures are reported."""
    results = bench.run(20, 5, clients=2)
    assert results["create_requests_per_s"] > 0
    assert results["selected_until_all_slices_s"] < 30
