"""Per-node pool of pre-created OVN child ports, kept in one SQLite file.

Every pod interface gets one port of the pool (logical port, MAC, IP, VLAN tag).
The CNI plugin runs as many short-lived processes at once, any of which may be
SIGKILLed at any instruction, and a node daemon may serve requests from
several threads; this module keeps the pool correct under all of that.

Concurrency
    Every change runs in one ``BEGIN IMMEDIATE`` transaction: it takes SQLite's
    write lock before reading, so the read-decide-write of :meth:`Pool.acquire`
    cannot interleave with another writer, and a lock held by a killed process
    is dropped by the kernel with the process.  Waiting writers retry for
    :data:`BUSY_TIMEOUT_S` seconds.  The schema enforces the invariants on its
    own as well: an allocation's primary key is the port (one attachment per
    port) and ``(container_id, ifname)`` is UNIQUE (one port per attachment);
    tag, IP and MAC are UNIQUE across ports.

Durability
    The journal is WAL: readers never block the writer, a commit appends to one
    file, and an interrupted transaction is simply absent after a crash.
    ``synchronous=FULL`` fsyncs the WAL on every commit, so an allocation that
    was handed out survives a power loss too (NORMAL would only guarantee a
    consistent, possibly slightly older pool, which could hand a port again
    while OVS still holds the old interface).  A commit costs one fsync and
    happens once or twice per pod ADD/DEL, which is negligible there.

Threads
    A :class:`Pool` holds one connection (``check_same_thread=False``) behind a
    lock.  Writes are serialised by SQLite anyway and every call is short, so
    per-thread connections would add bookkeeping (closing them all) without
    adding throughput.  Do not use a :class:`Pool` across ``fork()``: open a
    new one in the child.

Schema
    ``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`.  Opening a database
    runs the missing steps of ``_MIGRATIONS`` in one transaction; a database
    written by a newer version is refused.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

from ovn_underlay.control.base import ChildPort
from ovn_underlay.names import host_ifname

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (import time)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path
    from typing import Any

__all__ = [
    "ATTACHED",
    "ATTACHING",
    "BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "PodInterface",
    "Pool",
    "PoolError",
    "PoolExhausted",
    "PoolStats",
    "PortLease",
]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0
ATTACHING = "attaching"
ATTACHED = "attached"

# _MIGRATIONS[v] holds the statements that take the schema from version v to v + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE port (
            lport     TEXT NOT NULL PRIMARY KEY,
            mac       TEXT NOT NULL UNIQUE COLLATE NOCASE,
            ip        TEXT NOT NULL UNIQUE,
            prefixlen INTEGER NOT NULL CHECK (prefixlen BETWEEN 0 AND 128),
            gateway   TEXT NOT NULL,
            tag       INTEGER NOT NULL UNIQUE CHECK (tag BETWEEN 1 AND 4094)
        )""",
        """CREATE TABLE allocation (
            lport         TEXT NOT NULL PRIMARY KEY REFERENCES port (lport),
            container_id  TEXT NOT NULL,
            ifname        TEXT NOT NULL,
            netns         TEXT NOT NULL,
            pod_namespace TEXT NOT NULL,
            pod_name      TEXT NOT NULL,
            state         TEXT NOT NULL CHECK (state IN ('attaching', 'attached')),
            since         REAL NOT NULL,
            UNIQUE (container_id, ifname)
        )""",
    ),
)

_PORT_COLUMNS = "p.lport, p.mac, p.ip, p.prefixlen, p.gateway, p.tag"
_SELECT_PORTS = f"SELECT {_PORT_COLUMNS} FROM port p"
_SELECT_FREE = f"{_SELECT_PORTS} WHERE p.lport NOT IN (SELECT lport FROM allocation) ORDER BY p.tag"
_SELECT_ALLOCATIONS = (
    f"SELECT {_PORT_COLUMNS}, a.container_id, a.ifname, a.netns, a.pod_namespace,"
    " a.pod_name, a.state, a.since FROM allocation a JOIN port p ON p.lport = a.lport"
)
_BY_ATTACHMENT = " WHERE a.container_id = ? AND a.ifname = ?"


