"""The resource types served, and the discovery documents that describe them.

Each :class:`ResourceType` is one (group, version, plural).  The flags that differ per
resource in kube-apiserver's registry strategies are carried here, as the real server has
them (pkg/registry/*/strategy.go):

* ``create_on_update``: a PUT to a missing object creates it (Leases, Endpoints, Events,
  Services); for the others it is 404.
* ``unconditional_update``: a PUT without ``metadata.resourceVersion`` overwrites; false for
  Leases, CustomResourceDefinitions and custom resources, where it is 422
  (``metadata.resourceVersion: Invalid value: 0x0: must be specified for an update``).
* ``generation``: when ``metadata.generation`` is bumped: ``spec`` (Pods, NetworkPolicies,
  CRDs), ``content`` (anything outside metadata: custom resources; EndpointSlices, which
  also count label changes), or not kept at all (``none``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .jsonutil import Obj, dig
from .patch import SET, Schema

FieldGetters = dict[str, Callable[[Obj], str]]


def _meta_getter(name: str) -> Callable[[Obj], str]:
    return lambda obj: str(obj.get("metadata", {}).get(name) or "")


def _path_getter(*path: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        value = dig(obj, *path)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)
    return get


def _pod_ips(obj: Obj) -> str:
    ips = dig(obj, "status", "podIPs") or []
    return ",".join(str(ip.get("ip", "")) for ip in ips if isinstance(ip, dict))


def meta_fields(namespaced: bool) -> FieldGetters:
    getters: FieldGetters = {"metadata.name": _meta_getter("name")}
    if namespaced:
        getters["metadata.namespace"] = _meta_getter("namespace")
    return getters


POD_FIELDS: FieldGetters = {
    **meta_fields(True),
    "spec.nodeName": _path_getter("spec", "nodeName"),
    "spec.restartPolicy": _path_getter("spec", "restartPolicy"),
    "spec.schedulerName": _path_getter("spec", "schedulerName"),
    "spec.serviceAccountName": _path_getter("spec", "serviceAccountName"),
    "spec.hostNetwork": lambda o: "true" if dig(o, "spec", "hostNetwork") else "false",
    "status.phase": _path_getter("status", "phase"),
    "status.podIP": _path_getter("status", "podIP"),
    "status.podIPs": _pod_ips,
    "status.nominatedNodeName": _path_getter("status", "nominatedNodeName"),
}
NODE_FIELDS: FieldGetters = {
    "metadata.name": _meta_getter("name"),
    "spec.unschedulable": lambda o: "true" if dig(o, "spec", "unschedulable") else "false",
}
SERVICE_FIELDS: FieldGetters = {
    **meta_fields(True),
    "spec.clusterIP": _path_getter("spec", "clusterIP"),
    "spec.type": _path_getter("spec", "type"),
}
NAMESPACE_FIELDS: FieldGetters = {
    "metadata.name": _meta_getter("name"),
    "status.phase": _path_getter("status", "phase"),
}
SECRET_FIELDS: FieldGetters = {**meta_fields(True), "type": _path_getter("type")}
EVENT_FIELDS: FieldGetters = {
    **meta_fields(True),
    **{f"involvedObject.{f}": _path_getter("involvedObject", f)
       for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                 "fieldPath")},
    "reason": _path_getter("reason"),
    "reportingComponent": _path_getter("reportingComponent"),
    "source": _path_getter("source", "component"),
    "type": _path_getter("type"),
}

_META_SCHEMA: Schema = {("metadata", "finalizers"): SET, ("metadata", "ownerReferences"): "uid"}


def _container_schema(prefix: tuple[str, ...]) -> Schema:
    schema: Schema = {}
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        base = (*prefix, containers)
        schema[base] = "name"
        schema[(*base, "ports")] = "containerPort"
        schema[(*base, "env")] = "name"
        schema[(*base, "volumeMounts")] = "mountPath"
        schema[(*base, "volumeDevices")] = "devicePath"
    return schema


POD_SCHEMA: Schema = {
    **_META_SCHEMA, **_container_schema(("spec",)),
    ("spec", "volumes"): "name", ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("status", "conditions"): "type", ("status", "podIPs"): "ip", ("status", "hostIPs"): "ip",
}
SERVICE_SCHEMA: Schema = {**_META_SCHEMA, ("spec", "ports"): "port",
                          ("status", "conditions"): "type"}
NODE_SCHEMA: Schema = {**_META_SCHEMA, ("spec", "podCIDRs"): SET,
                       ("status", "conditions"): "type", ("status", "addresses"): "type"}
NAMESPACE_SCHEMA: Schema = {**_META_SCHEMA, ("status", "conditions"): "type"}
SERVICEACCOUNT_SCHEMA: Schema = {**_META_SCHEMA, ("secrets",): "name"}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = False
    create_on_update: bool = False
    unconditional_update: bool = True
    generation: str = "none"  # "none" | "spec" | "content"
    return_deleted: bool = False  # DELETE answers the object (else a Status)
    field_getters: FieldGetters = field(default_factory=dict, compare=False, hash=False)
    field_error_style: str = "label"  # "label": pods' wording; "known": the generic one
    smp_schema: Schema | None = field(default=None, compare=False, hash=False)
    storage_group: str | None = None  # events.k8s.io Events are stored as core Events
    custom: bool = False
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> tuple[str, str]:
        return (self.storage_group if self.storage_group is not None else self.group,
                self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def getters(self) -> FieldGetters:
        return self.field_getters or meta_fields(self.namespaced)

    def field_error(self, name: str) -> str:
        if self.field_error_style == "label":
            return f"field label not supported: {name}"
        known = ", ".join(f'"{f}"' for f in self.getters())
        return f'"{name}" is not a known field selector: only {known}'

    def resource_entries(self) -> list[Obj]:
        """This type's entries in an APIResourceList."""
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        entry: Obj = {"name": self.plural, "singularName": self.singular,
                      "namespaced": self.namespaced, "kind": self.kind, "verbs": verbs}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status:
            entries.append({"name": f"{self.plural}/status", "singularName": "",
                            "namespaced": self.namespaced, "kind": self.kind,
                            "verbs": ["get", "patch", "update"]})
        if self.kind == "Pod":
            entries.append({"name": "pods/binding", "singularName": "", "namespaced": True,
                            "kind": "Binding", "verbs": ["create"]})
        return entries


