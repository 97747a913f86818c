"""The shim <-> daemon protocol, the shim as a runtime runs it, and its in-process fallback."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.cli import cni_binary
from ovn_underlay.cli.cni_install import launcher, native_shim
from ovn_underlay.cni import shim, wire
from ovn_underlay.cni.runner import error_reply
from ovn_underlay.cni.spec import CniError
from ovn_underlay.daemon import server
from ovn_underlay.daemon.server import UnixServer, is_serving
from tests.unit.cni_requests import make_config, make_env
from tests.waiting import eventually

# -- the wire format --------------------------------------------------------------------------


def test_a_request_carries_only_the_cni_variables_and_stdin_untouched() -> None:
    env = {b"CNI_COMMAND": b"ADD", b"CNI_NETNS": b"/run/netns/p\xff", b"PATH": b"/bin",
           b"HOME": b"/root", b"CNI_ARGS": b"K8S_POD_NAME=a=b"}
    stdin = b'{"cniVersion": "1.0.0"}\x00binary'
    got_env, got_stdin = wire.decode_request(wire.encode_request(env, stdin))
    assert got_stdin == stdin
    assert set(got_env) == {"CNI_COMMAND", "CNI_NETNS", "CNI_ARGS"}
    assert got_env["CNI_ARGS"] == "K8S_POD_NAME=a=b"
    assert os.fsencode(got_env["CNI_NETNS"]) == b"/run/netns/p\xff"


def test_an_empty_environment_and_stdin_round_trip() -> None:
    assert wire.decode_request(wire.encode_request({}, b"")) == ({}, b"")


def test_a_reply_round_trips_its_exit_code_and_output() -> None:
    assert wire.decode_reply(wire.encode_reply(7, b"{}\n")) == (7, b"{}\n")
    assert wire.decode_reply(wire.encode_reply(0, b"")) == (0, b"")


@pytest.mark.parametrize("code", [-1, 256])
def test_exit_codes_outside_a_byte_are_refused(code: int) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.encode_reply(code, b"")


REQUEST = wire.encode_request({b"CNI_COMMAND": b"DEL"}, b"{}")
REPLY = wire.encode_reply(1, b"error")


@pytest.mark.parametrize(("what", "data", "decode"), [
    ("foreign magic", b"HTTP" + REQUEST[4:], wire.decode_request),
    ("cut in a length", REQUEST[:6], wire.decode_request),
    ("cut in stdin", REQUEST[:-1], wire.decode_request),
    ("stray bytes", REQUEST + b"x", wire.decode_request),
    ("env without =", wire.MAGIC + (4).to_bytes(4, "big") + b"CNI_" + bytes(4),
     wire.decode_request),
    ("reply without code", wire.MAGIC, wire.decode_reply),
    ("reply cut short", REPLY[:-2], wire.decode_reply),
], ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_messages_are_refused(what: str, data: bytes, decode: Any) -> None:
    with pytest.raises(wire.ProtocolError):
        decode(data)


def test_an_oversized_message_is_refused() -> None:
    with pytest.raises(wire.ProtocolError):
        wire.encode_request({}, b"x" * (wire.MAX_MESSAGE + 1))


# -- the shim against a daemon ----------------------------------------------------------------

class FakeDaemon:
    """A real UnixServer whose handler records calls and answers as told."""

    def __init__(self, path: Path, reply: tuple[int, bytes] = (0, b'{"ok": true}\n'),
                 delay: float = 0.0, **server_options: Any) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.reply = reply
        self.delay = delay
        self.server = UnixServer(str(path), self.handle, workers=8, **server_options)

    def handle(self, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        self.calls.append((dict(env), stdin))
        time.sleep(self.delay)
        return self.reply


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "run" / "cni.sock"


@contextlib.contextmanager
def serving(fake: FakeDaemon) -> Iterator[FakeDaemon]:
    """``fake``'s server serving in a thread of its own until the block ends."""
    fake.server.bind()
    thread = threading.Thread(target=fake.server.serve)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.stop()
        thread.join()
        fake.server.close()


def stale_socket(sock: Path) -> None:
    """Leave a socket file at ``sock`` that nothing listens on, as a daemon that died does."""
    sock.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock))


@contextlib.contextmanager
def breaking_off(sock: Path) -> Iterator[None]:
    """A daemon on ``sock`` that accepts one call, reads it, sends part of a reply and closes
    the connection; its thread is joined and its socket closed when the block ends."""
    sock.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock))
        listener.listen(1)

        def crash() -> None:
            conn, _ = listener.accept()
            conn.recv(1 << 16)
            conn.sendall(wire.encode_reply(0, b"half a rep")[:-3])
            conn.close()

        thread = threading.Thread(target=crash)
        thread.start()
        try:
            yield
        finally:
            thread.join()


