"""The native shim as a host's CNI binary: no script, no Python, its settings file, code 11.

Every binary here runs as a runtime on a host without Python would run it: a
copy in a temporary directory, executed through ``env -i`` with the CNI_*
variables only (no PATH, no HOME), stdin the network configuration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ovn_underlay.cni import host_install, shim, wire
from ovn_underlay.cni.host_install import HostInstallError, install_host_binary, settings_path
from ovn_underlay.cni.runner import error_reply
from ovn_underlay.cni.spec import ERR_INTERNAL, ERR_NOT_AVAILABLE, CniError, read_config
from tests.unit.cni_requests import make_config, make_env
from tests.unit.test_daemon_protocol import FakeDaemon, breaking_off, serving, stale_socket

NOT_RUNNING = "the ovn-underlay node agent is not running on this node"
SHIM_C = Path(host_install.__file__).with_name("shim.c")


@pytest.fixture
def native() -> Path:
    """The built shim; the test is skipped where it is not (make builds it)."""
    path = host_install.native_shim()
    if path is None:
        pytest.skip(f"the native shim is not built (make src/ovn_underlay/cni/{shim.NATIVE_SHIM})")
    return path


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return tmp_path / "opt" / "cni" / "bin"


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "run" / "cni.sock"


def copied(native: Path, bin_dir: Path) -> Path:
    """A plain copy of the shim as ``bin_dir``/ovn-underlay, no settings file beside it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    binary = bin_dir / "ovn-underlay"
    shutil.copy(native, binary)
    return binary


