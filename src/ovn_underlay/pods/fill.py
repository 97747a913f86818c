"""Fill the node's pool up to the size lswitch-setup was asked for, batch by batch.

Neutron makes a port in ~0.2-0.3 s, so ``lswitch-setup`` creates a first batch
and returns; the rest is made here, either in the foreground (``pool fill``,
``lswitch-setup --wait``, with a progress bar on a terminal) or by a detached
``ovn-k8s-underlay pool fill`` that lswitch-setup starts (its pid and log are
in the state dir).  Every round reads the node network back from the control
plane and adds every port it has to the pool, so ports made by a filler that
died are adopted, never lost.  A lock file makes a second filler wait for the
first, which then finds the pool full: two fillers never overshoot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.control.base import ControlPlane
from ovn_underlay.pods.pool import Pool

PID_FILE = "pool-fill.pid"
LOG_FILE = "pool-fill.log"
LOCK_FILE = "pool-fill.lock"
STOP_TIMEOUT = 10.0

Progress = Callable[[int, int], None]
"""Called with (ports in the pool, target) after every round."""


@contextlib.contextmanager
def _fill_lock(state_dir: str) -> Iterator[None]:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def fill(cfg: NodeConfig, control: ControlPlane, target: int, batch: int,
         progress: Progress | None = None, stop: Callable[[], bool] | None = None) -> int:
    """Create ports until the node network has ``target``; return how many it has.

    The pool gets every port of the node network after each round.  ``stop``
    is asked between rounds: a request under way is finished, never cut short.
    """
    cfg.require("switch")
    if batch < 1:
        raise ConfigError(f"the fill batch must be at least 1 (got {batch})")
    with _fill_lock(cfg.state_dir), Pool(cfg.pool_path) as pool:
        while True:
            net = control.get_node_network(cfg.switch)
            if net is None:
                raise ConfigError(f"the control plane has no node network {cfg.switch}: run "
                                  "lswitch-setup first")
            pool.add_ports(net.ports)
            have = len(net.ports)
            if progress is not None:
                progress(have, target)
            if have >= target or (stop is not None and stop()):
                return have
            control.add_pool_ports(cfg.switch, min(batch, target - have))


class ProgressBar:
    """``[#####.....] 12/40 ports`` redrawn in place on a terminal, one line per round else."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def __call__(self, have: int, target: int) -> None:
        """Show ``have`` of ``target`` ports."""
        done = min(have, target)
        filled = self.width * done // target if target else self.width
        line = (f"pool [{'#' * filled}{'.' * (self.width - filled)}] {done}/{target} ports "
                f"({time.monotonic() - self.started:.1f}s)")
        if self.tty:
            end = "\n" if done >= target else ""
            self.stream.write(f"\r{line}{end}")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()


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
