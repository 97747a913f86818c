"""A one-shot UDP exchange that shows addresses: ``serve IP PORT`` / ``ask IP PORT``.

Run inside a namespace by :mod:`ovn_underlay.lab.probe`.  The server prints
``ready`` once it listens, answers one datagram with the source address it came
from and exits.  The client sends from an unconnected socket, so it receives an
answer whatever its source, and prints ``<address the server saw> <address the
answer came from>``: what a NAT on the way rewrote, and whether the answer came
from the address asked.
"""

from __future__ import annotations

import socket
import sys

from ovn_underlay.lab.echo import run_one_shot

QUESTION = b"who am i"


def serve(ip: str, port: int, timeout: float) -> int:
    """Answer one datagram with its source address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, port))
        sock.settimeout(timeout)
        print("ready", flush=True)
        data, peer = sock.recvfrom(64)
        if data == QUESTION:
            sock.sendto(peer[0].encode(), peer)
    return 0


def ask(ip: str, port: int, timeout: float) -> int:
    """Ask until answered (a few tries); print what the server saw and who answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout / 5)
        for _ in range(5):
            sock.sendto(QUESTION, (ip, port))
            try:
                data, peer = sock.recvfrom(64)
            except TimeoutError:
                continue
            print(f"{data.decode()} {peer[0]}", flush=True)
            return 0
    return 1


def main(argv: list[str]) -> int:
    """Entry point: ``serve|ask IP PORT [TIMEOUT]``."""
    return run_one_shot(argv, serve, ask)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
