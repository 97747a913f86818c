"""The daemon's unix socket: one CNI call per connection, served by a pool of threads.

The socket file is created with mode 0600 (only root, the runtime's user,
can connect) in a directory created 0700.  A lock file next to it
(``<socket>.lock``, held with ``flock`` for the daemon's life) makes a second
daemon for the same socket refuse to start; a socket file left by a daemon
that died is removed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ovn_underlay.daemon import protocol

LOG = logging.getLogger(__name__)
DEFAULT_WORKERS = 32
READ_TIMEOUT = 10.0
ACCEPT_POLL = 0.5
BACKLOG = 128

Handler = Callable[[Mapping[str, str], bytes], tuple[int, bytes]]


class AlreadyRunning(RuntimeError):
    """Another daemon serves this socket."""


class UnixServer:
    """Serves ``handler`` on the unix socket at ``path``."""

    def __init__(self, path: str, handler: Handler, workers: int = DEFAULT_WORKERS) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._handler = handler
        self._workers = workers
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
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another ovn-underlay daemon (pid {holder}) already serves "
                                 f"{self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
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
        sock.settimeout(ACCEPT_POLL)
        self._sock = sock

    def serve(self) -> None:
        """Accept calls until :meth:`stop`; then wait for the calls in progress."""
        assert self._sock is not None, "bind() first"
        with ThreadPoolExecutor(self._workers, thread_name_prefix="cni") as executor:
            while not self._stop.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EINTR, errno.ECONNABORTED):
                        continue
                    raise
                executor.submit(self._serve_one, conn)

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

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(READ_TIMEOUT)
            try:
                data = _read_all(conn)
                if not data:
                    LOG.debug("a connection closed without a request (a liveness probe)")
                    return
                env, stdin = protocol.decode_request(data)
            except (OSError, protocol.ProtocolError) as exc:
                LOG.warning("dropping a request that could not be read: %s", exc)
                return
            code, stdout = self._handler(env, stdin)
            try:
                conn.sendall(protocol.encode_reply(code, stdout))
            except OSError as exc:
                LOG.warning("the caller left before its reply: %s", exc)


def _read_all(conn: socket.socket) -> bytes:
    """Everything the peer sends until it shuts down its side (bounded)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := conn.recv(1 << 16):
        size += len(chunk)
        if size > protocol.MAX_MESSAGE:
            raise protocol.ProtocolError(f"request larger than {protocol.MAX_MESSAGE} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def is_serving(path: str) -> bool:
    """Whether a daemon accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
