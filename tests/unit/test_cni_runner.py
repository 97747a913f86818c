"""The CNI request path (ovn_underlay.cni.runner): exit codes, stdout, plugin calls, logging."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.cni.netconf import NetConf
from ovn_underlay.cni.runner import Hooks, Plugin, error_reply, run, serve, setup_logging
from ovn_underlay.cni.spec import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_POOL_EXHAUSTED,
    ERR_TRY_AGAIN,
    SUPPORTED_VERSIONS,
    CniError,
    Interface,
    IPConfig,
    Request,
    Result,
    Route,
)
from ovn_underlay.pods.cni_plugin import make_plugin
from tests.unit.cni_requests import BAD_CONFIGS, CONTAINER_ID, make_config, make_env

OUR_RESULT = Result(
    interfaces=(Interface("ovn-c0ffee", "0a:58:c0:00:02:09"),
                Interface("eth0", "0a:58:c0:00:02:09", "/var/run/netns/pod")),
    ips=(IPConfig("192.0.2.9/24", "192.0.2.1", 1),),
    routes=(Route("0.0.0.0/0", "192.0.2.1"),),
)
PREV_040: dict[str, Any] = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "lo", "sandbox": "/var/run/netns/pod"}],
    "ips": [{"version": "4", "address": "127.0.0.1/8", "interface": 0}],
    "dns": {"nameservers": ["10.96.0.10"]},
}
PREV_100: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "lo", "sandbox": "/var/run/netns/pod"}],
    "ips": [{"address": "127.0.0.1/8", "interface": 0}],
    "dns": {"nameservers": ["10.96.0.10"]},
}


class RecordingPlugin:
    """A fake plugin that records its calls and can be told to fail."""

    def __init__(self, fail_with: BaseException | None = None, chatty: bool = False) -> None:
        self.calls: list[tuple[str, Request]] = []
        self.fail_with = fail_with
        self.chatty = chatty

    def _record(self, method: str, req: Request) -> None:
        self.calls.append((method, req))
        if self.chatty:
            print(f"plugin chatter during {method}")
        if self.fail_with is not None:
            raise self.fail_with

    def add(self, req: Request) -> Result:
        self._record("add", req)
        return OUR_RESULT

    def delete(self, req: Request) -> None:
        self._record("delete", req)

    def check(self, req: Request) -> None:
        self._record("check", req)

    def status(self, req: Request) -> None:
        self._record("status", req)

    def gc(self, req: Request) -> None:
        self._record("gc", req)


class Factory:
    """Builds one RecordingPlugin and remembers every request (and its keys) it was called with."""

    def __init__(self, plugin: RecordingPlugin | None = None) -> None:
        self.plugin = plugin or RecordingPlugin()
        self.requests: list[Request] = []
        self.netconfs: list[NetConf] = []

    def __call__(self, req: Request, netconf: NetConf) -> Plugin:
        self.requests.append(req)
        self.netconfs.append(netconf)
        return self.plugin


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """run() configures the root logger; leave it as the test found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def invoke(factory: Factory, environ: dict[str, str], stdin: bytes) -> tuple[int, str]:
    stdout = io.BytesIO()
    code = run(factory, environ, stdin, stdout)
    return code, stdout.getvalue().decode()


# --- VERSION --------------------------------------------------------------------------------


