"""The daemon's CNI service, its per-interface gate and its metrics, on a fake node."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from ovn_underlay.cli.daemon import QUIET_LIBRARIES, _setup_logging
from ovn_underlay.config import ConfigError
from ovn_underlay.control.base import ChildPort
from ovn_underlay.daemon.gate import KeyedGate
from ovn_underlay.daemon.metrics import Metrics, timed
from ovn_underlay.daemon.service import CniService
from ovn_underlay.metrics_http import split_address
from ovn_underlay.pods.attach import PodLink
from ovn_underlay.pods.pool import PodInterface, PoolStats
from tests.unit.cni_requests import BAD_CONFIGS, CONTAINER_ID, make_config, make_env

PORT = ChildPort("node1-p3", "0a:58:c0:00:02:09", "192.0.2.9", 24, "192.0.2.1", 3)


class FakeAttacher:
    """Records the attachments it is asked for; each call takes ``delay`` seconds."""

    def __init__(self, node: FakeAgent) -> None:
        self.node = node

    def add(self, att: PodInterface) -> PodLink:
        self.node.enter(att.container_id)
        return PodLink(PORT, "oulhost", att.ifname, att.netns, 1450)

    def delete(self, container_id: str, ifname: str) -> None:
        self.node.enter(container_id)


class FakeAgent:
    """A NodeAgent stand-in: a gate, metrics and attachers that track overlapping calls."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.gate = KeyedGate()
        self.metrics = Metrics()
        self.delay = delay
        self.fail = fail
        self.ovsdb = "unix:/var/run/openvswitch/db.sock"
        self.calls: list[str] = []
        self.running: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}
        self._lock = threading.Lock()

    def lend_attacher(self, ovsdb: str, readiness_timeout: float,
                      need_network: bool = True) -> AbstractContextManager[FakeAttacher]:
        if self.fail is not None:
            raise self.fail
        return nullcontext(FakeAttacher(self))

    def enter(self, container_id: str) -> None:
        with self._lock:
            self.calls.append(container_id)
            self.running[container_id] = self.running.get(container_id, 0) + 1
            total = sum(self.running.values())
            self.most_at_once[container_id] = max(self.most_at_once.get(container_id, 0),
                                                  self.running[container_id])
            self.most_at_once["*"] = max(self.most_at_once.get("*", 0), total)
        time.sleep(self.delay)
        with self._lock:
            self.running[container_id] -= 1


def sample(agent: FakeAgent, name: str, **labels: str) -> float:
    value = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make_service(agent: FakeAgent) -> tuple[CniService, list[int]]:
    changed: list[int] = []
    service = CniService(agent, lambda: changed.append(1))  # type: ignore[arg-type]
    return service, changed


def test_add_answers_the_result_the_plugin_would_print(netns: str) -> None:
    agent = FakeAgent()
    service, changed = make_service(agent)
    code, out = service.handle(make_env("ADD", netns), make_config(cniVersion="1.0.0"))
    assert code == 0
    result = json.loads(out)
    assert result["cniVersion"] == "1.0.0"
    assert result["ips"] == [{"address": "192.0.2.9/24", "gateway": "192.0.2.1",
                              "interface": 1}]
    assert result["interfaces"][1] == {"name": "eth0", "mac": PORT.mac, "sandbox": netns}
    assert agent.calls == [CONTAINER_ID]
    assert changed == [1]
    assert sample(agent, "ovn_underlay_cni_request_duration_seconds_count", command="ADD",
                  result="ok") == 1


