"""Tests of the SQLite port pool, on real database files, across threads and processes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.control.base import ChildPort
from ovn_underlay.pods.pool import (
    ATTACHED,
    ATTACHING,
    SCHEMA_VERSION,
    PodInterface,
    Pool,
    PoolError,
    PoolExhausted,
    PoolStats,
    PortLease,
)

# Children fork from a clean server process that has imported this module once:
# no state inherited from pytest, yet a child starts in milliseconds.
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload([__name__])
JOIN_TIMEOUT_S = 30.0


def make_ports(count: int, first_tag: int = 100) -> list[ChildPort]:
    """Ports with tags first_tag.. and matching MAC/IP."""
    return [
        ChildPort(
            name=f"lp-{tag}",
            mac=f"0a:58:c6:13:{tag // 256:02x}:{tag % 256:02x}",
            ip=f"198.19.{tag // 256}.{tag % 256}",
            prefixlen=16,
            gateway="198.19.0.1",
            tag=tag,
        )
        for tag in range(first_tag, first_tag + count)
    ]


def att(n: int | str, ifname: str = "eth0") -> PodInterface:
    """An attachment with a recognisable container id."""
    return PodInterface(f"ctr-{n}", ifname, f"/var/run/netns/cni-{n}", "default", f"pod-{n}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a not yet existing pool database."""
    return tmp_path / "state" / "pool.db"


@pytest.fixture
def pool(db: Path) -> Iterator[Pool]:
    """A pool of 5 ports, tags 100..104."""
    with Pool(db) as opened:
        opened.add_ports(make_ports(5))
        yield opened


def assert_consistent(path: Path, ports: list[ChildPort]) -> None:
    """The database is intact, holds ``ports``, and each is either free or held once."""
    assert checked_ports(path) == sorted(ports, key=lambda p: p.tag)


def checked_ports(path: Path) -> list[ChildPort]:
    """Check the database is intact and each port is free or held once; return the ports."""
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        raw.close()
    with Pool(path) as pool:
        ports = pool.ports()
        held = [a.port for a in pool.leases()]
        keys = [(a.interface.container_id, a.interface.ifname) for a in pool.leases()]
        assert len(set(held)) == len(held)
        assert len(set(keys)) == len(keys)
        assert set(held).isdisjoint(pool.free_ports())
        assert set(held) | set(pool.free_ports()) == set(ports)
        stats = pool.stats()
        assert stats.total == len(ports) == stats.free + stats.attaching + stats.attached
    return ports


def drain_and_refill(path: Path, ports: list[ChildPort]) -> None:
    """Release every allocation, then take every port once: the pool lost none."""
    with Pool(path) as pool:
        for stale in pool.stale([]):
            pool.release(stale.interface.container_id, stale.interface.ifname)
        taken = [pool.acquire(att(f"refill-{i}")).port for i in range(len(ports))]
        assert sorted(taken, key=lambda p: p.tag) == sorted(ports, key=lambda p: p.tag)
        with pytest.raises(PoolExhausted):
            pool.acquire(att("one-too-many"))


# --- single process -----------------------------------------------------------------


def test_round_trip(pool: Pool) -> None:
    before = time.time()
    allocation = pool.acquire(att(1))
    assert allocation.port == make_ports(5)[0]
    assert allocation.interface == att(1)
    assert allocation.state == ATTACHING
    assert before <= allocation.since <= time.time()
    assert pool.find("ctr-1", "eth0") == allocation
    assert pool.find_by_port("lp-100") == allocation
    assert pool.stats() == PoolStats(total=5, free=4, attaching=1, attached=0)

    pool.mark_attached("ctr-1", "eth0")
    attached = pool.find("ctr-1", "eth0")
    assert attached is not None
    assert attached.state == ATTACHED
    assert attached.since >= allocation.since
    pool.mark_attached("ctr-1", "eth0")
    assert pool.find("ctr-1", "eth0") == attached
    assert pool.stats() == PoolStats(total=5, free=4, attaching=0, attached=1)

    assert pool.release("ctr-1", "eth0") == allocation.port
    assert pool.find("ctr-1", "eth0") is None
    assert pool.find_by_port("lp-100") is None
    assert pool.free_ports() == make_ports(5)
    assert pool.stats() == PoolStats(total=5, free=5, attaching=0, attached=0)


def test_acquire_is_idempotent(pool: Pool) -> None:
    first = pool.acquire(att(1))
    pool.mark_attached("ctr-1", "eth0")
    again = pool.acquire(PodInterface("ctr-1", "eth0", netns="/other"))
    assert again.port == first.port
    assert again.interface == att(1)
    assert again.state == ATTACHED
    second_if = pool.acquire(att(1, "net1"))
    assert second_if.port != first.port
    assert pool.stats().free == 3


