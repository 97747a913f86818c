"""The API's semantics, independent of HTTP: what create, get, list, update, patch and
delete do to the store, as kube-apiserver's generic registry does it.

Documented behaviour this follows (https://kubernetes.io/docs/reference/using-api/
api-concepts/): "Resource versions" (one counter, list and watch resourceVersion and
resourceVersionMatch semantics, 410 Gone for versions out of the window, 504 "Too large
resource version"), "Retrieving large results sets in chunks" (limit/continue, consistent
at the first page's version), and the registry's rules: optimistic concurrency (409 on a
stale resourceVersion), status subresources, graceful deletion and finalizers
(https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/,
https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination),
namespace lifecycle (objects only in existing, non-terminating namespaces).

Not supported, and what is answered instead: server-side apply
(``application/apply-patch+yaml`` -> 415), strategic merge patch on custom resources (415,
as the real server), deletecollection (405), ``propagationPolicy`` and garbage collection
of dependents (ignored: nothing is cascaded), field validation against schemas
(``fieldValidation`` ignored; CRD schemas are stored, not enforced).
"""

from __future__ import annotations

import base64
import heapq
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from . import errors as err
from .errors import ApiError, FieldError
from .jsonutil import Obj, clone, dig, meta, now_rfc3339
from .kinds import (
    CustomResourceDefinitionKind,
    EndpointSliceKind,
    EventKind,
    Kind,
    NamespaceKind,
    NetworkPolicyKind,
    PodKind,
    SecretKind,
    ServiceKind,
    event_from_v1,
    event_to_v1,
    metadata_errors,
)
from .patch import PatchError, json_patch, merge_patch, strategic_merge
from .resources import ResourceType, builtin_types, custom_types
from .selectors import FieldSelector, LabelSelector, SelectorError
from .store import Key, StorageKey, Store

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
CRD_STORAGE: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES: StorageKey = ("", "namespaces")
PODS: StorageKey = ("", "pods")
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
TOO_LARGE_WAIT = 3.0


@dataclass
class Config:
    service_cluster_ip_range: str = "198.18.128.0/20"
    service_node_port_range: tuple[int, int] = (30000, 32767)
    watch_history: int = 10000
    expire_graceful_deletions: bool = True


@dataclass(frozen=True)
class ListOptions:
    label_selector: str | None = None
    field_selector: str | None = None
    resource_version: str | None = None
    resource_version_match: str | None = None
    limit: int = 0
    continue_token: str | None = None


def parse_rv(text: str, what: str = "resourceVersion") -> int:
    try:
        value = int(text)
    except ValueError:
        raise err.bad_request(f'{what}: Invalid value: "{text}": must be an integer') from None
    if value < 0:
        raise err.bad_request(f'{what}: Invalid value: "{text}": must be non-negative')
    return value


def key_of(obj: Obj) -> Key:
    metadata = obj.get("metadata", {})
    return (metadata.get("namespace") or "", metadata.get("name") or "")


class Selection:
    """Namespace, label and field selectors of a list or watch, checked up front (400)."""

    def __init__(self, rtype: ResourceType, namespace: str | None,
                 label_selector: str | None, field_selector: str | None) -> None:
        try:
            self.labels = LabelSelector.parse(label_selector)
            self.fields = FieldSelector.parse(field_selector)
        except SelectorError as exc:
            raise err.bad_request(str(exc)) from None
        self.getters = rtype.getters()
        for name in self.fields.fields():
            if name not in self.getters:
                raise err.bad_request(rtype.field_error(name))
        self.namespace = namespace

    def matches(self, obj: Obj) -> bool:
        metadata = obj.get("metadata", {})
        if self.namespace and metadata.get("namespace") != self.namespace:
            return False
        return self.labels.matches(metadata.get("labels")) and self.fields.matches(
            obj, self.getters)

    def filtered(self) -> bool:
        return not (self.labels.empty() and self.fields.empty())


