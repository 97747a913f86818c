"""The CNI binary's forwarding: the call to the node daemon, the daemon's answer to stdout.

:func:`forward` sends the call (the ``CNI_*`` environment and stdin) to the
daemon over its unix socket and prints the daemon's answer.  Only built-in
modules are loaded on that path (``_socket`` and ``posix`` rather than
``socket`` and ``os``, which pull in enum, selectors and more: 7 ms of a 15 ms
start on this project's machines).

When no daemon listens on the socket, or the daemon dies before it has
answered, there is no answer: the CNI binary's entry point
(:mod:`ovn_underlay.cli.cni_binary`) then serves the call in its own process,
exactly as without a daemon (ADD and DEL are idempotent, so a half-done call
is simply finished).  A daemon that does not answer within
:data:`REPLY_TIMEOUT` seconds is reported as "try again" (:func:`timed_out`):
it may still be working on the call, which must not run twice at once.

Where the native shim (``shim.c``, :data:`NATIVE_SHIM`) is built, it is the
installed binary's interpreter and does the forwarding itself (~0.5 ms instead
of Python's ~8 ms start); it runs the script only when Python must take over,
saying why in its one argument (:data:`IN_PROCESS`, :data:`TIMED_OUT`).  On a
cluster node's host, which has no Python, the shim is the CNI binary itself
(:mod:`ovn_underlay.cni.host_install`): nothing takes over there, and a call
no daemon answers is CNI error :data:`ERR_TRY_AGAIN`.
"""

import _socket
import posix
import sys

from ovn_underlay.cni import wire

REPLY_TIMEOUT = 300.0
ERR_TRY_AGAIN = 11
NATIVE_SHIM = "ovn-underlay-cni-shim"
"""The native shim's file name, built from shim.c next to this module."""
IN_PROCESS = "--in-process"
"""No daemon listens or it broke off: serve the call here (stdin is the call's)."""
TIMED_OUT = "--timed-out"
"""The daemon took the call and did not answer in time: report "try again"."""
_CHUNK = 1 << 16


def forward(socket_path: str, stdin: bytes, reply_timeout: float) -> int | None:
    """Forward the call and print the daemon's answer; its exit code, None if none came.

    A daemon that took the call and stays silent for ``reply_timeout``
    seconds is answered for with :func:`timed_out`.
    """
    try:
        raw = _ask(socket_path, wire.encode_request(posix.environ, stdin), reply_timeout)
    except TimeoutError:
        return timed_out(stdin, socket_path, reply_timeout)
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


def timed_out(stdin: bytes, socket_path: str, reply_timeout: float) -> int:
    """Report a daemon that took the call but did not answer (CNI error 11, try again).

    The error object is the runner's, in the version the call's stdin asks for.
    """
    from ovn_underlay.cni.runner import error_reply
    from ovn_underlay.cni.spec import CniError, read_config

    err = CniError(ERR_TRY_AGAIN, "the ovn-underlay daemon did not answer",
                   f"no reply on {socket_path} within {reply_timeout:g}s")
    sys.stdout.buffer.write(error_reply(err, read_config(stdin)))
    return 1
