"""containerd private to one lab VM: its CRI plugin calls the installed CNI plugin via libcni.

All of its files live in ``<VM run dir>/containerd``: ``config.toml``, its
root and state, its gRPC socket (``containerd.sock``, a file: reachable from
any network namespace), runc's root, the daemon's log, and ``cni-bin``: the
one CNI ``bin_dir``, holding links to the node's installed plugin and to the
reference ``loopback`` (containerd always runs loopback first).  Its CNI
``conf_dir`` is the VM's, where ``node-init --install-cni`` wrote the conflist.

containerd runs with only its network namespace switched to the VM's
(``nsenter --net``); ``ip netns exec`` would remount /sys, where runc fails.
Settings this machine needs (see FACTS.md): ``SystemdCgroup = false``,
``restrict_oom_score_adj = true`` (root lacks CAP_SYS_RESOURCE) and
``netns_mounts_under_state_dir`` (the pods' namespaces under its own state).

No registry: one image, built here from busybox-static as an OCI archive and
imported with ``ctr -n k8s.io images import``, is both the sandbox ("pause")
image and the pods' image.  What containerd 1.6 puts outside its directory:
the shims' sockets under /run/containerd/s/ (left behind when shims are killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from ovn_underlay.lab import netns
from ovn_underlay.lab.cluster import Node
from ovn_underlay.lab.daemons import read_live_pid, stop_pid
from ovn_underlay.lab.podman import BUSYBOX, REFERENCE_PLUGINS, listening

IMAGE = "docker.io/library/oul-busybox:lab"
"""The sandbox and pod image (built locally, never pulled)."""
IMAGE_CMD = ["sleep", "2147483647"]
K8S_NAMESPACE = "k8s.io"
START_TIMEOUT = 20.0
TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "nsenter")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class ContainerdError(RuntimeError):
    """containerd did not start, or a ctr command failed."""


def missing_tools() -> list[str]:
    """What this machine lacks to run the lab's containerd (empty when nothing)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not BUSYBOX.exists():
        missing.append(str(BUSYBOX))
    if not (REFERENCE_PLUGINS / "loopback").exists():
        missing.append(str(REFERENCE_PLUGINS / "loopback"))
    return missing