@dataclass(frozen=True)
class PodInterface:
    """A pod interface as CNI names it: (container_id, ifname) is the key."""

    container_id: str
    ifname: str
    netns: str = ""
    pod_namespace: str = ""
    pod_name: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """(container_id, ifname): what the pool, and the daemon's gate, know it by."""
        return self.container_id, self.ifname

    @cached_property
    def host_if(self) -> str:
        """The node-side end of its veth (:func:`ovn_underlay.names.host_ifname`)."""
        return host_ifname(self.container_id, self.ifname)


@dataclass(frozen=True)
class PortLease:
    """A pool port held by a pod interface, and how far its ADD got."""

    port: ChildPort
    interface: PodInterface
    state: str  # ATTACHING (taken, plumbing in progress/unknown) or ATTACHED
    since: float  # unix time of the last state change


@dataclass(frozen=True)
class PoolStats:
    """Port counts; ``total == free + attaching + attached``."""

    total: int
    free: int
    attaching: int
    attached: int


class PoolError(Exception):
    """The pool refused an operation or its database failed."""


class PoolExhausted(PoolError):
    """Every port of the pool is allocated."""


class Pool:
    """The port pool stored at ``path``; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        """Open the pool database, creating its directory, file and schema if missing."""
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            _create_private_file(self.path)
            self._conn = _connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise PoolError(f"cannot open pool database {self.path}: {exc}") from exc

    def __enter__(self) -> Pool:
        """Return the pool itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the pool."""
        self.close()

    def close(self) -> None:
        """Close the database connection; later calls raise :class:`PoolError`."""
        with self._lock:
            self._conn.close()

    def add_ports(self, ports: Iterable[ChildPort]) -> int:
        """Add ports, skipping ones already present; return how many were new.

        A port whose lport is present with other attributes, or whose tag, IP or
        MAC belongs to another lport, raises :class:`PoolError` and adds nothing.
        """
        wanted = _dedupe(ports)
        with self._write() as conn:
            present = {p.name: p for p in map(_port, conn.execute(_SELECT_PORTS))}
            changed = [p for p in wanted if p.name in present and present[p.name] != p]
            if changed:
                raise PoolError(
                    "ports already in the pool with other attributes: "
                    + ", ".join(f"{p} (pool has {present[p.name]})" for p in changed)
                )
            new = [p for p in wanted if p.name not in present]
            _check_unique(list(present.values()), new)
            conn.executemany(
                "INSERT INTO port (lport, mac, ip, prefixlen, gateway, tag)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(p.name, p.mac, p.ip, p.prefixlen, p.gateway, p.tag) for p in new],
            )
        return len(new)

    def remove_ports(
        self, lports: Iterable[str] | None = None, *, force: bool = False
    ) -> list[ChildPort]:
        """Remove the given ports (all if None; unknown names are ignored).

        Refuses with :class:`PoolError` naming the holders if any of them is
        allocated, unless ``force``, which drops those allocations too.
        Returns the removed ports ordered by tag.
        """
        selected = None if lports is None else set(lports)
        with self._write() as conn:
            doomed = [
                p
                for p in map(_port, conn.execute(f"{_SELECT_PORTS} ORDER BY p.tag"))
                if selected is None or p.name in selected
            ]
            names = {p.name for p in doomed}
            held = [
                a
                for a in map(_allocation, conn.execute(_SELECT_ALLOCATIONS))
                if a.port.name in names
            ]
            if held and not force:
                raise PoolError(
                    f"refusing to remove {len(held)} allocated port(s): "
                    + ", ".join(_describe(a) for a in held)
                    + " (release them first or use force)"
                )
            keys = [(name,) for name in names]
            conn.executemany("DELETE FROM allocation WHERE lport = ?", keys)
            conn.executemany("DELETE FROM port WHERE lport = ?", keys)
        return doomed

    def acquire(self, att: PodInterface) -> PortLease:
        """Give ``att`` a port, state ATTACHING; its existing allocation is returned as is.

        The free port with the lowest tag is taken.  Raises
        :class:`PoolExhausted` if there is none.
        """
        if not att.container_id or not att.ifname:
            raise PoolError(f"an attachment needs a container_id and an ifname: {att}")
        with self._write() as conn:
            existing = _find(conn, att.container_id, att.ifname)
            if existing is not None:
                return existing
            row = conn.execute(f"{_SELECT_FREE} LIMIT 1").fetchone()
            if row is None:
                raise PoolExhausted(self._exhausted_message(conn))
            allocation = PortLease(_port(row), att, ATTACHING, time.time())
            conn.execute(
                "INSERT INTO allocation (lport, container_id, ifname, netns, pod_namespace,"
                " pod_name, state, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    allocation.port.name,
                    att.container_id,
                    att.ifname,
                    att.netns,
                    att.pod_namespace,
                    att.pod_name,
                    allocation.state,
                    allocation.since,
                ),
            )
        return allocation

    def rebind(self, att: PodInterface) -> PortLease:
        """Move ``att``'s allocation to ``att.netns`` (pod names too), state ATTACHING again.

        For an ADD whose earlier attachment died with its namespace: the port
        is kept.  Raises :class:`PoolError` if the attachment holds no port.
        """
        with self._write() as conn:
            existing = _find(conn, att.container_id, att.ifname)
            if existing is None:
                raise PoolError(f"no port is allocated to {att.container_id}/{att.ifname}")
            moved = PortLease(existing.port, att, ATTACHING, time.time())
            conn.execute(
                "UPDATE allocation SET netns = ?, pod_namespace = ?, pod_name = ?, state = ?,"
                " since = ? WHERE lport = ?",
                (att.netns, att.pod_namespace, att.pod_name, moved.state, moved.since,
                 existing.port.name),
            )
        return moved

    def mark_attached(self, container_id: str, ifname: str) -> None:
        """Record that the attachment's plumbing is complete (state ATTACHED).

        Raises :class:`PoolError` if the attachment holds no port.
        """
        with self._write() as conn:
            existing = _find(conn, container_id, ifname)
            if existing is None:
                raise PoolError(f"no port is allocated to {container_id}/{ifname}")
            if existing.state != ATTACHED:
                conn.execute(
                    "UPDATE allocation SET state = ?, since = ? WHERE lport = ?",
                    (ATTACHED, time.time(), existing.port.name),
                )

    def release(self, container_id: str, ifname: str) -> ChildPort | None:
        """Free the attachment's port and return it; None if it held none."""
        with self._write() as conn:
            existing = _find(conn, container_id, ifname)
            if existing is None:
                return None
            conn.execute("DELETE FROM allocation WHERE lport = ?", (existing.port.name,))
        return existing.port

    def find(self, container_id: str, ifname: str) -> PortLease | None:
        """Return the attachment's allocation, or None."""
        rows = self._read(_SELECT_ALLOCATIONS + _BY_ATTACHMENT, (container_id, ifname))
        return _allocation(rows[0]) if rows else None

    def find_by_port(self, lport: str) -> PortLease | None:
        """Return the allocation holding port ``lport``, or None."""
        rows = self._read(f"{_SELECT_ALLOCATIONS} WHERE a.lport = ?", (lport,))
        return _allocation(rows[0]) if rows else None

    def leases(self) -> list[PortLease]:
        """Return all allocations ordered by tag."""
        return [_allocation(r) for r in self._read(f"{_SELECT_ALLOCATIONS} ORDER BY p.tag")]

    def ports(self) -> list[ChildPort]:
        """Return all ports ordered by tag."""
        return [_port(r) for r in self._read(f"{_SELECT_PORTS} ORDER BY p.tag")]

    def free_ports(self) -> list[ChildPort]:
        """Return the unallocated ports ordered by tag."""
        return [_port(r) for r in self._read(_SELECT_FREE)]

    def stats(self) -> PoolStats:
        """Count the ports by state."""
        (row,) = self._read(
            "SELECT count(*), count(*) - count(a.lport),"
            f" coalesce(sum(a.state = '{ATTACHING}'), 0),"
            f" coalesce(sum(a.state = '{ATTACHED}'), 0)"
            " FROM port p LEFT JOIN allocation a ON a.lport = p.lport"
        )
        return PoolStats(*row)

    def stale(self, valid: Iterable[tuple[str, str]]) -> list[PortLease]:
        """Return the allocations whose (container_id, ifname) is not in ``valid``."""
        keep = set(valid)
        return [
            a
            for a in self.leases()
            if (a.interface.container_id, a.interface.ifname) not in keep
        ]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one BEGIN IMMEDIATE transaction, rolled back on any error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise PoolError(f"pool database {self.path}: {exc}") from exc

    def _read(self, sql: str, params: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one query (a consistent snapshot by itself) and return its rows."""
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise PoolError(f"pool database {self.path}: {exc}") from exc

    def _exhausted_message(self, conn: sqlite3.Connection) -> str:
        """Explain an exhausted pool, with its size."""
        (total,) = conn.execute("SELECT count(*) FROM port").fetchone()
        if total == 0:
            return f"pool {self.path} has no ports (0 ports exist, all in use): not populated"
        return f"pool {self.path} is exhausted: all {total} ports are in use"


def _create_private_file(path: str) -> None:
    """Create the database's directory (0o700) and an empty file (0o600) if missing.

    SQLite creates the ``-wal`` and ``-shm`` files with the database file's mode.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it
    finally:
        os.close(fd)


def _connect(path: str) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (explicit transactions), with the schema in place."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    """Return the schema version of the database; refuse one newer than this code."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise PoolError(
            f"pool database {path} has schema version {version}, newer than the"
            f" {SCHEMA_VERSION} this ovn-underlay supports: upgrade ovn-underlay"
        )
    return int(version)


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema to SCHEMA_VERSION, switching a new database to WAL first."""
    if _schema_version(conn, path) == SCHEMA_VERSION:
        return
    _enable_wal(conn, path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(_schema_version(conn, path), SCHEMA_VERSION):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _enable_wal(conn: sqlite3.Connection, path: str) -> None:
    """Switch the database to WAL (a no-op if it is), retrying while others hold it.

    Leaving rollback journaling needs an exclusive lock that SQLite does not
    wait for, so processes opening a new database together retry here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
            continue
        if mode != "wal":
            raise PoolError(f"pool database {path} cannot use WAL journaling (got {mode!r})")
        return


