"""Load measurement: ``python -m ovn_underlay.lab.kubeapi.bench [--services N --endpoints M]``.

Two bursts through HTTP against an in-process server, with ``--clients`` keep-alive
connections in parallel:

* selectorless: N Services and N EndpointSlices of M endpoints each (what a user-managed
  Service, or a test feeding the project's load-balancer code, writes);
* selected: N Services with selectors and N*M Pods (create, then a status write with an
  IP and Ready=True, as a kubelet would), until the EndpointSlice stand-in has written
  every slice.

Prints requests/s and the burst times as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from .server import KubeApiServer

Job = tuple[str, str, Any, str]  # method, path, body, content type
JSON = "application/json"


class _Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, method: str, path: str, body: Any, content_type: str) -> int:
        self.conn.request(method, path, body=json.dumps(body).encode(),
                          headers={"Content-Type": content_type})
        response = self.conn.getresponse()
        response.read()
        return response.status


def _parallel(port: int, clients: int, jobs: list[Job]) -> float:
    """Send ``jobs`` over ``clients`` connections; returns the seconds taken."""
    failures: list[int] = []
    chunks = [jobs[i::clients] for i in range(clients)]

    def run(chunk: list[Job]) -> None:
        client = _Client(port)
        for job in chunk:
            status = client.send(*job)
            if status >= 300:
                failures.append(status)

    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
    return elapsed


def _service(name: str, selector: dict[str, str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if selector:
        spec["selector"] = selector
    return {"metadata": {"name": name}, "spec": spec}


def _slices(services: int, endpoints: int) -> Iterator[Job]:
    for index in range(services):
        body = {"metadata": {"name": f"m{index}-1",
                             "labels": {"kubernetes.io/service-name": f"m{index}"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [f"10.{index // 250}.{index % 250}.{e + 1}"],
                               "conditions": {"ready": True}} for e in range(endpoints)]}
        yield ("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", body,
               JSON)


def run(services: int, endpoints: int, clients: int) -> dict[str, Any]:
    results: dict[str, Any] = {"services": services, "endpoints_per_service": endpoints,
                               "clients": clients}
    with KubeApiServer(endpointslice_controller=False) as server:
        port = server.port
        svc_path = "/api/v1/namespaces/default/services"
        jobs: list[Job] = [("POST", svc_path, _service(f"m{i}", None), JSON)
                           for i in range(services)]
        took = _parallel(port, clients, jobs)
        results["selectorless_services_s"] = round(took, 3)
        results["create_requests_per_s"] = round(services / took, 1)
        took_slices = _parallel(port, clients, list(_slices(services, endpoints)))
        results["selectorless_slices_s"] = round(took_slices, 3)
        results["selectorless_burst_s"] = round(took + took_slices, 3)
    with KubeApiServer() as server:
        port = server.port
        controller = server.controller
        pod_path = "/api/v1/namespaces/default/pods"
        began = time.perf_counter()
        _parallel(port, clients, [
            ("POST", "/api/v1/namespaces/default/services",
             _service(f"s{i}", {"app": f"a{i}"}), JSON) for i in range(services)])
        pod_jobs: list[Job] = [
            ("POST", pod_path, {
                "metadata": {"name": f"p{i}-{e}", "labels": {"app": f"a{i}"}},
                "spec": {"nodeName": "node1", "containers": [
                    {"name": "c", "image": "img", "ports": [{"containerPort": 8080}]}]}}, JSON)
            for i in range(services) for e in range(endpoints)]
        pods_took = _parallel(port, clients, pod_jobs)
        status_jobs: list[Job] = [
            ("PATCH", f"{pod_path}/p{i}-{e}/status", {"status": {
                "phase": "Running", "podIP": f"10.{i // 250}.{i % 250}.{e + 1}",
                "conditions": [{"type": "Ready", "status": "True"}]}},
             "application/merge-patch+json")
            for i in range(services) for e in range(endpoints)]
        status_took = _parallel(port, clients, status_jobs)
        writes_done = time.perf_counter() - began
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready = server.api.store.objects(("discovery.k8s.io", "endpointslices"))
            with server.api.lock:
                complete = sum(1 for s in ready.values()
                               if len(s.get("endpoints") or []) == endpoints
                               and all(e["conditions"]["ready"] for e in s["endpoints"]))
            if complete >= services:
                break
            time.sleep(0.05)
        results["selected_pod_creates_per_s"] = round(services * endpoints / pods_took, 1)
        results["selected_status_writes_per_s"] = round(services * endpoints / status_took, 1)
        results["selected_writes_s"] = round(writes_done, 3)
        results["selected_until_all_slices_s"] = round(time.perf_counter() - began, 3)
        results["controller_syncs"] = controller.syncs if controller is not None else 0
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ovn_underlay.lab.kubeapi.bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="per Service")
    parser.add_argument("--clients", type=int, default=4, help="parallel connections")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.services, args.endpoints, args.clients), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
