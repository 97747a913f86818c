"""A Docker-compatible container engine API on a unix socket: a container's network namespace.

The seed's kubelet verbs (:mod:`ovn_underlay.cli.kubelet`) attach a container's
``eth0`` (:data:`IFNAME`); without ``--netns`` its namespace is found here:
``GET /containers/ID/json`` -> ``State.Pid`` -> ``/proc/PID/ns/net``.
"""

from __future__ import annotations

import http.client
import json
import re
import socket

IFNAME = "eth0"
DEFAULT_ENGINE_SOCKET = "/var/run/docker.sock"
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class EngineError(RuntimeError):
    """The container engine could not tell the container's network namespace."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def check_container_id(container_id: str) -> str:
    """``container_id`` if it is a plausible container id or name, else ValueError."""
    if not _CONTAINER_ID.match(container_id):
        raise ValueError(f"invalid container id {container_id!r}")
    return container_id


def container_netns(container_id: str, engine_socket: str = DEFAULT_ENGINE_SOCKET,
                    timeout: float = 5.0) -> str:
    """The network namespace path of a running container, asked of the engine API."""
    check_container_id(container_id)
    conn = _UnixConnection(engine_socket, timeout)
    try:
        conn.request("GET", f"/containers/{container_id}/json")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise EngineError(f"container engine at {engine_socket} unreachable: {exc}") from exc
    finally:
        conn.close()
    if response.status == 404:
        raise EngineError(f"container {container_id} not found by the engine at "
                          f"{engine_socket}")
    if response.status != 200:
        raise EngineError(f"engine at {engine_socket} answered {response.status} for "
                          f"container {container_id}: {body[:200]!r}")
    try:
        pid = int(json.loads(body)["State"]["Pid"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"engine reply for {container_id} has no State.Pid") from exc
    if pid <= 0:
        raise EngineError(f"container {container_id} is not running")
    return f"/proc/{pid}/ns/net"