class Api:
    """The semantic layer the HTTP handler and the in-process controllers call."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.store = Store(self.config.watch_history)
        self.lock = self.store.lock
        self.services = ServiceKind(self.config.service_cluster_ip_range,
                                    self.config.service_node_port_range)
        self._kinds: dict[StorageKey, Kind] = {
            NAMESPACES: NamespaceKind(), PODS: PodKind(), ("", "services"): self.services,
            ("", "secrets"): SecretKind(), ("", "events"): EventKind(),
            ("networking.k8s.io", "networkpolicies"): NetworkPolicyKind(),
            ("discovery.k8s.io", "endpointslices"): EndpointSliceKind(),
            CRD_STORAGE: CustomResourceDefinitionKind(),
        }
        self._default_kind = Kind()
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rtype in builtin_types():
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._builtin = set(self._types)
        self._expiry: list[tuple[float, StorageKey, Key, str]] = []
        self._expiry_wake = threading.Condition(self.lock)
        self._stopping = False
        self._emptying: set[str] = set()
        self._reaper: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self.config.expire_graceful_deletions:
            self._reaper = threading.Thread(target=self._reap, name="kubeapi-grace", daemon=True)
            self._reaper.start()

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self._expiry_wake.notify_all()
        self.store.close()
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    # --- types --------------------------------------------------------------------------

    def resolve(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self.lock:
            return self._types.get((group, version, plural))

    def served(self) -> list[ResourceType]:
        with self.lock:
            return list(self._types.values())

    def type_for(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.resolve(group, version, plural)
        if rtype is None:
            raise err.route_not_found()
        return rtype

    def kind(self, rtype: ResourceType) -> Kind:
        return self._kinds.get(rtype.storage, self._default_kind)

    # --- representation -----------------------------------------------------------------

    def external(self, rtype: ResourceType, obj: Obj) -> Obj:
        """A stored object as ``rtype``'s version serves it."""
        if rtype.storage_group is not None and rtype.storage_group != rtype.group:
            return event_to_v1(obj)
        if rtype.custom and obj.get("apiVersion") != rtype.api_version:
            out = dict(obj)
            out["apiVersion"] = rtype.api_version
            return out
        return obj

    def _internal(self, rtype: ResourceType, obj: Obj) -> Obj:
        if rtype.storage_group is not None and rtype.storage_group != rtype.group:
            return event_from_v1(obj)
        if rtype.custom:
            obj["apiVersion"] = self._storage_version(rtype)
        return obj

    def _storage_version(self, rtype: ResourceType) -> str:
        crd = self.store.get(CRD_STORAGE, ("", f"{rtype.plural}.{rtype.group}"))
        for version in dig(crd, "spec", "versions") or []:
            if version.get("storage"):
                return f"{rtype.group}/{version.get('name')}"
        return rtype.api_version

    # --- reads --------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str, name: str,
            resource_version: str | None = None) -> Obj:
        if resource_version not in (None, "", "0"):
            self._wait_not_older(parse_rv(str(resource_version)))
        with self.lock:
            obj = self.store.get(rtype.storage, (namespace, name))
            if obj is None:
                raise err.not_found(rtype.group, rtype.plural, name)
            return self.external(rtype, obj)

    def _wait_not_older(self, rv: int) -> None:
        if self.store.rv < rv and not self.store.wait_for(rv, TOO_LARGE_WAIT):
            raise err.too_large_resource_version(rv, self.store.rv)

    def list_objects(self, rtype: ResourceType, namespace: str | None,
                     options: ListOptions) -> Obj:
        selection = Selection(rtype, namespace, options.label_selector, options.field_selector)
        start: Key | None = None
        rv_text = options.resource_version or ""
        match = options.resource_version_match or ""
        if options.continue_token:
            if rv_text not in ("", "0"):
                raise err.bad_request("specifying resource version is not allowed when using "
                                      "continue")
            at, start = self._decode_continue(options.continue_token)
            exact: int | None = at
        else:
            exact = self._list_version(rv_text, match, options.limit)
        with self.lock:
            if exact is None or exact == self.store.rv:
                state: dict[Key, Obj] | None = self.store.objects(rtype.storage)
                at = self.store.rv
            else:
                state = self.store.state_at(rtype.storage, exact)
                at = exact
            if state is None:
                if options.continue_token:
                    raise err.gone("The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without "
                                   "the continue parameter, or use the continue value from "
                                   "the response to the previous request.")
                raise err.gone("The resourceVersion for the provided list is too old.")
            keys = sorted(k for k in state if start is None or k > start)
            items = [state[k] for k in keys if selection.matches(state[k])]
        list_meta: Obj = {"resourceVersion": str(at)}
        if options.limit and len(items) > options.limit:
            rest = len(items) - options.limit
            items = items[:options.limit]
            list_meta["continue"] = self._encode_continue(at, key_of(items[-1]))
            if not selection.filtered():
                list_meta["remainingItemCount"] = rest
        rendered = []
        for item in items:
            out = self.external(rtype, item)
            if not rtype.custom:
                out = {k: v for k, v in out.items() if k not in ("kind", "apiVersion")}
            rendered.append(out)
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                "metadata": list_meta, "items": rendered}

    def _list_version(self, rv_text: str, match: str, limit: int) -> int | None:
        """The exact version a list must be served at (None: the most recent)."""
        if match and not rv_text:
            raise err.bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch is "
                                  "forbidden unless resourceVersion is provided")
        if match not in ("", "Exact", "NotOlderThan"):
            raise err.bad_request(f'resourceVersionMatch: Unsupported value: "{match}": '
                                  'supported values: "Exact", "NotOlderThan"')
        if rv_text in ("", "0"):
            if match == "Exact":
                raise err.bad_request('resourceVersionMatch: Forbidden: resourceVersionMatch '
                                      '"exact" is forbidden for resourceVersion "0"')
            return None
        rv = parse_rv(rv_text)
        self._wait_not_older(rv)
        if match == "Exact" or (not match and limit):
            return rv
        return None

    @staticmethod
    def _encode_continue(rv: int, last: Key) -> str:
        token = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(last)})
        return base64.urlsafe_b64encode(token.encode()).decode()

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, Key]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            start = data["start"]
            return int(data["rv"]), (str(start[0]), str(start[1]))
        except (ValueError, KeyError, TypeError, IndexError):
            raise err.bad_request("continue key is not valid: incorrect encoded start "
                                  "resourceVersion (version meta.k8s.io/v1)") from None

    # --- create -------------------------------------------------------------------------

    def _check_body(self, rtype: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise err.bad_request("the object provided is unrecognized (must be a JSON object)")
        api_version = body.get("apiVersion") or rtype.api_version
        kind = body.get("kind") or rtype.kind
        if api_version != rtype.api_version or kind != rtype.kind:
            raise err.bad_request(f"the API version in the data ({api_version}) does not match "
                                  f"the expected API version ({rtype.api_version})"
                                  if api_version != rtype.api_version else
                                  f"the kind in the data ({kind}) does not match the expected "
                                  f"kind ({rtype.kind})")
        obj: Obj = clone(body)
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta(obj)
        return obj

    def _check_namespace(self, rtype: ResourceType, obj: Obj, namespace: str) -> None:
        metadata = obj["metadata"]
        if not rtype.namespaced:
            metadata.pop("namespace", None)
            return
        if metadata.get("namespace") and metadata["namespace"] != namespace:
            raise err.bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
        metadata["namespace"] = namespace

    def create(self, rtype: ResourceType, namespace: str, body: Any,
               dry_run: bool = False) -> Obj:
        obj = self._check_body(rtype, body)
        self._check_namespace(rtype, obj, namespace)
        metadata = obj["metadata"]
        if metadata.get("resourceVersion"):
            raise err.server_error("resourceVersion should not be set on objects to be created")
        with self.lock:
            if not metadata.get("name") and metadata.get("generateName"):
                metadata["name"] = self._generate_name(rtype, namespace,
                                                       str(metadata["generateName"]))
            name = str(metadata.get("name") or "")
            if not name:
                raise err.invalid(rtype.group, rtype.kind, "", [err.required(
                    "metadata.name", "name or generateName is required")])
            self._admit_namespace(rtype, namespace, name)
            if self.store.get(rtype.storage, (namespace, name)) is not None:
                raise err.already_exists(rtype.group, rtype.plural, name)
            obj = self._internal(rtype, obj)
            metadata = obj["metadata"]
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                          "resourceVersion"):
                metadata.pop(field, None)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = now_rfc3339()
            if rtype.generation != "none":
                metadata["generation"] = 1
            else:
                metadata.pop("generation", None)
            if rtype.custom and rtype.status:
                obj.pop("status", None)
            kind = self.kind(rtype)
            problems = kind.name_errors(name) + metadata_errors(obj) + kind.prepare_create(
                rtype, obj)
            if problems:
                raise err.invalid(rtype.group, rtype.kind, name, problems)
            if dry_run:
                return self.external(rtype, obj)
            stored = self.store.commit(rtype.storage, (namespace, name), obj)
            kind.committed(stored, None)
            self._after_commit(rtype, stored, None)
            return self.external(rtype, stored)

    def _generate_name(self, rtype: ResourceType, namespace: str, prefix: str) -> str:
        for _ in range(100):
            name = prefix[:58] + "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))
            if self.store.get(rtype.storage, (namespace, name)) is None:
                return name
        raise ApiError(500, "InternalError", "Internal error occurred: could not generate a "
                       "unique name")

    def _admit_namespace(self, rtype: ResourceType, namespace: str, name: str) -> None:
        """NamespaceLifecycle admission: the namespace must exist and not be terminating."""
        if not rtype.namespaced:
            return
        ns = self.store.get(NAMESPACES, ("", namespace))
        if ns is None:
            raise err.not_found("", "namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise err.forbidden_error(rtype.group, rtype.plural, name,
                                      f"unable to create new content in namespace {namespace} "
                                      "because it is being terminated")

    # --- update and patch ---------------------------------------------------------------

    def update(self, rtype: ResourceType, namespace: str, name: str, body: Any,
               subresource: str = "", dry_run: bool = False) -> tuple[Obj, bool]:
        """PUT; returns the object and whether it was created (AllowCreateOnUpdate)."""
        obj = self._check_body(rtype, body)
        metadata = obj["metadata"]
        if metadata.get("name") and metadata["name"] != name:
            raise err.bad_request(f"the name of the object ({metadata['name']}) does not match "
                                  f"the name on the URL ({name})")
        metadata["name"] = name
        self._check_namespace(rtype, obj, namespace)
        with self.lock:
            old = self.store.get(rtype.storage, (namespace, name))
            if old is None:
                if rtype.create_on_update and not subresource:
                    metadata.pop("resourceVersion", None)
                    return self.create(rtype, namespace, obj, dry_run), True
                raise err.not_found(rtype.group, rtype.plural, name)
            wanted = str(metadata.get("resourceVersion") or "")
            if not wanted and not rtype.unconditional_update:
                raise err.invalid(rtype.group, rtype.plural, name, [err.invalid_value(
                    "metadata.resourceVersion", "0x0", "must be specified for an update")])
            return self._write(rtype, self._internal(rtype, obj), old, wanted, subresource,
                               dry_run), False

    def patch(self, rtype: ResourceType, namespace: str, name: str, content_type: str,
              raw: bytes, subresource: str = "", dry_run: bool = False) -> Obj:
        patch_type = content_type.split(";", 1)[0].strip().lower()
        accepted = [JSON_PATCH, MERGE_PATCH] + ([] if rtype.custom else [STRATEGIC_PATCH])
        if patch_type not in accepted:
            raise err.unsupported_media_type(content_type, [*accepted, APPLY_PATCH])
        try:
            document = json.loads(raw or b"null")
        except ValueError as exc:
            raise err.bad_request(f"error decoding patch: {exc}") from None
        with self.lock:
            old = self.store.get(rtype.storage, (namespace, name))
            if old is None:
                raise err.not_found(rtype.group, rtype.plural, name)
            current = clone(self.external(rtype, old))
            try:
                if patch_type == JSON_PATCH:
                    patched = json_patch(current, document)
                elif patch_type == MERGE_PATCH:
                    patched = merge_patch(current, document)
                else:
                    patched = strategic_merge(current, document, rtype.smp_schema or {})
            except PatchError as exc:
                if exc.apply_failed:
                    raise ApiError(422, "Invalid", str(exc)) from None
                raise err.bad_request(str(exc)) from None
            obj = self._check_body(rtype, patched)
            metadata = obj["metadata"]
            if metadata.get("name") != name:
                raise err.bad_request(f"the name of the object ({metadata.get('name')}) does "
                                      f"not match the name on the URL ({name})")
            self._check_namespace(rtype, obj, namespace)
            wanted = str(metadata.get("resourceVersion") or "")
            return self._write(rtype, self._internal(rtype, obj), old, wanted, subresource,
                               dry_run)

    def _write(self, rtype: ResourceType, new: Obj, old: Obj, wanted_rv: str, subresource: str,
               dry_run: bool) -> Obj:
        """The common end of update and patch (lock held): checks, defaults, commit."""
        name = old["metadata"]["name"]
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise err.conflict(rtype.group, rtype.plural, name)
        if subresource == "status":
            status = new.get("status")
            new = clone(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            if rtype.status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            self._keep_system_metadata(new, old)
            problems = metadata_errors(new) + self._finalizer_errors(new, old)
            kind = self.kind(rtype)
            problems += kind.prepare_update(rtype, new, old)
            if problems:
                raise err.invalid(rtype.group, rtype.kind, name, problems)
            self._bump_generation(rtype, new, old)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old or dry_run:
            return self.external(rtype, new if dry_run else old)
        return self.external(rtype, self._commit_or_finalize(rtype, new, old))

    @staticmethod
    def _keep_system_metadata(new: Obj, old: Obj) -> None:
        metadata, old_meta = new["metadata"], old["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
            if field in old_meta:
                metadata[field] = old_meta[field]
            else:
                metadata.pop(field, None)
        metadata.pop("selfLink", None)

    @staticmethod
    def _finalizer_errors(new: Obj, old: Obj) -> list[FieldError]:
        if not old["metadata"].get("deletionTimestamp"):
            return []
        added = set(new["metadata"].get("finalizers") or []) - set(
            old["metadata"].get("finalizers") or [])
        if added:
            return [err.forbidden("metadata.finalizers",
                                  "no new finalizers can be added if the object is being "
                                  "deleted, found new finalizers " + json.dumps(sorted(added)))]
        return []

    @staticmethod
    def _bump_generation(rtype: ResourceType, new: Obj, old: Obj) -> None:
        if rtype.generation == "none":
            return
        if rtype.generation == "spec":
            changed = new.get("spec") != old.get("spec")
        else:
            skip = ("metadata", "status") if rtype.status else ("metadata",)
            changed = ({k: v for k, v in new.items() if k not in skip}
                       != {k: v for k, v in old.items() if k not in skip})
            if rtype.kind == "EndpointSlice":
                changed = changed or new["metadata"].get("labels") != old["metadata"].get(
                    "labels")
        generation = int(old["metadata"].get("generation") or 1)
        new["metadata"]["generation"] = generation + 1 if changed else generation

    def _commit_or_finalize(self, rtype: ResourceType, new: Obj, old: Obj) -> Obj:
        """Store ``new``; an object being deleted whose finalizers are gone is removed."""
        metadata = new["metadata"]
        key = key_of(old)
        if (metadata.get("deletionTimestamp") and not metadata.get("finalizers")
                and metadata.get("deletionGracePeriodSeconds") in (0, None)):
            return self._remove(rtype, key, new)
        stored = self.store.commit(rtype.storage, key, new)
        self.kind(rtype).committed(stored, old)
        self._after_commit(rtype, stored, old)
        return stored

    def write_internal(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Store a full object as a controller inside the server would (lock held)."""
        old = self.store.get(rtype.storage, key_of(obj))
        if old is None:
            raise err.not_found(rtype.group, rtype.plural, key_of(obj)[1])
        return self._commit_or_finalize(rtype, obj, old)

    # --- delete -------------------------------------------------------------------------

    def delete(self, rtype: ResourceType, namespace: str, name: str, options: Obj,
               dry_run: bool = False) -> Obj:
        with self.lock:
            old = self.store.get(rtype.storage, (namespace, name))
            if old is None:
                raise err.not_found(rtype.group, rtype.plural, name)
            self._check_preconditions(rtype, old, options.get("preconditions") or {})
            if rtype.storage == NAMESPACES and name in PROTECTED_NAMESPACES:
                raise err.forbidden_error("", "namespaces", name,
                                          "this namespace may not be deleted")
            requested = options.get("gracePeriodSeconds")
            period = self.kind(rtype).grace_period(
                old, int(requested) if requested is not None else None)
            if dry_run:
                return self.external(rtype, old)
            return self._delete(rtype, old, period)

    def _check_preconditions(self, rtype: ResourceType, obj: Obj, preconditions: Obj) -> None:
        metadata = obj["metadata"]
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = preconditions.get(field)
            if wanted and wanted != metadata.get(field):
                raise err.conflict(rtype.group, rtype.plural, metadata["name"],
                                   f"Precondition failed: {label} in precondition: {wanted}, "
                                   f"{label} in object meta: {metadata.get(field)}")

    def _delete(self, rtype: ResourceType, old: Obj, period: int) -> Obj:
        """Graceful deletion, finalizers, or removal (lock held)."""
        metadata = old["metadata"]
        key = key_of(old)
        pending = metadata.get("deletionTimestamp")
        blocked = bool(metadata.get("finalizers")) or rtype.storage == NAMESPACES
        if not period and not blocked:
            removed = self._remove(rtype, key, old)
            if rtype.return_deleted:
                return self.external(rtype, removed)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": metadata["name"], "group": rtype.group,
                                "kind": rtype.plural, "uid": metadata.get("uid")}}
        current_period = metadata.get("deletionGracePeriodSeconds")
        if pending and current_period is not None and period >= int(current_period):
            return self.external(rtype, old)
        new = clone(old)
        new["metadata"]["deletionTimestamp"] = now_rfc3339(period)
        new["metadata"]["deletionGracePeriodSeconds"] = period
        if rtype.storage == NAMESPACES:
            new.setdefault("status", {})["phase"] = "Terminating"
        stored = self.store.commit(rtype.storage, key, new)
        self.kind(rtype).committed(stored, old)
        if period and self.config.expire_graceful_deletions:
            heapq.heappush(self._expiry, (time.monotonic() + period, rtype.storage, key,
                                          str(metadata.get("uid"))))
            self._expiry_wake.notify_all()
        self._after_commit(rtype, stored, old)
        return self.external(rtype, stored)

    def _remove(self, rtype: ResourceType, key: Key, old: Obj) -> Obj:
        removed = self.store.remove(rtype.storage, key)
        self.kind(rtype).committed(None, old)
        self._after_commit(rtype, None, old)
        return removed

    def _reap(self) -> None:
        """Finish graceful deletions whose period ran out (the kubelet's final DELETE)."""
        with self.lock:
            while not self._stopping:
                if not self._expiry:
                    self._expiry_wake.wait()
                    continue
                due, storage, key, uid = self._expiry[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._expiry_wake.wait(wait)
                    continue
                heapq.heappop(self._expiry)
                obj = self.store.get(storage, key)
                if obj is None or obj["metadata"].get("uid") != uid:
                    continue
                rtype = self._type_of_storage(storage)
                if rtype is not None:
                    self._delete(rtype, obj, 0)

    def _type_of_storage(self, storage: StorageKey) -> ResourceType | None:
        for rtype in self._types.values():
            if rtype.storage == storage and rtype.storage_group in (None, rtype.group):
                return rtype
        return None

    # --- cross-resource effects ---------------------------------------------------------

    def _primary_types(self) -> list[ResourceType]:
        """One type per storage key (the first version served; no events.k8s.io alias)."""
        seen: dict[StorageKey, ResourceType] = {}
        for rtype in self._types.values():
            if rtype.storage_group in (None, rtype.group):
                seen.setdefault(rtype.storage, rtype)
        return list(seen.values())

    def _after_commit(self, rtype: ResourceType, new: Obj | None, old: Obj | None) -> None:
        """What other parts of the real control plane do on these writes (lock held)."""
        if rtype.storage == CRD_STORAGE:
            self._crd_changed(new, old)
        elif rtype.storage == NAMESPACES and new is not None and new["metadata"].get(
                "deletionTimestamp"):
            self._empty_namespace(new["metadata"]["name"])
        elif rtype.namespaced and old is not None and new is None:
            self._empty_namespace(key_of(old)[0])

    def _empty_namespace(self, name: str) -> None:
        """The namespace controller: delete what a terminating namespace holds, then it."""
        namespace = self.store.get(NAMESPACES, ("", name))
        if (namespace is None or not namespace["metadata"].get("deletionTimestamp")
                or name in self._emptying):
            return
        self._emptying.add(name)
        try:
            remaining = False
            for rtype in self._primary_types():
                if not rtype.namespaced:
                    continue
                for key, obj in list(self.store.objects(rtype.storage).items()):
                    if key[0] != name:
                        continue
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete(rtype, obj, self.kind(rtype).grace_period(obj, None))
                    remaining = remaining or self.store.get(rtype.storage, key) is not None
        finally:
            self._emptying.discard(name)
        namespace = self.store.get(NAMESPACES, ("", name))
        if not remaining and namespace is not None and not namespace["metadata"].get(
                "finalizers"):
            self._remove(self._types[("", "v1", "namespaces")], ("", name), namespace)

    def _crd_changed(self, new: Obj | None, old: Obj | None) -> None:
        """Serve (or stop serving) a CRD's group/version/plural; its objects go with it."""
        if old is not None:
            for rtype in custom_types(old):
                self._types.pop((rtype.group, rtype.version, rtype.plural), None)
        if new is not None:
            for rtype in custom_types(new):
                type_key = (rtype.group, rtype.version, rtype.plural)
                if type_key not in self._builtin:
                    self._types[type_key] = rtype
            return
        if old is not None:
            spec = old.get("spec", {})
            storage = (str(spec.get("group", "")), str(dig(spec, "names", "plural") or ""))
            for object_key in list(self.store.objects(storage)):
                self.store.remove(storage, object_key)

    # --- pods/binding -------------------------------------------------------------------

    def bind(self, namespace: str, name: str, body: Any) -> Obj:
        """POST pods/NAME/binding: what the scheduler does to place a pod on a node."""
        target = body.get("target") if isinstance(body, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not node:
            raise err.invalid("", "Binding", name, [err.required("target.name")])
        pods = self._types[("", "v1", "pods")]
        with self.lock:
            pod = self.store.get(PODS, (namespace, name))
            if pod is None:
                raise err.not_found("", "pods", name)
            if pod["metadata"].get("deletionTimestamp"):
                raise err.conflict("", "pods", name, "pod is being deleted, cannot be assigned "
                                   "to a host")
            if dig(pod, "spec", "nodeName"):
                raise err.conflict("", "pods", name, f'pod {name} is already assigned to node '
                                   f'"{pod["spec"]["nodeName"]}"')
            new = clone(pod)
            new["spec"]["nodeName"] = node
            conditions = new.setdefault("status", {}).setdefault("conditions", [])
            conditions[:] = [c for c in conditions if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True",
                               "lastTransitionTime": now_rfc3339()})
            self.write_internal(pods, new)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    # --- seeds --------------------------------------------------------------------------

    def seed(self, port: int, advertise_address: str) -> None:
        """What a new cluster has: its namespaces and the default/kubernetes Service."""
        namespaces = self._types[("", "v1", "namespaces")]
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(namespaces, "", {"metadata": {"name": name}})
        services = self._types[("", "v1", "services")]
        self.create(services, "default", {
            "metadata": {"name": "kubernetes",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": self.services.first_address,
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": port}]}})
        self.create(self._types[("", "v1", "endpoints")], "default", {
            "metadata": {"name": "kubernetes",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise_address}],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]})
        self.create(self._types[("discovery.k8s.io", "v1", "endpointslices")], "default", {
            "metadata": {"name": "kubernetes",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv6" if ":" in advertise_address else "IPv4",
            "endpoints": [{"addresses": [advertise_address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
