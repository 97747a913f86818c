"""Connectivity checks between namespaces: ICMP ping, a TCP echo, and the addresses seen.

The addresses come from a UDP exchange (:mod:`ovn_underlay.lab.whoami`): the
source the destination saw (a SNAT shows there) and the source of its answer
(which must be the address asked: a node answering from another one would
break a load balancer's un-NAT).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
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


def addresses(src_netns: str, dst: Endpoint, port: int = 7778,
              timeout: float = 5.0) -> tuple[str, str] | None:
    """(the address ``dst`` saw the request from, the address its answer came from), over
    UDP from ``src_netns``; None when no answer came."""
    whoami = [sys.executable, "-m", "ovn_underlay.lab.whoami"]
    server = subprocess.Popen(netns_argv(dst.netns, [*whoami, "serve", dst.ip, str(port),
                                                     str(timeout)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            return None
        client = subprocess.run(netns_argv(src_netns, [*whoami, "ask", dst.ip, str(port),
                                                       str(timeout)]),
                                capture_output=True, text=True, check=False,
                                timeout=timeout + 5)
        fields = client.stdout.split()
        return (fields[0], fields[1]) if client.returncode == 0 and len(fields) == 2 else None
    except subprocess.TimeoutExpired:
        return None
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
    seen_as: str = ""
    """The source address the destination saw ("" when not asked, or no answer)."""
    reply_from: str = ""
    """The source of the destination's answer ("" when not asked, or no answer)."""
    expect_seen: str = ""
    """What ``seen_as`` must be ("": addresses not checked)."""

    @property
    def ok(self) -> bool:
        """Ping and TCP worked and, where asked, the addresses are the expected ones."""
        addresses_ok = not self.expect_seen or (self.seen_as == self.expect_seen
                                                and self.reply_from == self.dst.ip)
        return self.ping and self.tcp and addresses_ok


def check(kind: str, src: Endpoint, dst: Endpoint, expect_seen: str = "") -> Check:
    """Ping and TCP from ``src`` to ``dst``; with ``expect_seen``, the addresses too."""
    seen = addresses(src.netns, dst) if expect_seen else None
    return Check(kind, src, dst, ping(src.netns, dst.ip), tcp(src.netns, dst),
                 *(seen or ("", "")), expect_seen=expect_seen)


def _shown(c: Check) -> str:
    if not c.expect_seen:
        return ""
    if not c.seen_as:
        return "FAIL (no answer)"
    verdict = "" if c.seen_as == c.expect_seen else f" FAIL (not {c.expect_seen})"
    answer = "" if c.reply_from == c.dst.ip else f", answer FROM {c.reply_from}"
    return f"{c.seen_as}{verdict}{answer}"


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as plain-text columns (the first row the heading)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def table(checks: list[Check]) -> str:
    """The checks as a plain-text table."""
    head = ("check", "from", "to", "ping", "tcp", "seen as")
    return columns([head, *[(c.kind, f"{c.src.label} ({c.src.ip})",
                             f"{c.dst.label} ({c.dst.ip})", "ok" if c.ping else "FAIL",
                             "ok" if c.tcp else "FAIL", _shown(c)) for c in checks]])


def verdict(oks: Iterable[bool]) -> str:
    """The verdict line over checks' results: ``<green>/<all> checks green``."""
    results = list(oks)
    return f"{sum(results)}/{len(results)} checks green"


def render(checks: list[Check]) -> str:
    """The checks as a plain-text table with a verdict line."""
    return f"{table(checks)}\n{verdict(c.ok for c in checks)}"
