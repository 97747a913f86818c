"""The daemon's unix socket: one CNI call per connection, served by a pool of threads.

One thread accepts the connections and reads their requests, all at once
(non-blocking sockets and a ``selectors`` loop), so an idle or slow client
holds no worker: only a complete request (its sender has shut down its side)
goes to a worker thread, which runs the handler and sends the reply.  A
connection whose whole request has not arrived within :data:`READ_TIMEOUT`
of its accept is closed, and at most :data:`MAX_CONNECTIONS` are open at once
(more are closed as soon as accepted), so a flood of clients neither holds up
the calls of others nor runs the daemon out of file descriptors.

The socket file is created with mode 0600 (only root, the runtime's user,
can connect) in a directory created 0700.  A lock file next to it
(``<socket>.lock``, held with ``flock`` for the daemon's life) makes a second
daemon for the same socket refuse to start; a socket file left by a daemon
that died is removed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ovn_underlay.cni import wire

LOG = logging.getLogger(__name__)
DEFAULT_WORKERS = 32
READ_TIMEOUT = 10.0
"""Seconds from its accept for a connection to send its whole request."""
SEND_TIMEOUT = 10.0
"""Seconds for a reply to be taken by its caller."""
MAX_CONNECTIONS = 1024
"""Connections open at once (being read or served); beyond, new ones are closed at once."""
FD_RESERVE = 128
"""Open files kept for the rest of the daemon when the limit lowers MAX_CONNECTIONS."""
ACCEPT_POLL = 0.5
"""Seconds between two looks at :meth:`UnixServer.stop`."""
BACKLOG = 128
_CHUNK = 1 << 16

Handler = Callable[[Mapping[str, str], bytes], tuple[int, bytes]]


class AlreadyRunning(RuntimeError):
    """Another daemon serves this socket."""


class UnixServer:
    """Serves ``handler`` on the unix socket at ``path``."""

    def __init__(self, path: str, handler: Handler, workers: int = DEFAULT_WORKERS,
                 read_timeout: float = READ_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, owner: str = "") -> None:
        """``owner`` (the node's OVS database) is written into the lock file, for
        :func:`holder`: node-init refuses to hand one node's socket to another."""
        self.path = Path(path)
        self.owner = owner
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._handler = handler
        self._workers = workers
        self._read_timeout = read_timeout
        self._max_connections = _connection_budget(max_connections)
        self._slots = threading.BoundedSemaphore(self._max_connections)
        self._refused = 0
        self._stop = threading.Event()
        self._lock_fd: int | None = None
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Take the lock, remove a stale socket file and listen; AlreadyRunning if locked."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").split("\n")[0].strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another ovn-underlay daemon (pid {pid}) already serves "
                                 f"{self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.owner}\n".encode())
        self._lock_fd = fd
        if self.path.is_socket():
            LOG.info("removing the stale socket %s", self.path)
            self.path.unlink()
        elif self.path.exists():
            self.close()
            raise FileExistsError(f"{self.path} exists and is not a socket; not touching it")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        self._sock = sock

    def serve(self) -> None:
        """Accept calls until :meth:`stop`; then wait for the calls in progress.

        This thread accepts the connections and reads their requests; each
        complete one goes to a worker thread.  Connections whose request has
        not all arrived when :meth:`stop` is seen are closed unanswered (their
        callers serve the call themselves, as when no daemon listens).
        """
        assert self._sock is not None, "bind() first"
        reading: dict[int, _Reading] = {}  # by file descriptor, oldest (first deadline) first
        with ThreadPoolExecutor(self._workers, thread_name_prefix="cni") as executor, \
                selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    timeout = ACCEPT_POLL
                    if reading:
                        first = next(iter(reading.values())).deadline
                        timeout = min(timeout, max(0.0, first - time.monotonic()))
                    for key, _ in selector.select(timeout):
                        if key.data is None:
                            self._accept(selector, reading)
                        else:
                            self._receive(selector, reading, key.data, executor)
                    self._expire(selector, reading)
            finally:
                if reading:
                    LOG.info("closing %d connections whose request had not arrived",
                             len(reading))
                for client in list(reading.values()):
                    self._close(selector, reading, client)

    def stop(self) -> None:
        """Make :meth:`serve` return (from a signal handler or another thread)."""
        self._stop.set()

    def close(self) -> None:
        """Remove the socket file and release the lock."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.path.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _accept(self, selector: selectors.BaseSelector, reading: dict[int, _Reading]) -> None:
        """Take the connections waiting on the socket (up to BACKLOG: the others wait
        for the next round, after the reads), closing those beyond the cap."""
        assert self._sock is not None
        for _ in range(BACKLOG):
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            if not self._slots.acquire(blocking=False):
                if not self._refused:
                    LOG.warning("%d connections are open: closing new ones at once until "
                                "some end", self._max_connections)
                self._refused += 1
                conn.close()
                continue
            if self._refused:
                LOG.warning("accepting connections again (%d closed at once)", self._refused)
                self._refused = 0
            conn.setblocking(False)
            client = _Reading(conn, time.monotonic() + self._read_timeout)
            reading[conn.fileno()] = client
            selector.register(conn, selectors.EVENT_READ, client)

    def _receive(self, selector: selectors.BaseSelector, reading: dict[int, _Reading],
                 client: _Reading, executor: ThreadPoolExecutor) -> None:
        """Read what ``client`` sent; at its end, hand the request to a worker."""
        try:
            chunk = client.conn.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            LOG.warning("dropping a request that could not be read: %s", exc)
            self._close(selector, reading, client)
            return
        if chunk:
            client.data += chunk
            if len(client.data) > wire.MAX_MESSAGE:
                LOG.warning("dropping a request that could not be read: request larger than "
                            "%d bytes", wire.MAX_MESSAGE)
                self._close(selector, reading, client)
            return
        if not client.data:
            LOG.debug("a connection closed without a request (a liveness probe)")
            self._close(selector, reading, client)
            return
        selector.unregister(client.conn)
        del reading[client.conn.fileno()]
        executor.submit(self._answer, client.conn, bytes(client.data))

    def _expire(self, selector: selectors.BaseSelector, reading: dict[int, _Reading]) -> None:
        """Close the connections whose request did not arrive in time."""
        now = time.monotonic()
        while reading:
            client = next(iter(reading.values()))
            if client.deadline > now:
                return
            if client.data:
                LOG.warning("dropping a request that could not be read: %d bytes and no end "
                            "in %gs", len(client.data), self._read_timeout)
            else:
                LOG.debug("closing a connection that sent nothing in %gs", self._read_timeout)
            self._close(selector, reading, client)

    def _close(self, selector: selectors.BaseSelector, reading: dict[int, _Reading],
               client: _Reading) -> None:
        """Close the connection of ``client``, whose request is still being read."""
        selector.unregister(client.conn)
        del reading[client.conn.fileno()]
        client.conn.close()
        self._slots.release()

    def _answer(self, conn: socket.socket, data: bytes) -> None:
        """Serve the complete request ``data`` and send the reply (in a worker thread)."""
        try:
            with conn:
                try:
                    env, stdin = wire.decode_request(data)
                except wire.ProtocolError as exc:
                    LOG.warning("dropping a request that could not be read: %s", exc)
                    return
                code, stdout = self._handler(env, stdin)
                conn.settimeout(SEND_TIMEOUT)
                try:
                    conn.sendall(wire.encode_reply(code, stdout))
                except OSError as exc:
                    LOG.warning("the caller left before its reply: %s", exc)
        finally:
            self._slots.release()


@dataclass
class _Reading:
    """A connection whose request is being read, until ``deadline`` (time.monotonic)."""

    conn: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def _connection_budget(wanted: int) -> int:
    """``wanted``, or fewer if the open files limit would not leave FD_RESERVE files free."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= wanted:
        return wanted
    allowed = max(1, soft - FD_RESERVE)
    LOG.info("at most %d connections at once (the open files limit is %d)", allowed, soft)
    return allowed

def holder(path: str) -> tuple[str, str] | None:
    """(pid, owner) of the daemon holding the lock of the socket ``path``; None if none does."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, rest = os.read(fd, 4096).decode(errors="replace").partition("\n")
            return pid.strip(), rest.strip()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_serving(path: str) -> bool:
    """Whether a daemon accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
