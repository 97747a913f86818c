"""podman private to one lab VM: a real container runtime calling the installed CNI plugin.

All of its files live in ``<VM run dir>/podman``: ``containers.conf`` and
``storage.conf`` (passed with CONTAINERS_CONF and CONTAINERS_STORAGE_CONF;
CONTAINERS_REGISTRIES_CONF is /dev/null: there is no registry), container
storage, libpod's run and static dirs, the events log and the engine API
socket.  Its CNI configuration and plugin directories are the VM's, where
``node-init --install-cni`` wrote the ``ovn-underlay`` network, so
``podman run --network ovn-underlay`` goes through the plugin exactly as on a
real node.

Containers run from a busybox-static root file system made once per VM
(``--rootfs``), not from an image: in podman 4.3 every image copy
(``import``, ``load``, ``buildah commit``) writes containers/image's blob-info
cache to /var/lib/containers/cache, which has no setting for root.

podman runs with only its network namespace switched to the VM's
(``nsenter --net``).  ``ip netns exec`` would also remount /sys without the
cgroup hierarchy, where runc fails ("no cgroup mount found in mountinfo"), and
its private mount namespace would hide the container namespaces podman
bind-mounts under /run/netns from the next podman call.

What podman itself puts outside that directory, as every rootful podman with
the CNI backend does: one ``/run/netns/netns-<uuid>`` per running container,
runc's state in /run/runc and the CNI result cache in /var/lib/cni/results,
all removed with the container.  (``--runtime-flag root=DIR`` would move
runc's state, but podman 4.3 does not pass it on to the clean-up podman that
conmon runs when a container exits, so a stopped container could not start
again.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ovn_underlay.lab import netns
from ovn_underlay.lab.cluster import CONFLIST, Node
from ovn_underlay.lab.daemons import read_live_pid, stop_pid

BUSYBOX = Path("/bin/busybox")
REFERENCE_PLUGINS = Path("/usr/lib/cni")
ROOTFS_DIRS = ("bin", "dev", "etc", "proc", "run", "sys", "tmp")
SERVICE_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = "0"


class PodmanError(RuntimeError):
    """A podman command failed where it should have worked."""


@dataclass(frozen=True)
class Container:
    """A container podman started: its full id and its name."""

    id: str
    name: str


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def listening(sock: Path) -> bool:
    """Whether something accepts connections on the unix socket ``sock``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