def builtin_types() -> list[ResourceType]:
    """The built-in resources this server serves."""
    rt = ResourceType
    return [
        rt("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",), status=True,
           field_getters=NAMESPACE_FIELDS, smp_schema=NAMESPACE_SCHEMA),
        rt("", "v1", "Pod", "pods", "pod", True, ("po",), status=True, generation="spec",
           return_deleted=True, field_getters=POD_FIELDS, smp_schema=POD_SCHEMA,
           categories=("all",)),
        rt("", "v1", "Node", "nodes", "node", False, ("no",), status=True,
           field_getters=NODE_FIELDS, smp_schema=NODE_SCHEMA),
        rt("", "v1", "Service", "services", "service", True, ("svc",), status=True,
           create_on_update=True, return_deleted=True, field_getters=SERVICE_FIELDS,
           smp_schema=SERVICE_SCHEMA, categories=("all",)),
        rt("", "v1", "Endpoints", "endpoints", "endpoints", True, ("ep",),
           create_on_update=True, field_error_style="known", smp_schema=_META_SCHEMA),
        rt("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",),
           field_error_style="known", smp_schema=_META_SCHEMA),
        rt("", "v1", "Secret", "secrets", "secret", True, field_getters=SECRET_FIELDS,
           smp_schema=_META_SCHEMA),
        rt("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, ("sa",),
           return_deleted=True, field_error_style="known", smp_schema=SERVICEACCOUNT_SCHEMA),
        rt("", "v1", "Event", "events", "event", True, ("ev",), create_on_update=True,
           field_getters=EVENT_FIELDS, smp_schema=_META_SCHEMA),
        rt("events.k8s.io", "v1", "Event", "events", "event", True, ("ev",),
           create_on_update=True, field_error_style="known", smp_schema=_META_SCHEMA,
           storage_group=""),
        rt("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", True,
           generation="content", field_error_style="known", smp_schema=_META_SCHEMA),
        rt("coordination.k8s.io", "v1", "Lease", "leases", "lease", True,
           create_on_update=True, unconditional_update=False, field_error_style="known",
           smp_schema=_META_SCHEMA),
        rt("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", True,
           ("netpol",), generation="spec", field_error_style="known", smp_schema=_META_SCHEMA),
        rt("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
           "customresourcedefinitions", "customresourcedefinition", False, ("crd", "crds"),
           status=True, unconditional_update=False, generation="spec",
           field_error_style="known", smp_schema=_META_SCHEMA),
    ]


def custom_types(crd: Obj) -> list[ResourceType]:
    """The types one CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    plural = names.get("plural", "")
    types = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        has_status = "status" in (version.get("subresources") or {})
        types.append(ResourceType(
            spec.get("group", ""), version.get("name", ""), names.get("kind", ""), plural,
            names.get("singular") or plural, spec.get("scope") == "Namespaced",
            tuple(names.get("shortNames") or ()), status=has_status,
            unconditional_update=False, generation="content", return_deleted=True,
            field_error_style="known", custom=True,
            categories=tuple(names.get("categories") or ())))
    return types


def group_versions(types: list[ResourceType]) -> dict[str, list[str]]:
    """Group name -> its versions, in the order first served."""
    groups: dict[str, list[str]] = {}
    for rtype in types:
        versions = groups.setdefault(rtype.group, [])
        if rtype.version not in versions:
            versions.append(rtype.version)
    return groups


def _version_key(version: str) -> tuple[int, int, int]:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first."""
    matched = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not matched:
        return (0, 0, 0)
    stage = {"alpha": 1, "beta": 2, None: 3}[matched.group(2)]
    return (stage, int(matched.group(1)), int(matched.group(3) or 0))


def api_group(name: str, versions: list[str]) -> Obj:
    ordered = sorted(versions, key=_version_key, reverse=True)
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in ordered]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def resource_list(group_version: str, types: list[ResourceType]) -> Obj:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [e for t in types for e in t.resource_entries()]}
