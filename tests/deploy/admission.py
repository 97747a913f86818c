"""A ValidatingAdmissionPolicy evaluated offline, as kube-apiserver evaluates it.

:func:`admit` takes a policy (the object in ``deploy/``), an admission request and the
object before and after, and answers as the API server's admission would with the
policy bound ``validationActions: [Deny]``: allowed, or denied with the message.  The
steps are the API server's: the request must match a ``matchConstraints.resourceRules``
entry (group, resource or ``resource/subresource``, operation) and every
``matchConditions`` expression, else the policy does not apply; then the
``variables`` (in order, each seeing the earlier ones as ``variables.NAME``) and the
``validations``, each of which must be true.  An expression that fails to evaluate
denies under ``failurePolicy: Fail`` and is ignored under ``Ignore``.

The expressions run on cel-python, a CEL implementation of the language's standard
definitions (macros ``has``, ``filter``, ``all``, ``exists``; ``in``, ``size``, equality
of lists and maps, errors absorbed by ``||`` and ``&&`` as CEL specifies).  Not
available: Kubernetes' CEL libraries (``authorizer``, ``quantity``, ``url``, regex
extensions...), which the policy in ``deploy/`` does not use; variables are evaluated
eagerly (an error is kept and raised where the variable is read, which is what a lazy
evaluation yields for the result).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""
    applied: bool = True
    """False: the policy did not match the request (so it allowed it)."""


def request(*, user: str, operation: str, resource: str, name: str, group: str = "",
            version: str = "v1", subresource: str = "", namespace: str = "",
            extra: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """An admission request as a policy sees it (``request.*``)."""
    info: dict[str, Any] = {"username": user, "groups": ["system:authenticated"]}
    if extra is not None:
        info["extra"] = dict(extra)
    return {"operation": operation, "name": name, "namespace": namespace,
            "resource": {"group": group, "version": version, "resource": resource},
            "subResource": subresource, "userInfo": info}


def admit(policy: Mapping[str, Any], req: Mapping[str, Any],
          obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> Decision:
    """What the API server's admission answers (module docstring)."""
    spec = policy["spec"]
    if not _matches(spec["matchConstraints"], req):
        return Decision(True, applied=False)
    env = celpy.Environment()
    fail_closed = spec.get("failurePolicy", "Fail") == "Fail"
    activation: dict[str, Any] = {"request": json_to_cel(dict(req)),
                                  "object": json_to_cel(None if obj is None else dict(obj)),
                                  "oldObject": json_to_cel(None if old is None else dict(old)),
                                  "params": json_to_cel(None)}
    for condition in spec.get("matchConditions", []):
        try:
            if not _evaluate(env, condition["expression"], activation):
                return Decision(True, applied=False)
        except CELEvalError as exc:
            if fail_closed:
                return Decision(False, f"match condition {condition['name']}: {exc.args[0]}")
            return Decision(True, applied=False)
    variables: dict[celtypes.StringType, Any] = {}
    for variable in spec.get("variables", []):
        activation["variables"] = celtypes.MapType(variables)
        try:
            value = _evaluate(env, variable["expression"], activation)
        except CELEvalError as exc:
            value = exc
        variables[celtypes.StringType(variable["name"])] = value
    activation["variables"] = celtypes.MapType(variables)
    for validation in spec["validations"]:
        try:
            ok = _evaluate(env, validation["expression"], activation)
        except CELEvalError as exc:
            if fail_closed:
                return Decision(False, f"{validation['expression']}: {exc.args[0]}")
            continue
        if not ok:
            return Decision(False, _message(env, validation, activation))
    return Decision(True)


def _evaluate(env: celpy.Environment, expression: str, activation: dict[str, Any]) -> Any:
    result = env.program(env.compile(expression)).evaluate(activation)
    if isinstance(result, CELEvalError):
        raise result
    return result


def _message(env: celpy.Environment, validation: Mapping[str, Any],
             activation: dict[str, Any]) -> str:
    if "messageExpression" in validation:
        try:
            return str(_evaluate(env, validation["messageExpression"], activation))
        except CELEvalError:
            pass
    return str(validation.get("message") or f"failed expression: {validation['expression']}")


def _matches(constraints: Mapping[str, Any], req: Mapping[str, Any]) -> bool:
    resource = req["resource"]
    combined = resource["resource"] + (f"/{req['subResource']}" if req["subResource"] else "")
    for rule in constraints.get("resourceRules", []):
        if (_has(rule.get("apiGroups", []), resource["group"])
                and _has(rule.get("apiVersions", []), resource["version"])
                and _has(rule.get("operations", []), req["operation"])
                and _has(rule.get("resources", []), combined)):
            return True
    return False


def _has(values: list[str], value: str) -> bool:
    return value in values or "*" in values
