"""Authentication by static bearer tokens, and the request log.

The token file is kube-apiserver's ``--token-auth-file`` format
(https://kubernetes.io/docs/reference/access-authn-authz/authentication/#static-token-file):
CSV lines ``token,user,uid[,groups]`` where several groups are one double-quoted column,
``token,user,uid,"group1,group2"``; ``group1|group2`` is accepted too.  Authenticated users
also get the group ``system:authenticated``.  There is no authorization: every
authenticated user may do everything (the request log records what each did, so that RBAC
rules can be derived from it).
"""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANONYMOUS_USER = "system:anonymous"
ANONYMOUS_GROUPS = ("system:unauthenticated",)


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = field(default=())


ANONYMOUS = User(ANONYMOUS_USER, "", ANONYMOUS_GROUPS)


def load_tokens(path: str | Path) -> dict[str, User]:
    """Read a static token file; raises ValueError on a malformed line."""
    tokens: dict[str, User] = {}
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{number}: need at least token,user,uid")
            token, name, uid = (value.strip() for value in row[:3])
            groups: list[str] = []
            for column in row[3:]:
                groups.extend(g.strip() for g in column.replace("|", ",").split(",")
                              if g.strip())
            tokens[token] = User(name, uid, (*groups, "system:authenticated"))
    return tokens


class RequestLog:
    """Every request, as JSON lines in a file (optional) and in memory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, sort_keys=True) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
