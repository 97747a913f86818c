"""The detached ``pool fill`` that lswitch-setup starts: its pid and log file, start and stop.

The filler is ``ovn-k8s-underlay pool fill`` run in a new session, its output
appended to :data:`LOG_FILE` and its pid recorded in :data:`PID_FILE` in the
node's state dir; the daemon's refill leaves the pool to it while it runs, and
lswitch-destroy stops it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ovn_underlay.config import NodeConfig

PID_FILE = "pool-fill.pid"
LOG_FILE = "pool-fill.log"
STOP_TIMEOUT = 10.0


def spawn(cfg: NodeConfig, ovsdb: str) -> int:
    """Start ``ovn-k8s-underlay pool fill`` detached; return its pid (recorded in the state dir)."""
    state = Path(cfg.state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ovn_underlay.cli", "--ovsdb", ovsdb, "pool", "fill"]
    with open(state / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    (state / PID_FILE).write_text(f"{proc.pid}\n")
    return proc.pid


def running(cfg: NodeConfig) -> int | None:
    """The pid of this node's detached filler while it runs, else None."""
    try:
        pid = int((Path(cfg.state_dir) / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
    return pid if not zombie and cmdline[-2:] == [b"fill", b""] else None


def stop(cfg: NodeConfig) -> bool:
    """Stop this node's detached filler; True if one was running.

    SIGTERM lets it finish the request under way (see :func:`fill`); SIGKILL
    follows after :data:`STOP_TIMEOUT` seconds.
    """
    pid = running(cfg)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running(cfg) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(cfg) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def forget(cfg: NodeConfig) -> None:
    """Remove the filler's pid file (when it ends, or after stop)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(cfg.state_dir) / PID_FILE).unlink()
