"""The network configuration list a container runtime reads for this node, and its file.

A runtime such as containerd 1.6 takes the presence of a CNI config file as
"the node's network is ready", and never calls VERSION, CHECK, STATUS or GC.
So the conflist is written only once the node can serve pods (its network is
set up): by lswitch-setup, by node-init on a node set up already, and by the
daemon at start where it is missing.  It is never removed: containerd 1.6 then
fails every pod's teardown ("cni plugin not initialized").  A node that can no
longer serve says so through STATUS, its logs and its metrics.

The file names the node's OVS database (``ovsdb``), so a conflist of another
node (lab VMs share one filesystem) is told apart and never overwritten.
Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ovn_underlay.config import NodeConfig

CONFLIST_NAME = "10-ovn-underlay.conflist"
NETWORK_NAME = "ovn-underlay"
CNI_BINARY = "ovn-underlay"
DEFAULT_CNI_VERSION = "1.0.0"


class ForeignConflist(ValueError):
    """The conflist there belongs to another node (it names another OVS database)."""


def build(ovsdb: str, cni_version: str = DEFAULT_CNI_VERSION,
          log_file: str = "") -> dict[str, Any]:
    """The conflist of the node whose Open_vSwitch database is ``ovsdb``.

    It declares the ``portMappings`` capability, so that runtimes pass a pod's
    host ports to the plugin (which refuses them) instead of dropping them.
    """
    plugin: dict[str, Any] = {"type": CNI_BINARY, "ovsdb": ovsdb,
                              "capabilities": {"portMappings": True}}
    if log_file:
        plugin["logFile"] = log_file
    return {"cniVersion": cni_version, "name": NETWORK_NAME, "plugins": [plugin]}


def path_in(conf_dir: str) -> Path:
    """The conflist's path in the runtime's CNI config directory."""
    return Path(conf_dir) / CONFLIST_NAME


def owner(path: Path) -> str | None:
    """The OVS database the conflist at ``path`` names; None if there is none (or no file)."""
    try:
        data = json.loads(path.read_text())
        value = data["plugins"][0].get("ovsdb")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def check_ours(path: Path, ovsdb: str) -> None:
    """Raise ForeignConflist if the conflist at ``path`` names another node's database."""
    other = owner(path)
    if other is not None and other != ovsdb:
        raise ForeignConflist(
            f"{path} belongs to another node: it names the OVS database {other}, not this "
            f"node's {ovsdb}; overwriting it would plug that node's pods into this node's "
            "switch. Give this node its own --cni-conf-dir (on a lab, whose VMs share one "
            "filesystem, run node-init with 'lab exec VM -- ...'), or remove that file first")


def write(conf_dir: str, conflist: dict[str, Any], dry_run: bool = False) -> bool:
    """Write ``conflist`` atomically unless the file holds it already; True if it was written.

    ForeignConflist, writing nothing, if the file there is another node's.
    """
    path = path_in(conf_dir)
    check_ours(path, str(conflist["plugins"][0]["ovsdb"]))
    text = json.dumps(conflist, indent=2) + "\n"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    if not dry_run:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{CONFLIST_NAME}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return True


def publish(cfg: NodeConfig, ovsdb: str) -> str | None:
    """Write the node's conflist where node-init --install-cni said, once it can serve pods.

    Returns the path written, None when there was nothing to write (no CNI
    install recorded, no node network yet, or the file is up to date).
    """
    if not cfg.cni_conf_dir or not cfg.has_network:
        return None
    built = build(ovsdb, cfg.cni_version or DEFAULT_CNI_VERSION, cfg.cni_log_file)
    return str(path_in(cfg.cni_conf_dir)) if write(cfg.cni_conf_dir, built) else None
