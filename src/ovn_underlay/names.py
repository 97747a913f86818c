"""Names the project gives and the names it accepts, each defined once.

* :data:`EXT_PREFIX` starts every key the project writes into ``external_ids``
  (its node settings in the local Open_vSwitch row, its marks on OVS ports and
  on OVN Northbound rows): what carries it is the project's, nothing else is.
* Pods' veth host ends are :func:`host_ifname` names (:data:`HOST_IFNAME_PREFIX`
  and 12 hex digits); the node's management port is :data:`MGMT_IFNAME`.
* :func:`ifname_problem` says why a Linux interface name is unusable.

Standard library only: the CNI protocol layer uses it too.
"""

from __future__ import annotations

import re

EXT_PREFIX = "ovn-underlay:"
EXT_CONTAINER_ID = EXT_PREFIX + "container-id"
EXT_POD_NAMESPACE = EXT_PREFIX + "pod-namespace"
EXT_POD_NAME = EXT_PREFIX + "pod-name"
"""The pod that uses a port, on its OVS interface and on its logical port alike."""
HOST_IFNAME_PREFIX = "oul"
MGMT_IFNAME = "oul-mgmt"
IFNAMSIZ = 16
"""The kernel's buffer for an interface name: at most 15 bytes and a NUL."""
_HOST_IFNAME_RE = re.compile(rf"^{HOST_IFNAME_PREFIX}[0-9a-f]{{12}}$")


def host_ifname(container_id: str, ifname: str) -> str:
    """The node-side veth name of a pod interface: "oul" + 12 hex digits (15 chars).

    Deterministic, so that DEL finds the link from the container id and
    interface name alone.  Linux interface names cannot contain ':', so the
    hashed "container_id:ifname" string is unambiguous.
    """
    import hashlib  # here, not at the top: the command line's start-up does not need it

    digest = hashlib.sha256(f"{container_id}:{ifname}".encode()).hexdigest()
    return HOST_IFNAME_PREFIX + digest[:12]


def is_host_ifname(name: str) -> bool:
    """Whether ``name`` has the form of a pod veth's host end (see :func:`host_ifname`)."""
    return _HOST_IFNAME_RE.match(name) is not None


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None if it can.

    The kernel counts bytes (UTF-8 here, undecodable ones as given), not
    characters, and refuses '/', ':' and whitespace, ``.`` and ``..``.
    """
    size = len(name.encode("utf-8", "surrogateescape"))
    if size == 0:
        return "it is empty"
    if size >= IFNAMSIZ:
        return f"it is {size} bytes long, more than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return "'.' and '..' are not interface names"
    if any(char in "/:" or char.isspace() for char in name):
        return "it contains '/', ':' or whitespace"
    return None
