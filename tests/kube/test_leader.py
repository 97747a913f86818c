"""Leader election on a Lease of the test API server: one leader, hand-over, takeover, fencing."""

from __future__ import annotations

import datetime
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from ovn_underlay.controller.leader import ElectionConfig, LeaderElector
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.kube.support import eventually, write_kubeconfig

NS, NAME = "kube-system", "ovn-underlay-controller"
LEASE = 2
"""Seconds (the Lease's field is whole seconds); renew deadline 1 s, renew 0.3 s, retry 0.1 s."""


class Contender:
    """An elector with its own client, recording when its terms began and ended."""

    def __init__(self, server: KubeApiServer, tmp_path: Path, name: str) -> None:
        path = write_kubeconfig(tmp_path / f"kubeconfig-{name}", server.url)
        self.client = KubeClient(load_config(path))
        self.started: list[tuple[float, int]] = []
        self.stopped: list[float] = []
        self.elector = LeaderElector(
            self.client,
            ElectionConfig(NS, NAME, identity=name, lease_duration=LEASE, renew_deadline=1.0,
                           renew_interval=0.3, retry_period=0.1),
            on_started_leading=lambda epoch: self.started.append((time.monotonic(), epoch)),
            on_stopped_leading=lambda: self.stopped.append(time.monotonic()))

    @property
    def name(self) -> str:
        return self.elector.identity


@pytest.fixture
def contenders(server: KubeApiServer, tmp_path: Path) -> Iterator[Callable[[str], Contender]]:
    made: list[Contender] = []

    def make(name: str) -> Contender:
        made.append(Contender(server, tmp_path, name))
        return made[-1]

    yield make
    for contender in made:
        contender.elector.abandon()
        contender.client.close()


def holder(admin: Client) -> str | None:
    spec = admin.get(Lease, NAME, namespace=NS).spec
    assert spec is not None
    return spec.holderIdentity


def leaders(group: list[Contender]) -> list[Contender]:
    return [c for c in group if c.elector.still_leader()]


def test_one_of_three_contenders_leads(contenders: Callable[[str], Contender],
                                       admin: Client) -> None:
    group = [contenders(f"c{i}") for i in range(3)]
    for c in group:
        c.elector.start()
    eventually(lambda: len(leaders(group)) == 1)
    (leader,) = leaders(group)
    end = time.monotonic() + 2 * LEASE
    while time.monotonic() < end:  # through several renewals, and past a lease duration
        assert leaders(group) == [leader]
        time.sleep(0.05)
    assert holder(admin) == leader.name
    assert [len(c.started) for c in group if c is not leader] == [0, 0]
    assert leader.elector.epoch == leader.started[0][1] == 1


def test_a_clean_stop_hands_over_at_once(contenders: Callable[[str], Contender],
                                         admin: Client) -> None:
    group = [contenders(f"c{i}") for i in range(3)]
    for c in group:
        c.elector.start()
    eventually(lambda: len(leaders(group)) == 1)
    (first,) = leaders(group)
    stopping = time.monotonic()
    first.elector.stop()
    assert not first.elector.still_leader() and len(first.stopped) == 1
    rest = [c for c in group if c is not first]
    eventually(lambda: len(leaders(rest)) == 1, timeout=2)
    (second,) = leaders(rest)
    handover = second.started[0][0] - stopping
    print(f"clean hand-over: {handover * 1000:.0f} ms")
    assert handover < 1.0
    assert first.stopped[0] < second.started[0][0]
    assert holder(admin) == second.name
    assert second.started[0][1] == first.started[0][1] + 1


def test_a_killed_leader_is_replaced_within_the_lease_and_fenced_first(
        contenders: Callable[[str], Contender], admin: Client) -> None:
    group = [contenders(f"c{i}") for i in range(2)]
    for c in group:
        c.elector.start()
    eventually(lambda: len(leaders(group)) == 1)
    (first,) = leaders(group)
    (second,) = [c for c in group if c is not first]
    fenced: list[float] = []

    def watch() -> None:
        while first.elector.still_leader():
            time.sleep(0.005)
        fenced.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = first.elector.deadline
    killed = time.monotonic()
    first.elector.abandon()  # no release, no callback: as a crash or partition looks
    eventually(lambda: second.started, timeout=LEASE + 2)
    watcher.join()
    takeover = second.started[0][0] - killed
    print(f"takeover after a killed leader: {takeover * 1000:.0f} ms "
          f"(fenced {(second.started[0][0] - fenced[0]) * 1000:.0f} ms before)")
    assert takeover < LEASE + 1.0  # the lease, counted from the last renewal seen, + a retry
    assert deadline is not None and fenced[0] < second.started[0][0]
    assert deadline <= second.started[0][0]
    assert first.stopped == []  # it never noticed: still_leader() turned false by time alone
    assert holder(admin) == second.name
    assert second.started[0][1] > first.started[0][1]


