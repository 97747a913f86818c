"""What the controller's tests share: Nodes, UnderlayNodes, NB rows, waits."""

from __future__ import annotations

import subprocess
from typing import Any

from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from ovn_underlay.controller.nodes import UnderlayNode
from tests.functional.test_ovn_nb import rows
from tests.kube.support import eventually

__all__ = ["eventually", "rows"]


def add_node(admin: Client, name: str, ip: str, pod_cidr: str = "") -> None:
    """A Node as a kubelet registers it, with InternalIP ``ip``."""
    admin.create(Node.from_dict({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr} if pod_cidr else {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                 {"type": "Hostname", "address": name}]}}))


def underlay(admin: Client, name: str) -> dict[str, Any] | None:
    """UnderlayNode ``name`` as a plain dict (None if there is none)."""
    try:
        return dict(admin.get(UnderlayNode, name))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def status(admin: Client, name: str) -> dict[str, Any]:
    obj = underlay(admin, name)
    return dict((obj or {}).get("status") or {})


def ready(admin: Client, name: str) -> dict[str, Any]:
    """The Ready condition of UnderlayNode ``name`` ({} if none)."""
    return next((c for c in status(admin, name).get("conditions") or []
                 if c["type"] == "Ready"), {})


def wait_ready(admin: Client, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait for Ready=True; the status."""
    eventually(lambda: ready(admin, name).get("status") == "True", timeout)
    return status(admin, name)


def patch_spec(admin: Client, name: str, spec: dict[str, Any]) -> None:
    """Merge-patch the UnderlayNode's spec, as the node agent does."""
    admin.patch(UnderlayNode, name, {"spec": spec}, patch_type=PatchType.MERGE)


def annotation(admin: Client, name: str, key: str) -> str | None:
    meta = admin.get(Node, name).metadata or ObjectMeta()
    return (meta.annotations or {}).get(key)


def nbctl(remote: str, *args: str) -> str:
    return subprocess.run(["ovn-nbctl", f"--db={remote}", *args], capture_output=True,
                          text=True, check=True).stdout


def switch_ports(remote: str, switch: str) -> set[str]:
    """The names of the ports ovn-underlay made for ``switch``."""
    return {name for name, row in rows(remote, "Logical_Switch_Port").items()
            if row["external_ids"].get("ovn-underlay:switch") == switch}
