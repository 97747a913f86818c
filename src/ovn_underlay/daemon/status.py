"""What the daemon tells ``pool show``: a JSON file next to the pool, rewritten atomically."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovn_underlay.config import NodeConfig

STATUS_FILE = "daemon.json"


@dataclass
class RefillStatus:
    """The pool refill's settings and what it did since the daemon started."""

    low: int = 0
    high: int = 0
    batch: int = 0
    checked_at: float = 0.0
    added: int = 0
    adopted: int = 0
    reclaimed: int = 0
    failures: int = 0
    last_error: str = ""


@dataclass
class DaemonStatus:
    """One daemon: where it listens, since when, and its pool refill."""

    pid: int
    socket: str
    metrics: str
    started_at: float
    refill: RefillStatus = field(default_factory=RefillStatus)


def status_path(pool_path: str) -> Path:
    """The status file of the daemon whose pool is ``pool_path``."""
    return Path(pool_path).with_name(STATUS_FILE)


def write_status(path: Path, status: DaemonStatus) -> None:
    """Replace the status file with ``status`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(status), indent=2) + "\n")
    os.replace(tmp, path)


def read_status(path: Path) -> DaemonStatus | None:
    """The status written last, or None if there is none (or it does not parse)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        refill = RefillStatus(**data.pop("refill"))
        return DaemonStatus(refill=refill, **data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def running(status: DaemonStatus | None) -> bool:
    """Whether the daemon that wrote ``status`` still runs."""
    if status is None:
        return False
    try:
        stat = Path(f"/proc/{status.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def refill_report(cfg: NodeConfig, status: DaemonStatus | None) -> dict[str, Any]:
    """The node's watermarks and its daemon's refill, for ``pool show --json``."""
    return {"low": cfg.pool_low, "high": cfg.pool_high, "batch": cfg.pool_batch,
            "daemon": None if status is None else {**asdict(status),
                                                   "running": running(status)}}


def describe_refill(cfg: NodeConfig, status: DaemonStatus | None) -> str:
    """One line for ``pool show``: the watermarks, then what the daemon did."""
    marks = (f"refill: below {cfg.pool_low} free ports, add up to {cfg.pool_high} free, "
             f"{cfg.pool_batch} per request")
    if status is None:
        return f"{marks}; no daemon has run here (only the node daemon refills)"
    if not running(status):
        return f"{marks}; the daemon (pid {status.pid}) is not running"
    r = status.refill
    last = time.strftime("%H:%M:%S", time.localtime(r.checked_at)) if r.checked_at else "-"
    error = f" (last: {r.last_error})" if r.failures and r.last_error else ""
    return (f"{marks}; daemon pid {status.pid} on {status.socket}, last round {last}: "
            f"{r.added} added, {r.adopted} adopted, {r.reclaimed} reclaimed, "
            f"{r.failures} failed rounds{error}")
