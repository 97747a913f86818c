"""Small helpers on JSON values (dicts, lists, scalars)."""

from __future__ import annotations

import time
from typing import Any

Obj = dict[str, Any]


def clone(value: Any) -> Any:
    """A deep copy of a JSON value (much faster than copy.deepcopy on these trees)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def now_rfc3339(offset: float = 0.0) -> str:
    """A ``metav1.Time``: RFC 3339 in UTC, second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def meta(obj: Obj) -> Obj:
    """``obj["metadata"]``, created if missing or not a map."""
    value = obj.get("metadata")
    if not isinstance(value, dict):
        value = {}
        obj["metadata"] = value
    return value


def labels_of(obj: Obj) -> dict[str, str]:
    labels = obj.get("metadata", {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def dig(obj: Any, *path: str) -> Any:
    """``obj[p0][p1]...`` or None where a step is missing."""
    node = obj
    for step in path:
        if not isinstance(node, dict):
            return None
        node = node.get(step)
    return node
