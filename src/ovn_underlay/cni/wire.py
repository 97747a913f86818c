"""The wire format between the CNI shim and the daemon: one request, one reply per connection.

The shim connects to the daemon's unix socket (SOCK_STREAM), sends one
request, shuts down its sending side and reads the reply until the daemon
closes the connection::

    request = MAGIC, u32 len(env), env, u32 len(stdin), stdin
    reply   = MAGIC, u8 exit code, u32 len(stdout), stdout

``env`` holds the caller's ``CNI_*`` variables as NUL-separated ``KEY=VALUE``
bytes; ``stdin`` and ``stdout`` are passed through untouched.  Integers are
big-endian.  The length fields let either side tell a complete message from
one cut short by a crash.

This module imports nothing: the shim loads it on every pod network call,
where start-up time counts.
"""

MAGIC = b"OUL1"
DEFAULT_SOCKET = "/run/ovn-underlay/cni.sock"
MAX_MESSAGE = 64 << 20
"""Upper bound of a request or reply (a GC request lists every attachment of the node)."""
ENV_PREFIX = b"CNI_"
_LEN = 4


class ProtocolError(Exception):
    """A message is malformed, truncated or too large."""


def encode_request(env: dict[bytes, bytes], stdin: bytes) -> bytes:
    """A request carrying the ``CNI_*`` entries of ``env`` and the plugin's stdin."""
    blob = b"\0".join(key + b"=" + value for key, value in env.items()
                      if key.startswith(ENV_PREFIX) and b"\0" not in key + value)
    return MAGIC + _u32(len(blob)) + blob + _u32(len(stdin)) + stdin


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    """The environment (``CNI_*`` only, as str) and stdin of a complete request."""
    _check_magic(data)
    blob, offset = _field(data, len(MAGIC))
    stdin, offset = _field(data, offset)
    if offset != len(data):
        raise ProtocolError(f"{len(data) - offset} stray bytes after the request")
    env: dict[str, str] = {}
    for entry in blob.split(b"\0") if blob else ():
        key, sep, value = entry.partition(b"=")
        if not sep or not key.startswith(ENV_PREFIX):
            raise ProtocolError(f"bad environment entry {entry[:40]!r}")
        env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env, stdin


def encode_reply(code: int, stdout: bytes) -> bytes:
    """A reply: the plugin's exit code (0-255) and what it printed."""
    if not 0 <= code <= 255:
        raise ProtocolError(f"exit code {code} is outside 0..255")
    return MAGIC + bytes((code,)) + _u32(len(stdout)) + stdout


def decode_reply(data: bytes) -> tuple[int, bytes]:
    """The exit code and stdout of a complete reply."""
    _check_magic(data)
    if len(data) < len(MAGIC) + 1:
        raise ProtocolError("reply ends before its exit code")
    stdout, offset = _field(data, len(MAGIC) + 1)
    if offset != len(data):
        raise ProtocolError(f"{len(data) - offset} stray bytes after the reply")
    return data[len(MAGIC)], stdout


def _u32(value: int) -> bytes:
    if value > MAX_MESSAGE:
        raise ProtocolError(f"{value} bytes exceed the limit of {MAX_MESSAGE}")
    return value.to_bytes(_LEN, "big")


def _check_magic(data: bytes) -> None:
    if data[:len(MAGIC)] != MAGIC:
        raise ProtocolError(f"not an ovn-underlay message (starts with {data[:8]!r})")


def _field(data: bytes, offset: int) -> tuple[bytes, int]:
    """The length-prefixed field at ``offset`` and the offset after it."""
    start = offset + _LEN
    if len(data) < start:
        raise ProtocolError("message ends inside a length field")
    end = start + int.from_bytes(data[offset:start], "big")
    if len(data) < end:
        raise ProtocolError(f"message cut short: {end - len(data)} bytes missing")
    return data[start:end], end