def _find(conn: sqlite3.Connection, container_id: str, ifname: str) -> PortLease | None:
    """Return the attachment's allocation within the current transaction."""
    row = conn.execute(_SELECT_ALLOCATIONS + _BY_ATTACHMENT, (container_id, ifname)).fetchone()
    return None if row is None else _allocation(row)


def _port(row: tuple[Any, ...]) -> ChildPort:
    """Build a port from the columns of _PORT_COLUMNS."""
    return ChildPort(*row[:6])


def _allocation(row: tuple[Any, ...]) -> PortLease:
    """Build an allocation from the columns of _SELECT_ALLOCATIONS."""
    return PortLease(_port(row), PodInterface(*row[6:11]), row[11], row[12])


def _describe(allocation: PortLease) -> str:
    """Name a port and its holder for messages."""
    att = allocation.interface
    pod = f" pod {att.pod_namespace}/{att.pod_name}" if att.pod_name else ""
    return f"{allocation.port.name} (held by {att.container_id}/{att.ifname}{pod})"


def _dedupe(ports: Iterable[ChildPort]) -> list[ChildPort]:
    """Check the ports' ranges and drop exact repeats; one lport twice with other values fails."""
    by_lport: dict[str, ChildPort] = {}
    for port in ports:
        if not 1 <= port.tag <= 4094:
            raise PoolError(f"VLAN tag out of range 1..4094: {port}")
        if not 0 <= port.prefixlen <= 128:
            raise PoolError(f"prefix length out of range 0..128: {port}")
        seen = by_lport.setdefault(port.name, port)
        if seen != port:
            raise PoolError(f"lport {port.name} given twice with other values: {seen}, {port}")
    return list(by_lport.values())


def _check_unique(present: list[ChildPort], new: list[ChildPort]) -> None:
    """Refuse new ports whose tag, IP or MAC belongs to another port."""
    owners: dict[tuple[str, object], str] = {}
    for port in present:
        owners.update(_unique_keys(port))
    conflicts = []
    for port in new:
        for key, lport in _unique_keys(port).items():
            owner = owners.setdefault(key, lport)
            if owner != lport:
                conflicts.append(f"{port.name}: {key[0]} {key[1]} is taken by {owner}")
    if conflicts:
        raise PoolError("conflicting ports: " + "; ".join(conflicts))


def _unique_keys(port: ChildPort) -> dict[tuple[str, object], str]:
    """The values that must be unique in the pool, each mapped to the port's lport."""
    return {
        ("tag", port.tag): port.name,
        ("ip", port.ip): port.name,
        ("mac", port.mac.lower()): port.name,
    }