def run_host(binary: Path, env: dict[str, str], stdin: bytes,
             timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Execute ``binary`` with ``env`` and nothing else in its environment (``env -i``)."""
    return subprocess.run(["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           str(binary)], input=stdin, capture_output=True, timeout=timeout,
                          check=False)


def error_of(proc: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    """The CNI error object the binary printed, checking that it failed as the spec says."""
    assert proc.returncode == 1, proc.stderr
    error: dict[str, object] = json.loads(proc.stdout)
    return error


# -- the build --------------------------------------------------------------------------------

def test_the_shim_is_linked_statically(native: Path) -> None:
    ldd = subprocess.run(["ldd", str(native)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    assert host_install.is_static(native)
    assert not host_install.is_static(Path(sys.executable).resolve())


def test_the_shims_defaults_are_the_python_sides() -> None:
    source = SHIM_C.read_text()
    assert f'#define DEFAULT_SOCKET "{wire.DEFAULT_SOCKET}"' in source
    timeout = re.search(r"#define DEFAULT_REPLY_TIMEOUT (\S+)", source)
    assert timeout is not None and float(timeout[1]) == shim.REPLY_TIMEOUT
    assert f'#define SETTINGS_SUFFIX "{host_install.SETTINGS_SUFFIX}"' in source


# -- no daemon: code 11, never Python ---------------------------------------------------------

def test_without_a_daemon_or_settings_file_it_answers_try_again_on_the_default_socket(
        native: Path, bin_dir: Path) -> None:
    binary = copied(native, bin_dir)
    proc = run_host(binary, make_env("ADD", "/run/netns/x"), make_config(cniVersion="1.0.0"))
    assert error_of(proc) == {"cniVersion": "1.0.0", "code": shim.ERR_TRY_AGAIN,
                              "msg": NOT_RUNNING,
                              "details": f"nothing listens on {wire.DEFAULT_SOCKET}: No such "
                                         "file or directory"}


@pytest.mark.parametrize("stdin", [
    make_config(cniVersion="0.4.0"),
    make_config(cniVersion="0.3.1", nested={"cniVersion": "1.0.0", "list": [1, "x", None]}),
    make_config(cniVersion=None, cniVersions=["0.3.0", "1.0.0", "9.9.9"]),
    make_config(cniVersion="", cniVersions=["0.4.0"]),
    make_config(cniVersion=None, cniVersions=[]),
    make_config(cniVersion=None, cniVersions=["0.4.0", 1]),
    make_config(cniVersion=None, cniVersions="1.0.0"),
    make_config(cniVersion="9.9.9"),
    make_config(cniVersion=1),
    b'{"cniVersion": null, "cniVersions": ["0.3.1"]}',
    b'{"cniVersion": "1.0.0", "cniVersion": "0.4.0"}',
    b'{"cniVersion": "1.0.0"} trailing',
    b'{"cniVersion": "1.0.0", }',
    b'{"cniVersion": "1.0.0", "n": 01}',
    b'{"cniVersion": "1.0.0", "n": -1.5e+3, "t": true, "f": false, "s": "a\\"\\u00e9"}',
    b'["1.0.0"]',
    b"",
    b"{not json",
    b'{"a": ' + b"[" * 600 + b"]" * 600 + b', "cniVersion": "0.4.0"}',
], ids=lambda stdin: stdin[:60].decode())
def test_the_error_is_the_runners_in_the_version_the_call_negotiates(
        native: Path, bin_dir: Path, sock: Path, stdin: bytes) -> None:
    binary = copied(native, bin_dir)
    settings_path(binary).write_text(f"socket: {sock}\n")
    proc = run_host(binary, make_env("DEL"), stdin)
    expected = error_reply(CniError(shim.ERR_TRY_AGAIN, NOT_RUNNING,
                                    f"nothing listens on {sock}: No such file or directory"),
                           read_config(stdin))
    assert proc.stdout == expected
    assert proc.returncode == 1


def test_status_without_a_daemon_is_not_available(native: Path, bin_dir: Path) -> None:
    proc = run_host(copied(native, bin_dir), {"CNI_COMMAND": "STATUS"}, make_config())
    error = error_of(proc)
    assert (error["code"], error["msg"], error["cniVersion"]) == (ERR_NOT_AVAILABLE, NOT_RUNNING,
                                                                  "1.1.0")


def test_a_stale_socket_file_is_no_daemon(native: Path, bin_dir: Path, sock: Path) -> None:
    binary = copied(native, bin_dir)
    settings_path(binary).write_text(f"socket: {sock}\n")
    stale_socket(sock)
    error = error_of(run_host(binary, make_env("ADD", "/run/netns/x"), make_config()))
    assert (error["code"], error["details"]) == (
        shim.ERR_TRY_AGAIN, f"nothing listens on {sock}: Connection refused")


def test_a_daemon_that_breaks_off_is_try_again(native: Path, bin_dir: Path, sock: Path) -> None:
    binary = copied(native, bin_dir)
    settings_path(binary).write_text(f"socket: {sock}\n")
    with breaking_off(sock):
        proc = run_host(binary, make_env("ADD", "/run/netns/x"), make_config(cniVersion="0.4.0"))
    assert error_of(proc) == {"cniVersion": "0.4.0", "code": shim.ERR_TRY_AGAIN,
                              "msg": NOT_RUNNING,
                              "details": f"the daemon on {sock} broke off before answering"}


def test_a_silent_daemon_is_try_again_after_the_reply_timeout(native: Path, bin_dir: Path,
                                                              sock: Path) -> None:
    binary = copied(native, bin_dir)
    settings_path(binary).write_text(f"# a comment\n\n  socket:  {sock}  \nreply-timeout: 0.2\n")
    with serving(FakeDaemon(sock, delay=1.0)) as daemon:
        proc = run_host(binary, make_env("ADD", "/run/netns/x"), make_config(cniVersion="1.0.0"))
    expected = error_reply(CniError(shim.ERR_TRY_AGAIN, "the ovn-underlay daemon did not answer",
                                    f"no reply on {sock} within 0.2s"), {"cniVersion": "1.0.0"})
    assert (proc.returncode, proc.stdout) == (1, expected), "worded as shim.timed_out words it"
    assert len(daemon.calls) == 1, "the call was not served twice"


# -- a daemon answers -------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_the_call_goes_to_the_daemon_and_its_answer_to_the_runtime(
        native: Path, bin_dir: Path, sock: Path, netns: str, command: str) -> None:
    install_host_binary(bin_dir, str(sock), 5.0, source=native)
    env = make_env(command, netns)
    stdin = make_config()
    with serving(FakeDaemon(sock, reply=(3, b'{"code": 3, "msg": "gone"}\n'))) as daemon:
        proc = run_host(bin_dir / "ovn-underlay", env, stdin)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, daemon.reply[1], b"")
    assert daemon.calls == [(env, stdin)]


def test_the_binary_found_on_the_path_reads_its_settings_beside_itself(
        native: Path, bin_dir: Path, sock: Path) -> None:
    install_host_binary(bin_dir, str(sock), source=native)
    with serving(FakeDaemon(sock)) as daemon:
        proc = subprocess.run(["ovn-underlay"], input=b"{}", capture_output=True, timeout=30,
                              env={"PATH": str(bin_dir), "CNI_COMMAND": "VERSION"}, check=False)
    assert (proc.returncode, proc.stdout) == daemon.reply, "argv[0] had no '/': /proc/self/exe"


# -- the settings file ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "why"), [
    ("sockett: /run/x.sock\n", "line 1: unknown key (socket: and reply-timeout: are known)"),
    ("# ok\nreply-timeout: soon\n", "line 2: reply-timeout: needs a positive number of seconds"),
    ("reply-timeout: 0\n", "line 1: reply-timeout: needs a positive number of seconds"),
    ("reply-timeout: nan\n", "line 1: reply-timeout: needs a positive number of seconds"),
    ("socket:\n", "line 1: socket: needs a path"),
    ("socket /run/x.sock\n", "line 1: not KEY: VALUE"),
    ("socket: /run/x.sock\0\n", "holds a NUL byte"),
    ("#" * 9000, "larger than 8192 bytes"),
])
def test_unusable_settings_are_an_internal_error_naming_the_line(
        native: Path, bin_dir: Path, text: str, why: str) -> None:
    binary = copied(native, bin_dir)
    settings_path(binary).write_text(text)
    error = error_of(run_host(binary, make_env("ADD", "/run/netns/x"), make_config()))
    sep = " " if why.startswith("line") else ": "
    assert error == {"cniVersion": "1.1.0", "code": ERR_INTERNAL,
                     "msg": "the ovn-underlay CNI settings cannot be read",
                     "details": f"{settings_path(binary)}{sep}{why}"}


def test_an_unreadable_settings_file_is_an_internal_error(native: Path, bin_dir: Path) -> None:
    binary = copied(native, bin_dir)
    settings_path(binary).mkdir()
    error = error_of(run_host(binary, make_env("ADD", "/run/netns/x"), make_config()))
    assert error["code"] == ERR_INTERNAL
    assert error["msg"] == f"ovn-underlay-cni-shim: {settings_path(binary)}"


def test_a_socket_path_too_long_for_a_unix_socket_is_an_internal_error(native: Path,
                                                                       bin_dir: Path) -> None:
    binary = copied(native, bin_dir)
    long_path = "/run/" + "x" * 200
    settings_path(binary).write_text(f"socket: {long_path}\n")
    error = error_of(run_host(binary, make_env("ADD", "/run/netns/x"),
                              make_config(cniVersion="0.3.1")))
    assert error == {"cniVersion": "0.3.1", "code": ERR_INTERNAL,
                     "msg": f"ovn-underlay-cni-shim: {long_path}",
                     "details": "File name too long"}


# -- installing -------------------------------------------------------------------------------

def test_install_writes_the_settings_and_the_binary_once(native: Path, bin_dir: Path,
                                                        sock: Path) -> None:
    done = install_host_binary(bin_dir, str(sock), 7.5, source=native)
    binary = bin_dir / "ovn-underlay"
    assert done == [f"write {settings_path(binary)} (daemon socket {sock}, reply timeout 7.5s)",
                    f"write {binary} (the native shim {native}, linked statically)"]
    assert binary.read_bytes() == native.read_bytes()
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert stat.S_IMODE(settings_path(binary).stat().st_mode) == 0o644
    assert f"socket: {sock}\nreply-timeout: 7.5\n" in settings_path(binary).read_text()
    assert sorted(p.name for p in bin_dir.iterdir()) == ["ovn-underlay", "ovn-underlay.conf"]
    before = binary.stat().st_ino
    assert install_host_binary(bin_dir, str(sock), 7.5, source=native) == []
    assert binary.stat().st_ino == before, "an identical binary is not rewritten"
    assert install_host_binary(bin_dir, "/run/other.sock", 7.5, source=native) == [
        f"write {settings_path(binary)} (daemon socket /run/other.sock, reply timeout 7.5s)"]
    assert binary.stat().st_ino == before


def test_install_replaces_a_symlink_or_a_file_of_another_mode(native: Path, bin_dir: Path,
                                                              tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(native.read_bytes())
    bin_dir.mkdir(parents=True)
    (bin_dir / "ovn-underlay").symlink_to(elsewhere)
    assert len(install_host_binary(bin_dir, source=native)) == 2
    assert not (bin_dir / "ovn-underlay").is_symlink()
    assert elsewhere.read_bytes() == native.read_bytes(), "the link's target is left alone"
    (bin_dir / "ovn-underlay").chmod(0o700)
    assert install_host_binary(bin_dir, source=native) == [
        f"write {bin_dir / 'ovn-underlay'} (the native shim {native}, linked statically)"]
    assert stat.S_IMODE((bin_dir / "ovn-underlay").stat().st_mode) == 0o755


@pytest.mark.parametrize(("socket_path", "timeout", "why"), [
    ("", 300.0, "no path"), ("/run/a\nb", 300.0, "no path"), ("/" + "x" * 107, 300.0, "no path"),
    (" /run/x.sock", 300.0, "no path"),
    ("/run/x.sock", 0.0, "not a positive"), ("/run/x.sock", float("inf"), "not a positive"),
])
def test_install_refuses_settings_the_shim_cannot_use(native: Path, bin_dir: Path,
                                                      socket_path: str, timeout: float,
                                                      why: str) -> None:
    with pytest.raises(HostInstallError, match=why):
        install_host_binary(bin_dir, socket_path, timeout, source=native)
    assert not bin_dir.exists()


def test_install_refuses_a_dynamically_linked_shim(bin_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HostInstallError, match="linked dynamically"):
        install_host_binary(bin_dir, source=Path(sys.executable).resolve())
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(HostInstallError, match="not an ELF executable"):
        install_host_binary(bin_dir, source=script)
    assert not bin_dir.exists()


def test_a_runtime_executing_the_binary_while_it_is_reinstalled_never_runs_a_partial_file(
        native: Path, bin_dir: Path, tmp_path: Path) -> None:
    padded = tmp_path / "padded"  # another shim that works alike: the installs alternate
    padded.write_bytes(native.read_bytes() + bytes(1 << 20))
    binary = bin_dir / "ovn-underlay"
    install_host_binary(bin_dir, source=native)
    stop = threading.Event()
    installs = [0]

    def reinstall() -> None:
        while not stop.is_set():
            source = padded if installs[0] % 2 == 0 else native
            installs[0] += len(install_host_binary(bin_dir, source=source))

    installer = threading.Thread(target=reinstall)
    installer.start()
    results = []
    try:
        while installs[0] < 100 and installer.is_alive():
            proc = run_host(binary, make_env("ADD", "/run/netns/x"), make_config())
            results.append((proc.returncode, json.loads(proc.stdout)["code"] if proc.stdout
                            else proc.stderr))
    finally:
        stop.set()
        installer.join()
    assert installs[0] >= 100, "the installer failed"
    assert set(results) == {(1, shim.ERR_TRY_AGAIN)}
    assert len(results) >= 10, f"{len(results)} executions overlapped {installs[0]} installs"
    assert not [p for p in bin_dir.iterdir() if p.name.startswith(".")], "no temporary left"
    assert run_host(binary, make_env("DEL"), make_config()).returncode == 1
    assert os.access(binary, os.X_OK)
