"""Run a function inside a network namespace given by path, without moving the process.

A network namespace is a per-thread attribute in Linux: ``setns(2)`` with
``CLONE_NEWNET`` changes only the calling thread.  :func:`run_in_netns` starts a
short-lived thread, switches that thread to the namespace and runs the function
there; sockets the function opens (netlink, AF_PACKET, ioctl sockets) belong to
that namespace for their whole life.  The rest of the process is untouched.

Paths may be anything that names a namespace: a bind mount such as
``/var/run/netns/NAME`` or a process' ``/proc/PID/ns/net``.  Checking that a
path is a network namespace uses NS_GET_NSTYPE (Linux 4.11 or later).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): the CLONE_NEW* type of a namespace fd

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsUnavailable(OSError):
    """The path does not exist or does not name a network namespace."""


@contextlib.contextmanager
def open_netns(path: str) -> Iterator[int]:
    """Open the namespace at ``path`` for the duration of the block; yield its fd.

    Holding the fd keeps the namespace alive even if its mount or process goes
    away meanwhile.  Raises :class:`NetnsUnavailable` for a missing path or one
    that is not a network namespace (e.g. the empty file left by a namespace
    that was unmounted).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetnsUnavailable(errno.ENOENT, f"network namespace {path} does not exist") from exc
    except OSError as exc:
        raise NetnsUnavailable(exc.errno, f"cannot open network namespace {path}: "
                               f"{exc.strerror}") from exc
    try:
        _check_netns(fd, path)
        yield fd
    finally:
        os.close(fd)


def _check_netns(fd: int, path: str) -> None:
    """Raise NetnsUnavailable unless ``fd`` is a network namespace."""
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise NetnsUnavailable(errno.EINVAL, f"{path} is not a network namespace") from exc
    if nstype != CLONE_NEWNET:
        raise NetnsUnavailable(errno.EINVAL, f"{path} is not a network namespace")


def _setns(fd: int, label: str) -> None:
    """Switch the calling thread to the network namespace ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({label}): {os.strerror(err)}")


def enter_netns(path: str) -> None:
    """Move the calling thread (only it) into the network namespace at ``path``, for good."""
    with open_netns(path) as fd:
        _setns(fd, path)


def run_in_netns(ns: int | str, fn: Callable[..., T], *args: object) -> T:
    """Call ``fn(*args)`` in a new thread inside the namespace ``ns``; return its result.

    ``ns`` is an fd from :func:`open_netns` or a path.  Exceptions raised by
    ``fn`` (or by entering the namespace) propagate to the caller unchanged.
    """
    if isinstance(ns, str):
        with open_netns(ns) as fd:
            return _run_in_thread(fd, ns, fn, args)
    return _run_in_thread(ns, f"fd {ns}", fn, args)


def _run_in_thread(fd: int, label: str, fn: Callable[..., T], args: tuple[object, ...]) -> T:
    """Run ``fn`` in a fresh thread that first enters the namespace ``fd``."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _setns(fd, label)
            outcome.append(fn(*args))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns:{label}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
