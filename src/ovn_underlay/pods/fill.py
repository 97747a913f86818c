"""Fill the node's pool up to the size lswitch-setup was asked for, batch by batch.

Neutron makes a port in ~0.2-0.3 s, so ``lswitch-setup`` creates a first batch
and returns; the rest is made here, either in the foreground (``pool fill``,
``lswitch-setup --wait``, with a progress bar on a terminal) or by a detached
``ovn-k8s-underlay pool fill`` that lswitch-setup starts
(:mod:`ovn_underlay.pods.filler`).  Every round reads the node network back from the control
plane and adds every port it has to the pool, so ports made by a filler that
died are adopted, never lost.  A lock file makes a second filler wait for the
first, which then finds the pool full: two fillers never overshoot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.control.base import ControlPlane
from ovn_underlay.pods.pool import Pool

LOCK_FILE = "pool-fill.lock"

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