def test_version_and_bad_requests_need_no_node(netns: str) -> None:
    agent = FakeAgent(fail=AssertionError("no node access expected"))
    service, changed = make_service(agent)
    code, out = service.handle({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert code == 0 and json.loads(out)["cniVersion"] == "0.4.0"
    code, out = service.handle(make_env("ADD", netns), b"{not json")
    assert code == 1 and json.loads(out)["code"] == 6
    code, out = service.handle({"CNI_COMMAND": "FROB"}, make_config(cniVersion="0.4.0"))
    error = json.loads(out)
    assert code == 1 and error["code"] == 4 and error["cniVersion"] == "0.4.0"
    assert changed == []
    assert sample(agent, "ovn_underlay_cni_errors_total", command="ADD", code="6") == 1
    assert sample(agent, "ovn_underlay_cni_errors_total", command="invalid", code="4") == 1
    assert sample(agent, "ovn_underlay_cni_request_duration_seconds_count",
                  command="VERSION", result="ok") == 1


@pytest.mark.parametrize("stdin", BAD_CONFIGS.values(), ids=list(BAD_CONFIGS))
def test_bad_plugin_keys_are_invalid_config_without_node_access(netns: str,
                                                                stdin: bytes) -> None:
    agent = FakeAgent(fail=AssertionError("no node access expected"))
    service, _ = make_service(agent)
    code, out = service.handle(make_env("ADD", netns), stdin)
    assert code == 1
    assert json.loads(out)["code"] == 7


def test_18_byte_ifname_is_invalid_environment(netns: str) -> None:
    agent = FakeAgent(fail=AssertionError("no node access expected"))
    service, _ = make_service(agent)
    code, out = service.handle(make_env("ADD", netns, CNI_IFNAME="\u00e9" * 9), make_config())
    assert code == 1
    assert json.loads(out)["code"] == 4


@pytest.mark.parametrize(("fail", "code"), [(ConfigError("node-init first"), 7),
                                            (RuntimeError("boom"), 102)])
def test_failures_become_cni_errors(netns: str, fail: Exception, code: int) -> None:
    agent = FakeAgent(fail=fail)
    service, changed = make_service(agent)
    status, out = service.handle(make_env("ADD", netns), make_config())
    error = json.loads(out)
    assert status == 1 and error["code"] == code and error["cniVersion"] == "1.1.0"
    assert str(fail) in error["msg"] + error.get("details", "")
    assert changed == [1], "a failed ADD may have taken and freed a port: refill checks"
    assert sample(agent, "ovn_underlay_cni_request_duration_seconds_count", command="ADD",
                  result="error") == 1


def test_calls_for_one_interface_wait_for_each_other_and_others_do_not(netns: str) -> None:
    agent = FakeAgent(delay=0.2)
    service, _ = make_service(agent)
    same = [make_env("ADD", netns)] * 3 + [make_env("DEL", netns)]
    others = [make_env("ADD", netns, CNI_CONTAINERID=f"other{i}") for i in range(4)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda env: service.handle(env, make_config()), same + others))
    took = time.monotonic() - started
    assert [code for code, _ in replies] == [0] * 8
    assert agent.most_at_once[CONTAINER_ID] == 1
    assert agent.most_at_once["*"] >= 4
    assert 4 * 0.2 <= took < 8 * 0.2


class GateProbe(FakeAgent):
    """A FakeAgent that notes, in every call of the plugin and of pool_changed, whether the
    call's pod interface is held."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[str, bool]] = []

    def note(self, what: str, container_id: str) -> None:
        free = self.gate.try_hold((container_id, "eth0"))
        if free:
            self.gate.release((container_id, "eth0"))
        self.held.append((what, not free))

    def enter(self, container_id: str) -> None:
        self.note("plugin", container_id)
        super().enter(container_id)


@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_the_gate_is_held_around_the_plugin_and_released_before_the_pool_is_told(
        netns: str, command: str) -> None:
    agent = GateProbe()
    service = CniService(agent,  # type: ignore[arg-type]
                         lambda: agent.note("pool_changed", CONTAINER_ID))
    code, _ = service.handle(make_env(command, netns), make_config())
    assert code == 0
    assert agent.held == [("plugin", True), ("pool_changed", False)]


@pytest.mark.parametrize("stdin", [make_config(readinessTimeout=0), make_config(name=None)],
                         ids=["bad-key", "bad-request"])
def test_a_call_that_builds_no_plugin_neither_waits_at_the_gate_nor_tells_the_pool(
        netns: str, stdin: bytes) -> None:
    agent = FakeAgent(fail=AssertionError("no node access expected"))
    service, changed = make_service(agent)
    with ThreadPoolExecutor(1) as pool, agent.gate.hold((CONTAINER_ID, "eth0")):
        # A call for the same interface is in progress: this one is answered all the same.
        code, out = pool.submit(service.handle, make_env("ADD", netns), stdin).result(timeout=5)
    assert code == 1 and json.loads(out)["code"] == 7
    assert changed == []
    assert sample(agent, "ovn_underlay_cni_errors_total", command="ADD", code="7") == 1


def test_the_service_touches_nothing_process_wide(netns: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log_file = tmp_path / "cni.log"
    service, _ = make_service(FakeAgent())
    code, out = service.handle(make_env("ADD", netns),
                               make_config(logFile=str(log_file), logLevel="debug"))
    assert code == 0 and json.loads(out)["cniVersion"] == "1.1.0"
    assert (root.handlers, root.level) == (handlers, level)
    assert not log_file.exists()
    assert capsys.readouterr().out == ""


def test_background_work_keeps_the_key_held() -> None:
    gate = KeyedGate()
    order: list[str] = []
    with gate.hold("k"):
        gate.extend("k")

    def later() -> None:
        with gate.hold("k"):
            order.append("next")

    waiter = threading.Thread(target=later)
    waiter.start()
    time.sleep(0.1)
    assert order == [] and not gate.try_hold("k")
    order.append("background done")
    gate.release("k")
    waiter.join(5)
    assert order == ["background done", "next"]
    assert gate.try_hold("k")


class RecordingControl:
    """A control plane that answers add_pool_ports and fails record_owners."""

    def add_pool_ports(self, switch: str, count: int) -> tuple[ChildPort, ...]:
        return tuple(ChildPort(f"{switch}-p{i}", "0a:58:00:00:00:01", "10.0.0.9", 24, "10.0.0.1", i)
                     for i in range(count))

    def record_owners(self, owners: object) -> list[str]:
        raise RuntimeError("NB gone")

    def delete_pool_ports(self, switch: str, names: Iterable[str]) -> None:
        del switch, names

    def close(self) -> None:
        self.closed = True


def test_control_plane_requests_are_timed_by_operation_and_result() -> None:
    agent = FakeAgent()
    inner = RecordingControl()
    control = timed(inner, "ovn", agent.metrics)  # type: ignore[arg-type]
    assert len(control.add_pool_ports("sw", 2)) == 2
    with pytest.raises(RuntimeError):
        control.record_owners({"sw-p1": None})
    control.close()
    assert inner.closed
    for operation, result in (("add_pool_ports", "ok"), ("record_owners", "error")):
        assert sample(agent, "ovn_underlay_control_plane_request_duration_seconds_count",
                      backend="ovn", operation=operation, result=result) == 1
    assert sample(agent, "ovn_underlay_control_plane_request_duration_seconds_count",
                  backend="ovn", operation="close", result="ok") == 0


def test_pool_gauges_are_read_when_scraped() -> None:
    metrics = Metrics()
    stats = [PoolStats(total=10, free=6, attaching=1, attached=3)]
    metrics.watch_pool(lambda: stats[-1])
    get = metrics.registry.get_sample_value
    assert get("ovn_underlay_pool_size", {}) == 10
    assert get("ovn_underlay_pool_in_use", {}) == 4
    stats.append(PoolStats(total=12, free=12, attaching=0, attached=0))
    assert get("ovn_underlay_pool_ports", {"state": "free"}) == 12


@pytest.mark.parametrize(("address", "parsed"), [("127.0.0.1:9476", ("127.0.0.1", 9476)),
                                                 ("[::1]:0", ("::1", 0))])
def test_metrics_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert split_address(address) == parsed


@pytest.mark.parametrize("address", ["9476", "host:", ":80", "host:99999", "off"])
def test_bad_metrics_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address(address)


def test_exported_metrics_cover_the_issue(netns: str) -> None:
    agent = FakeAgent()
    service, _ = make_service(agent)
    service.handle(make_env("ADD", netns), make_config())
    names = {m.name for m in agent.metrics.registry.collect()}
    assert {"ovn_underlay_cni_request_duration_seconds", "ovn_underlay_cni_errors",
            "ovn_underlay_pool_refill_failures", "ovn_underlay_pool_refill_ports",
            "ovn_underlay_control_plane_request_duration_seconds"} <= names
    buckets = [s for m in agent.metrics.registry.collect() for s in m.samples
               if s.name.endswith("_bucket") and s.labels.get("command") == "ADD"]
    assert float(buckets[0].labels["le"]) == 0.001


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """The daemon's logging set-up replaces the root logger's handlers and quiets the HTTP
    libraries; put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    yield
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_daemon_log_file_is_created_private(tmp_path: Path) -> None:
    log_file = tmp_path / "daemon.log"
    umask = os.umask(0o022)
    try:
        _setup_logging(str(log_file), verbose=False)
    finally:
        os.umask(umask)
    logging.getLogger("ovn_underlay.daemon").info("serving")
    logging.getLogger("httpx").info('HTTP Request: GET http://api/ "HTTP/1.1 200 OK"')
    logging.getLogger("httpx").warning("HTTP trouble")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    text = log_file.read_text()
    assert "serving" in text and "HTTP trouble" in text
    assert "HTTP Request" not in text
