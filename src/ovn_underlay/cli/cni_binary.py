"""``ovn-underlay``: the CNI binary a container runtime executes once per call.

The call is forwarded to the node daemon (:func:`ovn_underlay.cni.shim.forward`);
when no daemon answers, it is served in this process by the runner
(:func:`ovn_underlay.cni.runner.run`) with the plugin
(:mod:`ovn_underlay.pods.cni_plugin`), both imported only then, and the plugin
only once the request is known to be valid.  This module imports nothing
else at module level (and :mod:`ovn_underlay.cli` nothing at all), so a call
the daemon answers loads only built-in modules besides the shim's.

The installed binary (``node-init --install-cni``) calls :func:`launch`; the
``ovn-underlay`` console script calls :func:`main`.
"""

import posix
import sys

from ovn_underlay.cni import shim, wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import NoReturn

    from ovn_underlay.cni.netconf import NetConf
    from ovn_underlay.cni.runner import Plugin
    from ovn_underlay.cni.spec import Request


def main(socket_path: str = wire.DEFAULT_SOCKET,
         reply_timeout: float = shim.REPLY_TIMEOUT) -> int:
    """Serve one CNI call through the daemon at ``socket_path``, else in-process; the exit code."""
    stdin = sys.stdin.buffer.read()
    code = shim.forward(socket_path, stdin, reply_timeout)
    return _in_process(stdin) if code is None else code


def launch(socket_path: str, reply_timeout: float = shim.REPLY_TIMEOUT) -> "NoReturn":
    """The installed CNI binary: :func:`main`, then end the process with its exit code.

    A call the daemon answered ran nothing but the shim, so the process ends
    at once (``_exit``, stdout flushed); one served in-process exits normally,
    waiting for its libraries' threads and exit handlers.  With the native
    shim's :data:`~ovn_underlay.cni.shim.IN_PROCESS` or
    :data:`~ovn_underlay.cni.shim.TIMED_OUT` argument the daemon is not asked
    again.
    """
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    stdin = sys.stdin.buffer.read()
    if mode == shim.TIMED_OUT:
        code: int | None = shim.timed_out(stdin, socket_path, reply_timeout)
    elif mode == shim.IN_PROCESS:
        code = None
    else:
        code = shim.forward(socket_path, stdin, reply_timeout)
    if code is None:
        sys.exit(_in_process(stdin))
    sys.stdout.flush()
    posix._exit(code)


def _in_process(stdin: bytes) -> int:
    """Serve the call in this process, as the plugin did before the daemon existed."""
    if sys.flags.no_site:  # started by the lean launcher: the libraries need site-packages
        import site

        site.main()
    import os

    from ovn_underlay.cni.runner import run

    return run(_plugin, os.environ, stdin, sys.stdout.buffer)


def _plugin(request: "Request", netconf: "NetConf") -> "Plugin":
    """The plugin, imported only once the request is known to be valid."""
    from ovn_underlay.pods.cni_plugin import make_plugin

    return make_plugin(request, netconf)
