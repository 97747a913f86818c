"""node-init --install-cni: the CNI binary (a launcher of the shim) and the conflist."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ovn_underlay import config as node_config
from ovn_underlay.cni import conflist
from ovn_underlay.cni.conflist import CNI_BINARY
from ovn_underlay.cni.host_install import native_shim
from ovn_underlay.config import ConfigError, NodeConfig


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


def check_cni_targets(args: argparse.Namespace) -> None:
    """Refuse, changing nothing, to take over another node's conflist or daemon socket.

    All lab VMs share one filesystem, so two nodes' defaults collide: a conflist
    naming another OVS database, or a daemon socket served for another one,
    belongs to another node.
    """
    from ovn_underlay.daemon.server import holder

    try:
        conflist.check_ours(conflist.path_in(args.cni_conf_dir), args.ovsdb)
    except conflist.ForeignConflist as exc:
        raise ConfigError(str(exc)) from None
    socket = args.daemon_socket or node_config.DEFAULT_DAEMON_SOCKET
    served = holder(socket)
    if served is not None and served[1] and served[1] != args.ovsdb:
        raise ConfigError(f"the daemon socket {socket} is served (pid {served[0]}) for another "
                          f"node's OVS database {served[1]}, not this node's {args.ovsdb}: give "
                          "this node its own --daemon-socket (on a lab, run node-init with "
                          "'lab exec VM -- ...')")


def install_cni(args: argparse.Namespace, dry_run: bool, cfg: NodeConfig) -> list[str]:
    """Write the plugin's launcher into the CNI bin dir, and the conflist if the node is ready.

    The conflist is what tells a runtime such as containerd that the node's
    network is ready (see :mod:`ovn_underlay.cni.conflist`): on a node whose
    network is not set up yet, lswitch-setup writes it.
    """
    daemon_socket = cfg.daemon_socket
    bin_dir = Path(args.cni_bin_dir)
    binary = bin_dir / CNI_BINARY
    native = native_shim()
    script = launcher(daemon_socket, native)
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
    path = conflist.path_in(args.cni_conf_dir)
    if not cfg.has_network:
        if done and not path.exists():
            done.append(f"leave {path} unwritten until the node can serve pods (lswitch-setup "
                        "writes it: a runtime takes its presence for a ready network)")
        return done
    if conflist.write(args.cni_conf_dir, conflist.build(args.ovsdb, args.cni_version,
                                                       args.cni_log_file or ""), dry_run):
        done.append(f"write {path}")
    return done
