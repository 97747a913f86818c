"""The pool refill: watermarks, batches, failures, reconciliation and reclaiming, on fakes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.control.base import ChildPort, ControlPlaneError, NodeNetwork
from ovn_underlay.control.planning import mac_for_ip
from ovn_underlay.daemon.gate import KeyedGate
from ovn_underlay.daemon.metrics import Metrics
from ovn_underlay.daemon.refill import Refiller, Watermarks
from ovn_underlay.pods import filler
from ovn_underlay.pods.pool import PodInterface, Pool

CFG = NodeConfig(switch="node1", subnet="10.9.0.0/24", gateway_ip="10.9.0.1", router="r",
                 pool_low=4, pool_high=10, pool_batch=4)


class FakeControl:
    """A control plane holding one node network in memory."""

    def __init__(self) -> None:
        self.ports: dict[str, ChildPort] = {}
        self.batches: list[int] = []
        self.fail_next = 0
        self.closed = False

    def make(self, count: int) -> tuple[ChildPort, ...]:
        first = len(self.ports) + 1
        made = tuple(ChildPort(f"node1-p{tag}", mac_for_ip(f"10.9.0.{tag + 2}"),
                               f"10.9.0.{tag + 2}", 24, CFG.gateway_ip, tag)
                     for tag in range(first, first + count))
        self.ports.update((p.name, p) for p in made)
        return made

    def add_pool_ports(self, switch: str, count: int) -> tuple[ChildPort, ...]:
        assert switch == "node1"
        if self.fail_next:
            self.fail_next -= 1
            raise ControlPlaneError("NB unreachable")
        self.batches.append(count)
        return self.make(count)

    def get_node_network(self, switch: str) -> NodeNetwork:
        return NodeNetwork(switch, CFG.subnet, CFG.gateway_ip, "0a:58:0a:09:00:01", "r", "vm1",
                           None, tuple(self.ports.values()))

    def record_owners(self, owners: object) -> list[str]:
        del owners
        return []

    def close(self) -> None:
        self.closed = True


class FakeDetacher:
    """What reclaiming uses of an PodAttacher: delete, which frees the port."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def delete(self, container_id: str, ifname: str) -> ChildPort | None:
        return self.pool.release(container_id, ifname)


class FakeAgent:
    """A NodeAgent stand-in over a real pool file."""

    def __init__(self, tmp_path: Path, cfg: NodeConfig = CFG) -> None:
        self.cfg = replace(cfg, state_dir=str(tmp_path))
        self.pool = Pool(self.cfg.pool_path)
        self.gate = KeyedGate()
        self.metrics = Metrics()
        self.ovsdb = "unix:db.sock"

    def config(self) -> NodeConfig:
        return self.cfg

    def attacher(self, ovsdb: str, readiness_timeout: float,
                 need_network: bool = True) -> FakeDetacher:
        return FakeDetacher(self.pool)


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def agent(tmp_path: Path) -> FakeAgent:
    return FakeAgent(tmp_path)


def refiller(agent: FakeAgent, control: FakeControl, **kwargs: float) -> Refiller:
    return Refiller(agent, control_factory=lambda cfg: control, **kwargs)  # type: ignore[arg-type]


def take(agent: FakeAgent, count: int, netns: str = "/proc/self/ns/net") -> None:
    for i in range(count):
        agent.pool.acquire(PodInterface(f"pod{i}", "eth0", netns))


def test_below_low_the_pool_is_refilled_up_to_high_in_batches(agent: FakeAgent,
                                                              control: FakeControl) -> None:
    agent.pool.add_ports(control.make(5))
    take(agent, 2)
    refiller(agent, control).run_once()
    assert agent.pool.stats().free == 10
    assert control.batches == [4, 3]
    assert {p.name for p in agent.pool.ports()} == set(control.ports)
    sample = agent.metrics.registry.get_sample_value
    assert sample("ovn_underlay_pool_refill_ports_total", {"action": "added"}) == 7


def test_at_or_above_low_nothing_is_asked(agent: FakeAgent, control: FakeControl) -> None:
    agent.pool.add_ports(control.make(4))
    refill = refiller(agent, control)
    refill.run_once()
    assert control.batches == [] and refill.status.added == 0
    assert (refill.status.low, refill.status.high, refill.status.batch) == (4, 10, 4)


def test_low_zero_turns_refill_off(tmp_path: Path, control: FakeControl) -> None:
    agent = FakeAgent(tmp_path, replace(CFG, pool_low=0))
    refiller(agent, control).run_once()
    assert control.batches == []


def test_no_refill_while_pool_fill_is_adding_ports(agent: FakeAgent, control: FakeControl,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filler, "running", lambda cfg: 4242)
    refiller(agent, control).run_once()
    assert control.batches == []