@pytest.mark.parametrize(("stdin", "version"), [
    (b"", "1.1.0"),
    (b'{"cniVersion": "1.0.0"}', "1.0.0"),
    (b'{"cniVersion": "0.3.1"}', "0.3.1"),
    (b'{"cniVersion": "0.2.0"}', "1.1.0"),
    (b"garbage", "1.1.0"),
])
def test_version(stdin: bytes, version: str) -> None:
    factory = Factory()
    code, out = invoke(factory, {"CNI_COMMAND": "VERSION"}, stdin)
    assert code == 0
    assert json.loads(out) == {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert factory.requests == []


# --- ADD ------------------------------------------------------------------------------------


def test_add_prints_the_result_in_the_requested_version(netns: str) -> None:
    factory = Factory()
    code, out = invoke(factory, make_env("ADD", netns), make_config(cniVersion="0.3.1"))
    assert code == 0
    assert json.loads(out) == {
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "ovn-c0ffee", "mac": "0a:58:c0:00:02:09"},
                       {"name": "eth0", "mac": "0a:58:c0:00:02:09",
                        "sandbox": "/var/run/netns/pod"}],
        "ips": [{"version": "4", "address": "192.0.2.9/24", "gateway": "192.0.2.1",
                 "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
    }
    [(method, request)] = factory.plugin.calls
    assert method == "add"
    assert factory.requests == [request]
    assert (request.container_id, request.ifname, request.netns) == (CONTAINER_ID, "eth0", netns)


@pytest.mark.parametrize("prev", [PREV_040, PREV_100], ids=["0.4.0", "1.0.0"])
def test_add_chained_merges_prev_result(netns: str, prev: dict[str, Any]) -> None:
    version = prev["cniVersion"]
    code, out = invoke(Factory(), make_env("ADD", netns),
                       make_config(cniVersion=version, prevResult=prev))
    assert code == 0
    result = json.loads(out)
    assert result["cniVersion"] == version
    assert [iface["name"] for iface in result["interfaces"]] == ["lo", "ovn-c0ffee", "eth0"]
    assert [(ip["address"], ip["interface"]) for ip in result["ips"]] == [
        ("127.0.0.1/8", 0), ("192.0.2.9/24", 2)]
    assert result["interfaces"][result["ips"][1]["interface"]]["name"] == "eth0"
    assert all(("version" in ip) == (version == "0.4.0") for ip in result["ips"])
    assert result["dns"] == {"nameservers": ["10.96.0.10"]}
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]


# --- the commands that print nothing --------------------------------------------------------


@pytest.mark.parametrize(("command", "method"), [("DEL", "delete"), ("CHECK", "check")])
def test_del_and_check_print_nothing(netns: str, command: str, method: str) -> None:
    factory = Factory()
    code, out = invoke(factory, make_env(command, netns), make_config(prevResult=PREV_100))
    assert (code, out) == (0, "")
    assert [name for name, _ in factory.plugin.calls] == [method]


def test_del_without_netns_reaches_the_plugin() -> None:
    factory = Factory()
    code, out = invoke(factory, make_env("DEL"), make_config())
    assert (code, out) == (0, "")
    assert factory.plugin.calls[0][1].netns == ""


