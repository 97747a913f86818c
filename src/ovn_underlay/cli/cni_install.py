"""node-init --install-cni: the CNI binary (a launcher of the shim) and the conflist."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ovn_underlay import config as node_config

CONFLIST_NAME = "10-ovn-underlay.conflist"
NETWORK_NAME = "ovn-underlay"
CNI_BINARY = "ovn-underlay"


def conflist(args: argparse.Namespace) -> dict[str, Any]:
    """The network configuration list a runtime reads for this node."""
    plugin: dict[str, Any] = {"type": CNI_BINARY, "ovsdb": args.ovsdb,
                              "capabilities": {"portMappings": True}}
    if args.cni_log_file:
        plugin["logFile"] = args.cni_log_file
    return {"cniVersion": args.cni_version, "name": NETWORK_NAME, "plugins": [plugin]}


def native_shim() -> Path | None:
    """The native shim built from cni/shim.c (``make``), None if it was not built."""
    from ovn_underlay.cni import shim

    path = Path(shim.__file__).with_name(shim.NATIVE_SHIM)
    return path if os.access(path, os.X_OK) else None


def launcher(daemon_socket: str, native: Path | None = None,
             reply_timeout: float | None = None) -> str:
    """The CNI binary: a Python script calling :mod:`ovn_underlay.cli.cni_binary`, run by
    ``native`` if given.

    With the native shim as its interpreter the script is read only for its
    ``#socket:``/``#python:``/``#reply-timeout:`` lines, and run by Python
    only when the daemon cannot serve the call (see cni/shim.c).  Without it,
    this Python runs the script isolated (-I) and without site (-S): ~8 ms
    instead of the console script's ~25 ms (site-packages, .pth files, the
    entry-point wrapper); the entry point adds site-packages itself on its
    in-process fallback, and skips the interpreter's teardown when the
    daemon answered.
    """
    import ovn_underlay
    from ovn_underlay.cni import shim

    timeout = shim.REPLY_TIMEOUT if reply_timeout is None else reply_timeout
    package_root = Path(ovn_underlay.__file__).resolve().parent.parent
    interpreter = str(native) if native is not None else f"{sys.executable} -IS"
    return (f"#!{interpreter}\n"
            f"#socket: {daemon_socket}\n"
            f"#python: {sys.executable}\n"
            f"#reply-timeout: {timeout:g}\n"
            '"""The ovn-underlay CNI plugin (written by ovn-k8s-underlay node-init '
            '--install-cni)."""\n'
            "import sys\n\n"
            f"sys.path.insert(0, {str(package_root)!r})\n"
            "from ovn_underlay.cli.cni_binary import launch\n\n"
            f"launch({daemon_socket!r}, {timeout!r})\n")


def install_cni(args: argparse.Namespace, dry_run: bool,
                daemon_socket: str = node_config.DEFAULT_DAEMON_SOCKET) -> list[str]:
    """Write the plugin's launcher into the CNI bin dir and its conflist; say what was done."""
    import json

    bin_dir, conf_dir = Path(args.cni_bin_dir), Path(args.cni_conf_dir)
    binary, conf = bin_dir / CNI_BINARY, conf_dir / CONFLIST_NAME
    native = native_shim()
    script = launcher(daemon_socket, native)
    text = json.dumps(conflist(args), indent=2) + "\n"
    done = []
    if binary.is_symlink() or not binary.exists() or binary.read_text() != script:
        runner = native or f"{sys.executable} -IS (the native shim is not built)"
        done.append(f"write {binary} (run by {runner}; daemon socket {daemon_socket})")
        if not dry_run:
            bin_dir.mkdir(parents=True, exist_ok=True)
            tmp = binary.with_name(f".{CNI_BINARY}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.write_text(script)
            tmp.chmod(0o755)
            os.replace(tmp, binary)
    if not conf.exists() or conf.read_text() != text:
        done.append(f"write {conf}")
        if not dry_run:
            conf_dir.mkdir(parents=True, exist_ok=True)
            tmp = conf.with_name(f".{CONFLIST_NAME}.tmp")
            tmp.write_text(text)
            os.replace(tmp, conf)
    return done
