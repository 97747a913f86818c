"""Named network namespaces of the lab, through iproute2 argv lists."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from ovn_underlay.lab.daemons import run, stop_pid

NETNS_DIR = Path("/var/run/netns")


def exists(name: str) -> bool:
    """Whether the named namespace exists."""
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    """Create a namespace with its loopback up; fine if it already exists."""
    if not exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def listed(prefix: str) -> list[str]:
    """Names of the namespaces whose name starts with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def pids(name: str) -> list[int]:
    """Pids of the processes living in the namespace."""
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def destroy(name: str) -> None:
    """Stop every process in the namespace, then delete it; fine if it is gone."""
    if not exists(name):
        return
    for pid in pids(name):
        stop_pid(pid, timeout=3.0)
    with contextlib.suppress(Exception):
        run(["ip", "netns", "del", name])


def path(name: str) -> str:
    """The namespace's file, as a CNI runtime passes it in CNI_NETNS."""
    return str(NETNS_DIR / name)
