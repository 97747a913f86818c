"""The programs run inside the pods of tests/e2e/test_services_convergence.py (standard
library only: each starts in a few tens of milliseconds).

``serve NAME IP PORT``: a TCP backend; prints ``ready`` once it listens, then answers
every connection with ``NAME\\n`` and closes it.

``client IP PORT INTERVAL TIMEOUT OUT [COUNT]``: a request every INTERVAL seconds (a new
TCP connection each, TIMEOUT seconds for connect and answer together), until SIGTERM (or
COUNT requests); each outcome is a line of OUT, flushed at once:
``<start (epoch seconds)> <milliseconds> ok <backend name>`` or
``<start> <milliseconds> fail <error>``.  A timeout (a SYN or an answer lost) is a
failure, as a refused or reset connection is.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import time
from dataclasses import dataclass


def serve(name: str, ip: str, port: int) -> int:
    with socket.create_server((ip, port), backlog=128) as server:
        print("ready", flush=True)
        answer = f"{name}\n".encode()
        while True:
            conn, _ = server.accept()
            with conn, contextlib.suppress(OSError):
                conn.sendall(answer)


def one_request(ip: str, port: int, timeout: float) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            reply = b""
            while not reply.endswith(b"\n"):
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(64)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return False, f"{type(exc).__name__}:{exc.errno or ''}"
    name = reply.decode(errors="replace").strip()
    return (True, name) if name else (False, "empty-answer")


def client(ip: str, port: int, interval: float, timeout: float, out: str,
           count: int = 0) -> int:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    sent = 0
    with open(out, "a", buffering=1) as log:
        next_at = time.monotonic()
        while not stopping and (not count or sent < count):
            started, t0 = time.time(), time.monotonic()
            ok, what = one_request(ip, port, timeout)
            ms = (time.monotonic() - t0) * 1000
            log.write(f"{started:.3f} {ms:.1f} {'ok' if ok else 'fail'} {what}\n")
            sent += 1
            next_at = max(next_at + interval, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


@dataclass(frozen=True)
class Outcome:
    """One request of a client: when it started, how long it took, what answered."""

    at: float
    ms: float
    ok: bool
    what: str


def read_outcomes(path: str) -> list[Outcome]:
    """The complete lines of a client's output."""
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines(keepends=True):
        fields = line.split(maxsplit=3)
        if not line.endswith("\n") or len(fields) < 4:
            continue
        found.append(Outcome(float(fields[0]), float(fields[1]), fields[2] == "ok",
                             fields[3].strip()))
    return found


def main(argv: list[str]) -> int:
    if argv[0] == "serve":
        return serve(argv[1], argv[2], int(argv[3]))
    if argv[0] == "client":
        return client(argv[1], int(argv[2]), float(argv[3]), float(argv[4]), argv[5],
                      int(argv[6]) if len(argv) > 6 else 0)
    raise SystemExit(f"unknown verb {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