@pytest.fixture
def daemon(sock: Path) -> Iterator[FakeDaemon]:
    with serving(FakeDaemon(sock)) as fake:
        yield fake


def native() -> Path:
    """The native shim; the test is skipped where it is not built (make builds it)."""
    path = native_shim()
    if path is None:
        pytest.skip("the native shim is not built (make src/ovn_underlay/cni/"
                    f"{shim.NATIVE_SHIM})")
    return path


def write_binary(path: Path, sock: Path, front: str, reply_timeout: float | None = None) -> Path:
    """The CNI binary as node-init --install-cni writes it, run by ``front``."""
    path.write_text(launcher(str(sock), native() if front == "native" else None,
                             reply_timeout))
    path.chmod(0o755)
    return path


@pytest.fixture(params=["python", "native"])
def binary(request: pytest.FixtureRequest, tmp_path: Path, sock: Path) -> Path:
    """The CNI binary for this test's socket, with the Python or the native shim in front."""
    return write_binary(tmp_path / "ovn-underlay", sock, request.param)


def run_binary(binary: Path, env: dict[str, str], stdin: bytes,
               timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Execute the CNI binary as a runtime does: clean environment, config on stdin."""
    return subprocess.run([str(binary)], input=stdin, env={**env, "PATH": "/usr/bin:/bin"},
                          capture_output=True, timeout=timeout, check=False)


def test_the_shim_forwards_the_call_and_prints_the_daemons_answer(
        daemon: FakeDaemon, binary: Path, netns: str) -> None:
    daemon.reply = (3, b'{"code": 3, "msg": "no such pod"}\n')
    env = make_env("DEL", netns)
    stdin = make_config()
    proc = run_binary(binary, {**env, "HOME": "/root"}, stdin)
    assert proc.returncode == 3
    assert proc.stdout == daemon.reply[1]
    ((got_env, got_stdin),) = daemon.calls
    assert got_env == env
    assert got_stdin == stdin


def test_the_shim_loads_no_library_beyond_the_standard_one(daemon: FakeDaemon,
                                                          binary: Path) -> None:
    proc = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", str(binary)],
                          input=b"{}", env={"CNI_COMMAND": "VERSION"}, capture_output=True,
                          timeout=60, check=False)
    assert proc.stdout == daemon.reply[1]
    loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines()
              if line.startswith("import time:") and "|" in line}
    ours = {m for m in loaded if m.startswith("ovn_underlay")}
    assert ours == {"ovn_underlay", "ovn_underlay.cli", "ovn_underlay.cli.cni_binary",
                    "ovn_underlay.cni", "ovn_underlay.cni.shim", "ovn_underlay.cni.wire"}
    assert not loaded & {"json", "socket", "pyroute2", "ovsdbapp", "enum", "typing"}
    assert len(daemon.calls) == 1


def test_without_a_daemon_the_shim_serves_the_call_itself(binary: Path, sock: Path) -> None:
    assert not sock.exists()
    proc = run_binary(binary, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout)
    assert version["supportedVersions"][-1] == "1.1.0"
    assert version["cniVersion"] == "0.4.0", "the call's stdin was served"


def test_a_stale_socket_file_means_no_daemon(binary: Path, sock: Path) -> None:
    stale_socket(sock)
    proc = run_binary(binary, {"CNI_COMMAND": "VERSION"}, b"{}")
    assert proc.returncode == 0
    assert "supportedVersions" in json.loads(proc.stdout)


def test_a_daemon_that_dies_before_answering_leaves_the_call_to_the_shim(
        binary: Path, sock: Path) -> None:
    with breaking_off(sock):
        proc = run_binary(binary, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cniVersion"] == "0.4.0", "the call's stdin was served"


@pytest.mark.parametrize("front", ["python", "native"])
def test_a_silent_daemon_makes_the_binary_answer_try_again(
        front: str, tmp_path: Path, sock: Path, daemon: FakeDaemon) -> None:
    daemon.delay = 1.0
    binary = write_binary(tmp_path / "ovn-underlay", sock, front, reply_timeout=0.2)
    proc = run_binary(binary, make_env("ADD", "/run/netns/x"), make_config(cniVersion="1.0.0"))
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)
    assert (error["code"], error["cniVersion"]) == (shim.ERR_TRY_AGAIN, "1.0.0")
    assert f"{sock} within 0.2s" in error["details"]
    assert len(daemon.calls) == 1, "the call was not served twice"


def test_a_large_call_goes_through_whole(daemon: FakeDaemon, binary: Path) -> None:
    stdin = json.dumps({"cniVersion": "1.1.0", "pad": "x" * (3 << 20)}).encode()
    daemon.reply = (0, stdin)
    proc = run_binary(binary, {"CNI_COMMAND": "GC"}, stdin)
    assert proc.returncode == 0
    assert proc.stdout == stdin
    assert daemon.calls[0][1] == stdin


def test_the_native_shim_refuses_a_script_without_its_settings(tmp_path: Path) -> None:
    script = tmp_path / "ovn-underlay"
    script.write_text(f"#!{native()}\nprint('hello')\n")
    script.chmod(0o755)
    proc = run_binary(script, {"CNI_COMMAND": "VERSION"}, b"{}")
    assert proc.returncode == 1
    assert b"lacks #socket:" in proc.stderr and b"--install-cni" in proc.stderr


def test_a_daemon_that_does_not_answer_in_time_is_try_again(
        monkeypatch: pytest.MonkeyPatch, sock: Path, daemon: FakeDaemon) -> None:
    daemon.delay = 1.0
    stdin = make_config(cniVersion="1.0.0")
    stdout = io.BytesIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout))
    assert cni_binary.main(str(sock), reply_timeout=0.2) == 1
    sys.stdout.flush()
    error = json.loads(stdout.getvalue())
    assert error["code"] == shim.ERR_TRY_AGAIN
    assert error["cniVersion"] == "1.0.0"
    assert str(sock) in error["details"]


def test_try_again_is_the_runners_error_reply_in_the_calls_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout))
    for stdin in (make_config(cniVersion="0.4.0"), b"{not json"):
        assert shim.timed_out(stdin, "/run/x.sock", 0.5) == 1
    sys.stdout.flush()
    err = CniError(shim.ERR_TRY_AGAIN, "the ovn-underlay daemon did not answer",
                   "no reply on /run/x.sock within 0.5s")
    assert stdout.getvalue() == (error_reply(err, {"cniVersion": "0.4.0"})
                                 + error_reply(err, {}))


def imports_of(argv: list[str], env: dict[str, str], stdin: bytes) -> tuple[bytes, set[str]]:
    """What the command printed and the modules it imported (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", *argv], input=stdin,
                          env=env, capture_output=True, timeout=60, check=False)
    return proc.stdout, {line.rsplit("|", 1)[1].strip()
                         for line in proc.stderr.decode().splitlines()
                         if line.startswith("import time:") and "|" in line}


def test_an_in_process_version_imports_neither_the_plugin_nor_its_libraries(
        tmp_path: Path, sock: Path) -> None:
    binary = write_binary(tmp_path / "ovn-underlay", sock, "python")
    out, loaded = imports_of([str(binary)], {"CNI_COMMAND": "VERSION"}, b"{}")
    assert json.loads(out)["supportedVersions"][-1] == "1.1.0"
    assert "ovn_underlay.cni.runner" in loaded, "served in-process"
    assert not {m for m in loaded if m.startswith("ovn_underlay.pods")}
    assert not loaded & {"pyroute2", "ovsdbapp"}


def test_the_native_shims_modes_never_ask_the_daemon_again(
        daemon: FakeDaemon, tmp_path: Path, sock: Path) -> None:
    binary = write_binary(tmp_path / "ovn-underlay", sock, "python")
    stdin = make_config(cniVersion="1.0.0")
    version = subprocess.run([sys.executable, "-IS", str(binary), shim.IN_PROCESS],
                             input=stdin, env={"CNI_COMMAND": "VERSION"}, capture_output=True,
                             timeout=60, check=False)
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["supportedVersions"][-1] == "1.1.0", "served here"
    late = subprocess.run([sys.executable, "-IS", str(binary), shim.TIMED_OUT], input=stdin,
                          env={"CNI_COMMAND": "ADD"}, capture_output=True, timeout=60,
                          check=False)
    assert late.returncode == 1, late.stderr
    error = json.loads(late.stdout)
    assert (error["code"], error["cniVersion"]) == (shim.ERR_TRY_AGAIN, "1.0.0")
    assert daemon.calls == []


# -- the daemon's socket ----------------------------------------------------------------------

def test_the_socket_is_for_root_only(daemon: FakeDaemon, sock: Path) -> None:
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


def test_a_second_daemon_on_the_same_socket_refuses_to_start(daemon: FakeDaemon,
                                                            sock: Path) -> None:
    second = UnixServer(str(sock), daemon.handle)
    with pytest.raises(RuntimeError, match=f"pid {os.getpid()}"):
        second.bind()
    assert sock.is_socket()


def test_a_stale_socket_is_replaced_and_a_foreign_file_kept(sock: Path) -> None:
    stale_socket(sock)
    server = UnixServer(str(sock), FakeDaemon(sock).handle)
    server.bind()
    server.close()
    assert not sock.exists()
    sock.write_text("not a socket")
    with pytest.raises(FileExistsError):
        UnixServer(str(sock), FakeDaemon(sock).handle).bind()
    assert sock.read_text() == "not a socket"


def test_calls_are_served_in_parallel(daemon: FakeDaemon, binary: Path) -> None:
    daemon.delay = 0.5
    started = time.monotonic()
    procs = [subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={"CNI_COMMAND": "VERSION"}) for _ in range(6)]
    for proc in procs:  # every caller sends before any reply is awaited
        assert proc.stdin is not None
        proc.stdin.write(b"{}")
        proc.stdin.close()
    outputs = [p.stdout.read() for p in procs if p.stdout is not None]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    assert all(out == daemon.reply[1] for out in outputs)
    assert time.monotonic() - started < 6 * daemon.delay
    assert len(daemon.calls) == 6