@pytest.mark.parametrize(("command", "method"), [("STATUS", "status"), ("GC", "gc")])
def test_status_and_gc_print_nothing(command: str, method: str) -> None:
    factory = Factory()
    attachments = [{"containerID": CONTAINER_ID, "ifname": "eth0"}]
    code, out = invoke(factory, {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"},
                       make_config(**{"cni.dev/valid-attachments": attachments}))
    assert (code, out) == (0, "")
    [(name, request)] = factory.plugin.calls
    assert name == method
    if command == "GC":
        assert request.valid_attachments == ((CONTAINER_ID, "eth0"),)


# --- bad requests never build the plugin ----------------------------------------------------


BAD_REQUESTS = [
    pytest.param({"CNI_COMMAND": ""}, make_config(), ERR_INVALID_ENV, id="no-command"),
    pytest.param({"CNI_COMMAND": "FROB"}, make_config(), ERR_INVALID_ENV, id="unknown-command"),
    pytest.param("ADD", b"{not json", ERR_DECODE, id="malformed-json"),
    pytest.param("ADD", b"", ERR_DECODE, id="empty-stdin"),
    pytest.param("ADD", make_config(cniVersion=None), ERR_INVALID_CONFIG, id="no-version"),
    pytest.param("ADD", make_config(cniVersion=None, cniVersions=[]), ERR_INVALID_CONFIG,
                 id="empty-cniVersions"),
    pytest.param("ADD", make_config(cniVersion="0.2.0"), ERR_INCOMPATIBLE_VERSION,
                 id="old-version"),
    pytest.param("ADD", make_config(name=None), ERR_INVALID_CONFIG, id="no-name"),
    pytest.param("ADD", make_config(type=None), ERR_INVALID_CONFIG, id="no-type"),
    pytest.param({"CNI_CONTAINERID": ""}, make_config(), ERR_INVALID_ENV, id="no-containerid"),
    pytest.param({"CNI_IFNAME": ""}, make_config(), ERR_INVALID_ENV, id="no-ifname"),
    pytest.param({"CNI_NETNS": ""}, make_config(), ERR_INVALID_ENV, id="no-netns"),
    pytest.param({"CNI_NETNS": "/nonexistent/netns"}, make_config(), ERR_INVALID_ENV,
                 id="missing-netns"),
    pytest.param({"CNI_IFNAME": "averyveryverylongname"}, make_config(), ERR_INVALID_ENV,
                 id="long-ifname"),
    pytest.param({"CNI_IFNAME": "eth 0"}, make_config(), ERR_INVALID_ENV, id="space-ifname"),
    pytest.param({"CNI_IFNAME": "\u00e9" * 9}, make_config(), ERR_INVALID_ENV,
                 id="18-byte-ifname"),
    pytest.param({"CNI_CONTAINERID": "-x"}, make_config(), ERR_INVALID_ENV, id="bad-containerid"),
    pytest.param({"CNI_ARGS": "K8S_POD_NAME"}, make_config(), ERR_INVALID_ENV, id="bad-args"),
    pytest.param("ADD", make_config(prevResult={"ips": "x"}), ERR_DECODE, id="bad-prevResult"),
    pytest.param({"CNI_COMMAND": "CHECK"}, make_config(cniVersion="0.3.1", prevResult=PREV_040),
                 ERR_INCOMPATIBLE_VERSION, id="check-0.3.1"),
    pytest.param({"CNI_COMMAND": "CHECK"}, make_config(), ERR_INVALID_CONFIG,
                 id="check-no-prevResult"),
    pytest.param({"CNI_COMMAND": "GC"}, make_config(cniVersion="1.0.0"),
                 ERR_INCOMPATIBLE_VERSION, id="gc-1.0.0"),
    pytest.param({"CNI_COMMAND": "STATUS"}, make_config(cniVersion="1.0.0"),
                 ERR_INCOMPATIBLE_VERSION, id="status-1.0.0"),
    pytest.param({"CNI_COMMAND": "GC"}, make_config(), ERR_INVALID_CONFIG,
                 id="gc-no-attachments"),
    *(pytest.param("ADD", stdin, ERR_INVALID_CONFIG, id=name)
      for name, stdin in BAD_CONFIGS.items()),
]


@pytest.mark.parametrize(("env_change", "stdin", "code"), BAD_REQUESTS)
def test_bad_request_is_an_error_on_stdout(netns: str, capsys: pytest.CaptureFixture[str],
                                           env_change: str | dict[str, str], stdin: bytes,
                                           code: int) -> None:
    environ = (make_env(env_change, netns) if isinstance(env_change, str)
               else make_env("ADD", netns, **env_change))
    factory = Factory()
    exit_code, out = invoke(factory, environ, stdin)
    assert exit_code == 1
    error = json.loads(out)  # stdout holds this one JSON document and nothing else
    assert set(error) <= {"cniVersion", "code", "msg", "details"}
    assert error["code"] == code
    assert error["msg"]
    assert error["cniVersion"] in SUPPORTED_VERSIONS
    assert factory.requests == []
    assert factory.plugin.calls == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("stdin", BAD_CONFIGS.values(), ids=list(BAD_CONFIGS))
def test_in_process_call_refuses_bad_keys(netns: str, stdin: bytes) -> None:
    stdout = io.BytesIO()
    assert run(make_plugin, make_env("ADD", netns), stdin, stdout) == 1
    assert json.loads(stdout.getvalue())["code"] == ERR_INVALID_CONFIG


def test_version_answers_whatever_the_plugin_keys_hold() -> None:
    code, out = invoke(Factory(), {"CNI_COMMAND": "VERSION"},
                       make_config(cniVersion="1.0.0", readinessTimeout=math.nan, logFile=5))
    assert code == 0
    assert json.loads(out)["cniVersion"] == "1.0.0"


def test_error_carries_the_configured_version(netns: str) -> None:
    code, out = invoke(Factory(), make_env("ADD", netns, CNI_IFNAME=""),
                       make_config(cniVersion="0.4.0"))
    assert code == 1
    assert json.loads(out)["cniVersion"] == "0.4.0"


def test_error_without_a_usable_version_says_latest(netns: str) -> None:
    code, out = invoke(Factory(), make_env("ADD", netns), b"{")
    assert code == 1
    assert json.loads(out)["cniVersion"] == "1.1.0"


# --- plugin failures ------------------------------------------------------------------------


def test_plugin_cni_error_is_passed_through(netns: str) -> None:
    failure = CniError(ERR_POOL_EXHAUSTED, "no free port in the pool", "node worker-3: 0 of 64")
    code, out = invoke(Factory(RecordingPlugin(fail_with=failure)), make_env("ADD", netns),
                       make_config(cniVersion="1.0.0"))
    assert code == 1
    assert json.loads(out) == {"cniVersion": "1.0.0", "code": ERR_POOL_EXHAUSTED,
                               "msg": "no free port in the pool",
                               "details": "node worker-3: 0 of 64"}


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_unexpected_exception_is_internal_error(netns: str, capsys: pytest.CaptureFixture[str],
                                                command: str) -> None:
    plugin = RecordingPlugin(fail_with=RuntimeError("ovsdb went away"))
    code, out = invoke(Factory(plugin), make_env(command, netns), make_config(prevResult=PREV_100))
    assert code == 1
    assert json.loads(out) == {"cniVersion": "1.1.0", "code": ERR_INTERNAL,
                               "msg": "internal error", "details": "ovsdb went away"}
    captured = capsys.readouterr()
    assert "Traceback" in captured.err
    assert "RuntimeError: ovsdb went away" in captured.err
    assert captured.out == ""


def test_exception_without_text_names_its_type(netns: str) -> None:
    code, out = invoke(Factory(RecordingPlugin(fail_with=KeyError())), make_env("ADD", netns),
                       make_config())
    assert code == 1
    assert json.loads(out)["details"] == "KeyError"


def test_factory_failure_is_internal_error(netns: str) -> None:
    def broken_factory(req: Request, netconf: NetConf) -> Plugin:
        raise OSError("cannot reach the node agent")

    stdout = io.BytesIO()
    assert run(broken_factory, make_env("ADD", netns), make_config(), stdout) == 1
    assert json.loads(stdout.getvalue())["code"] == ERR_INTERNAL


def test_plugin_prints_go_to_stderr(netns: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = invoke(Factory(RecordingPlugin(chatty=True)), make_env("ADD", netns),
                       make_config())
    assert code == 0
    assert json.loads(out)["cniVersion"] == "1.1.0"
    captured = capsys.readouterr()
    assert "plugin chatter during add" in captured.err
    assert captured.out == ""


# --- the request path itself: serve() and its hooks -----------------------------------------


def test_serve_touches_nothing_process_wide(netns: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log_file = tmp_path / "cni.log"
    outcome = serve(make_env("ADD", netns), make_config(logFile=str(log_file), logLevel="debug"),
                    Factory(RecordingPlugin(chatty=True)))
    assert (outcome.exit_code, outcome.command, outcome.error_code) == (0, "ADD", None)
    assert json.loads(outcome.stdout)["cniVersion"] == "1.1.0"
    assert (root.handlers, root.level) == (handlers, level)
    assert not log_file.exists()
    assert "plugin chatter during add" in capsys.readouterr().out, "prints are left alone"


@pytest.mark.parametrize(("environ", "stdin", "code"), [
    ({"CNI_COMMAND": "VERSION"}, b"garbage", None),
    ({"CNI_COMMAND": "FROB"}, make_config(), ERR_INVALID_ENV),
    ({}, make_config(), ERR_INVALID_ENV),
    ({"CNI_COMMAND": "GC"}, make_config(), ERR_INVALID_CONFIG),
    ({"CNI_COMMAND": "STATUS"}, make_config(ovsdb=""), ERR_INVALID_CONFIG),
])
def test_the_outcome_names_the_callers_command_and_the_error_code(
        environ: dict[str, str], stdin: bytes, code: int | None) -> None:
    outcome = serve(environ, stdin, Factory())
    assert outcome.command == environ.get("CNI_COMMAND", "")
    assert (outcome.exit_code, outcome.error_code) == ((0, None) if code is None else (1, code))
    if code is not None:
        assert json.loads(outcome.stdout)["code"] == code


def test_the_plugin_failure_is_the_outcomes_error_code() -> None:
    failure = CniError(ERR_TRY_AGAIN, "ovsdb unreachable")
    outcome = serve({"CNI_COMMAND": "STATUS"}, make_config(),
                    Factory(RecordingPlugin(fail_with=failure)))
    assert (outcome.exit_code, outcome.command, outcome.error_code) == (1, "STATUS", ERR_TRY_AGAIN)


def test_hooks_see_the_config_first_and_wrap_building_and_calling_the_plugin(netns: str) -> None:
    events: list[str] = []
    plugin = RecordingPlugin()

    def factory(req: Request, netconf: NetConf) -> Plugin:
        events.append(f"build {netconf.ovsdb}")
        return plugin

    @contextlib.contextmanager
    def around(request: Request) -> Iterator[None]:
        events.append(f"enter {request.command}")
        yield
        events.append(f"exit after {[name for name, _ in plugin.calls]}")

    hooks = Hooks(configured=lambda config: events.append(f"configured {config['name']}"),
                  around_plugin=around)
    outcome = serve(make_env("ADD", netns), make_config(ovsdb="tcp:192.0.2.1:6640"), factory,
                    hooks)
    assert outcome.exit_code == 0
    assert events == ["configured underlay", "enter ADD", "build tcp:192.0.2.1:6640",
                      "exit after ['add']"]


@pytest.mark.parametrize(("environ", "stdin", "seen"), [
    ({"CNI_COMMAND": "VERSION"}, make_config(), {"cniVersion": "1.1.0", "name": "underlay",
                                                 "type": "ovn-underlay"}),
    ({"CNI_COMMAND": "ADD"}, make_config(name=None), {"cniVersion": "1.1.0",
                                                      "type": "ovn-underlay"}),
    ({"CNI_COMMAND": "STATUS"}, make_config(readinessTimeout=0),
     {"cniVersion": "1.1.0", "name": "underlay", "type": "ovn-underlay", "readinessTimeout": 0}),
    ({"CNI_COMMAND": "STATUS"}, b"{not json", {}),
], ids=["version", "bad-request", "bad-key", "undecodable"])
def test_calls_that_build_no_plugin_enter_no_plugin_hook(
        environ: dict[str, str], stdin: bytes, seen: dict[str, object]) -> None:
    configured: list[Mapping[str, object]] = []

    def around(request: Request) -> contextlib.AbstractContextManager[None]:
        raise AssertionError(f"entered for {request.command}")

    factory = Factory()
    serve(environ, stdin, factory, Hooks(configured=configured.append, around_plugin=around))
    assert configured == [seen]
    assert factory.requests == []


def test_the_factory_gets_the_parsed_plugin_keys(netns: str) -> None:
    factory = Factory()
    code, _ = invoke(factory, make_env("ADD", netns),
                     make_config(ovsdb="tcp:192.0.2.1:6640", readinessTimeout=2, logLevel="ERROR"))
    assert code == 0
    assert factory.netconfs == [NetConf(ovsdb="tcp:192.0.2.1:6640", readiness_timeout=2.0,
                                        log_level=logging.ERROR)]


@pytest.mark.parametrize(("stdin", "exit_code", "version"), [
    (make_config(prevResult=PREV_100), 0, "1.1.0"),
    (make_config(cniVersion="0.4.0", readinessTimeout=0), 1, "0.4.0"),
    (b"{not json", 1, "1.1.0"),
], ids=["add", "bad-key", "undecodable"])
def test_stdin_is_decoded_once_per_call(netns: str, monkeypatch: pytest.MonkeyPatch,
                                        stdin: bytes, exit_code: int, version: str) -> None:
    decoded: list[bytes] = []
    real_loads = json.loads

    def loads(text: bytes) -> Any:
        decoded.append(text)
        return real_loads(text)

    monkeypatch.setattr(json, "loads", loads)
    code, out = invoke(Factory(), make_env("ADD", netns), stdin)
    monkeypatch.undo()
    assert (code, json.loads(out)["cniVersion"]) == (exit_code, version)
    assert decoded == [stdin]


@pytest.mark.parametrize(("config", "version"), [
    ({"cniVersion": "0.4.0"}, "0.4.0"),
    ({"cniVersions": ["0.3.1", "1.0.0"]}, "1.0.0"),
    ({"cniVersion": "9.9.9"}, "1.1.0"),
    ({}, "1.1.0"),
    (CniError(ERR_DECODE, "cannot decode the network configuration"), "1.1.0"),
], ids=["cniVersion", "cniVersions", "unsupported", "none", "undecodable"])
def test_an_error_reply_is_in_the_version_the_call_asked_for(
        config: dict[str, Any] | CniError, version: str) -> None:
    reply = error_reply(CniError(ERR_TRY_AGAIN, "the daemon did not answer", "in 0.2s"), config)
    assert reply.endswith(b"}\n")
    assert json.loads(reply) == {"cniVersion": version, "code": ERR_TRY_AGAIN,
                                 "msg": "the daemon did not answer", "details": "in 0.2s"}


# --- logging --------------------------------------------------------------------------------


def test_logs_go_to_stderr_not_stdout(netns: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = invoke(Factory(), make_env("ADD", netns), make_config())
    assert code == 0
    json.loads(out)
    captured = capsys.readouterr()
    assert "CNI ADD" in captured.err
    assert captured.out == ""


def test_logs_go_to_log_file(netns: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    log_file = tmp_path / "cni.log"
    code, _ = invoke(Factory(), make_env("ADD", netns),
                     make_config(logFile=str(log_file), logLevel="debug"))
    assert code == 0
    assert f"container={CONTAINER_ID}" in log_file.read_text()
    assert logging.getLogger().level == logging.DEBUG
    assert capsys.readouterr().err == ""


def test_log_file_is_created_private(netns: str, tmp_path: Path) -> None:
    """cni.log names pods and namespaces: 0600 like the rest of the state, whatever the umask."""
    log_file = tmp_path / "cni.log"
    umask = os.umask(0o022)
    try:
        code, _ = invoke(Factory(), make_env("ADD", netns), make_config(logFile=str(log_file)))
    finally:
        os.umask(umask)
    assert code == 0
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


def test_existing_log_file_keeps_its_mode_and_lines(netns: str, tmp_path: Path) -> None:
    log_file = tmp_path / "cni.log"
    log_file.write_text("earlier line\n")
    log_file.chmod(0o640)
    code, _ = invoke(Factory(), make_env("ADD", netns), make_config(logFile=str(log_file)))
    assert code == 0
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o640
    lines = log_file.read_text().splitlines()
    assert lines[0] == "earlier line"
    assert any(f"container={CONTAINER_ID}" in line for line in lines[1:])


def test_errors_before_validation_reach_the_log_file(tmp_path: Path) -> None:
    log_file = tmp_path / "cni.log"
    code, _ = invoke(Factory(), {"CNI_COMMAND": "ADD"}, make_config(logFile=str(log_file)))
    assert code == 1
    assert "CNI_CONTAINERID" in log_file.read_text()


@pytest.mark.parametrize("log_file", [5, "relative/path", "cni.log"])
def test_bad_log_file_is_refused_and_logs_go_to_stderr(netns: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str],
                                                       log_file: object) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = invoke(Factory(), make_env("ADD", netns), make_config(logFile=log_file))
    assert code == 1
    assert json.loads(out)["code"] == ERR_INVALID_CONFIG
    assert "logFile" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["netns"]


def test_other_bad_keys_are_logged_to_the_log_file(netns: str, tmp_path: Path) -> None:
    log_file = tmp_path / "cni.log"
    code, out = invoke(Factory(), make_env("ADD", netns),
                       make_config(logFile=str(log_file), readinessTimeout=math.inf))
    assert code == 1
    assert json.loads(out)["code"] == ERR_INVALID_CONFIG
    assert "readinessTimeout" in log_file.read_text()


def test_setup_logging_replaces_its_own_handler(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    setup_logging(NetConf())
    setup_logging(NetConf(log_file=str(tmp_path / "a.log"), log_level=logging.WARNING))
    assert len(root.handlers) == before + 1
    assert isinstance(root.handlers[-1], logging.FileHandler)
    assert root.level == logging.WARNING


def test_setup_logging_falls_back_on_an_unopenable_file(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(NetConf(log_file=str(tmp_path / "missing-dir" / "cni.log")))
    assert logging.getLogger().level == logging.INFO
    assert "cannot open logFile" in capsys.readouterr().err
