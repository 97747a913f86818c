"""A Kubernetes Service and its EndpointSlices as a :class:`ServiceState` (no I/O).

The objects are plain dicts as the API returns them (``lightkube`` models give them with
``.to_dict()``); Services are ``v1``, EndpointSlices ``discovery.k8s.io/v1``.  The rules
are Kubernetes' documented ones:

* https://kubernetes.io/docs/concepts/services-networking/service/ (Service types,
  headless Services, ExternalName, Services without selectors, multi-port Services,
  session affinity) and its reference
  https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/
  (``clusterIP``/``clusterIPs``, ``sessionAffinityConfig.clientIP.timeoutSeconds``
  defaulting to 10800, ``internalTrafficPolicy``);
* https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/ and
  https://kubernetes.io/docs/reference/kubernetes-api/service-resources/endpoint-slice-v1/
  (the ``kubernetes.io/service-name`` label, ``addressType``, ``addresses`` "may choose to
  only use the first element", conditions: ``ready`` and ``serving`` nil meaning true,
  ``terminating`` nil meaning false);
* https://kubernetes.io/docs/concepts/services-networking/service-traffic-policy/
  (``internalTrafficPolicy: Local``) and
  https://kubernetes.io/docs/reference/networking/virtual-ips/ (traffic to terminating
  endpoints: ready endpoints only, serving and terminating ones when none is ready).

Where the documents leave a choice, kube-proxy's behaviour (pkg/proxy,
endpointslicecache.go and topology.go) is followed: a Service port's endpoints come from the
EndpointSlice ports of the same name and protocol, with the slice port's number (a
``targetPort``, named or not, is never read here: the EndpointSlice controller, or the user
of a Service without selector, has resolved it per endpoint); the fallback to serving and
terminating endpoints is taken per port, and, for ``internalTrafficPolicy: Local``, per
node (each node's own endpoints are what its clients reach).  The documents ask for unique
endpoints across slices without saying which copy of a duplicate counts: here an address
seen twice for one port is one endpoint, ready if any of its copies is (else serving and
terminating if any is), so a copy left behind in a slice being updated cannot hide it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ovn_underlay.control.services import Endpoint, ServicePort, ServiceState

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_TIMEOUT = 10800
"""``sessionAffinityConfig.clientIP.timeoutSeconds`` when ClientIP affinity leaves it out."""

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class _Candidate:
    """One endpoint address of one Service port, with its conditions."""

    endpoint: Endpoint
    ready: bool
    fallback: bool
    """Serving and terminating: used when no ready endpoint is there."""


def slices_by_service(slices: Iterable[Obj]) -> dict[str, list[Obj]]:
    """EndpointSlices grouped by their Service as ``namespace/name`` (the
    ``kubernetes.io/service-name`` label in the slice's namespace); slices without the
    label belong to no Service and are left out."""
    grouped: dict[str, list[Obj]] = {}
    for obj in slices:
        metadata = obj.get("metadata") or {}
        service = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            grouped.setdefault(f"{metadata.get('namespace', '')}/{service}", []).append(obj)
    return grouped


def service_state(service: Obj, slices: Iterable[Obj]) -> ServiceState | None:
    """The desired state of ``service`` from its EndpointSlices, or None when it is not
    ours to program: ExternalName, headless (``clusterIP: None``), or no ClusterIP yet.

    ``slices`` may hold any EndpointSlices; only those of the Service's namespace labelled
    with its name are read, whoever manages them (Services without selectors included).
    ClusterIP, NodePort and LoadBalancer Services alike give their ClusterIPs; only the
    IPv4 ones are kept, and every IPv6 one is named in ``problems`` (an IPv6-only Service
    gives no ``cluster_ips`` at all).  Ports keep the Service's order (their protocol,
    TCP by default, is one of TCP, UDP and SCTP: the only ones the API accepts).  Only
    IPv4 slices are read (IPv6 ones serve the IPv6 ClusterIP; FQDN ones are named in
    ``problems``).  A port without endpoints keeps an empty ``endpoints``.
    """
    metadata = service.get("metadata") or {}
    spec = service.get("spec") or {}
    primary = spec.get("clusterIP") or ""
    if spec.get("type") == "ExternalName" or primary in ("", "None"):
        return None
    namespace = str(metadata.get("namespace", ""))
    name = str(metadata.get("name", ""))
    problems: list[str] = []
    cluster_ips: list[str] = []
    for ip in spec.get("clusterIPs") or [primary]:
        if ipaddress.ip_address(ip).version == 4:
            cluster_ips.append(ip)
        else:
            problems.append(f"ClusterIP {ip} is IPv6: not served (IPv4 only)")
    local_only = spec.get("internalTrafficPolicy") == "Local"
    mine = [s for s in slices if _belongs(s, namespace, name)]
    for obj in mine:
        if obj.get("addressType") == "FQDN":
            problems.append(f"EndpointSlice {obj['metadata'].get('name')} has addressType "
                            "FQDN: skipped")
    ipv4 = sorted((s for s in mine if s.get("addressType") == "IPv4"),
                  key=lambda s: str(s["metadata"].get("name", "")))
    ports: list[ServicePort] = []
    for port in spec.get("ports") or []:
        protocol = str(port.get("protocol", "TCP"))
        port_name = str(port.get("name") or "")
        candidates = _candidates(ipv4, port_name, protocol)
        ports.append(ServicePort(protocol=protocol.lower(), port=int(port["port"]),
                                 name=port_name,
                                 endpoints=_select(candidates, local_only)))
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    return ServiceState(namespace=namespace, name=name, cluster_ips=tuple(cluster_ips),
                        ports=tuple(ports), affinity_timeout=affinity,
                        local_only=local_only, problems=tuple(problems))


def _belongs(obj: Obj, namespace: str, name: str) -> bool:
    metadata = obj.get("metadata") or {}
    return bool(metadata.get("namespace", "") == namespace
                and (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL) == name)


def _candidates(slices: Iterable[Obj], port_name: str, protocol: str) -> list[_Candidate]:
    """The endpoints of the Service port ``port_name``/``protocol`` in ``slices`` (in
    slice name order), one per address and number: of its copies, the first ready one,
    else the first serving and terminating one, else the first."""
    found: dict[tuple[str, int], _Candidate] = {}
    for obj in slices:
        number = next((int(p["port"]) for p in obj.get("ports") or []
                       if p.get("port") is not None
                       and str(p.get("name") or "") == port_name
                       and str(p.get("protocol", "TCP")) == protocol), None)
        if number is None:
            continue
        for item in obj.get("endpoints") or []:
            addresses = item.get("addresses") or []
            if not addresses:
                continue
            conditions = item.get("conditions") or {}
            ready = conditions.get("ready") is not False
            serving = conditions.get("serving") is not False
            terminating = conditions.get("terminating") is True
            candidate = _Candidate(Endpoint(str(addresses[0]), number,
                                            str(item.get("nodeName") or "")),
                                   ready, serving and terminating)
            key = (candidate.endpoint.ip, number)
            if key not in found or _rank(candidate) > _rank(found[key]):
                found[key] = candidate
    return list(found.values())


def _rank(candidate: _Candidate) -> tuple[bool, bool]:
    return candidate.ready, candidate.fallback


def _select(candidates: list[_Candidate], local_only: bool) -> tuple[Endpoint, ...]:
    """The ready candidates, or the serving and terminating ones when none is ready;
    decided per node when ``local_only``, else over all; sorted."""
    groups: dict[str, list[_Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.endpoint.node if local_only else "", []).append(candidate)
    chosen: list[Endpoint] = []
    for group in groups.values():
        ready = [c.endpoint for c in group if c.ready]
        chosen.extend(ready or [c.endpoint for c in group if c.fallback])
    return tuple(sorted(chosen))
