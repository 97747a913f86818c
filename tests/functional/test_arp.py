"""announce_and_probe between two real namespaces: a pod and its "gateway".

The veth between them is made with iproute2; the gateway namespace answers
ARP with its own kernel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from ovn_underlay.dataplane import arp, nsenter
from tests.conftest import needs_netns

pytestmark = needs_netns

POD_IP = "10.77.0.5"
POD_MAC = "0a:58:0a:4d:00:05"
GATEWAY = "10.77.0.1"


def sh(*argv: str) -> str:
    """Run a command; return its stdout."""
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def pod_and_gateway() -> Iterator[tuple[str, str]]:
    """Namespaces pod (eth0, POD_IP) and gw (gw0, GATEWAY) joined by a veth; removed after."""
    pod, gw = f"oult-d-apod-{os.getpid()}", f"oult-d-agw-{os.getpid()}"
    try:
        for ns in (pod, gw):
            sh("ip", "netns", "add", ns)
        sh("ip", "-n", pod, "link", "add", "eth0", "address", POD_MAC, "type", "veth", "peer",
           "name", "gw0", "netns", gw)
        sh("ip", "-n", pod, "addr", "add", f"{POD_IP}/24", "dev", "eth0")
        sh("ip", "-n", gw, "addr", "add", f"{GATEWAY}/24", "dev", "gw0")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", gw, "link", "set", "gw0", "up")
        yield pod, gw
    finally:
        for ns in (pod, gw):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def probe(pod: str, gateway: str, timeout: float) -> tuple[bool, float]:
    """announce_and_probe from the pod; its result and how long it took."""
    started = time.perf_counter()
    found = arp.announce_and_probe(f"/var/run/netns/{pod}", "eth0", POD_IP, POD_MAC, gateway,
                                   timeout)
    return found, time.perf_counter() - started


def test_gateway_answers_fast(pod_and_gateway: tuple[str, str]) -> None:
    pod, gw = pod_and_gateway
    times = []
    for _ in range(5):
        found, elapsed = probe(pod, GATEWAY, 2.0)
        assert found
        times.append(elapsed)
    print(f"\nannounce_and_probe, gateway in a local namespace: first {times[0] * 1000:.2f} ms, "
          f"then {min(times[1:]) * 1000:.2f}-{max(times[1:]) * 1000:.2f} ms")
    assert max(times) < 0.5
    assert POD_MAC in sh("ip", "-n", gw, "neigh", "show", POD_IP, "dev", "gw0")


def capture_arp(ns: str, ifname: str, ready: threading.Event, seconds: float) -> list[bytes]:
    """ARP frames arriving on ``ifname`` in ``ns`` during ``seconds`` (set ``ready`` first)."""

    def capture() -> list[bytes]:
        frames = []
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
            sock.bind((ifname, 0x0806))
            ready.set()
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    frames.append(sock.recv(2048))
                except TimeoutError:
                    break
        return frames

    return nsenter.run_in_netns(f"/var/run/netns/{ns}", capture)


def test_absent_gateway_times_out(pod_and_gateway: tuple[str, str]) -> None:
    pod, _ = pod_and_gateway
    found, elapsed = probe(pod, "10.77.0.9", 0.3)
    assert not found
    assert 0.3 <= elapsed < 0.6


def test_announces_then_repeats_the_request(pod_and_gateway: tuple[str, str]) -> None:
    pod, gw = pod_and_gateway
    ready = threading.Event()
    frames: list[bytes] = []
    listener = threading.Thread(
        target=lambda: frames.extend(capture_arp(gw, "gw0", ready, 0.6)))
    listener.start()
    assert ready.wait(5)
    probe(pod, "10.77.0.9", 0.32)
    listener.join()
    pod_ip, absent = socket.inet_aton(POD_IP), socket.inet_aton("10.77.0.9")
    mac = bytes.fromhex(POD_MAC.replace(":", ""))
    # (dst, src, op, sender MAC, sender IP, target IP) of each frame
    seen = [(f[0:6], f[6:12], f[20:22], f[22:28], f[28:32], f[38:42]) for f in frames]
    garp = (b"\xff" * 6, mac, b"\x00\x01", mac, pod_ip, pod_ip)
    request = (b"\xff" * 6, mac, b"\x00\x01", mac, pod_ip, absent)
    assert seen[0] == garp
    # requests backing off 2, 4, ... ms up to 50 ms apart: at 0, 2, 6, 14, 30, 62, 112,
    # 162, 212, 262, 312 ms (allow for scheduling jitter)
    assert 9 <= len(seen[1:]) <= 13 and set(seen[1:]) == {request}


def test_errors(pod_and_gateway: tuple[str, str]) -> None:
    pod, _ = pod_and_gateway
    with pytest.raises(arp.ArpError, match="nosuchif"):
        arp.announce_and_probe(f"/var/run/netns/{pod}", "nosuchif", POD_IP, POD_MAC, GATEWAY,
                               0.1)
    with pytest.raises(arp.ArpError, match="IPv4"):
        arp.announce_and_probe(f"/var/run/netns/{pod}", "eth0", "fd00::5", POD_MAC, GATEWAY,
                               0.1)
    with pytest.raises(nsenter.NetnsUnavailable):
        arp.announce_and_probe("/var/run/netns/oult-d-missing", "eth0", POD_IP, POD_MAC,
                               GATEWAY, 0.1)