class Podman:
    """podman for one lab node: configuration, containers and the engine API service."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.dir = Path(node.vm.rundir) / "podman"
        self.rootfs = self.dir / "rootfs"
        self.socket = self.dir / "api.sock"
        self.service_pidfile = self.dir / "service.pid"
        self.service_log = self.dir / "service.log"

    @property
    def network(self) -> str:
        """The name of the node's CNI network, as node-init wrote it."""
        conflist = json.loads((self.node.cni_conf_dir / CONFLIST).read_text())
        return str(conflist["name"])

    # -- set-up ----------------------------------------------------------------
    def prepare(self) -> None:
        """Write the configuration files and make the root file system (once)."""
        for sub in ("storage", "run", "libpod", "tmp", "home", "volumes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "containers.conf").write_text(self._containers_conf())
        (self.dir / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f"graphroot = {json.dumps(str(self.dir / 'storage'))}\n"
            f"runroot = {json.dumps(str(self.dir / 'run'))}\n")
        if not (self.rootfs / "bin" / "busybox").exists():
            self._make_rootfs()

    def _containers_conf(self) -> str:
        plugin_dirs = [str(self.node.cni_bin_dir), str(REFERENCE_PLUGINS)]
        return (
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = {_toml_list(plugin_dirs)}\n"
            f"network_config_dir = {json.dumps(str(self.node.cni_conf_dir))}\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f"events_logfile_path = {json.dumps(str(self.dir / 'events.log'))}\n"
            f"tmp_dir = {json.dumps(str(self.dir / 'libpod'))}\n"
            f"static_dir = {json.dumps(str(self.dir / 'storage' / 'libpod'))}\n"
            f"volume_path = {json.dumps(str(self.dir / 'volumes'))}\n"
            f"image_copy_tmp_dir = {json.dumps(str(self.dir / 'tmp'))}\n")

    def _make_rootfs(self) -> None:
        """A root file system of busybox-static and one link per applet."""
        if not BUSYBOX.exists():
            raise PodmanError(f"{BUSYBOX} is missing (Debian package busybox-static)")
        staging = self.dir / "rootfs.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        for sub in ROOTFS_DIRS:
            (staging / sub).mkdir(parents=True)
        shutil.copy2(BUSYBOX, staging / "bin" / "busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                (staging / "bin" / applet).symlink_to("busybox")
        os.replace(staging, self.rootfs)

    def env(self) -> dict[str, str]:
        """The environment of every podman call: this VM's files only."""
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "HOME": str(self.dir / "home"), "TMPDIR": str(self.dir / "tmp"),
                "CONTAINERS_CONF": str(self.dir / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf"),
                "CONTAINERS_REGISTRIES_CONF": os.devnull}

    def argv(self, *args: str) -> list[str]:
        """``podman ARGS`` in the VM's network namespace."""
        return ["nsenter", f"--net={netns.path(self.node.vm.netns)}", "podman", *args]

    # -- commands --------------------------------------------------------------
    def podman(self, *args: str, check: bool = True,
               timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run one podman command; raise PodmanError when ``check`` and it fails."""
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True,
                              env=self.env(), timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise PodmanError(f"{self.node.vm.name}: podman {' '.join(args)} failed "
                              f"({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def run(self, name: str, *command: str, network: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman run -d`` of the busybox root file system on ``network``.

        ``network`` defaults to the node's CNI network; ``"none"`` gives the
        container a loopback only.  The command defaults to a long sleep.
        """
        return self.podman("run", "-d", "--name", name, "--network", network or self.network,
                           "--rootfs", str(self.rootfs), *(command or ("sleep", "3600")),
                           check=check)

    def start(self, name: str, *command: str, network: str | None = None) -> Container:
        """Run a container that must start; return it."""
        proc = self.run(name, *command, network=network)
        return Container(proc.stdout.strip().splitlines()[-1], name)

    def container_id(self, name: str) -> str:
        """The full id of the container named ``name`` (running or not)."""
        return self.inspect(name, "{{.Id}}")

    def inspect(self, container: str, template: str) -> str:
        """``podman inspect --format TEMPLATE`` of one container."""
        return self.podman("inspect", "--type", "container", "--format", template,
                           container).stdout.strip()

    def exec(self, container: str, *command: str, detach: bool = False,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman exec`` of ``command`` in a running container."""
        return self.podman("exec", *(("-d",) if detach else ()), container, *command,
                           check=check)

    def remove(self, container: str) -> None:
        """``podman rm -f``: stop the container at once and remove it (CNI DEL)."""
        self.podman("rm", "-f", "-t", STOP_TIMEOUT, container)

    def remove_all(self) -> None:
        """Remove every container of this podman."""
        self.podman("rm", "-f", "-t", STOP_TIMEOUT, "--all")

    # -- the Docker-compatible engine API -------------------------------------
    def start_service(self) -> Path:
        """Start ``podman system service`` on this VM's socket; return the socket.

        A no-op when it already runs.  Its pid goes to ``service.pid`` in the
        run dir, so ``lab down`` stops it too.
        """
        if read_live_pid(self.service_pidfile) is not None:
            return self.socket
        self.socket.unlink(missing_ok=True)
        with self.service_log.open("ab") as log:
            proc = subprocess.Popen(self.argv("system", "service", "--time=0",
                                              f"unix://{self.socket}"),
                                    env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True)
        self.service_pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + SERVICE_TIMEOUT
        while not listening(self.socket):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop_service()
                raise PodmanError(f"podman system service on {self.socket} did not come "
                                  f"up within {SERVICE_TIMEOUT:.0f}s; see {self.service_log}")
            time.sleep(0.05)
        return self.socket

    def stop_service(self) -> None:
        """Stop the engine API service if it runs; remove its socket."""
        pid = read_live_pid(self.service_pidfile)
        if pid is not None:
            stop_pid(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.service_pidfile.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the service and remove every container (each gets its CNI DEL)."""
        self.stop_service()
        if (self.dir / "containers.conf").exists():
            self.remove_all()
