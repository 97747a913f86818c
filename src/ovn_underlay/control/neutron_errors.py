"""Failures of Neutron requests as ControlPlaneErrors that say what went wrong, without secrets.

A refused password, an unreachable identity service or Neutron, a policy
refusal, a conflict (taken address, VLAN or quota) and a server error each get
their own wording and class: ControlPlaneUnavailable for what may work when
tried again (the CNI plugin's "try again later"), Conflict for clashes.
"""

from __future__ import annotations

import re

from ovn_underlay.control.base import Conflict, ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.control.credentials import Credentials
from ovn_underlay.control.neutron_view import BINDING_PROFILE


def translate(action: str, exc: Exception, creds: Credentials, mode: str) -> ControlPlaneError:
    """The ControlPlaneError for ``exc``, raised by ``action`` with ``creds`` in ``mode``."""
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as sdk

    mask = creds.mask
    if isinstance(exc, ks.http.Unauthorized):
        return ControlPlaneError(mask(
            f"{action}: the identity service at {creds.auth_url or creds.endpoint} refused "
            f"the credentials of {creds.source} (wrong user name, password or project?)"))
    if isinstance(exc, ks.connection.ConnectionError | ks.discovery.DiscoveryFailure):
        where = creds.auth_url if isinstance(exc, ks.discovery.DiscoveryFailure) else (
            _url_in(str(exc)) or creds.endpoint)
        return ControlPlaneUnavailable(mask(
            f"{action}: cannot reach {where} (from {creds.source}): {_short_reason(exc)}"))
    status = getattr(exc, "status_code", None)
    detail = mask(_neutron_message(exc))
    if isinstance(exc, sdk.ForbiddenException | ks.http.Forbidden):
        hint = (" (binding-profile child ports need admin rights: use --child-ports trunk)"
                if mode == BINDING_PROFILE else "")
        return ControlPlaneError(f"{action}: not allowed for {creds.source}: {detail}{hint}")
    if isinstance(exc, sdk.ConflictException):
        return Conflict(f"{action}: {detail}")
    if isinstance(status, int) and status >= 500:
        return ControlPlaneUnavailable(f"{action}: Neutron failed ({status}), try again: "
                                       f"{detail}")
    return ControlPlaneError(f"{action} failed in Neutron: {detail}")


def _short_reason(exc: BaseException) -> str:
    """The gist of a connection error ("[Errno 111] Connection refused", "timed out")."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if match:
        return match.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__


def _url_in(text: str) -> str:
    """The first ``http(s)://host[:port]`` in ``text`` ('' if none)."""
    match = re.search(r"https?://[^\s:/]+(?::\d+)?", text)
    return match.group(0) if match else ""


def _neutron_message(exc: Exception) -> str:
    """Neutron's own explanation of a failed request, else the exception's text."""
    details = getattr(exc, "details", None)
    return str(details or exc).strip()