def test_nothing_happens_before_lswitch_setup(tmp_path: Path, control: FakeControl) -> None:
    agent = FakeAgent(tmp_path, NodeConfig())
    refill = refiller(agent, control)
    refill.run_once()
    assert control.batches == [] and refill.status.failures == 0


@pytest.mark.parametrize(("low", "high", "batch"), [(5, 4, 1), (-1, 4, 1), (1, 4, 0)])
def test_bad_watermarks_are_a_config_error(low: int, high: int, batch: int) -> None:
    with pytest.raises(ConfigError, match="watermarks"):
        Watermarks.of(replace(CFG, pool_low=low, pool_high=high, pool_batch=batch))


def test_a_failed_round_is_counted_and_the_next_one_adopts_what_was_made(
        agent: FakeAgent, control: FakeControl) -> None:
    refill = refiller(agent, control)
    control.fail_next = 1
    refill.run_once()
    assert refill.status.failures == 1 and "NB unreachable" in refill.status.last_error
    assert agent.metrics.registry.get_sample_value(
        "ovn_underlay_pool_refill_failures_total") == 1
    control.make(3)  # made by a refill that crashed before recording them
    refill.run_once()
    assert refill.status.adopted == 3
    assert agent.pool.stats().total == 10
    assert {p.name for p in agent.pool.ports()} == set(control.ports)


def test_start_up_drops_free_records_whose_port_is_gone(agent: FakeAgent,
                                                        control: FakeControl) -> None:
    ports = control.make(12)
    agent.pool.add_ports(ports)
    agent.pool.acquire(PodInterface("held", "eth0", "/proc/self/ns/net"))
    held = agent.pool.find("held", "eth0")
    assert held is not None
    for name in (held.port.name, "node1-p12"):
        del control.ports[name]
    refiller(agent, control).run_once()
    names = {p.name for p in agent.pool.ports()}
    assert "node1-p12" not in names
    assert held.port.name in names, "a port in use is never dropped"


def test_ports_of_pods_whose_netns_is_gone_are_reclaimed(agent: FakeAgent,
                                                         control: FakeControl) -> None:
    agent.pool.add_ports(control.make(10))
    take(agent, 2, netns="/var/run/netns/no-such-pod")
    take_alive = PodInterface("alive", "eth0", "/proc/self/ns/net")
    agent.pool.acquire(take_alive)
    refill = refiller(agent, control, reclaim_after=0.0)
    assert agent.gate.try_hold(("pod1", "eth0"))  # a call in progress
    refill.run_once()
    assert refill.status.reclaimed == 1
    assert {a.interface.container_id for a in agent.pool.leases()} == {"pod1", "alive"}
    agent.gate.release(("pod1", "eth0"))
    refill.run_once(reclaim=False)
    assert agent.pool.find("pod1", "eth0") is not None
    refill.run_once()
    assert {a.interface.container_id for a in agent.pool.leases()} == {"alive"}


def test_young_allocations_are_not_reclaimed(agent: FakeAgent, control: FakeControl) -> None:
    agent.pool.add_ports(control.make(10))
    take(agent, 1, netns="/var/run/netns/not-yet")
    refiller(agent, control, reclaim_after=60.0).run_once()
    assert agent.pool.find("pod0", "eth0") is not None


def test_the_background_thread_refills_when_woken(agent: FakeAgent,
                                                  control: FakeControl) -> None:
    agent.pool.add_ports(control.make(10))
    rounds: list[float] = []
    refill = Refiller(agent, lambda: rounds.append(time.monotonic()),  # type: ignore[arg-type]
                      interval=30.0, control_factory=lambda cfg: control)
    refill.start()
    try:
        deadline = time.monotonic() + 5
        while not rounds and time.monotonic() < deadline:
            time.sleep(0.01)
        take(agent, 8)
        refill.wake()
        while agent.pool.stats().free < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        refill.stop()
    assert agent.pool.stats().free == 10
    assert len(rounds) >= 2
    assert control.closed


def test_reclaim_is_not_starved_by_continuous_wake_ups(agent: FakeAgent,
                                                       control: FakeControl) -> None:
    """Under churn every ADD/DEL wakes the loop before its timer ends: reclaim must still run."""
    agent.pool.add_ports(control.make(10))
    refill = Refiller(agent, interval=0.2, reclaim_after=0.0,  # type: ignore[arg-type]
                      control_factory=lambda cfg: control)
    refill.start()
    try:
        deadline = time.monotonic() + 3
        while not refill.status.checked_at and time.monotonic() < deadline:
            time.sleep(0.01)
        take(agent, 1, netns="/var/run/netns/gone-without-a-del")  # after the start's round
        while refill.status.reclaimed == 0 and time.monotonic() < deadline:
            refill.wake()  # a pod started or stopped every 20 ms
            time.sleep(0.02)
    finally:
        refill.stop()
    assert refill.status.reclaimed == 1
