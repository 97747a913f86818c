"""A STAND-IN for kube-controller-manager's EndpointSlice controller, run inside the server.

In a real cluster this is kube-controller-manager's job, not the API server's; the
emulator runs it in-process (on by default, ``--no-endpointslice-controller`` turns it off)
because the project's Service code consumes EndpointSlices and nothing else here would
write them.  It follows https://kubernetes.io/docs/concepts/services-networking/
endpoint-slices/ and the controller's code (pkg/controller/endpointslice, utils.go):

* only Services with a non-empty ``spec.selector`` (and not ExternalName) get slices; the
  slices of the others are left to their users, and slices it made are deleted when the
  Service goes or loses its selector;
* slices carry ``kubernetes.io/service-name``,
  ``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io``, the Service's
  labels, an ownerReference to the Service and the Service's address family
  (``addressType: IPv4`` for an IPv4 range);
* a Pod is an endpoint when it has an IP, is selected, and is not in a terminal phase that
  its restartPolicy makes final (ShouldPodBeInEndpoints with terminating pods included);
  ``ready`` = Ready condition True and no deletionTimestamp (or
  ``publishNotReadyAddresses``), ``serving`` = Ready condition True, ``terminating`` =
  deletionTimestamp set; ``nodeName``, ``zone`` (the node's topology.kubernetes.io/zone),
  ``hostname`` (when spec.hostname and spec.subdomain name the Service) and ``targetRef``;
* ports are named as the Service's; a named ``targetPort`` is resolved per Pod from its
  containers' ports (same name and protocol); a port that does not resolve is left out for
  that Pod; Pods whose ports resolve differently go in different slices; at most 100
  endpoints per slice; a selected Service without endpoints gets one empty slice.

It reacts to Pod, Service, Node and EndpointSlice changes from the store's internal event
stream, within ``batch_period`` (20 ms by default) of the change.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from .api import Api
from .errors import ApiError
from .jsonutil import Obj, dig, labels_of
from .resources import ResourceType
from .store import DELETED, Event, Subscription

MANAGED_BY = "endpointslice-controller.k8s.io"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
PODS = ("", "pods")
SERVICES = ("", "services")
NODES = ("", "nodes")
SLICES = ("discovery.k8s.io", "endpointslices")

ServiceKey = tuple[str, str]
PortSignature = tuple[tuple[str, int, str, str], ...]


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """podutil.FindPort: a number as is, a name looked up in the Pod's container ports."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", "TCP")
    for container in dig(pod, "spec", "containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def pod_is_endpoint(pod: Obj) -> bool:
    """ShouldPodBeInEndpoints(pod, includeTerminating=true)."""
    status = pod.get("status") or {}
    if not status.get("podIP") and not status.get("podIPs"):
        return False
    phase = status.get("phase")
    policy = dig(pod, "spec", "restartPolicy")
    if policy == "Never":
        return phase not in ("Failed", "Succeeded")
    if policy == "OnFailure":
        return phase != "Succeeded"
    return True


def pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in dig(pod, "status", "conditions") or [] if isinstance(c, dict))


def pod_addresses(pod: Obj, family: str) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    version = 6 if family == "IPv6" else 4
    out = []
    for ip in ips:
        try:
            if ipaddress.ip_address(str(ip)).version == version:
                out.append(str(ip))
        except ValueError:
            continue
    return out[:1]


