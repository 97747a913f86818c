"""One CNI call in the daemon: the same plugin as in-process, on the agent's connections.

The reply is what the CNI binary would have printed and its exit code, so the
shim only copies it out.  Unlike :func:`ovn_underlay.cni.runner.run`, nothing
process-wide is touched (logging handlers, ``sys.stdout``): many calls run at
once, each in its own thread.  Calls for the same pod interface (container id
and ifname) are serialised; all others run in parallel.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

from ovn_underlay.cni.runner import dispatch
from ovn_underlay.cni.spec import (
    COMMANDS,
    ERR_INTERNAL,
    SUPPORTED_VERSIONS,
    CniError,
    Request,
    decode_config,
    parse_request,
    reply_version,
)
from ovn_underlay.daemon.agent import NodeAgent
from ovn_underlay.pods.cni_plugin import UnderlayPlugin

LOG = logging.getLogger(__name__)
GATED = ("ADD", "DEL", "CHECK")
CHANGES_POOL = ("ADD", "DEL", "GC")


class CniService:
    """Answers CNI calls forwarded by the shim."""

    def __init__(self, agent: NodeAgent, pool_changed: Callable[[], None]) -> None:
        """``pool_changed`` is called after every call that may have taken or freed ports."""
        self.agent = agent
        self._pool_changed = pool_changed

    def handle(self, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        """The exit code and stdout of the CNI call given by ``env`` and ``stdin``."""
        started = time.perf_counter()
        command = env.get("CNI_COMMAND", "")
        request: Request | None = None
        try:
            request = parse_request(env, stdin)
            reply = self._execute(request)
        except CniError as err:
            LOG.error("CNI %s failed: %s", command or "?", err)
            failure = err
        except Exception as exc:
            LOG.exception("CNI %s raised an unexpected error", command or "?")
            failure = CniError(ERR_INTERNAL, "internal error", str(exc) or type(exc).__name__)
        else:
            self._observe(command, started, None)
            return 0, b"" if reply is None else _json(reply)
        self._observe(command, started, failure.code)
        version = request.cni_version if request is not None else _error_version(stdin)
        return 1, _json(failure.to_dict(version))

    def _execute(self, request: Request) -> dict[str, Any] | None:
        if request.command == "VERSION":
            return {"cniVersion": request.cni_version,
                    "supportedVersions": list(SUPPORTED_VERSIONS)}
        LOG.info("CNI %s container=%s ifname=%s netns=%s pod=%s/%s", request.command,
                 request.container_id[:12], request.ifname, request.netns,
                 request.pod_namespace, request.pod_name)
        gate = (self.agent.gate.hold((request.container_id, request.ifname))
                if request.command in GATED else nullcontext())
        try:
            with gate:
                return dispatch(UnderlayPlugin(request, self.agent.lend_attacher), request)
        finally:
            if request.command in CHANGES_POOL:
                self._pool_changed()

    def _observe(self, command: str, started: float, code: int | None) -> None:
        metrics = self.agent.metrics
        if metrics is not None:
            label = command if command in COMMANDS else "invalid"
            metrics.observe_request(label, time.perf_counter() - started, code)


def _error_version(stdin: bytes) -> str:
    """The cniVersion of an error reply to a request that did not parse."""
    try:
        return reply_version(decode_config(stdin))
    except CniError:
        return reply_version({})


def _json(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()
