"""Two controllers on one Lease and one NB: one acts, take-over after a kill and a stop,
fencing of a deposed leader's NB writes."""

from __future__ import annotations

import logging
import time

import pytest
from lightkube import Client

from ovn_underlay.control.base import Fenced
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from tests.controller.conftest import LEASE, MakeReplica, Replica
from tests.controller.support import add_node, eventually, rows, wait_ready


def leaders(group: list[Replica]) -> list[Replica]:
    return [r for r in group if r.controller.leading]


def test_one_of_two_controllers_acts(replicas: MakeReplica, cluster: Client, nb: str) -> None:
    group = [replicas("c1"), replicas("c2")]
    eventually(lambda: len(leaders(group)) == 1)
    end = time.monotonic() + 2 * LEASE
    while time.monotonic() < end:
        assert len(leaders(group)) == 1
        time.sleep(0.05)
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    (leader,) = leaders(group)
    follower = next(r for r in group if r is not leader)
    assert follower.connections == []
    assert [r for r in rows(nb, "Logical_Router") if r == "ovn-underlay"] == ["ovn-underlay"]


def test_a_killed_leader_is_replaced_within_the_lease_time(
        replicas: MakeReplica, cluster: Client) -> None:
    first = replicas("c1")
    eventually(lambda: first.controller.leading)
    second = replicas("c2")
    time.sleep(0.3)
    assert not second.controller.leading
    killed = time.monotonic()
    first.controller.elector.abandon()
    eventually(lambda: second.controller.leading, timeout=2 * LEASE)
    took = time.monotonic() - killed
    assert took <= LEASE + 0.5, f"took over after {took:.2f} s"
    print(f"a killed leader replaced after {took:.2f} s (lease {LEASE} s)")
    assert not first.controller.leading
    add_node(cluster, "n1", "10.0.0.11")
    assert wait_ready(cluster, "n1")["switch"] == "node-n1"


def test_a_stopped_leader_hands_over_at_once(replicas: MakeReplica, cluster: Client) -> None:
    first = replicas("c1")
    eventually(lambda: first.controller.leading)
    second = replicas("c2")
    time.sleep(0.3)
    stopped = time.monotonic()
    first.controller.stop()
    eventually(lambda: second.controller.leading, timeout=LEASE)
    took = time.monotonic() - stopped
    assert took < 1.0
    print(f"a stopped leader handed over in {took * 1000:.0f} ms (retry period 100 ms)")
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")


def test_a_deposed_leaders_nb_write_fails(replicas: MakeReplica, cluster: Client,
                                          nb: str) -> None:
    first = replicas("c1")
    eventually(lambda: first.controller.leading)
    add_node(cluster, "n1", "10.0.0.11")
    wait_ready(cluster, "n1")
    paused = first.connections[-1]
    second = replicas("c2")
    first.controller.elector.abandon()  # paused: its connection is still open
    eventually(lambda: second.controller.leading, timeout=2 * LEASE)
    assert second.connections
    # a write that passed still_leader() before the deadline and arrives only now
    with pytest.raises(Fenced, match="a later leader has taken over"):
        paused.add_pool_ports("node-n1", 1)
    assert len(rows(nb, "Logical_Switch_Port")) == 3 + 6


def test_a_fenced_controller_steps_down_and_writes_nothing(
        replicas: MakeReplica, cluster: Client, nb: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ovn_underlay.controller")
    first = replicas("c1")
    eventually(lambda: first.controller.leading)
    later = OvnNbControlPlane(nb, timeout=5)
    try:
        later.fence(1000)
    finally:
        later.close()
    add_node(cluster, "n1", "10.0.0.11")
    eventually(lambda: "deposed" in caplog.text)
    time.sleep(0.5)
    assert "node-n1" not in rows(nb, "Logical_Switch")
    assert "holds leader epoch 1000" in caplog.text
