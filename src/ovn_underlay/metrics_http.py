"""A Prometheus registry served over HTTP: what the node daemon and the controller share."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

LOG = logging.getLogger(__name__)


def split_address(address: str) -> tuple[str, int]:
    """("HOST", PORT) of "HOST:PORT" (IPv6 hosts in brackets); ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def serve(registry: CollectorRegistry, address: str) -> WSGIServer:
    """Serve ``registry`` as ``/metrics`` on ``address`` ("HOST:PORT", port 0 picks one)
    in a thread; OSError naming the option when the address cannot be bound."""
    host, port = split_address(address)
    try:
        server, _thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {address}: {exc.strerror} "
                      "(--metrics-address; 'off' for none)") from exc
    LOG.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server
