"""Start and stop the OVS/OVN daemons of the lab, each with its own run directory.

Every daemon is started with an argv list (never a shell), detached by its own
``--detach --pidfile`` so that its pid is on disk before ``start`` returns, and,
when a network namespace is given, inside that namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")


class DaemonError(RuntimeError):
    """A lab daemon could not be started."""


@dataclass(frozen=True)
class Daemon:
    """One running daemon: its name, pid file, log file and control socket."""

    name: str
    pidfile: Path
    logfile: Path
    ctl: Path

    def pid(self) -> int | None:
        """The pid of the daemon if it is running, else None."""
        return read_live_pid(self.pidfile)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not (detached daemons are reparented to
    an init that may be slow to reap them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_live_pid(pidfile: Path) -> int | None:
    """The pid written in ``pidfile`` if that process still runs."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def netns_argv(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` run inside the named network namespace (or as is)."""
    if netns is None:
        return argv
    return ["ip", "netns", "exec", netns, *argv]


def run(argv: list[str], netns: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 30.0) -> str:
    """Run a command to completion; raise DaemonError with its stderr on failure."""
    full = netns_argv(netns, argv)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise DaemonError(f"{argv[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise DaemonError(f"{' '.join(full)} did not finish in {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise DaemonError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _start(name: str, argv: list[str], rundir: Path, netns: str | None,
           env: dict[str, str], unixctl: bool = True) -> Daemon:
    pidfile = rundir / f"{name}.pid"
    logfile = rundir / f"{name}.log"
    ctl = rundir / f"{name}.ctl"
    full = [*argv, f"--pidfile={pidfile}", f"--log-file={logfile}", "--detach", "--no-chdir"]
    if unixctl:
        full.append(f"--unixctl={ctl}")
    run(full, netns=netns, env={**os.environ, **env})
    daemon = Daemon(name, pidfile, logfile, ctl)
    if daemon.pid() is None:
        raise DaemonError(f"{name} exited right after start; see {logfile}")
    return daemon


def create_db(dbfile: Path, schema: Path) -> None:
    """Create an empty OVSDB database file from ``schema`` unless it exists."""
    if not dbfile.exists():
        run(["ovsdb-tool", "create", str(dbfile), str(schema)])


def start_ovsdb_server(name: str, rundir: Path, schema: Path, netns: str | None = None,
                       extra_remotes: tuple[str, ...] = ()) -> tuple[Daemon, str]:
    """Start an ovsdb-server for one database; return it and its unix connection string."""
    rundir.mkdir(parents=True, exist_ok=True)
    dbfile = rundir / f"{name}.db"
    sock = rundir / f"{name}.sock"
    create_db(dbfile, schema)
    argv = ["ovsdb-server", str(dbfile), f"--remote=punix:{sock}"]
    if schema == OVS_SCHEMA:
        argv.append("--remote=db:Open_vSwitch,Open_vSwitch,manager_options")
    argv += [f"--remote={r}" for r in extra_remotes]
    daemon = _start(name, argv, rundir, netns, ovs_env(rundir))
    wait_for_path(sock, 10.0, f"{name} socket")
    return daemon, f"unix:{sock}"


def ovs_env(rundir: Path) -> dict[str, str]:
    """Environment that keeps an OVS/OVN instance's files inside ``rundir``."""
    d = str(rundir)
    return {"OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d,
            "OVN_RUNDIR": d, "OVN_DBDIR": d, "OVN_LOGDIR": d, "OVN_SYSCONFDIR": d}


def start_vswitchd(name: str, rundir: Path, db: str, netns: str | None) -> Daemon:
    """Start ovs-vswitchd on the database ``db`` (userspace datapath capable)."""
    return _start(name, ["ovs-vswitchd", db], rundir, netns, ovs_env(rundir))


def start_northd(name: str, rundir: Path, nb: str, sb: str, netns: str | None) -> Daemon:
    """Start ovn-northd between the NB and SB databases."""
    return _start(name, ["ovn-northd", f"--ovnnb-db={nb}", f"--ovnsb-db={sb}"],
                  rundir, netns, ovs_env(rundir))


def start_controller(name: str, rundir: Path, ovs_db: str, netns: str | None) -> Daemon:
    """Start ovn-controller on the local Open_vSwitch database ``ovs_db``."""
    # ovn-controller has no --unixctl: its control socket follows OVN_RUNDIR.
    return _start(name, ["ovn-controller", ovs_db], rundir, netns, ovs_env(rundir),
                  unixctl=False)


def wait_for_path(path: Path, timeout: float, what: str) -> None:
    """Wait until ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise DaemonError(f"{what} did not appear at {path} within {timeout:.0f}s")
        time.sleep(0.02)


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM a process, then SIGKILL it if it is still there after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
