"""Connectivity checks between namespaces: ICMP ping and a TCP echo."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from ovn_underlay.lab.daemons import netns_argv


@dataclass(frozen=True)
class Endpoint:
    """Something that can be reached: a label, its namespace and its address."""

    label: str
    netns: str
    ip: str


def ping(src_netns: str, dst_ip: str, attempts: int = 5) -> bool:
    """Whether ``dst_ip`` answers a ping from ``src_netns`` (a few tries, ~1 s each)."""
    argv = netns_argv(src_netns, ["ping", "-c", "1", "-W", "1", "-q", dst_ip])
    for _ in range(attempts):
        if subprocess.run(argv, capture_output=True, check=False).returncode == 0:
            return True
    return False


def tcp(src_netns: str, dst: Endpoint, port: int = 7777, timeout: float = 5.0) -> bool:
    """Whether a TCP exchange from ``src_netns`` to ``dst`` echoes back intact."""
    echo = [sys.executable, "-m", "ovn_underlay.lab.echo"]
    server = subprocess.Popen(netns_argv(dst.netns, [*echo, "serve", dst.ip, str(port),
                                                     str(timeout)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            return False
        client = subprocess.run(netns_argv(src_netns, [*echo, "connect", dst.ip, str(port),
                                                       str(timeout)]),
                                capture_output=True, check=False, timeout=timeout + 5)
        return client.returncode == 0 and server.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@dataclass(frozen=True)
class Check:
    """One row of a connectivity matrix."""

    kind: str
    src: Endpoint
    dst: Endpoint
    ping: bool
    tcp: bool

    @property
    def ok(self) -> bool:
        """Both the ping and the TCP exchange worked."""
        return self.ping and self.tcp


def check(kind: str, src: Endpoint, dst: Endpoint) -> Check:
    """Ping and TCP from ``src`` to ``dst``."""
    return Check(kind, src, dst, ping(src.netns, dst.ip), tcp(src.netns, dst))


def render(checks: list[Check]) -> str:
    """The checks as a plain-text table with a verdict line."""
    head = ("check", "from", "to", "ping", "tcp")
    rows = [(c.kind, f"{c.src.label} ({c.src.ip})", f"{c.dst.label} ({c.dst.ip})",
             "ok" if c.ping else "FAIL", "ok" if c.tcp else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in [head, *rows]]
    passed = sum(c.ok for c in checks)
    lines.append(f"{passed}/{len(checks)} checks green")
    return "\n".join(lines)
