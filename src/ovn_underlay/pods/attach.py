"""Pod attachments: the work behind ADD, DEL, CHECK and GC, for any front end.

An attachment is (container id, interface name).  ADD takes a port from the
node's pool, plumbs a veth into the pod's namespace with the port's MAC, IP,
MTU and default route, plugs the host end into br-int as an access port with
the port's VLAN tag, records the pod on the logical port, and returns only once
the pod's gateway answers ARP.  Each step registers its undo; a failure undoes
them all in reverse order and leaves the port free.  DEL walks the same steps
backwards and is idempotent; a crash at any point leaves a pool record from
which a retried ADD, a DEL or a GC finishes the job.

A call undoes only what it did itself: a repeated ADD of a working pod (as
runtimes retry) that fails leaves the pod as it was, and a DEL removes the
pod's veth only through its host end on the node, never by name inside a
namespace that may belong to another pod by now.

On the userspace datapath every ADD first makes sure the host isolation
ruleset (:mod:`ovn_underlay.dataplane.isolation`) is in place, so no pod is ever
plugged while the node's own stack would take in its frames.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface

from ovn_underlay.config import CLUSTER_BACKEND, NodeConfig, from_external_ids
from ovn_underlay.control.base import ChildPort, ControlPlane, PortOwner
from ovn_underlay.control.factory import connect, no_relay
from ovn_underlay.dataplane import arp, isolation, links
from ovn_underlay.dataplane.ovs import Ovs
from ovn_underlay.names import EXT_CONTAINER_ID, EXT_POD_NAME, EXT_POD_NAMESPACE, EXT_PREFIX
from ovn_underlay.pods.pool import ATTACHED, PodInterface, Pool, PortLease
from ovn_underlay.pods.security_groups import PodSecurityGroups

LOG = logging.getLogger(__name__)
EXT_IFNAME = EXT_PREFIX + "ifname"
EXT_NETNS = EXT_PREFIX + "netns"
EXT_SECURITY_GROUPS = EXT_PREFIX + "security-groups"
"""On the pod's OVS port: the groups its logical port got, to be reset at DEL."""
DATAPATH_TIMEOUT = 5.0
"""How long a DEL waits for ovs-vswitchd to take the pod's port out of the datapath."""


class AttachError(Exception):
    """An attachment could not be made or is not as it should be."""


class NotReady(AttachError):
    """The pod's interface was made but its gateway did not answer in time."""


class UnknownAttachment(AttachError):
    """No attachment exists for this container and interface."""


class AttachedElsewhere(AttachError):
    """The container's interface is attached, and alive, in another network namespace."""


@dataclass(frozen=True)
class PodLink:
    """What a pod got: its port and the interfaces on both ends."""

    port: ChildPort
    host_if: str
    ifname: str
    netns: str
    mtu: int

    @property
    def ip_cidr(self) -> str:
        """The pod's address with the node subnet's prefix."""
        return f"{self.port.ip}/{self.port.prefixlen}"


ControlFactory = Callable[[], ControlPlane]
OwnerRecorder = Callable[[str, PortOwner | None], None]
"""Records the pod using a logical port on the control plane (None: none any more)."""
Unplumb = Callable[[PodInterface], object]
"""Removes a pod interface's veth pair (by its host end)."""


