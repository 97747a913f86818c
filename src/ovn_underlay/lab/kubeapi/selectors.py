"""Label and field selectors, parsed and matched as kube-apiserver does.

Label selectors (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/
#label-selectors): ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``,
``!k``, ``k>n``, ``k<n``, comma meaning AND.  ``!=`` and ``notin`` also match objects
without the label, as documented.

Field selectors (https://kubernetes.io/docs/concepts/overview/working-with-objects/
field-selectors/): ``f=v``, ``f==v``, ``f!=v``, comma meaning AND, on the fields each
resource declares; any other field is a 400, as the real server answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_OP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(\S*)\s*$")


class SelectorError(ValueError):
    """A selector the server cannot parse (answered 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number = int(str(value))
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == ">" else number < bound


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r}: name part "
                            "must consist of alphanumeric characters, '-', '_' or '.'")
    return key


def _check_value(value: str) -> str:
    if not _VALUE_RE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value: {value!r}")
    return value


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if text is None or not text.strip():
            return cls()
        requirements: list[Requirement] = []
        for raw in _split_top(text):
            part = raw.strip()
            if not part:
                raise SelectorError(f"found '', expected: identifier in {text!r}")
            requirements.append(cls._parse_one(part))
        return cls(tuple(requirements))

    @staticmethod
    def _parse_one(part: str) -> Requirement:
        matched = _SET_RE.match(part)
        if matched:
            values = tuple(_check_value(v.strip()) for v in matched.group(3).split(","))
            return Requirement(_check_key(matched.group(1)), matched.group(2), values)
        if part.startswith("!"):
            return Requirement(_check_key(part[1:].strip()), "!")
        matched = _OP_RE.match(part)
        if matched:
            key, op, value = matched.groups()
            op = "=" if op == "==" else op
            if op in (">", "<") and not re.fullmatch(r"-?\d+", value):
                raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the "
                                    f"value must be an integer: {value!r}")
            return Requirement(_check_key(key), op, (_check_value(value),))
        if re.fullmatch(r"\S+", part):
            return Requirement(_check_key(part), "exists")
        raise SelectorError(f"unable to parse requirement: {part!r}")

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements


def _unescape_split(text: str, seps: str) -> list[str]:
    """Split ``text`` on unescaped characters of ``seps`` (``\\`` escapes, as fields.Parse)."""
    parts: list[str] = []
    current = ""
    escaped = False
    for char in text:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in seps:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


FieldGetter = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if text is None or not text.strip():
            return cls()
        terms: list[tuple[str, bool, str]] = []
        for part in _unescape_split_keep(text):
            matched = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
            if not matched:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            field, op, value = matched.groups()
            terms.append((field.strip(), op != "!=", _unescape_split(value, "")[0]))
        return cls(tuple(terms))

    def fields(self) -> list[str]:
        return [t[0] for t in self.terms]

    def matches(self, obj: dict[str, Any], getters: Mapping[str, FieldGetter]) -> bool:
        return all((getters[field](obj) == value) == equal for field, equal, value in self.terms)

    def empty(self) -> bool:
        return not self.terms


def _unescape_split_keep(text: str) -> list[str]:
    """Split on unescaped commas, keeping escapes for the value parser."""
    parts: list[str] = []
    current = ""
    escaped = False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]
