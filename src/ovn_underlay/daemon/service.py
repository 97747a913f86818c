"""One CNI call in the daemon: the runner's request path, on the agent's connections.

The reply is what the CNI binary would have printed and its exit code
(:func:`ovn_underlay.cni.runner.serve`, as in-process), so the shim only copies
it out.  Unlike the in-process wrapper, nothing process-wide is touched
(logging handlers, ``sys.stdout``): many calls run at once, each in its own
thread.  Calls for the same pod interface (container id and ifname) are
serialised; all others run in parallel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext

from ovn_underlay.cni.netconf import NetConf
from ovn_underlay.cni.runner import Hooks, serve
from ovn_underlay.cni.spec import COMMANDS, Request
from ovn_underlay.daemon.agent import NodeAgent
from ovn_underlay.pods.cni_plugin import UnderlayPlugin

GATED = ("ADD", "DEL", "CHECK")
CHANGES_POOL = ("ADD", "DEL", "GC")


class CniService:
    """Answers CNI calls forwarded by the shim."""

    def __init__(self, agent: NodeAgent, pool_changed: Callable[[], None]) -> None:
        """``pool_changed`` is called after every call that may have taken or freed ports."""
        self.agent = agent
        self._pool_changed = pool_changed
        self._hooks = Hooks(around_plugin=self._plugin_call)

    def handle(self, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        """The exit code and stdout of the CNI call given by ``env`` and ``stdin``."""
        started = time.perf_counter()
        outcome = serve(env, stdin, self._plugin, self._hooks)
        metrics = self.agent.metrics
        if metrics is not None:
            label = outcome.command if outcome.command in COMMANDS else "invalid"
            metrics.observe_request(label, time.perf_counter() - started, outcome.error_code)
        return outcome.exit_code, outcome.stdout

    def _plugin(self, request: Request, netconf: NetConf) -> UnderlayPlugin:
        """The plugin of one call, on attachers the agent lends."""
        del request
        return UnderlayPlugin(netconf, self.agent.lend_attacher)

    @contextmanager
    def _plugin_call(self, request: Request) -> Iterator[None]:
        """Around the plugin: one call per pod interface at a time; then tell of pool changes."""
        gate = (self.agent.gate.hold((request.container_id, request.ifname))
                if request.command in GATED else nullcontext())
        try:
            with gate:
                yield
        finally:
            if request.command in CHANGES_POOL:
                self._pool_changed()
