"""The daemon's background recording of port owners: batches, newest wins, retries, restart."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from ovn_underlay.control.base import ChildPort, ControlPlaneUnavailable, PortOwner
from ovn_underlay.daemon.owners import OwnerWriter
from ovn_underlay.pods.pool import PodInterface, Pool

WEB = PortOwner("default", "web", "c1")
DB = PortOwner("default", "db", "c2")


class RecordingControl:
    """record_owners of a control plane: keeps every batch, can fail or block."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[dict[str, PortOwner | None]] = []
        self.failures = failures
        self.gate = threading.Event()
        self.gate.set()

    def record_owners(self, owners: Mapping[str, PortOwner | None]) -> list[str]:
        self.gate.wait(5)
        if self.failures:
            self.failures -= 1
            raise ControlPlaneUnavailable("NB unreachable")
        self.batches.append(dict(owners))
        return [port for port, owner in owners.items() if owner and port == "gone"]


def writer_for(control: RecordingControl, window: float = 0.05,
               retry: float = 0.02) -> OwnerWriter:
    return OwnerWriter(lambda: control, window=window, retry=retry)  # type: ignore[arg-type,return-value]


def test_changes_within_the_window_make_one_request() -> None:
    control = RecordingControl()
    writer = writer_for(control, window=0.2)
    writer.record("p1", WEB)
    writer.record("p2", DB)
    writer.record("p3", None)
    assert writer.flush(5)
    assert control.batches == [{"p1": WEB, "p2": DB, "p3": None}]
    writer.close()


def test_the_newest_change_of_a_port_wins() -> None:
    control = RecordingControl()
    writer = writer_for(control, window=0.2)
    writer.record("p1", WEB)
    writer.record("p1", None)
    writer.record("p1", DB)
    assert writer.flush(5)
    assert control.batches == [{"p1": DB}]
    writer.close()


def test_changes_made_during_a_request_go_in_the_next_one() -> None:
    control = RecordingControl()
    writer = writer_for(control, window=0.01)
    control.gate.clear()
    writer.record("p1", WEB)
    while not writer._busy:  # the first batch is being written (and blocks)
        threading.Event().wait(0.005)
    writer.record("p1", None)
    control.gate.set()
    assert writer.flush(5)
    assert control.batches == [{"p1": WEB}, {"p1": None}]
    writer.close()


def test_a_failing_control_plane_is_retried_and_nothing_is_lost() -> None:
    control = RecordingControl(failures=3)
    writer = writer_for(control)
    writer.record("p1", WEB)
    assert writer.flush(5)
    assert control.batches == [{"p1": WEB}]
    writer.close()


def test_a_newer_change_made_while_failing_is_not_overwritten_by_the_retry() -> None:
    control = RecordingControl(failures=1)
    control.gate.clear()
    writer = writer_for(control, window=0.01, retry=0.05)
    writer.record("p1", WEB)
    while not writer._busy:
        threading.Event().wait(0.005)
    writer.record("p1", None)
    control.gate.set()
    assert writer.flush(5)
    assert control.batches == [{"p1": None}]
    writer.close()


def test_skipped_ports_are_logged_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    control = RecordingControl()
    writer = writer_for(control)
    writer.record("gone", WEB)
    assert writer.flush(5)
    writer.close()
    assert control.batches == [{"gone": WEB}]
    assert "not recording owners on gone: no such pool port" in caplog.text


def test_close_records_what_is_pending_then_stops() -> None:
    control = RecordingControl()
    writer = writer_for(control, window=0.1)
    writer.record("p1", WEB)
    writer.close()
    assert control.batches == [{"p1": WEB}]
    assert not writer._thread.is_alive()


def test_close_gives_up_on_an_unreachable_control_plane() -> None:
    control = RecordingControl(failures=1000)
    writer = writer_for(control)
    writer.record("p1", WEB)
    writer.close(timeout=0.2)
    assert not writer._thread.is_alive()
    assert control.batches == []


def test_reconcile_queues_every_pool_port_as_the_pool_has_it(tmp_path: Path) -> None:
    control = RecordingControl()
    with Pool(tmp_path / "pool.db") as pool:
        pool.add_ports(ChildPort(f"sw-p{tag}", f"0a:58:00:00:00:0{tag}", f"198.19.1.{tag + 2}",
                                24, "198.19.1.1", tag) for tag in (1, 2, 3))
        taken = pool.acquire(PodInterface("c1", "eth0", "/run/netns/a", "default", "web"))
        writer = writer_for(control, window=0.2)
        writer.record("sw-p3", DB)  # newer than what the pool says: kept
        writer.reconcile(pool)
        assert writer.flush(5)
    free = {"sw-p1", "sw-p2", "sw-p3"} - {taken.port.name}
    expected: dict[str, PortOwner | None] = {port: None for port in free}
    expected[taken.port.name] = WEB
    expected["sw-p3"] = DB
    assert control.batches == [expected]
    writer.close()