class EndpointSliceController:
    def __init__(self, api: Api, batch_period: float = 0.02) -> None:
        self.api = api
        self.batch_period = batch_period
        self.slice_type: ResourceType = api.type_for("discovery.k8s.io", "v1", "endpointslices")
        self._pods: dict[ServiceKey, Obj] = {}
        self._pods_by_label: dict[tuple[str, str, str], set[str]] = {}
        self._services: dict[ServiceKey, Obj] = {}
        self._services_by_label: dict[tuple[str, str, str], set[str]] = {}
        self._zones: dict[str, str] = {}
        self._slices: dict[ServiceKey, dict[str, Obj]] = {}
        self._dirty: set[ServiceKey] = set()
        self._subscription: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.syncs = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        store = self.api.store
        with store.lock:
            self._subscription = store.subscribe(None)
            for pod in store.objects(PODS).values():
                self._pod_changed(None, pod)
            for node in store.objects(NODES).values():
                self._node_changed(node)
            for eps in store.objects(SLICES).values():
                self._slice_changed(None, eps)
            for service in store.objects(SERVICES).values():
                self._service_changed(None, service)
        self._thread = threading.Thread(target=self._run, name="endpointslice-controller",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._subscription is not None:
            self.api.store.unsubscribe(self._subscription)
            self._subscription.queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        deadline: float | None = None
        while not self._stop.is_set():
            wait = 1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                event = subscription.get(timeout=wait)
                if event is None:
                    return
                self._observe(event)
            except queue.Empty:
                pass
            if self._dirty and deadline is None:
                deadline = time.monotonic() + self.batch_period
            if deadline is not None and time.monotonic() >= deadline:
                deadline = None
                self._sync_dirty()

    # --- the informer side: caches and what changes make dirty --------------------------

    def _observe(self, event: Event) -> None:
        new = None if event.type == DELETED else event.obj
        if event.storage == PODS:
            self._pod_changed(event.prev, new)
        elif event.storage == SERVICES:
            self._service_changed(event.prev, new)
        elif event.storage == NODES and new is not None:
            self._node_changed(new)
        elif event.storage == SLICES:
            self._slice_changed(event.prev, new)

    @staticmethod
    def _key(obj: Obj) -> ServiceKey:
        return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    def _pod_changed(self, old: Obj | None, new: Obj | None) -> None:
        current = new or old
        assert current is not None
        key = self._key(current)
        namespace = key[0]
        previous = self._pods.get(key)
        if previous is not None:
            for label in labels_of(previous).items():
                self._pods_by_label.get((namespace, *label), set()).discard(key[1])
        if new is None:
            self._pods.pop(key, None)
        else:
            self._pods[key] = new
            for label in labels_of(new).items():
                self._pods_by_label.setdefault((namespace, *label), set()).add(key[1])
        for pod in (previous, new):
            if pod is not None:
                self._dirty.update(self._services_selecting(namespace, labels_of(pod)))

    def _services_selecting(self, namespace: str, labels: dict[str, str]) -> Iterable[
            ServiceKey]:
        for label in labels.items():
            for name in self._services_by_label.get((namespace, *label), ()):
                selector = dig(self._services.get((namespace, name)), "spec", "selector") or {}
                if all(labels.get(k) == v for k, v in selector.items()):
                    yield (namespace, name)

    def _service_changed(self, old: Obj | None, new: Obj | None) -> None:
        current = new or old
        assert current is not None
        key = self._key(current)
        previous = self._services.get(key)
        if previous is not None:
            index = self._index_label(previous)
            if index is not None:
                self._services_by_label.get((key[0], *index), set()).discard(key[1])
        if new is None:
            self._services.pop(key, None)
        else:
            self._services[key] = new
            index = self._index_label(new)
            if index is not None:
                self._services_by_label.setdefault((key[0], *index), set()).add(key[1])
        self._dirty.add(key)

    @staticmethod
    def _index_label(service: Obj) -> tuple[str, str] | None:
        selector = dig(service, "spec", "selector") or {}
        if not selector:
            return None
        first = min(selector)
        return (first, str(selector[first]))

    def _node_changed(self, node: Obj) -> None:
        zone = labels_of(node).get(ZONE_LABEL)
        name = node["metadata"]["name"]
        if zone:
            self._zones[name] = zone
        else:
            self._zones.pop(name, None)

    def _slice_changed(self, old: Obj | None, new: Obj | None, own: bool = False) -> None:
        """Track the slices this controller manages; ``own``: the result of its own write."""
        current = new or old
        assert current is not None
        labels = labels_of(current)
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or SERVICE_NAME_LABEL not in labels:
            return
        service = (current["metadata"].get("namespace", ""), labels[SERVICE_NAME_LABEL])
        slices = self._slices.setdefault(service, {})
        name = current["metadata"]["name"]
        cached = slices.get(name)
        if new is None:
            slices.pop(name, None)
        elif cached is not None and int(cached["metadata"]["resourceVersion"]) >= int(
                new["metadata"]["resourceVersion"]):
            return
        else:
            slices[name] = new
        if not own:
            self._dirty.add(service)

    # --- the reconciler -----------------------------------------------------------------

    def _sync_dirty(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        while True:
            try:
                event = subscription.queue.get_nowait()
            except queue.Empty:
                break
            if event is None:
                self._stop.set()
                return
            self._observe(event)
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            try:
                self._sync(key)
            except ApiError:
                self._dirty.add(key)
            self.syncs += 1

    def _desired(self, service: Obj) -> list[tuple[PortSignature, list[Obj]]]:
        namespace = self._key(service)[0]
        spec = service.get("spec") or {}
        selector = spec.get("selector") or {}
        family = (spec.get("ipFamilies") or ["IPv4"])[0]
        first = min(selector)
        candidates = self._pods_by_label.get((namespace, first, str(selector[first])), set())
        groups: dict[PortSignature, list[Obj]] = {}
        for pod_name in sorted(candidates):
            pod = self._pods[(namespace, pod_name)]
            labels = labels_of(pod)
            if not all(labels.get(k) == v for k, v in selector.items()):
                continue
            if not pod_is_endpoint(pod):
                continue
            addresses = pod_addresses(pod, family)
            if not addresses:
                continue
            resolved: list[tuple[str, int, str, str]] = []
            for port in spec.get("ports") or []:
                number = find_port(pod, port)
                if number is not None:
                    resolved.append((str(port.get("name", "")), number,
                                     str(port.get("protocol", "TCP")),
                                     str(port.get("appProtocol", ""))))
            groups.setdefault(tuple(resolved), []).append(
                self._endpoint(pod, addresses, service))
        if not groups:
            return [((), [])]
        chunks = []
        for signature in sorted(groups):
            endpoints = groups[signature]
            for start in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE):
                chunks.append((signature, endpoints[start:start + MAX_ENDPOINTS_PER_SLICE]))
        return chunks

    def _endpoint(self, pod: Obj, addresses: list[str], service: Obj) -> Obj:
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        serving = pod_ready(pod)
        publish = bool(dig(service, "spec", "publishNotReadyAddresses"))
        endpoint: Obj = {
            "addresses": addresses,
            "conditions": {"ready": publish or (serving and not terminating),
                           "serving": serving, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": pod["metadata"].get("namespace", ""),
                          "name": pod["metadata"]["name"], "uid": pod["metadata"].get("uid")},
        }
        spec = pod.get("spec") or {}
        if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
            endpoint["hostname"] = spec["hostname"]
        node = spec.get("nodeName")
        if node:
            endpoint["nodeName"] = node
            if node in self._zones:
                endpoint["zone"] = self._zones[node]
        return endpoint

    def _slice_labels(self, service: Obj) -> dict[str, str]:
        labels = {k: v for k, v in labels_of(service).items()
                  if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)}
        labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
        labels[MANAGED_BY_LABEL] = MANAGED_BY
        if dig(service, "spec", "clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        return labels

    def _sync(self, key: ServiceKey) -> None:
        service = self._services.get(key)
        existing = dict(self._slices.get(key, {}))
        spec = (service or {}).get("spec") or {}
        if service is None or not spec.get("selector") or spec.get("type") == "ExternalName":
            for name, obj in existing.items():
                self._delete(key[0], name, obj)
            return
        by_signature: dict[PortSignature, list[Obj]] = {}
        for obj in sorted(existing.values(), key=lambda o: str(o["metadata"]["name"])):
            signature = tuple((str(p.get("name", "")), int(p.get("port", 0)),
                               str(p.get("protocol", "TCP")), str(p.get("appProtocol", "")))
                              for p in obj.get("ports") or [])
            by_signature.setdefault(signature, []).append(obj)
        labels = self._slice_labels(service)
        family = (spec.get("ipFamilies") or ["IPv4"])[0]
        owner = {"apiVersion": "v1", "kind": "Service", "name": key[1],
                 "uid": service["metadata"].get("uid"), "controller": True,
                 "blockOwnerDeletion": True}
        for signature, endpoints in self._desired(service):
            ports = [self._port(p) for p in signature]
            reuse = by_signature.get(signature) or []
            if reuse:
                current = reuse.pop(0)
                wanted = dict(current)
                wanted["metadata"] = dict(current["metadata"])
                wanted["metadata"]["labels"] = labels
                wanted["metadata"]["ownerReferences"] = [owner]
                wanted.update(endpoints=endpoints, ports=ports, addressType=family)
                if wanted != current:
                    updated, _ = self.api.update(self.slice_type, key[0],
                                                 current["metadata"]["name"], wanted)
                    self._slice_changed(current, updated, own=True)
            else:
                created = self.api.create(self.slice_type, key[0], {
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": f"{key[1]}-", "namespace": key[0],
                                 "labels": labels, "ownerReferences": [owner]},
                    "addressType": family, "endpoints": endpoints, "ports": ports})
                self._slice_changed(None, created, own=True)
        for leftovers in by_signature.values():
            for obj in leftovers:
                self._delete(key[0], obj["metadata"]["name"], obj)

    @staticmethod
    def _port(signature: tuple[str, int, str, str]) -> Obj:
        name, number, protocol, app_protocol = signature
        port: dict[str, Any] = {"name": name, "port": number, "protocol": protocol}
        if app_protocol:
            port["appProtocol"] = app_protocol
        return port

    def _delete(self, namespace: str, name: str, obj: Obj) -> None:
        try:
            self.api.delete(self.slice_type, namespace, name,
                            {"preconditions": {"uid": obj["metadata"].get("uid")}})
        except ApiError as exc:
            if exc.code != 404:
                raise
        self._slice_changed(obj, None, own=True)