def test_acquire_takes_lowest_free_tag(db: Path) -> None:
    ports = make_ports(4)
    with Pool(db) as pool:
        pool.add_ports(reversed(ports))
        assert [pool.acquire(att(i)).port.tag for i in range(3)] == [100, 101, 102]
        pool.release("ctr-1", "eth0")
        assert pool.acquire(att(9)).port.tag == 101
        assert pool.ports() == ports
        assert pool.free_ports() == [ports[3]]


def test_acquire_needs_container_id_and_ifname(pool: Pool) -> None:
    with pytest.raises(PoolError, match="container_id and an ifname"):
        pool.acquire(PodInterface("", "eth0"))
    with pytest.raises(PoolError, match="container_id and an ifname"):
        pool.acquire(PodInterface("ctr-1", ""))


def test_release_unknown_returns_none(pool: Pool) -> None:
    assert pool.release("nope", "eth0") is None
    pool.acquire(att(1))
    assert pool.release("ctr-1", "eth0") is not None
    assert pool.release("ctr-1", "eth0") is None


def test_mark_attached_without_allocation_fails(pool: Pool) -> None:
    with pytest.raises(PoolError, match="no port is allocated to ctr-1/eth0"):
        pool.mark_attached("ctr-1", "eth0")


def test_exhaustion_message(pool: Pool) -> None:
    for i in range(5):
        pool.acquire(att(i))
    with pytest.raises(PoolExhausted, match=r"all 5 ports are in use"):
        pool.acquire(att(5))
    assert pool.find("ctr-5", "eth0") is None


def test_exhaustion_of_empty_pool(db: Path) -> None:
    with Pool(db) as pool, pytest.raises(PoolExhausted, match=r"no ports \(0 ports exist"):
        pool.acquire(att(1))


def test_add_ports_is_idempotent(db: Path) -> None:
    ports = make_ports(5)
    with Pool(db) as pool:
        assert pool.add_ports(ports[:3]) == 3
        assert pool.add_ports(ports + ports) == 2
        assert pool.add_ports(ports) == 0
        assert pool.ports() == ports


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tag", 100, "tag 100 is taken by lp-100"),
        ("ip", "198.19.0.100", "ip 198.19.0.100 is taken by lp-100"),
        ("mac", "0A:58:C6:13:00:64", "mac 0a:58:c6:13:00:64 is taken by lp-100"),
    ],
)
def test_add_ports_refuses_conflicts(pool: Pool, field: str, value: Any, message: str) -> None:
    clash = replace(make_ports(1, first_tag=200)[0], **{field: value})
    with pytest.raises(PoolError, match=message):
        pool.add_ports([*make_ports(1, first_tag=300), clash])
    assert pool.ports() == make_ports(5)


def test_add_ports_refuses_changed_and_invalid_ports(pool: Pool) -> None:
    with pytest.raises(PoolError, match="already in the pool with other attributes"):
        pool.add_ports([replace(make_ports(1)[0], ip="198.19.9.9")])
    new = make_ports(1, first_tag=300)[0]
    with pytest.raises(PoolError, match="given twice with other values"):
        pool.add_ports([new, replace(new, tag=301)])
    with pytest.raises(PoolError, match="VLAN tag out of range"):
        pool.add_ports(make_ports(1, first_tag=4095))
    assert pool.ports() == make_ports(5)


def test_remove_ports_refuses_held_ports_unless_forced(pool: Pool) -> None:
    pool.acquire(att(1))
    with pytest.raises(PoolError, match=r"lp-100 \(held by ctr-1/eth0 pod default/pod-1\)"):
        pool.remove_ports(["lp-100", "lp-101"])
    assert pool.stats().total == 5
    assert pool.remove_ports(["lp-101", "unknown"]) == [make_ports(5)[1]]
    with pytest.raises(PoolError, match="refusing to remove 1 allocated port"):
        pool.remove_ports()
    assert pool.remove_ports(["lp-100"], force=True) == [make_ports(5)[0]]
    assert pool.find("ctr-1", "eth0") is None
    assert pool.remove_ports() == make_ports(5)[2:]
    assert pool.stats() == PoolStats(0, 0, 0, 0)


def test_stale_lists_allocations_not_in_valid(pool: Pool) -> None:
    for i in range(3):
        pool.acquire(att(i))
    stale = pool.stale([("ctr-0", "eth0"), ("ctr-2", "eth0"), ("ctr-9", "eth0")])
    assert [a.interface for a in stale] == [att(1)]
    assert pool.stale([]) == pool.leases()
    assert [a.port.tag for a in pool.leases()] == [100, 101, 102]


