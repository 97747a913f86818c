"""``ovn-underlay``: the CNI binary a container runtime executes once per call.

It forwards the call (the ``CNI_*`` environment and stdin) to the node daemon
over its unix socket and prints the daemon's answer with its exit code.  Only
built-in modules are loaded on that path (``_socket`` and ``posix`` rather
than ``socket`` and ``os``, which pull in enum, selectors and more: 7 ms of a
15 ms start on this project's machines).

When no daemon listens on the socket, or the daemon dies before it has
answered, the call is served in this process instead, exactly as without a
daemon (ADD and DEL are idempotent, so a half-done call is simply finished).
Only then are the networking libraries imported.  A daemon that does not
answer within :data:`REPLY_TIMEOUT` seconds is reported as "try again": it
may still be working on the call, which must not run twice at once.

The installed binary calls :func:`launch`: once the daemon has answered, the
process ends with ``_exit`` rather than the interpreter's teardown (1-2 ms).
Where the native shim (``shim.c``, :data:`NATIVE_SHIM`) is built, it is that
binary's interpreter and does the forwarding itself (~0.5 ms instead of
Python's ~8 ms start); it runs the script only when Python must take over,
saying why in its one argument (:data:`IN_PROCESS`, :data:`TIMED_OUT`).
"""

import _socket
import posix
import sys

from ovn_underlay.cni import wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import NoReturn

    from ovn_underlay.cni.runner import Plugin
    from ovn_underlay.cni.spec import Request

REPLY_TIMEOUT = 300.0
ERR_TRY_AGAIN = 11
NATIVE_SHIM = "ovn-underlay-cni-shim"
"""The native shim's file name, built from shim.c next to this module."""
IN_PROCESS = "--in-process"
"""No daemon listens or it broke off: serve the call here (stdin is the call's)."""
TIMED_OUT = "--timed-out"
"""The daemon took the call and did not answer in time: report "try again"."""
_CHUNK = 1 << 16


def main(socket_path: str = wire.DEFAULT_SOCKET,
         reply_timeout: float = REPLY_TIMEOUT) -> int:
    """Serve one CNI call through the daemon at ``socket_path``, else in-process."""
    stdin = sys.stdin.buffer.read()
    code = _through_daemon(socket_path, stdin, reply_timeout)
    return _in_process(stdin) if code is None else code


def launch(socket_path: str, reply_timeout: float = REPLY_TIMEOUT) -> "NoReturn":
    """The CNI binary: :func:`main`, then end the process with its exit code.

    A call the daemon answered ran nothing but this module, so the process
    ends at once (``_exit``, stdout flushed); one served in-process exits
    normally, waiting for its libraries' threads and exit handlers.  With
    the native shim's :data:`IN_PROCESS` or :data:`TIMED_OUT` argument the
    daemon is not asked again.
    """
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    stdin = sys.stdin.buffer.read()
    if mode == TIMED_OUT:
        code: int | None = _timed_out(stdin, socket_path, reply_timeout)
    elif mode == IN_PROCESS:
        code = None
    else:
        code = _through_daemon(socket_path, stdin, reply_timeout)
    if code is None:
        sys.exit(_in_process(stdin))
    sys.stdout.flush()
    posix._exit(code)


def _through_daemon(socket_path: str, stdin: bytes, reply_timeout: float) -> int | None:
    """Forward the call and print the daemon's answer; its exit code, None if none came."""
    try:
        raw = _ask(socket_path, wire.encode_request(posix.environ, stdin), reply_timeout)
    except TimeoutError:
        return _timed_out(stdin, socket_path, reply_timeout)
    if raw is None:
        return None
    try:
        code, stdout = wire.decode_reply(raw)
    except wire.ProtocolError:
        return None
    sys.stdout.buffer.write(stdout)
    sys.stdout.buffer.flush()
    return code


def _ask(path: str, request: bytes, reply_timeout: float) -> bytes | None:
    """The daemon's raw reply; None if it cannot be reached or breaks off.

    TimeoutError once the daemon was sent the request but stays silent.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.settimeout(reply_timeout)
        sock.sendall(request)
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(_CHUNK):
            chunks.append(chunk)
    except TimeoutError:
        raise
    except OSError:
        return None
    finally:
        sock.close()
    return b"".join(chunks)


def _in_process(stdin: bytes) -> int:
    """Serve the call in this process, as the plugin did before the daemon existed."""
    if sys.flags.no_site:  # started by the lean launcher: the libraries need site-packages
        import site

        site.main()
    import os

    from ovn_underlay.cni.runner import run

    return run(_plugin, os.environ, stdin, sys.stdout)


def _plugin(req: "Request") -> "Plugin":
    """The plugin, imported only once the request is known to be valid."""
    from ovn_underlay.pods.cni_plugin import make_plugin

    return make_plugin(req)


def _timed_out(stdin: bytes, socket_path: str, reply_timeout: float) -> int:
    """Report a daemon that took the call but did not answer (CNI error 11, try again)."""
    import json

    from ovn_underlay.cni.spec import CniError, decode_config, reply_version

    try:
        version = reply_version(decode_config(stdin))
    except CniError:
        version = reply_version({})
    err = CniError(ERR_TRY_AGAIN, "the ovn-underlay daemon did not answer",
                   f"no reply on {socket_path} within {reply_timeout:g}s")
    sys.stdout.write(json.dumps(err.to_dict(version), indent=2) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
