"""The CNI plugin: CNI requests onto the node's attachments, errors onto CNI codes.

Network configuration keys (besides the spec's): ``ovsdb``, ``readinessTimeout``,
``logFile`` and ``logLevel``, validated by :mod:`ovn_underlay.cni.netconf` (the
runner hands the plugin its :class:`~ovn_underlay.cni.netconf.NetConf`).
Everything else is read from the node's settings (see :mod:`ovn_underlay.config`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from ovn_underlay import config as node_config
from ovn_underlay.cni import spec
from ovn_underlay.cni.netconf import NetConf
from ovn_underlay.cni.spec import CniError, Request, Result
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.dataplane.isolation import IsolationError
from ovn_underlay.dataplane.links import LinkError, NetnsNotFound
from ovn_underlay.dataplane.ovs import OvsError, OvsUnavailable
from ovn_underlay.pods.attach import (
    AttachedElsewhere,
    AttachError,
    NotReady,
    PodAttacher,
    PodLink,
    UnknownAttachment,
    node_attacher,
)
from ovn_underlay.pods.pool import PodInterface, PoolError, PoolExhausted

LOG = logging.getLogger(__name__)
ERR_ATTACHMENT_DIFFERS = 103
ERR_ATTACHED_ELSEWHERE = 104
ERR_UNSUPPORTED = 105
"""The pod asks for something this network does not do (today: hostPort mappings)."""

# Most specific first: the first matching class gives the code.
_CODES: tuple[tuple[type[Exception], int], ...] = (
    (PoolExhausted, spec.ERR_POOL_EXHAUSTED),
    (NotReady, spec.ERR_NOT_READY),
    (UnknownAttachment, spec.ERR_UNKNOWN_CONTAINER),
    (ControlPlaneUnavailable, spec.ERR_TRY_AGAIN),
    (OvsUnavailable, spec.ERR_TRY_AGAIN),
    (NetnsNotFound, spec.ERR_INVALID_ENV),
    (node_config.ConfigError, spec.ERR_INVALID_CONFIG),
    (AttachedElsewhere, ERR_ATTACHED_ELSEWHERE),
    (AttachError, ERR_ATTACHMENT_DIFFERS),
    (ControlPlaneError, spec.ERR_INTERNAL),
    (OvsError, spec.ERR_INTERNAL),
    (LinkError, spec.ERR_INTERNAL),
    (PoolError, spec.ERR_INTERNAL),
    (IsolationError, spec.ERR_INTERNAL),
)


@contextmanager
def cni_errors(what: str) -> Iterator[None]:
    """Turn the library's errors into CniError with the matching code."""
    try:
        yield
    except CniError:
        raise
    except Exception as exc:
        for cls, code in _CODES:
            if isinstance(exc, cls):
                raise CniError(code, f"{what}: {exc}") from exc
        raise


AttacherSource = Callable[[str, float, bool], AbstractContextManager[PodAttacher]]
"""The PodAttacher of one call, from (OVS database, readiness timeout, need_network):
:func:`~ovn_underlay.pods.attach.node_attacher` connects for the call; the
node daemon lends one on its long-lived connections."""


class UnderlayPlugin:
    """One CNI invocation's plugin, built from the validated keys of its network configuration."""

    def __init__(self, netconf: NetConf, attachers: AttacherSource = node_attacher) -> None:
        self.netconf = netconf
        self._attachers = attachers

    def _attacher(self, need_network: bool = True) -> AbstractContextManager[PodAttacher]:
        return self._attachers(self.netconf.ovsdb, self.netconf.readiness_timeout, need_network)

    def add(self, req: Request) -> Result:
        """ADD: attach and describe the pod's interface, address and route.

        A pod with host port mappings (the ``portMappings`` capability, which
        the conflist declares so that runtimes pass them) is refused: the
        network cannot map them yet, and a pod must not run without them.
        """
        _refuse_port_mappings(req)
        att = PodInterface(req.container_id, req.ifname, req.netns, req.pod_namespace,
                         req.pod_name)
        with cni_errors("ADD"), self._attacher() as attacher:
            return to_result(attacher.add(att))

    def delete(self, req: Request) -> None:
        """DEL: detach; succeeds for an unknown attachment or a vanished netns."""
        with cni_errors("DEL"), self._attacher(need_network=False) as attacher:
            attacher.delete(req.container_id, req.ifname)

    def check(self, req: Request) -> None:
        """CHECK: the interface, addresses, route and OVS port still match."""
        with cni_errors("CHECK"), self._attacher() as attacher:
            attached = attacher.check(req.container_id, req.ifname, req.netns)
        if req.prev_result is not None:
            _check_prev_result(req.prev_result, attached)

    def status(self, req: Request) -> None:
        """STATUS: ready when the node is set up and its pool has a free port."""
        del req
        with cni_errors("STATUS"), self._attacher() as attacher:
            stats = attacher.pool.stats()
        if stats.free == 0:
            raise CniError(spec.ERR_NOT_AVAILABLE, f"no free port in the pool "
                           f"({stats.total} ports, all in use)")

    def gc(self, req: Request) -> None:
        """GC: release attachments the runtime no longer knows."""
        with cni_errors("GC"), self._attacher(need_network=False) as attacher:
            released = attacher.gc(req.valid_attachments or ())
        for alloc in released:
            LOG.info("GC released %s of %s/%s", alloc.port.name,
                     alloc.interface.container_id[:12], alloc.interface.ifname)


def _refuse_port_mappings(req: Request) -> None:
    runtime = req.config.get("runtimeConfig")
    mappings = runtime.get("portMappings") if isinstance(runtime, dict) else None
    if mappings:
        raise CniError(ERR_UNSUPPORTED, "hostPort is not supported by the ovn-underlay "
                       "network: the pod asks for host port mappings",
                       f"portMappings: {mappings}; remove hostPort from the pod (a Service "
                       "reaches it instead)")


def to_result(attached: PodLink) -> Result:
    """The CNI result of an attachment: host end, pod end, address, default route."""
    port = attached.port
    return Result(
        interfaces=(spec.Interface(name=attached.host_if, mac=""),
                    spec.Interface(name=attached.ifname, mac=port.mac, sandbox=attached.netns,
                                   mtu=attached.mtu or None)),
        ips=(spec.IPConfig(address=attached.ip_cidr, gateway=port.gateway, interface=1),),
        routes=(spec.Route(dst="0.0.0.0/0", gw=port.gateway),),
    )


def _check_prev_result(prev: Result, attached: PodLink) -> None:
    """CHECK against the runtime's cached result: our address must be in it."""
    if not any(ip.address == attached.ip_cidr for ip in prev.ips):
        raise CniError(ERR_ATTACHMENT_DIFFERS, f"prevResult does not list {attached.ip_cidr}",
                       f"addresses in prevResult: {[ip.address for ip in prev.ips]}")


def make_plugin(req: Request, netconf: NetConf) -> UnderlayPlugin:
    """The runner's plugin factory for a call served in-process (connecting for the call)."""
    del req
    return UnderlayPlugin(netconf)
