"""The CNI binary of a cluster node's host: the native shim itself, beside its settings file.

The node agent runs in a container image that has Python and this package;
the host whose container runtime executes the CNI binary has neither.  So
on a host the CNI binary is the native shim (``shim.c``, linked statically)
run in its host mode: no script, its settings in a file named like the
binary plus :data:`SETTINGS_SUFFIX` (``/opt/cni/bin/ovn-underlay.conf``),
and when no daemon answers a CNI error 11 (try again) instead of the
in-process Python fallback of a standalone node's launcher script.

:func:`install_host_binary` writes the settings file, then the binary, each
by write-then-rename: a new file in the same directory, written, made
0644/0755, flushed to disk, renamed over the old one, and the directory
flushed too.  A runtime executing the binary meanwhile runs the old file or
the new one, never a part of either.  A file that already holds what it
should is left alone.  Standard library only.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tempfile
from pathlib import Path

from ovn_underlay.cni import shim, wire
from ovn_underlay.cni.conflist import CNI_BINARY

SETTINGS_SUFFIX = ".conf"
"""The settings file is the binary's path plus this (shim.c SETTINGS_SUFFIX)."""
MAX_SOCKET_PATH = 107
"""The longest unix socket path (sockaddr_un's sun_path holds 108 bytes with its NUL)."""
_PT_INTERP = 3


class HostInstallError(Exception):
    """The CNI binary cannot be installed on the host as asked (nothing was written)."""


def native_shim() -> Path | None:
    """The native shim built from cni/shim.c (``make``), None if it was not built."""
    path = Path(shim.__file__).with_name(shim.NATIVE_SHIM)
    return path if os.access(path, os.X_OK) else None


def settings_path(binary: Path) -> Path:
    """Where the CNI binary at ``binary`` reads its settings in host mode."""
    return binary.with_name(binary.name + SETTINGS_SUFFIX)


def settings_text(socket: str, reply_timeout: float) -> str:
    """The settings file: the daemon's socket and how long to wait for its answer.

    HostInstallError for a socket path the shim cannot use (empty, on more
    than one line, longer than :data:`MAX_SOCKET_PATH` bytes) or a timeout
    that is not a positive number of seconds.
    """
    if not socket or "\n" in socket or socket != socket.strip() \
            or len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        raise HostInstallError(f"the daemon socket {socket!r} is no path the CNI binary can use "
                               f"(one line, no surrounding spaces, 1 to {MAX_SOCKET_PATH} bytes)")
    if not (math.isfinite(reply_timeout) and reply_timeout > 0):
        raise HostInstallError(f"the reply timeout {reply_timeout!r} is not a positive number "
                               "of seconds")
    return ("# The ovn-underlay CNI binary's settings, written by its node agent "
            "(ovn_underlay.cni.host_install)\n"
            f"socket: {socket}\n"
            f"reply-timeout: {reply_timeout!r}\n")


def is_static(path: Path) -> bool:
    """Whether ``path`` is an ELF executable without a program interpreter (linked statically).

    HostInstallError if it is no ELF file.
    """
    with path.open("rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or len(header) < 64:
            raise HostInstallError(f"{path} is not an ELF executable")
        order = "<" if header[5] == 1 else ">"
        if header[4] == 2:  # ELFCLASS64
            (phoff,) = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            (phoff,) = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != _PT_INTERP
               for i in range(len(table) // phentsize))


def install_host_binary(bin_dir: Path, socket: str = wire.DEFAULT_SOCKET,
                        reply_timeout: float = shim.REPLY_TIMEOUT,
                        source: Path | None = None) -> list[str]:
    """Install the native shim as ``bin_dir``/ovn-underlay with its settings; what was done.

    ``source`` is the shim to install (default: :func:`native_shim`); it must
    be linked statically, since the host lacks the image's libraries.  The
    settings file is written first, so a binary that appears finds its
    settings.  Returns one line per file written, [] when both held what
    they should already.  HostInstallError, writing nothing, when the shim
    is missing or linked dynamically, or the settings are unusable.
    """
    text = settings_text(socket, reply_timeout).encode()
    shim_path = source or native_shim()
    if shim_path is None:
        raise HostInstallError(f"the native shim is not built (make src/ovn_underlay/cni/"
                               f"{shim.NATIVE_SHIM})")
    if not is_static(shim_path):
        raise HostInstallError(f"{shim_path} is linked dynamically: a host may lack its "
                               "libraries (the Makefile links it with -static)")
    binary = bin_dir / CNI_BINARY
    bin_dir.mkdir(parents=True, exist_ok=True)
    done = []
    if replace_file(settings_path(binary), text, 0o644):
        done.append(f"write {settings_path(binary)} (daemon socket {socket}, reply timeout "
                    f"{reply_timeout:g}s)")
    if replace_file(binary, shim_path.read_bytes(), 0o755):
        done.append(f"write {binary} (the native shim {shim_path}, linked statically)")
    return done


def replace_file(path: Path, data: bytes, mode: int) -> bool:
    """Make ``path`` a regular file holding ``data`` with ``mode`` by write-then-rename.

    False, touching nothing, if it is one already.  The new file is written
    under a unique name in the same directory (so concurrent writers do not
    collide and the rename stays within one filesystem), synced to disk with
    its mode before it is renamed into place, and the directory is synced
    after, so the new file survives a crash or a reboot.
    """
    try:
        current = path.lstat()
        if stat.S_ISREG(current.st_mode) and stat.S_IMODE(current.st_mode) == mode \
                and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True
