"""The patch types kube-apiserver accepts on PATCH (server-side apply aside).

* ``application/merge-patch+json``: RFC 7386.
* ``application/json-patch+json``: RFC 6902 (add, remove, replace, move, copy, test).
* ``application/strategic-merge-patch+json``: the strategic merge patch of
  https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
  and sig-api-machinery's strategic-merge-patch.md: maps merge, ``null`` deletes a key,
  lists named in the resource's :data:`Schema` merge by their ``patchMergeKey`` (or as a set
  of scalars, like ``metadata.finalizers``), every other list is replaced.  Directives:
  ``$patch: replace`` / ``$patch: delete`` (on a map or a list element),
  ``$deleteFromPrimitiveList/<field>``, ``$retainKeys``; ``$setElementOrder/<field>`` is
  accepted and ignored (the merged order is: existing elements, then new ones).
"""

from __future__ import annotations

from typing import Any

from .jsonutil import clone

# Path (field names from the object's root, list indices dropped) -> the list's merge key,
# or SET for a list of scalars merged as a set.
SET = ""
Schema = dict[tuple[str, ...], str]


class PatchError(ValueError):
    """A patch the server cannot decode (400) or apply (422, ``apply_failed``)."""

    def __init__(self, message: str, apply_failed: bool = False) -> None:
        super().__init__(message)
        self.apply_failed = apply_failed


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 -----------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}", apply_failed=True)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token.startswith("0") and token != "0"):
        raise PatchError(f"invalid array index {token!r}", apply_failed=True)
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds", apply_failed=True)
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, False)]
        else:
            raise PatchError(f"doc is missing path: {path!r}", apply_failed=True)
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"doc is missing key: {path!r}", apply_failed=True)
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise PatchError(f"doc is missing path: {path!r}", apply_failed=True)


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise PatchError(f"doc is missing path: {path!r}", apply_failed=True)
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document", apply_failed=True)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value",
                             apply_failed=True)
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, False)]
    else:
        raise PatchError(f"doc is missing path: {path!r}", apply_failed=True)
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch; raises :class:`PatchError`."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    result = clone(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid json patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation does not apply: missing value")
        if op == "add":
            result = _add(result, path, clone(operation["value"]))
        elif op == "remove":
            result = _remove(result, path)
        elif op == "replace":
            _get(result, path)
            result = _add(_remove(result, path), path, clone(operation["value"])) \
                if _pointer(path) else clone(operation["value"])
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise PatchError(f"{op} operation does not apply: missing from")
            value = clone(_get(result, source))
            if op == "move":
                result = _remove(result, source)
            result = _add(result, path, value)
        elif op == "test":
            if _get(result, path) != operation["value"]:
                raise PatchError(f"testing value {path} failed: test failed", apply_failed=True)
        else:
            raise PatchError(f"Unexpected kind: {op}")
    return result


# --- strategic merge patch ----------------------------------------------------------------

_DELETE_FROM = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"


def strategic_merge(original: Any, patch: Any, schema: Schema) -> Any:
    """Apply a strategic merge patch (see the module docstring for what is supported)."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _merge_map(clone(original) if isinstance(original, dict) else {}, patch, (), schema)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...],
               schema: Schema) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r} in map: {patch!r}")
    result = original
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith(_SET_ORDER):
            continue
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM):]
            drop = value if isinstance(value, list) else []
            current = result.get(field)
            if isinstance(current, list):
                result[field] = [v for v in current if v not in drop]
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = (*path, key)
        current = result.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, sub, schema)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in schema:
            result[key] = _merge_list(current if isinstance(current, list) else [], value, sub,
                                      schema)
        else:
            result[key] = clone(_strip_directives(value))
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(original: list[Any], patch: list[Any], path: tuple[str, ...],
                schema: Schema) -> list[Any]:
    key = schema[path]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [clone(_strip_directives(p)) for p in patch
                if not (isinstance(p, dict) and "$patch" in p)]
    if key == SET:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(clone(item))
        return result
    result = [clone(o) for o in original]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {key}")
        found = next((i for i, o in enumerate(result)
                      if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if found is not None:
                del result[found]
            continue
        if found is None:
            result.append(clone(_strip_directives(item)))
        else:
            merged = _merge_map(result[found], item, path, schema)
            result[found] = merged
    return result