def send_raw(sock: Path, data: bytes) -> bytes:
    """Send ``data`` as it is to the daemon's socket; what it answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(sock))
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        return client.recv(100)


def test_an_unreadable_request_is_dropped_without_an_answer(daemon: FakeDaemon,
                                                           sock: Path) -> None:
    assert send_raw(sock, b"GET / HTTP/1.0\r\n\r\n") == b""
    assert daemon.calls == []


def test_a_liveness_probe_is_no_warning(daemon: FakeDaemon, sock: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "ovn_underlay.daemon.server"):
        assert is_serving(str(sock))
        assert send_raw(sock, b"junk") == b""
    assert daemon.calls == []
    assert caplog.messages == ["dropping a request that could not be read: not an "
                               "ovn-underlay message (starts with b'junk')"]


# -- idle and slow clients --------------------------------------------------------------------

@contextlib.contextmanager
def stalled(sock: Path, count: int, sent: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` connections to the daemon that send ``sent`` and then nothing, for the block."""
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(client)
            client.connect(str(sock))
            client.sendall(sent)
        time.sleep(0.2)  # the daemon has taken them all in
        yield clients
    finally:
        for client in clients:
            client.close()


def timed_call(daemon: FakeDaemon, binary: Path) -> float:
    """Seconds the CNI binary takes for a call the daemon answers."""
    started = time.monotonic()
    proc = run_binary(binary, {"CNI_COMMAND": "VERSION"}, b"{}", timeout=5)
    elapsed = time.monotonic() - started
    assert (proc.returncode, proc.stdout) == daemon.reply
    return elapsed