class PodAttacher:
    """ADD/DEL/CHECK/GC of pod attachments on one node."""

    def __init__(self, cfg: NodeConfig, ovs: Ovs, pool: Pool, control: ControlFactory,
                 readiness_timeout: float = 5.0, unplumb: Unplumb | None = None,
                 record_owner: OwnerRecorder | None = None) -> None:
        """``unplumb`` removes the veth of a DEL (default: at once, links.unplumb_pod).

        By then the pod's OVS port is gone, so the node daemon passes one that
        does it in the background: the kernel takes 20-25 ms to delete a veth.
        ``record_owner`` records a port's pod on the control plane (default: at
        once, one request each); the daemon passes one that batches them in the
        background, off the pods' path.
        """
        self.cfg = cfg
        self.ovs = ovs
        self.pool = pool
        self._control_factory = control
        self._control: ControlPlane | None = None
        self.readiness_timeout = readiness_timeout
        self._unplumb = unplumb or (lambda iface: links.unplumb_pod(iface.host_if))
        self._record_owner = record_owner or self._record_owner_now
        self.security_groups = PodSecurityGroups(cfg)

    @property
    def control(self) -> ControlPlane:
        """The control plane, connected on first use (only ADD/DEL need it)."""
        if self._control is None:
            self._control = self._control_factory()
        return self._control

    def close(self) -> None:
        """Release connections held by this attacher."""
        if self._control is not None:
            self._control.close()
            self._control = None

    # -- ADD -------------------------------------------------------------------
    def add(self, att: PodInterface) -> PodLink:
        """Attach the pod; idempotent for the same container and interface.

        A repeated ADD of an attached pod that fails undoes only what it made
        (a veth or OVS port it had to make again): the pool keeps the pod
        attached, its owner and security groups stay.  An ADD for an
        attachment recorded in another namespace moves it there if the old one
        is gone with its veth, and is refused (AttachedElsewhere) while it lives.
        """
        steps = _Stopwatch()
        self._isolate()
        host_if = att.host_if
        alloc = self.pool.acquire(att)
        if alloc.interface.netns != att.netns:
            alloc = self._rebind(alloc, att, host_if)
        port = alloc.port
        repeat = alloc.state == ATTACHED
        attached = PodLink(port, host_if, att.ifname, att.netns, self.cfg.mtu)
        with contextlib.ExitStack() as undo:
            if not repeat:
                undo.callback(self.pool.release, att.container_id, att.ifname)
            groups = self.security_groups.groups_for(att)
            steps.lap("pool")
            had_port = self.ovs.port(host_if) is not None
            made = links.plumb_pod(att.netns, att.ifname, host_if, port.mac, attached.ip_cidr,
                                   port.gateway, self.cfg.mtu, self.cfg.userspace_datapath)
            if made or not repeat:
                undo.callback(links.unplumb_pod, host_if)
            steps.lap("veth")
            if made and had_port:
                self._drop_stale_port(host_if)
                had_port = False
            self.ovs.add_access_port(self.cfg.bridge, host_if, port.tag,
                                     self._external_ids(att, port, groups))
            if not (repeat and had_port):
                undo.callback(self.ovs.del_port, host_if)
            steps.lap("ovs")
            owner = PortOwner(att.pod_namespace, att.pod_name, att.container_id)
            self._record_owner(port.name, owner)
            if not repeat:
                undo.callback(self._record_owner, port.name, None)
            if groups:
                self.control.set_port_security_groups(port.name, groups, owner)
                if not repeat:
                    undo.callback(self.control.clear_port_security_groups, port.name)
            steps.lap("control")
            if not arp.announce_and_probe(att.netns, att.ifname, port.ip, port.mac,
                                          port.gateway, self.readiness_timeout):
                raise NotReady(f"gateway {port.gateway} did not answer ARP from "
                               f"{att.ifname} ({port.ip}, VLAN {port.tag}, port "
                               f"{port.name}) within {self.readiness_timeout:.1f}s")
            steps.lap("ready")
            self.pool.mark_attached(att.container_id, att.ifname)
            undo.pop_all()
        steps.lap("pool")
        LOG.info("ADD %s/%s pod %s/%s: port %s %s tag %d in %s", att.container_id[:12],
                 att.ifname, att.pod_namespace, att.pod_name, port.name, attached.ip_cidr,
                 port.tag, steps)
        return attached

    def _drop_stale_port(self, host_if: str) -> None:
        """Remove the OVS port of a veth that vanished (with its netns) and was made again.

        ovs-vswitchd does not take up a device re-created under an existing
        port's name: the port is made afresh.
        """
        self.ovs.del_port(host_if)
        if not self.ovs.wait_applied(DATAPATH_TIMEOUT):
            LOG.warning("ovs-vswitchd has not applied the removal of the stale port %s within "
                        "%gs", host_if, DATAPATH_TIMEOUT)

    def _isolate(self) -> None:
        """On the userspace datapath, put the host isolation ruleset in place if it is not."""
        if self.cfg.userspace_datapath and not isolation.in_place():
            isolation.ensure(isolation.wanted(self.ovs))
            LOG.warning("the host isolation ruleset (nftables inet/arp %s) was missing: put "
                        "back in place before plugging a pod", isolation.TABLE)

    def _rebind(self, alloc: PortLease, att: PodInterface, host_if: str) -> PortLease:
        """The allocation of an ADD into another netns: moved there if the old pair is gone."""
        if links.host_end_exists(host_if):
            raise AttachedElsewhere(
                f"container {att.container_id[:12]} interface {att.ifname} is attached in "
                f"{alloc.interface.netns}, not {att.netns}: DEL it first")
        LOG.info("ADD %s/%s: its earlier netns %s is gone; attaching in %s",
                 att.container_id[:12], att.ifname, alloc.interface.netns, att.netns)
        return self.pool.rebind(att)

    def _external_ids(self, att: PodInterface, port: ChildPort,
                      groups: tuple[str, ...]) -> dict[str, str]:
        ext = {"iface-id": port.name, EXT_CONTAINER_ID: att.container_id,
               EXT_IFNAME: att.ifname, EXT_NETNS: att.netns}
        if groups:
            ext[EXT_SECURITY_GROUPS] = ",".join(groups)
        if att.pod_namespace:
            ext[EXT_POD_NAMESPACE] = att.pod_namespace
        if att.pod_name:
            ext[EXT_POD_NAME] = att.pod_name
        return ext

    def _record_owner_now(self, lport: str, owner: PortOwner | None) -> None:
        if owner is not None:
            if self.control.record_owners({lport: owner}):
                raise AttachError(f"logical port {lport} of the pool is missing from the "
                                  "control plane (or is not an ovn-underlay pool port)")
            return
        try:
            self.control.record_owners({lport: None})
        except Exception as exc:  # a stale owner is harmless; the next ADD overwrites it
            LOG.warning("could not clear the owner of %s: %s", lport, exc)

    # -- DEL -------------------------------------------------------------------
    def delete(self, container_id: str, ifname: str) -> ChildPort | None:
        """Detach the pod and free its port; fine when nothing is attached.

        Only what ADD made goes: the OVS port and the veth pair, through its
        host end (with the host end gone, nothing of ours is left in the pod).
        The port goes back to the pool only once ovs-vswitchd has taken the
        pod's OVS port out of the datapath, so that the next pod given it (same
        VLAN tag, address and MAC) never shares the wire with this one.
        """
        steps = _Stopwatch()
        alloc = self.pool.find(container_id, ifname)
        iface = PodInterface(container_id, ifname)
        host_if = iface.host_if
        if alloc is not None:
            self._reset_security_groups(host_if, alloc.port.name)
        self.ovs.del_port(host_if)
        steps.lap("ovs")
        if not self.ovs.wait_applied(DATAPATH_TIMEOUT):
            LOG.warning("DEL %s/%s: ovs-vswitchd has not applied the removal of port %s "
                        "within %gs", container_id[:12], ifname, host_if, DATAPATH_TIMEOUT)
        steps.lap("datapath")
        self._unplumb(iface)
        if alloc is None:
            return None
        steps.lap("veth")
        self._record_owner(alloc.port.name, None)
        port = self.pool.release(container_id, ifname)
        steps.lap("pool")
        LOG.info("DEL %s/%s: port %s back to the pool in %s", container_id[:12], ifname,
                 alloc.port.name, steps)
        return port

    def _reset_security_groups(self, host_if: str, lport: str) -> None:
        """Give the port its pool groups back if ADD changed them (before its OVS port,
        which records that, goes: a failure here fails the DEL, to be retried)."""
        info = self.ovs.port(host_if)
        if info is not None and info.external_ids.get(EXT_SECURITY_GROUPS):
            self.control.clear_port_security_groups(lport)

    # -- CHECK -----------------------------------------------------------------
    def check(self, container_id: str, ifname: str, netns: str) -> PodLink:
        """Raise AttachError unless the attachment is still exactly as ADD made it."""
        alloc = self.pool.find(container_id, ifname)
        if alloc is None or alloc.state != "attached":
            raise UnknownAttachment(f"no attachment for container {container_id} "
                                    f"interface {ifname}")
        port = alloc.port
        attached = PodLink(port, alloc.interface.host_if, ifname, netns, self.cfg.mtu)
        problems = self._link_problems(attached) + self._ovs_problems(attached)
        if problems:
            raise AttachError(f"{container_id[:12]}/{ifname}: " + "; ".join(problems))
        return attached

    def _link_problems(self, want: PodLink) -> list[str]:
        state = links.inspect_pod(want.netns, want.ifname)
        if state is None:
            return [f"interface {want.ifname} missing in {want.netns}"]
        problems = []
        if state.mac.lower() != want.port.mac.lower():
            problems.append(f"MAC is {state.mac}, expected {want.port.mac}")
        if str(IPv4Interface(want.ip_cidr)) not in state.addresses:
            problems.append(f"address {want.ip_cidr} missing (has {list(state.addresses)})")
        if state.default_gateway != want.port.gateway:
            problems.append(f"default route via {state.default_gateway}, expected "
                            f"{want.port.gateway}")
        if want.mtu and state.mtu != want.mtu:
            problems.append(f"MTU is {state.mtu}, expected {want.mtu}")
        if not state.up:
            problems.append(f"{want.ifname} is down")
        return problems

    def _ovs_problems(self, want: PodLink) -> list[str]:
        info = self.ovs.port(want.host_if)
        if info is None:
            return [f"OVS port {want.host_if} missing on {self.cfg.bridge}"]
        problems = []
        if info.tag != want.port.tag:
            problems.append(f"OVS port {want.host_if} has tag {info.tag}, expected "
                            f"{want.port.tag}")
        if info.external_ids.get("iface-id") != want.port.name:
            problems.append(f"OVS port {want.host_if} is not bound to {want.port.name}")
        return problems

    # -- GC --------------------------------------------------------------------
    def gc(self, valid: Iterable[tuple[str, str]]) -> list[PortLease]:
        """Release every attachment not in ``valid`` and remove stray OVS ports."""
        keep = set(valid)
        stale = self.pool.stale(keep)
        for alloc in stale:
            att = alloc.interface
            self.delete(att.container_id, att.ifname)
        for info in self.ovs.ports_with(EXT_CONTAINER_ID):
            key = (info.external_ids[EXT_CONTAINER_ID], info.external_ids.get(EXT_IFNAME, ""))
            if key not in keep and self.pool.find(*key) is None:
                LOG.info("GC: removing stray OVS port %s of %s", info.name, key[0][:12])
                self.ovs.del_port(info.name)
                links.unplumb_pod(info.name)
        return stale


