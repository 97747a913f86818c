"""A one-shot TCP echo for connectivity checks: ``serve IP PORT`` / ``connect IP PORT``.

Run inside a namespace by :mod:`ovn_underlay.lab.probe`.  The server prints
``ready`` once it listens, echoes one message upper-cased and exits; the client
sends a message and exits 0 only if the echo comes back intact.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

MESSAGE = b"ovn-underlay-probe"
Side = Callable[[str, int, float], int]
"""One side of the exchange: (IP, port, timeout in seconds) to an exit code."""


def serve(ip: str, port: int, timeout: float) -> int:
    """Accept one connection and echo its message upper-cased."""
    with socket.create_server((ip, port), reuse_port=False) as server:
        server.settimeout(timeout)
        print("ready", flush=True)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            conn.sendall(conn.recv(len(MESSAGE)).upper())
    return 0


def connect(ip: str, port: int, timeout: float) -> int:
    """Send the message; succeed only if its upper-cased echo comes back."""
    with socket.create_connection((ip, port), timeout=timeout) as conn:
        conn.sendall(MESSAGE)
        reply = b""
        while len(reply) < len(MESSAGE):
            chunk = conn.recv(len(MESSAGE))
            if not chunk:
                break
            reply += chunk
    return 0 if reply == MESSAGE.upper() else 1


def run_one_shot(argv: list[str], server: Side, client: Side) -> int:
    """``serve IP PORT [TIMEOUT]`` runs ``server``, any other verb ``client`` (timeout 5 s by
    default); an OSError is printed on stderr as ``VERB IP:PORT: error`` and is exit code 1."""
    verb, ip, port = argv[0], argv[1], int(argv[2])
    timeout = float(argv[3]) if len(argv) > 3 else 5.0
    try:
        return (server if verb == "serve" else client)(ip, port, timeout)
    except OSError as exc:
        print(f"{verb} {ip}:{port}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    """Entry point: ``serve|connect IP PORT [TIMEOUT]``."""
    return run_one_shot(argv, serve, connect)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