def test_reopen_keeps_state(db: Path) -> None:
    with Pool(db) as pool:
        pool.add_ports(make_ports(3))
        taken = pool.acquire(att(1))
    with Pool(str(db)) as pool:
        assert pool.find("ctr-1", "eth0") == taken
        assert pool.stats().free == 2


def test_new_database_schema(db: Path) -> None:
    Pool(db).close()
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_newer_schema_version_is_refused(db: Path) -> None:
    Pool(db).close()
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(PoolError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than"):
        Pool(db)


def test_not_a_database_is_refused(db: Path) -> None:
    db.parent.mkdir()
    db.write_bytes(b"this is not an sqlite database, it is long enough to have a header" * 4)
    with pytest.raises(PoolError, match="cannot open pool database"):
        Pool(db)


def test_permissions(tmp_path: Path) -> None:
    path = tmp_path / "var" / "ovn-underlay" / "pool.db"
    old_umask = os.umask(0)
    try:
        with Pool(path) as pool:
            pool.add_ports(make_ports(2))
            pool.acquire(att(1))
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert modes == {"pool.db": 0o600, "pool.db-wal": 0o600, "pool.db-shm": 0o600}


def test_closed_pool_raises_pool_error(db: Path) -> None:
    pool = Pool(db)
    pool.close()
    pool.close()
    with pytest.raises(PoolError, match="closed"):
        pool.acquire(att(1))
    with pytest.raises(PoolError, match="closed"):
        pool.ports()


# --- threads ------------------------------------------------------------------------


def test_threads_share_one_pool(db: Path) -> None:
    results: list[PortLease | str] = []
    with Pool(db) as pool:
        pool.add_ports(make_ports(20))
        barrier = threading.Barrier(32)

        def worker(n: int) -> None:
            barrier.wait()
            try:
                results.append(pool.acquire(att(n)))
            except PoolExhausted as exc:
                results.append(str(exc))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    taken = [r for r in results if isinstance(r, PortLease)]
    assert len(results) == 32
    assert sorted(a.port.tag for a in taken) == list(range(100, 120))
    assert all("all 20 ports are in use" in r for r in results if isinstance(r, str))
    assert_consistent(db, make_ports(20))


def test_threads_churn(db: Path) -> None:
    errors: list[BaseException] = []
    with Pool(db) as pool:
        pool.add_ports(make_ports(4))

        def worker(n: int) -> None:
            try:
                for i in range(40):
                    got = pool.acquire(att(f"{n}-{i}"))
                    pool.mark_attached(f"ctr-{n}-{i}", "eth0")
                    assert pool.find_by_port(got.port.name) is not None
                    assert pool.release(f"ctr-{n}-{i}", "eth0") == got.port
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    assert errors == []
    assert_consistent(db, make_ports(4))


# --- processes ----------------------------------------------------------------------


def acquire_once(path: str, n: int, barrier: Any, results: Any) -> None:
    """Child: open the pool, wait for the others, take one port, report it."""
    with Pool(path) as pool:
        barrier.wait()
        try:
            allocation = pool.acquire(att(n))
        except PoolExhausted as exc:
            results.put((n, "exhausted", str(exc)))
        else:
            results.put((n, allocation.port.name, allocation.port.tag))


def open_new(path: str, barrier: Any, results: Any) -> None:
    """Child: open (and so create) the pool at the same time as the others."""
    barrier.wait()
    try:
        Pool(path).close()
    except PoolError as exc:
        results.put(str(exc))
    else:
        results.put("ok")


def run_children(target: Any, args_per_child: list[tuple[Any, ...]], results: Any) -> list[Any]:
    """Start one process per args tuple, collect one result from each, join them."""
    children = [CTX.Process(target=target, args=args) for args in args_per_child]
    for child in children:
        child.start()
    collected = [results.get(timeout=JOIN_TIMEOUT_S) for _ in children]
    for child in children:
        child.join(JOIN_TIMEOUT_S)
        assert child.exitcode == 0
    return collected


def test_processes_acquire_concurrently(db: Path) -> None:
    ports = make_ports(20)
    with Pool(db) as pool:
        pool.add_ports(ports)
    count = 24
    barrier, results = CTX.Barrier(count), CTX.Queue()
    collected = run_children(
        acquire_once, [(str(db), n, barrier, results) for n in range(count)], results
    )
    taken = [(lport, tag) for _, lport, tag in collected if lport != "exhausted"]
    exhausted = [msg for _, kind, msg in collected if kind == "exhausted"]
    assert len(taken) == 20
    assert {lport for lport, _ in taken} == {p.name for p in ports}
    assert sorted(tag for _, tag in taken) == [p.tag for p in ports]
    assert len(exhausted) == 4
    assert all("all 20 ports are in use" in msg for msg in exhausted)
    with Pool(db) as pool, pytest.raises(PoolExhausted, match="all 20 ports are in use"):
        pool.acquire(att("one-more"))
    assert_consistent(db, ports)


def test_processes_create_the_database_together(db: Path) -> None:
    count = 16
    barrier, results = CTX.Barrier(count), CTX.Queue()
    collected = run_children(open_new, [(str(db), barrier, results)] * count, results)
    assert collected == ["ok"] * count
    with Pool(db) as pool:
        assert pool.add_ports(make_ports(2)) == 2


# --- crash safety -------------------------------------------------------------------

CRASH_PORTS = make_ports(40)
CRASH_EXTRA = make_ports(1, first_tag=1000)[0]


def die_at_statement(path: str, n: int, log: str) -> None:
    """Child: run a full port lifecycle, SIGKILLing itself before its n-th SQL statement.

    Before dying it appends to ``log`` whether a transaction was open, so the
    parent can tell that kills inside a write transaction were exercised.
    """
    pool = Pool(path)
    calls = 0

    def profile(frame: object, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), sqlite3.Connection):
            calls += 1
            if calls == n:
                with open(log, "a") as out:
                    out.write(f"{n} {arg.__name__} {arg.__self__.in_transaction}\n")
                os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(profile)
    pool.acquire(att(n))
    pool.mark_attached(f"ctr-{n}", "eth0")
    pool.acquire(att(n, "net1"))
    pool.release(f"ctr-{n}", "eth0")
    pool.add_ports([CRASH_EXTRA])
    pool.remove_ports([CRASH_EXTRA.name])
    pool.remove_ports([CRASH_PORTS[-1].name], force=True)
    pool.add_ports(CRASH_PORTS[-1:])
    pool.release(f"ctr-{n}", "net1")
    sys.setprofile(None)


