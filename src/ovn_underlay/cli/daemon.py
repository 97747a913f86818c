"""``ovn-k8s-underlay daemon``: run the node daemon in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(threadName)s]: %(message)s"


def cmd_daemon(args: argparse.Namespace) -> int:
    """Serve CNI calls, refill the pool and export metrics until told to stop."""
    from ovn_underlay.daemon.main import Daemon
    from ovn_underlay.daemon.server import DEFAULT_WORKERS

    _setup_logging(args.log_file, args.verbose)
    daemon = Daemon(args.ovsdb, socket_path=args.socket, metrics_address=args.metrics_address,
                    workers=args.workers or DEFAULT_WORKERS, reclaim_after=args.reclaim_after)

    # Before start: a SIGTERM right after the socket appears must stop it cleanly too.
    stop_on_signals(daemon.stop)
    daemon.start()
    try:
        daemon.serve()
    finally:
        daemon.close()
    return 0


def stop_on_signals(stop: Callable[[], None]) -> None:
    """From now on SIGTERM and SIGINT log "signal N: stopping" and call ``stop``."""
    import logging
    import signal

    def handler(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


QUIET_LIBRARIES = ("httpx", "httpcore")
"""Libraries that log every HTTP request at INFO (the Kubernetes client's): warnings only,
unless -v."""


def _setup_logging(log_file: str | None, verbose: bool) -> None:
    """Info (debug with -v) to ``log_file`` (created 0600) or stderr, with each line's
    thread; :data:`QUIET_LIBRARIES` at warning unless -v."""
    import logging

    from ovn_underlay.logfile import private_file_handler

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler = (private_file_handler(log_file) if log_file
                                else logging.StreamHandler())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
