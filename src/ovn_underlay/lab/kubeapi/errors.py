"""API errors as the ``Status`` objects kube-apiserver answers with.

Messages follow k8s.io/apimachinery/pkg/api/errors (``pods "x" not found``,
``Operation cannot be fulfilled on ...``, ``Service "x" is invalid: ...``), so that
clients which match on reason or code (client-go, lightkube, kubectl) behave as
against a real server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


def qualified(group: str, plural: str) -> str:
    """``pods`` for the core group, ``leases.coordination.k8s.io`` otherwise."""
    return f"{plural}.{group}" if group else plural


@dataclass(frozen=True)
class FieldError:
    """One cause of an Invalid (422) answer, as field.Error renders it."""

    field: str
    kind: str  # "Invalid value", "Required value", "Forbidden", "Duplicate value", ...
    detail: str
    value: Any = None
    has_value: bool = False

    def message(self) -> str:
        """The text after ``<field>: `` in the Status message."""
        if self.has_value:
            value = self.value
            raw = isinstance(value, str) and value.startswith("0x")
            shown = value if raw else json.dumps(value)
            if self.detail:
                return f"{self.kind}: {shown}: {self.detail}"
            return f"{self.kind}: {shown}"
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


def invalid_value(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "Invalid value", detail, value, True)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, "Required value", detail)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(field, "Forbidden", detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError(field, "Duplicate value", "", value, True)


def unsupported(field: str, value: Any, allowed: list[str]) -> FieldError:
    shown = ", ".join(json.dumps(a) for a in allowed)
    return FieldError(field, "Unsupported value", f"supported values: {shown}", value, True)


REASONS = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
    "Unsupported value": "FieldValueNotSupported",
}


class ApiError(Exception):
    """An error answered as a ``Status`` with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, message: str,
                 details: Obj | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self) -> Obj:
        """The ``Status`` object for the response body (or a watch ERROR event)."""
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                     "status": "Failure", "message": self.message, "reason": self.reason,
                     "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(group: str, kind: str, name: str | None) -> Obj:
    details: Obj = {"kind": kind}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(group, plural)} "{name}" not found',
                    _details(group, plural, name))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(group, plural)} "{name}" already exists',
                    _details(group, plural, name))


OPTIMISTIC_LOCK = ("the object has been modified; please apply your changes to the latest "
                   "version and try again")


def conflict(group: str, plural: str, name: str, why: str = OPTIMISTIC_LOCK) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": {why}',
                    _details(group, plural, name))


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    texts = [f"{e.field}: {e.message()}" for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(group, kind, name)
    details["causes"] = [{"reason": REASONS.get(e.kind, "FieldValueInvalid"),
                          "message": e.message(), "field": e.field} for e in errors]
    return ApiError(422, "Invalid", f'{kind}{"." + group if group else ""} "{name}" is invalid: '
                    f"{joined}", details)


def forbidden_error(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{qualified(group, plural)} "{name}" is forbidden: {why}',
                    _details(group, plural, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(accepted)}", {"causes": [{"message": content_type}]})


def server_error(message: str) -> ApiError:
    """A plain error as apiserver reports one that carries no Status (reason empty)."""
    return ApiError(500, "", message)


def too_large_resource_version(requested: int, current: int) -> ApiError:
    return ApiError(504, "Timeout",
                    f"Timeout: Too large resource version: {requested}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge",
                                 "message": "Too large resource version"}],
                     "retryAfterSeconds": 1}, retry_after=1)


def too_many_requests(message: str, retry_after: int = 1) -> ApiError:
    """429, as apiserver's ``errors.NewTooManyRequests`` (the watch cache while it
    (re)initializes: ``storage is (re)initializing``, Retry-After 1 s)."""
    return ApiError(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after},
                    retry_after=retry_after)


def route_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse",
                                 "message": "404 page not found"}]})