def answered(sock: Path) -> bool:
    """Whether the daemon answers a request (False if it closes the connection at once)."""
    try:
        return send_raw(sock, REQUEST) != b""
    except OSError:
        return False


def test_idle_connections_do_not_delay_a_call(daemon: FakeDaemon, binary: Path,
                                              sock: Path) -> None:
    baseline = timed_call(daemon, binary)
    with stalled(sock, 200):
        loaded = timed_call(daemon, binary)
    assert loaded < 0.5, f"{loaded:.3f}s with 200 idle connections ({baseline:.3f}s without)"
    assert loaded < baseline + 0.25, f"{loaded:.3f}s with 200 idle, {baseline:.3f}s without"
    assert len(daemon.calls) == 2


def test_clients_stalled_in_the_middle_of_a_request_do_not_delay_others(
        daemon: FakeDaemon, binary: Path, sock: Path) -> None:
    baseline = timed_call(daemon, binary)
    with stalled(sock, 50, REQUEST[:len(REQUEST) // 2]):
        loaded = timed_call(daemon, binary)
    assert loaded < 0.5, f"{loaded:.3f}s with 50 stalled clients ({baseline:.3f}s without)"
    assert loaded < baseline + 0.25, f"{loaded:.3f}s with 50 stalled, {baseline:.3f}s without"
    assert len(daemon.calls) == 2, "no half request reached the handler"


def test_a_connection_is_closed_when_its_request_is_late(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    with serving(FakeDaemon(sock, read_timeout=0.3)) as fake, \
            caplog.at_level(logging.DEBUG, "ovn_underlay.daemon.server"), \
            stalled(sock, 1) as (idle,), stalled(sock, 1, REQUEST[:-1]) as (half,):
        for client in (idle, half):
            client.settimeout(5)
            assert client.recv(100) == b"", "the daemon closed the connection"
        assert send_raw(sock, REQUEST) == wire.encode_reply(*fake.reply)
    late = [(r.levelno, r.getMessage()) for r in caplog.records if "0.3s" in r.getMessage()]
    assert sorted(late) == [
        (logging.DEBUG, "closing a connection that sent nothing in 0.3s"),
        (logging.WARNING, f"dropping a request that could not be read: {len(REQUEST) - 1} "
                          "bytes and no end in 0.3s")]
    assert len(fake.calls) == 1


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged at WARNING or above (an earlier test may have left the root
    logger at INFO, and the daemon logs its connection cap at INFO as it starts)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("limit", ["max_connections", "open files"])
def test_connections_beyond_the_cap_are_closed_at_once(
        limit: str, sock: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"max_connections": 4}
    if limit == "open files":  # a low limit lowers the cap, keeping files for the rest
        monkeypatch.setattr(server.resource, "getrlimit", lambda _: (server.FD_RESERVE + 4, 4096))
        options = {}
    with serving(FakeDaemon(sock, **options)) as fake, \
            caplog.at_level(logging.WARNING, "ovn_underlay.daemon.server"), \
            stalled(sock, 4) as held:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(1)
            extra.connect(str(sock))
            assert extra.recv(100) == b"", "closed at once, not after the read timeout"
        assert warnings(caplog) == ["4 connections are open: closing new ones at once until "
                                    "some end"]
        held.pop().close()
        eventually(lambda: answered(sock), what="a slot was freed")
    assert re.fullmatch(r"accepting connections again \(\d+ closed at once\)",
                        warnings(caplog)[-1])
    assert len(fake.calls) == 1


def test_an_oversized_request_is_dropped(daemon: FakeDaemon, sock: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(wire, "MAX_MESSAGE", 1000)
    with caplog.at_level(logging.WARNING, "ovn_underlay.daemon.server"):
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed early
            assert send_raw(sock, wire.MAGIC + bytes(2000)) == b""
        eventually(lambda: bool(caplog.messages))
    assert caplog.messages == ["dropping a request that could not be read: request larger "
                               "than 1000 bytes"]
    assert daemon.calls == []


def test_stopping_waits_for_the_calls_in_progress_not_for_idle_connections(sock: Path) -> None:
    fake = FakeDaemon(sock, delay=0.5)
    replies: list[bytes] = []
    with serving(fake), stalled(sock, 3) as idle:
        caller = threading.Thread(target=lambda: replies.append(send_raw(sock, REQUEST)))
        caller.start()
        eventually(lambda: bool(fake.calls))
        started = time.monotonic()
        fake.server.stop()
        for client in idle:
            client.settimeout(5)
            assert client.recv(100) == b"", "an idle connection is closed on stop"
        caller.join()
        stopped = time.monotonic() - started
    assert replies == [wire.encode_reply(*fake.reply)], "the call in progress was answered"
    assert stopped < 2, f"stop took {stopped:.1f}s"


@pytest.mark.parametrize("front", ["python", "native"])
def test_a_runtime_slow_to_write_stdin_holds_no_connection_meanwhile(
        front: str, tmp_path: Path, sock: Path) -> None:
    binary = write_binary(tmp_path / "ovn-underlay", sock, front)
    sock.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock))
        listener.listen(8)
        listener.setblocking(False)
        with subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={"CNI_COMMAND": "VERSION"}) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            time.sleep(0.5)
            with pytest.raises(BlockingIOError):
                listener.accept()  # nothing connected while stdin is being written
            proc.stdin.write(b'{"cniVersion": "1.0.0"}')
            proc.stdin.close()
            listener.settimeout(30)
            conn, _ = listener.accept()
            with conn:
                request = b"".join(iter(lambda: conn.recv(1 << 16), b""))
                conn.sendall(wire.encode_reply(0, b"answered\n"))
            assert proc.stdout.read() == b"answered\n"
            assert proc.wait(timeout=30) == 0
    env, stdin = wire.decode_request(request)
    assert (env["CNI_COMMAND"], stdin) == ("VERSION", b'{"cniVersion": "1.0.0"}')
