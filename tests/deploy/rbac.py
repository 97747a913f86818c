"""Does RBAC allow what a user did?  The manifests' roles against the API server's request log.

The test API server (``ovn_underlay.lab.kubeapi``, ``--request-log`` or
``KubeApiServer.request_log()``) records every request as a JSON object: ``user``,
``method``, ``verb``, ``apiGroup``, ``resource``, ``subresource``, ``namespace``, ``name``
(``nonResourceURL`` instead for paths outside ``/api`` and ``/apis``).  It authorizes
nothing, so a test can run the real code with a service account's token and ask
afterwards whether the RBAC rules in ``deploy/`` would have allowed every request:
:func:`uncovered` answers with the requests that no rule allows.

The rules are evaluated as kube-apiserver's RBAC authorizer does
(``plugin/pkg/auth/authorizer/rbac``): a ``ClusterRoleBinding`` grants its role's rules in
every namespace and for cluster-scoped resources and non-resource URLs; a
``RoleBinding`` grants its ``Role``'s or ``ClusterRole``'s resource rules in its own
namespace only.  A rule allows a request when its ``verbs``, ``apiGroups`` and
``resources`` contain the request's (or ``*``; ``resource/subresource`` for a
subresource, ``*/subresource`` too) and, when it has ``resourceNames``, the request's
name is one of them (a request without a name, such as a create or a list, never
matches a rule with names).  Subjects: the ``ServiceAccount`` itself, a ``User`` of its
user name, or a ``Group`` it is in (``system:serviceaccounts``,
``system:serviceaccounts:<namespace>``, ``system:authenticated``).  Every cluster also
has the default roles bound to ``system:authenticated`` (:data:`DEFAULT_RULES`).

Not modelled: ``aggregationRule`` ClusterRoles (none in ``deploy/``: a role with one is
refused), and the name that kube-apiserver takes from a list's or watch's
``fieldSelector=metadata.name=...`` (the log has no query, so such a request counts as
unnamed: stricter than the real server, never looser).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Request:
    """One authorization question: may the user do ``verb`` on this (or this URL)?"""

    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    non_resource_url: str = ""

    @property
    def combined_resource(self) -> str:
        """``resource`` or ``resource/subresource``, as RBAC rules name it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        if self.non_resource_url:
            return f"{self.verb} {self.non_resource_url}"
        group = self.api_group or "core"
        where = f" in namespace {self.namespace}" if self.namespace else ""
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.combined_resource}{name} ({group}){where}"


def request_verb(method: str, name: str, watch: bool = False) -> str:
    """The RBAC verb of an HTTP request, as kube-apiserver's RequestInfo derives it.

    GET: ``get`` with a name, else ``watch`` with ``watch=true``, else ``list``; POST
    ``create``; PUT ``update``; PATCH ``patch``; DELETE: ``delete`` with a name, else
    ``deletecollection``.  ValueError for any other method.
    """
    method = method.upper()
    if method == "GET":
        return "get" if name else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch"}
    if method not in verbs:
        raise ValueError(f"no RBAC verb for HTTP method {method}")
    return verbs[method]


def request_of(entry: Mapping[str, Any]) -> Request:
    """The request of one log entry.

    The verb is the logged one (the server saw the query, e.g. ``watch=true``), checked
    against the method: ValueError when :func:`request_verb` would not give it, or when
    an entry has neither a verb nor a method.
    """
    name = str(entry.get("name") or "")
    method = str(entry.get("method") or "")
    verb = str(entry.get("verb") or "")
    if not verb and not method:
        raise ValueError(f"log entry with neither verb nor method: {dict(entry)}")
    url = str(entry.get("nonResourceURL") or "")
    if url:
        return Request(verb=verb or method.lower(), non_resource_url=url)
    if method:
        derived = request_verb(method, name, watch=verb == "watch")
        if verb and verb != derived:
            raise ValueError(f"log entry's verb {verb!r} is not what {method} gives "
                             f"({derived!r}): {dict(entry)}")
        verb = derived
    return Request(verb=verb, api_group=str(entry.get("apiGroup") or ""),
                   resource=str(entry.get("resource") or ""),
                   subresource=str(entry.get("subresource") or ""),
                   namespace=str(entry.get("namespace") or ""), name=name)