class _Stopwatch:
    """Time spent per named step, for the log line of a call (steps of one name add up)."""

    def __init__(self) -> None:
        self._started = self._last = time.monotonic()
        self._laps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        """Charge the time since the previous lap to ``step``."""
        now = time.monotonic()
        self._laps[step] = self._laps.get(step, 0.0) + now - self._last
        self._last = now

    def __str__(self) -> str:
        total = (self._last - self._started) * 1000
        laps = ", ".join(f"{step} {spent * 1000:.1f}" for step, spent in self._laps.items())
        return f"{total:.1f} ms ({laps})"


@contextlib.contextmanager
def node_attacher(ovsdb: str, readiness_timeout: float = 5.0,
                  need_network: bool = True) -> Iterator[PodAttacher]:
    """A PodAttacher for the node whose Open_vSwitch database is ``ovsdb``.

    Settings come from that database; with ``need_network`` the node must
    have run lswitch-setup.  Everything opened is closed on exit.  In cluster mode only
    the node agent's daemon reaches the control plane: a call that needs the network
    (ADD, CHECK, STATUS) fails at once with ControlPlaneUnavailable, before any work.
    """
    ovs = Ovs(ovsdb)
    try:
        cfg = from_external_ids(ovs.get_config())
        if need_network:
            if cfg.backend == CLUSTER_BACKEND:
                raise no_relay()
            cfg.require_network()
        with Pool(cfg.pool_path) as pool:
            attacher = PodAttacher(cfg, ovs, pool, lambda: connect(cfg), readiness_timeout)
            try:
                yield attacher
            finally:
                attacher.close()
    finally:
        ovs.close()