def missing_python_packages() -> list[str]:
    """The PyPI packages the CRI client (:mod:`ovn_underlay.lab.cri`) needs and lacks."""
    missing = []
    for package, module in (("grpcio", "grpc"), ("protobuf", "google.protobuf")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(package)
    return missing


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0,
              link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, 0
    return info


def rootfs_layer() -> bytes:
    """An uncompressed layer tar: busybox-static in /bin and one link per applet."""
    data = BUSYBOX.read_bytes()
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for sub in ("bin", "dev", "etc", "proc", "run", "sys", "tmp", "var", "www"):
            tar.addfile(_tar_info(sub, tarfile.DIRTYPE, 0o1777 if sub == "tmp" else 0o755))
        tar.addfile(_tar_info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)),
                    io.BytesIO(data))
        for applet in sorted(set(applets)):
            if applet != "busybox" and "/" not in applet:
                tar.addfile(_tar_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        index = b"ovn-underlay lab pod\n"
        tar.addfile(_tar_info("www/index.html", tarfile.REGTYPE, 0o644, len(index)),
                    io.BytesIO(index))
    return out.getvalue()


def image_archive(name: str = IMAGE) -> bytes:
    """An OCI image archive (as ``ctr images import`` reads it) of :func:`rootfs_layer`."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    layer = rootfs_layer()
    layer_digest = blob(layer)
    config = json.dumps({
        "architecture": _ARCH.get(platform.machine(), platform.machine()), "os": "linux",
        "config": {"Cmd": IMAGE_CMD, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}]}).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": blob(manifest), "size": len(manifest),
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": "lab"}}]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
        files.update({f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in blobs.items()})
        tar.addfile(_tar_info("blobs", tarfile.DIRTYPE, 0o755))
        tar.addfile(_tar_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
        for path, data in files.items():
            tar.addfile(_tar_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return out.getvalue()


class Containerd:
    """containerd for one lab node: configuration, daemon, image."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.dir = Path(node.vm.rundir) / "containerd"
        self.socket = self.dir / "containerd.sock"
        self.pidfile = self.dir / "containerd.pid"
        self.log = self.dir / "containerd.log"
        self.cni_bin_dir = self.dir / "cni-bin"
        self.config = self.dir / "config.toml"

    # -- set-up ----------------------------------------------------------------
    def prepare(self) -> None:
        """Write the configuration and fill the CNI bin dir."""
        for sub in ("root", "state", "runc", "cni-bin"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for plugin in [*self.node.cni_bin_dir.iterdir(), REFERENCE_PLUGINS / "loopback"]:
            link = self.cni_bin_dir / plugin.name
            if not link.is_symlink():
                link.symlink_to(plugin)
        self.config.write_text(self.config_toml())

    def config_toml(self) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        q = json.dumps
        return "\n".join([
            "version = 2",
            f"root = {q(str(self.dir / 'root'))}",
            f"state = {q(str(self.dir / 'state'))}",
            "[grpc]",
            f"  address = {q(str(self.socket))}",
            "[ttrpc]",
            f"  address = {q(str(self.dir / 'containerd.sock.ttrpc'))}",
            f"[{cri}]",
            f"  sandbox_image = {q(IMAGE)}",
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            "  disable_apparmor = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"  Root = {q(str(self.dir / 'runc'))}",
            f"[{cri}.cni]",
            f"  bin_dir = {q(str(self.cni_bin_dir))}",
            f"  conf_dir = {q(str(self.node.cni_conf_dir))}",
            "  max_conf_num = 1",
            ""])

    def argv(self, *args: str) -> list[str]:
        """``ARGS`` in the VM's network namespace (nsenter --net only)."""
        return ["nsenter", f"--net={netns.path(self.node.vm.netns)}", *args]

    # -- the daemon ------------------------------------------------------------
    def start(self) -> Path:
        """Start containerd (a no-op when it runs) and import the image; return the socket."""
        if read_live_pid(self.pidfile) is None:
            self.prepare()
            self.socket.unlink(missing_ok=True)
            with self.log.open("ab") as log:
                proc = subprocess.Popen(self.argv("containerd", "--config", str(self.config)),
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
            self.pidfile.write_text(f"{proc.pid}\n")
            deadline = time.monotonic() + START_TIMEOUT
            while not listening(self.socket):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ContainerdError(f"containerd on {self.socket} did not come up "
                                          f"within {START_TIMEOUT:.0f}s; see {self.log}")
                time.sleep(0.05)
            self._wait_cri(deadline)
        self.import_image()
        return self.socket

    def _wait_cri(self, deadline: float) -> None:
        """Wait until the CRI plugin answers Version (it loads after the socket opens)."""
        from ovn_underlay.lab.cri import CriClient, CriError
        with CriClient(str(self.socket), timeout=2) as client:
            while True:
                try:
                    client.version()
                    return
                except CriError as exc:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise ContainerdError(f"containerd's CRI plugin on {self.socket} does "
                                              f"not answer ({exc}); see {self.log}") from exc
                time.sleep(0.05)

    def ctr(self, *args: str, stdin: bytes | None = None) -> str:
        """``ctr -n k8s.io ARGS`` on this containerd."""
        proc = subprocess.run(["ctr", "--address", str(self.socket), "-n", K8S_NAMESPACE, *args],
                              input=stdin, capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed ({proc.returncode}): "
                                  f"{proc.stderr.decode().strip()}")
        return proc.stdout.decode()

    def import_image(self) -> None:
        """Import the busybox image unless containerd has it already."""
        if IMAGE in self.ctr("images", "list", "-q").split():
            return
        archive = self.dir / "image.tar"
        if not archive.exists():
            archive.write_bytes(image_archive())
        self.ctr("images", "import", "--base-name", IMAGE.rsplit(":", 1)[0], str(archive))

    def stop(self) -> None:
        """Stop containerd (its shims and sandboxes stay; see :meth:`close`)."""
        pid = read_live_pid(self.pidfile)
        if pid is not None:
            stop_pid(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pidfile.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop and remove every sandbox (each gets its CNI DEL), then stop containerd."""
        if read_live_pid(self.pidfile) is not None:
            from ovn_underlay.lab.cri import CriClient, CriError
            with CriClient(str(self.socket), timeout=60) as client:
                for sandbox in client.list_pod_sandbox():
                    with contextlib.suppress(CriError):
                        client.stop_pod_sandbox(sandbox.id)
                        client.remove_pod_sandbox(sandbox.id)
        self.stop()
