"""Control planes: where node networks and their child ports are created.

:mod:`.base` holds the backend-neutral interface; :mod:`.ovn_nb` implements it
on the OVN Northbound database.
"""

from ovn_underlay.control.base import (
    ChildPort,
    Conflict,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    NodeNetwork,
)

__all__ = [
    "ChildPort",
    "Conflict",
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "NodeNetwork",
]