def test_epochs_strictly_increase_across_terms(contenders: Callable[[str], Contender]) -> None:
    a, b = contenders("a"), contenders("b")
    epochs: list[int] = []
    a.elector.start()
    eventually(a.elector.still_leader)
    b.elector.start()
    for _ in range(2):  # a -> b -> a -> b -> a, clean stops
        for leader, other in ((a, b), (b, a)):
            eventually(leader.elector.still_leader)
            epoch = leader.elector.epoch
            assert epoch is not None
            epochs.append(epoch)
            leader.elector.stop()
            eventually(other.elector.still_leader)
            leader.elector.start()
    eventually(a.elector.still_leader)
    epochs.append(a.elector.epoch or 0)
    a.elector.abandon()  # a killed leader: b takes over after the lease
    eventually(lambda: b.elector.epoch is not None and b.elector.epoch > epochs[-1],
               timeout=LEASE + 2)
    epochs.append(b.elector.epoch or 0)
    terms = sorted(a.started + b.started)  # by the time each began
    assert [e for _, e in terms] == epochs
    assert len(epochs) == 6
    assert all(x < y for x, y in itertools.pairwise(epochs)), epochs


def test_two_racing_for_an_absent_lease_one_wins_the_other_gets_409(
        contenders: Callable[[str], Contender], admin: Client) -> None:
    racers = [contenders("x"), contenders("y")]
    both_read = threading.Barrier(2)
    refused: list[int] = []
    for racer in racers:
        read, create = racer.elector._read, racer.client.api.create

        def read_then_wait(read: Callable[[], Lease | None] = read) -> Lease | None:
            lease = read()
            both_read.wait(timeout=5)
            return lease

        def create_recording(*args: Any, create: Any = create, **kwargs: Any) -> Any:
            try:
                return create(*args, **kwargs)
            except ApiError as exc:
                refused.append(exc.status.code or 0)
                raise

        racer.elector._read = read_then_wait  # type: ignore[method-assign]
        racer.client.api.create = create_recording  # type: ignore[method-assign]
    results: dict[str, bool] = {}
    threads = [threading.Thread(target=lambda r=r: results.update(
        {r.name: r.elector.try_acquire()})) for r in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False, True]
    assert refused == [409]
    (winner,) = [name for name, won in results.items() if won]
    assert holder(admin) == winner


def test_a_deposed_leader_that_comes_back_does_not_lead(
        contenders: Callable[[str], Contender], admin: Client) -> None:
    a = contenders("a")
    a.elector.start()
    eventually(a.elector.still_leader)
    b = contenders("b")
    b.elector.start()
    a.elector.abandon()
    eventually(b.elector.still_leader, timeout=LEASE + 2)
    assert not a.elector.still_leader()
    assert a.elector.renew() is False  # its resourceVersion is stale: 409, re-read, foreign
    assert a.stopped and a.elector.epoch is None
    assert a.elector.try_acquire() is False
    a.elector.start()
    end = time.monotonic() + 2 * LEASE
    while time.monotonic() < end:
        assert not a.elector.still_leader()
        assert b.elector.still_leader()
        time.sleep(0.05)
    assert len(a.started) == 1 and len(b.started) == 1
    assert holder(admin) == "b"


def test_expiry_is_judged_by_the_local_clock_not_renew_time(
        contenders: Callable[[str], Contender], admin: Client) -> None:
    """A renewTime long past (another machine's wall clock) does not make a Lease expired:
    the candidate waits a lease duration from when it first saw the Lease."""
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    admin.create(Lease(metadata=ObjectMeta(name=NAME, namespace=NS),
                       spec=LeaseSpec(holderIdentity="elsewhere", leaseDurationSeconds=LEASE,
                                      renewTime=past, acquireTime=past, leaseTransitions=4)),
                 namespace=NS)
    c = contenders("c")
    first_look = time.monotonic()
    c.elector.start()
    eventually(c.elector.still_leader, timeout=LEASE + 2)
    assert c.started[0][0] - first_look >= LEASE
    assert c.started[0][1] == 5


def test_timings_are_checked() -> None:
    with pytest.raises(ValueError, match="renew_deadline < lease_duration"):
        ElectionConfig(NS, NAME, lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="retry_period"):
        ElectionConfig(NS, NAME, retry_period=10)
    assert ElectionConfig(NS, NAME).identity != ElectionConfig(NS, NAME).identity