def test_sigkill_at_every_statement(tmp_path: Path, db: Path) -> None:
    with Pool(db) as pool:
        pool.add_ports(CRASH_PORTS)
    log = tmp_path / "kills.log"
    for n in range(1, 100):
        child = CTX.Process(target=die_at_statement, args=(str(db), n, str(log)))
        child.start()
        child.join(JOIN_TIMEOUT_S)
        found = set(checked_ports(db))
        assert set(CRASH_PORTS[:-1]) <= found <= {*CRASH_PORTS, CRASH_EXTRA}
        started = time.monotonic()
        with Pool(db) as pool:  # writes: the dead child's lock must be gone
            pool.remove_ports([CRASH_EXTRA.name])
            pool.add_ports(CRASH_PORTS[-1:])
        assert time.monotonic() - started < 2.0
        if child.exitcode == 0:
            break
        assert child.exitcode == -signal.SIGKILL
    else:
        pytest.fail("the child never completed its lifecycle")
    kills = [line.split() for line in log.read_text().splitlines()]
    assert len(kills) == n - 1 > 20
    in_transaction = [name for _, name, open_txn in kills if open_txn == "True"]
    assert in_transaction.count("execute") > 10
    assert "executemany" in in_transaction
    drain_and_refill(db, CRASH_PORTS)


def churn(path: str, worker: int, ready: Any) -> None:
    """Child: take, attach and release ports as fast as possible until killed.

    It cycles through three attachments of its own, picking up whatever a
    killed predecessor with the same worker number left behind.
    """
    pool = Pool(path)
    ready.set()
    rng = random.Random()
    for i in range(1_000_000):
        key = f"{worker}-{i % 3}"
        if pool.find(f"ctr-{key}", "eth0") is None:
            pool.acquire(att(key))
            if rng.random() < 0.5:
                pool.mark_attached(f"ctr-{key}", "eth0")
        else:
            pool.release(f"ctr-{key}", "eth0")


def test_sigkill_at_random_times(db: Path) -> None:
    ports = make_ports(12)
    with Pool(db) as pool:
        pool.add_ports(ports)
    rng = random.Random(1)
    for _ in range(15):
        readies = [CTX.Event() for _ in range(3)]
        children = [
            CTX.Process(target=churn, args=(str(db), worker, readies[worker]))
            for worker in range(3)
        ]
        for child in children:
            child.start()
        for ready in readies:
            assert ready.wait(JOIN_TIMEOUT_S)
        for child in children:
            time.sleep(rng.uniform(0.0, 0.05))
            child.kill()
            child.join(JOIN_TIMEOUT_S)
            assert child.exitcode == -signal.SIGKILL
        assert_consistent(db, ports)
    drain_and_refill(db, ports)
