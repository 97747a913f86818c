"""Per-resource behaviour: defaults, validation, allocations (kube-apiserver's strategies).

What each hook does mirrors pkg/registry/<group>/<resource>/strategy.go and the defaulting
of pkg/apis/core/v1/defaults.go, for the fields the project's code relies on; anything not
listed here is stored as sent.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any

from .errors import (
    ApiError,
    FieldError,
    duplicate,
    forbidden,
    invalid_value,
    required,
    unsupported,
)
from .jsonutil import Obj, clone, dig
from .resources import ResourceType

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
               "start with an alphabetic character, and end with an alphanumeric character")


def subdomain_errors(field: str, name: str) -> list[FieldError]:
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [invalid_value(field, name, SUBDOMAIN_MSG)]
    return []


def label_errors(field: str, name: str, dns1035: bool = False) -> list[FieldError]:
    pattern, message = (_DNS1035_LABEL, DNS1035_MSG) if dns1035 else (_DNS1123_LABEL, LABEL_MSG)
    if len(name) > 63 or not pattern.match(name):
        return [invalid_value(field, name, message)]
    return []


def metadata_errors(obj: Obj) -> list[FieldError]:
    """Label keys and values (metadata.labels), as ValidateObjectMeta checks them."""
    errors: list[FieldError] = []
    labels = dig(obj, "metadata", "labels") or {}
    if not isinstance(labels, dict):
        return [invalid_value("metadata.labels", labels, "must be a map of strings")]
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        prefix = key.rsplit("/", 1)[0] if "/" in key else ""
        bad_prefix = bool(prefix) and bool(subdomain_errors("", prefix))
        if len(name) > 63 or not _LABEL_NAME.match(name) or bad_prefix:
            errors.append(invalid_value("metadata.labels", key, "name part must consist of "
                                        "alphanumeric characters, '-', '_' or '.'"))
        bad_value = not isinstance(value, str) or len(value) > 63 or (
            bool(value) and not _LABEL_NAME.match(value))
        if bad_value:
            errors.append(invalid_value("metadata.labels", value, "a valid label must be an "
                                        "empty string or consist of alphanumeric characters, "
                                        "'-', '_' or '.'"))
    return errors


class Kind:
    """Default behaviour: stored as sent, names are DNS subdomains."""

    def name_errors(self, name: str) -> list[FieldError]:
        return subdomain_errors("metadata.name", name)

    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        """Default and validate a new object (mutates ``obj``); returns validation errors."""
        return []

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        """Default and validate an update of the main resource."""
        return self.prepare_create(rtype, new)

    def committed(self, new: Obj | None, old: Obj | None) -> None:
        """Bookkeeping once a write is stored (``new`` None: removed)."""

    def grace_period(self, obj: Obj, requested: int | None) -> int:
        """Seconds of graceful deletion (0: deleted at once)."""
        return 0


class NamespaceKind(Kind):
    def name_errors(self, name: str) -> list[FieldError]:
        return label_errors("metadata.name", name)

    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        spec = obj.setdefault("spec", {})
        spec.setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        return []

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            new["metadata"]["name"]
        return []


def _image_pull_policy(image: str) -> str:
    tag = image.rsplit("/", 1)[-1]
    if "@" in tag:
        return "IfNotPresent"
    if ":" not in tag or tag.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _qos_class(spec: Obj) -> str:
    containers = [c for c in spec.get("containers", []) if isinstance(c, dict)]
    requests_any = False
    guaranteed = bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        if limits or requests:
            requests_any = True
        for resource in ("cpu", "memory"):
            if resource not in limits or requests.get(resource, limits[resource]) != limits[
                    resource]:
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"


POD_MUTABLE_MSG = ("pod updates may not change fields other than `spec.containers[*].image`,"
                   "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                   "`spec.tolerations` (only additions to existing tolerations),"
                   "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                   "previously negative)")


class PodKind(Kind):
    DEFAULT_TOLERATIONS = (
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
    )

    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        spec = obj.setdefault("spec", {})
        errors = self._default_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        return errors

    def _default_spec(self, spec: Obj) -> list[FieldError]:
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        tolerations = spec.setdefault("tolerations", [])
        for toleration in self.DEFAULT_TOLERATIONS:
            if not any(t.get("key") == toleration["key"] for t in tolerations
                       if isinstance(t, dict)):
                tolerations.append(dict(toleration))
        errors: list[FieldError] = []
        containers = spec.get("containers")
        if not containers:
            errors.append(required("spec.containers"))
        for field in ("initContainers", "containers"):
            seen: set[str] = set()
            for index, container in enumerate(spec.get(field) or []):
                path = f"spec.{field}[{index}]"
                if not isinstance(container, dict):
                    errors.append(invalid_value(path, container, "must be an object"))
                    continue
                name = container.get("name") or ""
                if not name:
                    errors.append(required(f"{path}.name"))
                else:
                    errors.extend(label_errors(f"{path}.name", name))
                    if name in seen:
                        errors.append(duplicate(f"{path}.name", name))
                    seen.add(name)
                if not container.get("image"):
                    errors.append(required(f"{path}.image"))
                container.setdefault("imagePullPolicy",
                                     _image_pull_policy(str(container.get("image", ""))))
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault("resources", {})
                for port in container.get("ports") or []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
        return errors

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        spec = new.setdefault("spec", {})
        errors = self._default_spec(spec)
        if errors:
            return errors
        if self._comparable(spec) != self._comparable(old.get("spec", {})):
            return [forbidden("spec", POD_MUTABLE_MSG)]
        return []

    @staticmethod
    def _comparable(spec: Obj) -> Obj:
        """The spec without the fields an update may change."""
        copy: Obj = clone(spec)
        for field in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                      "schedulingGates"):
            copy.pop(field, None)
        for field in ("containers", "initContainers"):
            for container in copy.get(field) or []:
                if isinstance(container, dict):
                    container.pop("image", None)
        return copy

    def grace_period(self, obj: Obj, requested: int | None) -> int:
        spec = obj.get("spec", {})
        period = requested if requested is not None else int(
            spec.get("terminationGracePeriodSeconds") or 0)
        if not spec.get("nodeName"):
            period = 0
        if dig(obj, "status", "phase") in ("Failed", "Succeeded"):
            period = 0
        return 1 if period < 0 else period


class ServiceKind(Kind):
    """Services: defaults, ClusterIP and NodePort allocation (never reusing a live one)."""

    TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    PROTOCOLS = ("TCP", "UDP", "SCTP")

    def __init__(self, cluster_ip_range: str, node_port_range: tuple[int, int]) -> None:
        self.network = ipaddress.ip_network(cluster_ip_range, strict=False)
        self.family = "IPv6" if self.network.version == 6 else "IPv4"
        self.node_ports = node_port_range
        self.ips: dict[str, str] = {}  # allocated IP -> service uid
        self.ports: dict[int, str] = {}  # allocated node port -> service uid
        first = self.network.network_address + 1
        self._next_ip = int(first) + 1  # the range's first address is the kubernetes Service's
        self._next_port = node_port_range[0]

    def name_errors(self, name: str) -> list[FieldError]:
        return label_errors("metadata.name", name, dns1035=True)

    @property
    def first_address(self) -> str:
        return str(self.network.network_address + 1)

    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        obj["status"] = {"loadBalancer": {}}
        return self._prepare(obj, None)

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        return self._prepare(new, old)

    def _prepare(self, obj: Obj, old: Obj | None) -> list[FieldError]:
        spec = obj.setdefault("spec", {})
        old_spec = old.get("spec", {}) if old else {}
        kind = spec.setdefault("type", "ClusterIP")
        errors: list[FieldError] = []
        if kind not in self.TYPES:
            return [unsupported("spec.type", kind, list(self.TYPES))]
        if kind == "ExternalName":
            if not spec.get("externalName"):
                errors.append(required("spec.externalName"))
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(field, None)
        spec.setdefault("sessionAffinity", "None")
        if kind != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if kind in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if kind == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        errors.extend(self._ports(spec, old_spec, kind))
        if kind != "ExternalName" and not errors:
            errors.extend(self._cluster_ip(obj, spec, old_spec))
        return errors

    def _ports(self, spec: Obj, old_spec: Obj, kind: str) -> list[FieldError]:
        errors: list[FieldError] = []
        ports = spec.get("ports") or []
        headless = spec.get("clusterIP") == "None"
        if not ports and not headless and kind != "ExternalName":
            errors.append(required("spec.ports"))
        names: set[str] = set()
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        wants_node_ports = kind == "NodePort" or (
            kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True))
        for index, port in enumerate(ports):
            path = f"spec.ports[{index}]"
            if not isinstance(port, dict):
                errors.append(invalid_value(path, port, "must be an object"))
                continue
            port.setdefault("protocol", "TCP")
            if port["protocol"] not in self.PROTOCOLS:
                errors.append(unsupported(f"{path}.protocol", port["protocol"],
                                                list(self.PROTOCOLS)))
            number = port.get("port")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                errors.append(invalid_value(f"{path}.port", number,
                                            "must be between 1 and 65535, inclusive"))
            port.setdefault("targetPort", number)
            name = port.get("name", "")
            if len(ports) > 1 and not name:
                errors.append(required(f"{path}.name"))
            if name in names:
                errors.append(duplicate(f"{path}.name", name))
            names.add(name)
            if not wants_node_ports:
                if port.get("nodePort") and kind == "ClusterIP":
                    errors.append(forbidden(f"{path}.nodePort",
                                            "may not be used when `type` is 'ClusterIP'"))
                continue
            if not port.get("nodePort"):
                previous = old_ports.get((number, port["protocol"]))
                if previous:
                    port["nodePort"] = previous
        if wants_node_ports and not errors:
            errors.extend(self._allocate_node_ports(ports, old_spec))
        return errors

    def _allocate_node_ports(self, ports: list[Any], old_spec: Obj) -> list[FieldError]:
        low, high = self.node_ports
        mine = {p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        taken_here: set[int] = set()
        errors: list[FieldError] = []
        for index, port in enumerate(ports):
            requested = port.get("nodePort")
            if requested:
                path = f"spec.ports[{index}].nodePort"
                if not isinstance(requested, int) or not low <= requested <= high:
                    errors.append(invalid_value(path, requested, "provided port is not in the "
                                                f"valid range. The range of valid ports is "
                                                f"{low}-{high}"))
                elif requested in self.ports and requested not in mine:
                    errors.append(invalid_value(path, requested,
                                                "provided port is already allocated"))
                taken_here.add(requested)
        for port in ports:
            if not port.get("nodePort"):
                port["nodePort"] = self._free_port(taken_here)
                taken_here.add(port["nodePort"])
        return errors

    def _free_port(self, also_taken: set[int]) -> int:
        low, high = self.node_ports
        for _ in range(high - low + 1):
            candidate = self._next_port
            self._next_port = low if candidate >= high else candidate + 1
            if candidate not in self.ports and candidate not in also_taken:
                return candidate
        raise ApiError(500, "InternalError", "Internal error occurred: failed to allocate a "
                       "nodePort: range is full")

    def _cluster_ip(self, obj: Obj, spec: Obj, old_spec: Obj) -> list[FieldError]:
        old_ip = old_spec.get("clusterIP")
        requested = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
        if old_ip and old_spec.get("type") != "ExternalName":
            if not requested:
                requested = old_ip
            if requested != old_ip:
                return [invalid_value("spec.clusterIPs[0]", [requested],
                                      "may not change once set")]
            spec["clusterIP"] = old_ip
            spec["clusterIPs"] = old_spec.get("clusterIPs") or [old_ip]
        elif requested == "None":
            spec["clusterIPs"] = ["None"]
        elif requested:
            try:
                address = ipaddress.ip_address(requested)
            except ValueError:
                return [invalid_value("spec.clusterIPs[0]", requested,
                                      "must be a valid IP address, (e.g. 10.9.8.7 or "
                                      "2001:db8::ffff)")]
            if address not in self.network or address in (self.network.network_address,
                                                          self.network.broadcast_address):
                return [invalid_value("spec.clusterIPs", [requested],
                                      f"failed to allocate IP {requested}: the provided IP "
                                      f"({requested}) is not in the valid range. The range of "
                                      f"valid IPs is {self.network}")]
            if requested in self.ips and self.ips[requested] != obj["metadata"].get("uid"):
                return [invalid_value("spec.clusterIPs", [requested],
                                      f"failed to allocate IP {requested}: provided IP is "
                                      "already allocated")]
            spec["clusterIP"] = requested
            spec["clusterIPs"] = [requested]
        else:
            spec["clusterIP"] = self._free_ip()
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", [self.family])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        return []

    def _free_ip(self) -> str:
        low = int(self.network.network_address) + 1
        high = int(self.network.broadcast_address) - 1
        for _ in range(high - low + 1):
            candidate = self._next_ip
            self._next_ip = low if candidate >= high else candidate + 1
            text = str(ipaddress.ip_address(candidate))
            if text not in self.ips:
                return text
        raise ApiError(500, "InternalError", "Internal error occurred: failed to allocate a "
                       "serviceIP: range is full")

    def committed(self, new: Obj | None, old: Obj | None) -> None:
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            uid = obj["metadata"].get("uid", "")
            spec = obj.get("spec", {})
            for ip in spec.get("clusterIPs") or []:
                if ip != "None":
                    self._mark(self.ips, ip, uid, add)
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and port.get("nodePort"):
                    self._mark(self.ports, port["nodePort"], uid, add)

    @staticmethod
    def _mark(table: dict[Any, str], key: Any, uid: str, add: bool) -> None:
        if add:
            table[key] = uid
        elif table.get(key) == uid:
            del table[key]


class SecretKind(Kind):
    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {}) if string_data or "data" in obj else None
        if data is not None:
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            for key, value in data.items():
                try:
                    base64.b64decode(str(value), validate=True)
                except ValueError:
                    return [invalid_value(f"data[{key}]", "<secret contents redacted>",
                                          "illegal base64 data")]
        return []

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        errors = self.prepare_create(rtype, new)
        if new.get("type") != old.get("type"):
            errors.append(invalid_value("type", new.get("type"), "field is immutable"))
        return errors


class NetworkPolicyKind(Kind):
    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        spec = obj.setdefault("spec", {})
        if "podSelector" not in spec:
            return [required("spec.podSelector")]
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress", *(["Egress"] if "egress" in spec else [])]
        for direction in ("ingress", "egress"):
            for rule in spec.get(direction) or []:
                for port in (rule or {}).get("ports") or []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
        obj.pop("status", None)
        return []


class EndpointSliceKind(Kind):
    TYPES = ("IPv4", "IPv6", "FQDN")

    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        address_type = obj.get("addressType")
        if not address_type:
            return [required("addressType")]
        if address_type not in self.TYPES:
            return [unsupported("addressType", address_type, list(self.TYPES))]
        errors: list[FieldError] = []
        for index, endpoint in enumerate(obj.get("endpoints") or []):
            if not isinstance(endpoint, dict) or not endpoint.get("addresses"):
                errors.append(required(f"endpoints[{index}].addresses"))
        return errors

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        errors = self.prepare_create(rtype, new)
        if new.get("addressType") != old.get("addressType"):
            errors.append(invalid_value("addressType", new.get("addressType"),
                                        "field is immutable"))
        return errors


class EventKind(Kind):
    """Events; those written through events.k8s.io/v1 are validated as that API requires."""

    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        if rtype.group != "events.k8s.io":
            return []
        errors = [required(field) for field in ("eventTime", "reportingController",
                                                 "reportingInstance", "action", "reason")
                  if not obj.get(_EVENTS_V1_TO_CORE.get(field, field))]
        kind = obj.get("type")
        if kind not in ("Normal", "Warning"):
            errors.append(unsupported("type", kind, ["Normal", "Warning"]))
        return errors


class CustomResourceDefinitionKind(Kind):
    def prepare_create(self, rtype: ResourceType, obj: Obj) -> list[FieldError]:
        errors = self._validate(obj)
        spec = obj.get("spec", {})
        storage = [v.get("name") for v in spec.get("versions", []) if v.get("storage")]
        obj["status"] = self.status_for(obj, storage[:1])
        return errors

    def prepare_update(self, rtype: ResourceType, new: Obj, old: Obj) -> list[FieldError]:
        errors = self._validate(new)
        for field in ("group", "scope"):
            if dig(new, "spec", field) != dig(old, "spec", field):
                errors.append(invalid_value(f"spec.{field}", dig(new, "spec", field),
                                            "field is immutable"))
        return errors

    @staticmethod
    def status_for(obj: Obj, stored: list[str]) -> Obj:
        names = clone(dig(obj, "spec", "names") or {})
        names.setdefault("singular", str(names.get("plural", "")))
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        return {"acceptedNames": names, "storedVersions": stored, "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"}]}

    @staticmethod
    def _validate(obj: Obj) -> list[FieldError]:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        errors: list[FieldError] = []
        for field, value in (("spec.group", spec.get("group")),
                             ("spec.names.plural", names.get("plural")),
                             ("spec.names.kind", names.get("kind"))):
            if not value:
                errors.append(required(field))
        if errors:
            return errors
        expected = f"{names['plural']}.{spec['group']}"
        if obj["metadata"]["name"] != expected:
            errors.append(invalid_value("metadata.name", obj["metadata"]["name"],
                                        'must be spec.names.plural+"."+spec.group'))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errors.append(unsupported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"]))
        versions = spec.get("versions") or []
        if not versions:
            errors.append(required("spec.versions"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            errors.append(invalid_value("spec.versions", [v.get("name") for v in versions],
                                        "must have exactly one version marked as storage "
                                        "version"))
        return errors


_EVENTS_V1_TO_CORE = {
    "regarding": "involvedObject", "note": "message", "reportingController": "reportingComponent",
    "deprecatedSource": "source", "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count",
}
_EVENTS_SAME = ("metadata", "eventTime", "series", "action", "reason", "related", "type",
                "reportingInstance")


def event_to_v1(core: Obj) -> Obj:
    """A stored core/v1 Event as events.k8s.io/v1 serves it (the same object, renamed)."""
    out: Obj = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for field in _EVENTS_SAME:
        if field in core:
            out[field] = core[field]
    for v1_field, core_field in _EVENTS_V1_TO_CORE.items():
        if core_field in core:
            out[v1_field] = core[core_field]
    return out


def event_from_v1(event: Obj) -> Obj:
    """An events.k8s.io/v1 Event in its core/v1 storage form."""
    out: Obj = {"kind": "Event", "apiVersion": "v1"}
    for field in _EVENTS_SAME:
        if field in event:
            out[field] = event[field]
    for v1_field, core_field in _EVENTS_V1_TO_CORE.items():
        if v1_field in event:
            out[core_field] = event[v1_field]
    return out