def requests_of(entries: Iterable[Mapping[str, Any]], user: str) -> list[Request]:
    """The distinct requests ``user`` made, in the order first made."""
    seen: dict[Request, None] = {}
    for entry in entries:
        if entry.get("user") == user:
            seen.setdefault(request_of(entry), None)
    return list(seen)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a JSON-lines request log (blank lines skipped)."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass(frozen=True)
class Rule:
    """An RBAC PolicyRule."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(verbs=tuple(rule.get("verbs") or ()),
                   api_groups=tuple(rule.get("apiGroups") or ()),
                   resources=tuple(rule.get("resources") or ()),
                   resource_names=tuple(rule.get("resourceNames") or ()),
                   non_resource_urls=tuple(rule.get("nonResourceURLs") or ()))

    def allows(self, request: Request) -> bool:
        """Whether this rule allows ``request`` (module docstring)."""
        if request.verb not in self.verbs and "*" not in self.verbs:
            return False
        if request.non_resource_url:
            return any(_url_matches(pattern, request.non_resource_url)
                       for pattern in self.non_resource_urls)
        if request.api_group not in self.api_groups and "*" not in self.api_groups:
            return False
        if not any(_resource_matches(r, request) for r in self.resources):
            return False
        return not self.resource_names or request.name in self.resource_names


def _url_matches(pattern: str, url: str) -> bool:
    if pattern in ("*", url):
        return True
    return pattern.endswith("*") and url.startswith(pattern[:-1])


def _resource_matches(pattern: str, request: Request) -> bool:
    if pattern in ("*", request.combined_resource):
        return True
    return bool(request.subresource) and pattern == f"*/{request.subresource}"


@dataclass(frozen=True)
class Grant:
    """A rule a binding grants: everywhere (``namespace`` None) or in one namespace."""

    rule: Rule
    namespace: str | None = None
    source: str = ""
    """Which binding and role it comes from, for messages."""
    def allows(self, request: Request) -> bool:
        if self.namespace is not None and (request.non_resource_url
                                           or request.namespace != self.namespace):
            return False
        return self.rule.allows(request)


DEFAULT_RULES = (
    Rule(verbs=("get",), non_resource_urls=(
        "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
        "/readyz", "/version", "/version/")),
    Rule(verbs=("create",), api_groups=("authorization.k8s.io",),
         resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews")),
    Rule(verbs=("create",), api_groups=("authentication.k8s.io",),
         resources=("selfsubjectreviews",)),
)
"""What kube-apiserver's default ClusterRoles bound to ``system:authenticated`` allow:
``system:discovery`` and ``system:public-info-viewer`` (discovery, health and version
URLs) and ``system:basic-user`` (reviews of one's own access)."""


def service_account_user(namespace: str, name: str) -> str:
    """The user name of a ServiceAccount's tokens."""
    return f"system:serviceaccount:{namespace}:{name}"


def load_manifests(directory: Path = DEPLOY) -> list[dict[str, Any]]:
    """Every object of the files that ``directory``'s kustomization.yaml lists, in order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects.extend(doc for doc in yaml.safe_load_all((directory / name).read_text())
                       if doc)
    return objects


def grants_for(manifests: Sequence[Mapping[str, Any]], namespace: str,
               name: str) -> list[Grant]:
    """The rules that the bindings in ``manifests`` (plus :data:`DEFAULT_RULES`) grant the
    ServiceAccount ``namespace/name``.

    ValueError for a binding of it to a role that ``manifests`` lack, or to an
    aggregated ClusterRole.
    """
    user = service_account_user(namespace, name)
    groups = {"system:serviceaccounts", f"system:serviceaccounts:{namespace}",
              "system:authenticated"}
    cluster_roles = {_meta(o, "name"): o for o in manifests
                     if o.get("kind") == "ClusterRole" and _is_rbac(o)}
    roles = {(_meta(o, "namespace"), _meta(o, "name")): o for o in manifests
             if o.get("kind") == "Role" and _is_rbac(o)}
    grants = [Grant(rule, None, "default roles of system:authenticated")
              for rule in DEFAULT_RULES]
    for binding in manifests:
        kind = binding.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding") or not _is_rbac(binding):
            continue
        scope = _meta(binding, "namespace") if kind == "RoleBinding" else None
        if not any(_subject_is(s, scope, namespace, name, user, groups)
                   for s in binding.get("subjects") or ()):
            continue
        ref = binding["roleRef"]
        source = f"{kind} {_meta(binding, 'name')} -> {ref['kind']} {ref['name']}"
        if ref["kind"] == "ClusterRole":
            role = cluster_roles.get(ref["name"])
        else:
            role = roles.get((scope or "", ref["name"]))
        if role is None:
            raise ValueError(f"{source}: no such role in the manifests")
        if role.get("aggregationRule"):
            raise ValueError(f"{source}: aggregated ClusterRoles are not modelled")
        for rule in role.get("rules") or ():
            parsed = Rule.from_dict(rule)
            if scope is not None and parsed.non_resource_urls:
                continue
            grants.append(Grant(parsed, scope, source))
    return grants


def _is_rbac(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(RBAC_GROUP + "/")


def _meta(obj: Mapping[str, Any], key: str) -> str:
    return str((obj.get("metadata") or {}).get(key) or "")


def _subject_is(subject: Mapping[str, Any], scope: str | None, namespace: str, name: str,
                user: str, groups: set[str]) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return (subject.get("name") == name
                and (subject.get("namespace") or scope) == namespace)
    if kind == "User":
        return subject.get("name") == user
    if kind == "Group":
        return subject.get("name") in groups
    return False


def uncovered(requests: Iterable[Request], grants: Sequence[Grant]) -> list[Request]:
    """The requests that none of ``grants`` allows."""
    return [r for r in requests if not any(g.allows(r) for g in grants)]


@dataclass(frozen=True)
class Permission:
    """One verb on one resource (or URL) that a binding grants: a rule, taken apart."""

    grant: Grant
    verb: str
    api_group: str = ""
    resource: str = ""
    non_resource_url: str = ""

    def allows(self, request: Request) -> bool:
        rule = self.grant.rule
        if self.non_resource_url:
            one = Rule(verbs=(self.verb,), non_resource_urls=(self.non_resource_url,))
        else:
            one = Rule(verbs=(self.verb,), api_groups=(self.api_group,),
                       resources=(self.resource,), resource_names=rule.resource_names)
        return Grant(one, self.grant.namespace).allows(request)

    def __str__(self) -> str:
        if self.non_resource_url:
            return f"{self.verb} {self.non_resource_url} ({self.grant.source})"
        names = ",".join(self.grant.rule.resource_names)
        names = f" {names}" if names else ""
        return (f"{self.verb} {self.resource}{names} ({self.api_group or 'core'}) "
                f"from {self.grant.source}")


def permissions(grants: Iterable[Grant]) -> list[Permission]:
    """Every (verb, apiGroup, resource) and (verb, URL) that ``grants`` name, apart from
    :data:`DEFAULT_RULES`'."""
    out = []
    for grant in grants:
        if grant.rule in DEFAULT_RULES:
            continue
        rule = grant.rule
        for verb in rule.verbs:
            out.extend(Permission(grant, verb, non_resource_url=url)
                       for url in rule.non_resource_urls)
            out.extend(Permission(grant, verb, group, resource)
                       for group in rule.api_groups for resource in rule.resources)
    return out


def unexercised(requests: Sequence[Request], grants: Sequence[Grant]) -> list[Permission]:
    """The permissions that ``grants`` give and that none of ``requests`` needed: what a
    least-privilege review must justify by something the requests did not do."""
    return [p for p in permissions(grants) if not any(p.allows(r) for r in requests)]


def check_log(entries: Iterable[Mapping[str, Any]], manifests: Sequence[Mapping[str, Any]],
              namespace: str, name: str) -> list[Request]:
    """The requests the ServiceAccount ``namespace/name`` made (its user name in the log)
    that the manifests' RBAC does not allow."""
    user = service_account_user(namespace, name)
    return uncovered(requests_of(entries, user), grants_for(manifests, namespace, name))


def describe(missing: Sequence[Request], namespace: str, name: str) -> str:
    """A failure message naming every request RBAC does not allow."""
    lines = "\n".join(f"  - {request}" for request in missing)
    return (f"the RBAC rules bound to ServiceAccount {namespace}/{name} in deploy/ do not "
            f"allow {len(missing)} request(s) it made:\n{lines}")
