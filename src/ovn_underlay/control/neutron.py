"""The control plane on Neutron (ML2/OVN), through openstacksdk.

What it makes, and how it is named and marked, is described in
:mod:`.neutron_view`.  Child ports are made in one of two ways: ``trunk``
(default; a tenant may make trunks and subports) or the seed's
``binding-profile`` (setting ``binding:profile`` needs admin rights).

Ports are made with bulk POSTs, BULK_STREAMS of them under way at once:
Neutron runs a request in one API worker, with about 0.2 s of CPU per port
whatever the batching, so only concurrent requests use more than one worker
(and one CPU) of the server.  A failed create is retried with a fresh plan:
what the failed attempt may have left (ports of the planned names, subports)
is removed first, and VLAN tags and addresses are always planned from what
Neutron holds, never from a counter, so a failure can neither leak a tag nor
leave a port behind.  Port creation for one node is serialised with a lock
file, so two fillers (``pool fill``, a daemon refill) never plan the same tags.

The owner of a pool port is kept in the node's pool only, as kuryr did: a
Neutron update per pod would add a round trip to every pod start.  Security
groups (the ``security-group`` pod annotation) are Neutron's own.

Writes are not fenced (``fence`` is the base's no-op): every Neutron request is a
transaction of its own and none can be made conditional on another object, so a
cluster controller's method call that began before its term ended runs to its end.
Revision-conditional updates (``If-Match``) would not change that: the updates here
set whole values from a fresh read, and creates and deletes take no condition.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ovn_underlay.config import DEFAULT_MGMT_TAG
from ovn_underlay.control.base import (
    ChildPort,
    Conflict,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    NodeNetwork,
    PortOwner,
)
from ovn_underlay.control.credentials import Credentials
from ovn_underlay.control.neutron_errors import translate
from ovn_underlay.control.neutron_view import (
    BINDING_PROFILE,
    MARK,
    MODES,
    PORT_OWNER,
    ROUTER_INTERFACE,
    TRUNK,
    TRUNK_SUBPORT,
    Meta,
    View,
    mark,
    marked,
    mgmt_port_name,
    pool_port_name,
    tag_of_name,
)
from ovn_underlay.control.planning import (
    check_request,
    find_overlap,
    gateway_ip,
    mgmt_ip,
    plan_pool,
)

if TYPE_CHECKING:
    from openstack.connection import Connection

LOG = logging.getLogger(__name__)
BULK_MAX = 16
"""Ports per bulk POST: ~0.2 s each on a small server, so a request stays short."""
BULK_STREAMS = 2
"""Bulk POSTs under way at once (a batch is split for them), one per API worker of a
small server; against 2 workers on 2 CPUs, 4 at once were no faster than 2."""
ATTEMPTS = 3
RETRYABLE = (Conflict, ControlPlaneUnavailable)
"""Failures of a port create that are retried with a fresh plan (others are final)."""
DESTROY_ATTEMPTS = 6
RETRY_DELAY = 0.5
DELETE_THREADS = 4
DEFAULT_TIMEOUT = 60.0
LOCK_FILE = "neutron-ports.lock"
"""In the node's state dir: serialises port creation (see the module docstring)."""
_T = TypeVar("_T")
_P = TypeVar("_P")


def split_plan(plan: Sequence[_P]) -> list[Sequence[_P]]:
    """``plan`` in near-equal bulk requests of at most BULK_MAX, at least BULK_STREAMS of them.

    A batch smaller than BULK_MAX is split too, so a refill of one batch keeps
    BULK_STREAMS workers busy; a single port stays one request.
    """
    if not plan:
        return []
    count = max(math.ceil(len(plan) / BULK_MAX), min(BULK_STREAMS, len(plan)))
    size, extra = divmod(len(plan), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        chunks.append(plan[start:end])
        start = end
    return chunks


def _is_vm_port(port: Any) -> bool:
    """Whether a Neutron port can be a VM's own port (see NeutronControlPlane.port_holding)."""
    owner = str(port.device_owner or "")
    return not (owner.startswith("network:") or owner in (PORT_OWNER, TRUNK_SUBPORT)
                or marked(port.description, "pool-port") or marked(port.description, "mgmt-port")
                or (port.binding_profile or {}).get("parent_name"))


class NeutronControlPlane(ControlPlane):
    """Node networks as Neutron networks, subnets, router interfaces, ports and trunks."""

    def __init__(self, creds: Credentials, child_ports: str = TRUNK,
                 lock_path: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Talk to Neutron with ``creds``; nothing is sent before the first request.

        ``child_ports`` is how new node networks make child ports; an existing
        one keeps the mode it was made with.  ``lock_path`` names the file that
        serialises port creation on this node.
        """
        if child_ports not in MODES:
            raise ControlPlaneError(f"unknown child-port mode {child_ports!r}; use one of "
                                    f"{', '.join(MODES)}")
        self.creds = creds
        self.mode = child_ports
        self.lock_path = lock_path
        self.timeout = timeout
        self.pod_groups: tuple[str, ...] = ()
        """Security groups (ids) every pool port holds besides its own: a fresh one's
        ``default``, a pod's annotation groups (the cluster controller's Services group,
        :meth:`ensure_services_group`); the management port never gets them."""
        self._connection: Connection | None = None

    # --- connection and errors ---------------------------------------------------------

    @property
    def conn(self) -> Connection:
        """The openstacksdk connection, made on first use (openstacksdk imports slowly)."""
        if self._connection is None:
            import openstack

            kwargs = self.creds.connect_kwargs()
            self._connection = openstack.connect(
                load_yaml_config=bool(self.creds.cloud), load_envvars=False,
                api_timeout=self.timeout, **kwargs)
        return self._connection

    def _call(self, action: str, func: Callable[..., _T], *args: Any) -> _T:
        """Run one request; its failure becomes a ControlPlaneError without secrets."""
        try:
            return func(*args)
        except ControlPlaneError:
            raise
        except Exception as exc:
            raise translate(action, exc, self.creds, self.mode) from exc

    @contextlib.contextmanager
    def _serialised(self) -> Iterator[None]:
        """Hold the node's port-creation lock (a no-op without a lock path)."""
        if self.lock_path is None:
            yield
            return
        os.makedirs(os.path.dirname(self.lock_path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- reads ---------------------------------------------------------------------

    def _find_network(self, switch: str) -> Any | None:
        nets = self._call(f"look up network {switch}",
                          lambda: list(self.conn.network.networks(name=switch)))
        if len(nets) > 1:
            raise Conflict(f"{len(nets)} Neutron networks are named {switch}")
        return nets[0] if nets else None

    def _trunk_of(self, parent: str) -> Any | None:
        trunks = self._call(f"look up the trunk of port {parent}",
                            lambda: list(self.conn.network.trunks(port_id=parent)))
        return trunks[0] if trunks else None

    def _view(self, switch: str) -> View | None:
        """The node network ``switch`` as Neutron holds it; None if there is no network."""
        net = self._find_network(switch)
        if net is None:
            return None
        meta = Meta.decode(net.description)
        if meta is None:
            raise Conflict(f"Neutron network {switch} ({net.id}) was not created by "
                           "ovn-underlay")
        subnets = self._call(f"list the subnets of {switch}",
                             lambda: list(self.conn.network.subnets(network_id=net.id)))
        ports = self._call(f"list the ports of {switch}",
                           lambda: tuple(self.conn.network.ports(network_id=net.id)))
        trunk = self._trunk_of(meta.parent) if meta.mode == TRUNK else None
        return View(net, meta, subnets[0] if subnets else None, ports, trunk)

    def router_name(self, router_id: str) -> str:
        """The name of router ``router_id``; its id if it has none or cannot be read."""
        try:
            router = self._call(f"look up router {router_id}",
                                lambda: self.conn.network.get_router(router_id))
        except ControlPlaneError as exc:
            LOG.warning("%s", exc)
            return router_id
        return str(router.name or router_id)

    def get_node_network(self, switch: str) -> NodeNetwork | None:
        """The node network of ``switch`` (ports not yet children are left out)."""
        view = self._view(switch)
        return None if view is None else view.node_network()

    # --- create ----------------------------------------------------------------------

    def create_node_network(self, switch: str, subnet: str, router: str, parent: str,
                            pool_size: int, mgmt_tag: int | None = DEFAULT_MGMT_TAG,
                            create_router: bool = True,
                            cluster_subnet: str | None = None) -> NodeNetwork:
        """Network, subnet, router interface, management port and pool: all or nothing."""
        subnet = check_request(switch, subnet, router, parent, pool_size, mgmt_tag,
                               cluster_subnet)
        existing = self._view(switch)
        if existing is not None:
            return self._same(existing, subnet, router, parent).node_network()
        self._check_names(switch, router)
        self._check_parent(parent)
        with self._serialised(), contextlib.ExitStack() as undo:
            router_obj = self._router(router, create_router, undo)
            self._check_overlap(router_obj, subnet)
            if self.mode == TRUNK:
                self._ensure_trunk(parent, undo)
            meta = Meta(subnet, router_obj.id, parent, self.mode, mgmt_tag)
            net = self._call(f"create network {switch}", lambda: self.conn.network.create_network(
                name=switch, description=meta.encode()))
            undo.callback(self._quietly, f"delete network {switch}",
                          lambda: self.conn.network.delete_network(net, ignore_missing=True))
            sub = self._call(f"create subnet {subnet}", lambda: self.conn.network.create_subnet(
                network_id=net.id, name=switch, description=mark("subnet"), cidr=subnet,
                ip_version=4, enable_dhcp=False, gateway_ip=gateway_ip(subnet)))
            self._call(f"attach {subnet} to router {router}",
                       lambda: self.conn.network.add_interface_to_router(router_obj,
                                                                        subnet=sub.id))
            undo.callback(self._quietly, f"detach {subnet} from router {router}",
                          lambda: self.conn.network.remove_interface_from_router(
                              router_obj, subnet=sub.id))
            undo.callback(self._delete_own_ports, switch)
            if mgmt_tag is not None:
                self._create_retrying(switch, lambda _view: [
                    (mgmt_port_name(switch), mgmt_ip(subnet), mgmt_tag)])
            self._create_retrying(switch, lambda view: self._plan(view, pool_size))
            view = self._pool_view(switch)
            undo.pop_all()
        return view.node_network()

    def _same(self, view: View, subnet: str, router: str, parent: str) -> View:
        """``view`` if it is the node network asked for, else Conflict."""
        meta = view.meta
        router_obj = self._call(f"look up router {router}",
                                lambda: self.conn.network.find_router(router))
        differs = []
        if meta.subnet != subnet:
            differs.append(f"subnet {meta.subnet} (not {subnet})")
        if router_obj is None or router_obj.id != meta.router:
            differs.append(f"router {meta.router} (not {router})")
        if meta.parent != parent:
            differs.append(f"parent {meta.parent} (not {parent})")
        if differs:
            raise Conflict(f"node network {view.network.name} already exists with "
                           + ", ".join(differs))
        return view

    def _check_names(self, switch: str, router: str) -> None:
        """Conflict if the new network and its router, or another of their kind, share a name."""
        shared = "router and a switch must not share a name"
        if router == switch:
            raise Conflict(f"router {router!r} has the name of the switch being created: a "
                           f"{shared}; choose another router name")
        if self._call(f"look up networks named {router}",
                      lambda: list(self.conn.network.networks(name=router))):
            raise Conflict(f"router {router!r} has the name of an existing Neutron network: a "
                           f"{shared}; choose another router name")
        if self._call(f"look up routers named {switch}",
                      lambda: list(self.conn.network.routers(name=switch))):
            raise Conflict(f"switch {switch!r} has the name of an existing Neutron router: a "
                           f"{shared}; choose another switch name")

    def _check_parent(self, parent: str) -> None:
        port = self._call(f"look up parent port {parent}",
                          lambda: self.conn.network.find_port(parent))
        if port is None:
            raise ControlPlaneError(f"parent port {parent} not found in Neutron (OS_VIF_ID "
                                    "must be this VM's port id)")
        grand = (port.binding_profile or {}).get("parent_name")
        if grand:
            raise ControlPlaneError(f"parent port {parent} is itself a child of {grand}")

    def _router(self, router: str, create: bool, undo: contextlib.ExitStack) -> Any:
        found = self._one_router(router)
        if found is not None:
            return found
        if not create:
            raise ControlPlaneError(f"router {router} does not exist")
        kept, made = self._make_router(router, "router")
        if made:
            undo.callback(self._quietly, f"delete router {router}",
                          lambda: self.conn.network.delete_router(kept, ignore_missing=True))
        return kept

    def _routers_named(self, name: str) -> list[Any]:
        return self._call(f"look up routers named {name}",
                          lambda: list(self.conn.network.routers(name=name)))

    def _one_router(self, name: str) -> Any | None:
        """The router named ``name``, else the one with that id (None: neither).

        Conflict when several routers have the name.
        """
        found = self._routers_named(name)
        if len(found) > 1:
            raise Conflict(f"{len(found)} Neutron routers are named {name!r}; remove all but "
                           "one")
        if found:
            return found[0]
        return self._call(f"look up router {name}",
                          lambda: self.conn.network.find_router(name))

    def _make_router(self, name: str, kind: str) -> tuple[Any, bool]:
        """Create the router ``name`` marked ``kind``: (the router to use, whether it is ours).

        Neutron cannot create conditionally, so two clients creating it at once make
        two.  So each creator lists the routers of that name after its create and, when
        there are several, all marked by ovn-underlay, keeps the oldest (created_at,
        then id: every creator chooses the same one) and deletes the others, which have
        no interface yet; Conflict when one of them is not ovn-underlay's or is in use.
        A create that fails while exactly one router of that name marked ``kind`` exists
        lost that race (another creator deleted this one's router while neutron-server
        was still answering its POST, with a 404): that router is used, as not this
        call's (an undo never deletes it).
        """
        try:
            made = self._call(f"create router {name}", lambda: self.conn.network.create_router(
                name=name, description=mark(kind)))
        except ControlPlaneError:
            survivors = self._routers_named(name)
            if len(survivors) == 1 and marked(survivors[0].description, kind):
                LOG.info("router %s: another client created it at the same time and kept "
                         "its own (%s); using that one", name, survivors[0].id)
                return survivors[0], False
            raise
        routers = self._routers_named(name)
        if len(routers) <= 1:
            return made, True
        foreign = [r.id for r in routers if not marked(r.description, "router")
                   and not marked(r.description, "cluster-router")]
        if foreign:
            raise Conflict(f"Neutron routers named {name!r} that ovn-underlay did not make: "
                           f"{', '.join(foreign)}")
        kept = min(routers, key=lambda r: (str(r.created_at or ""), str(r.id)))
        for other in routers:
            if other.id == kept.id:
                continue
            if self._router_subnets(other) or other.external_gateway_info:
                raise Conflict(f"{len(routers)} Neutron routers are named {name!r} and "
                               f"{other.id} is in use; remove all but one")
            LOG.warning("router %s: another client created one at the same time; deleting %s "
                        "and keeping %s (the first by created_at, then id)", name, other.id,
                        kept.id)
            self._call(f"delete the duplicate router {other.id}",
                       lambda victim=other: self.conn.network.delete_router(
                           victim, ignore_missing=True))
        return kept, kept.id == made.id

    def _router_subnets(self, router: Any) -> list[Any]:
        ports = self._call(f"list the interfaces of router {router.name}", lambda: list(
            self.conn.network.ports(device_id=router.id)))
        subnet_ids = {str(f["subnet_id"]) for p in ports
                      if str(p.device_owner or "").startswith(ROUTER_INTERFACE)
                      for f in p.fixed_ips or ()}
        return [self._call(f"look up subnet {sid}", self.conn.network.get_subnet, sid)
                for sid in sorted(subnet_ids)]

    def _check_overlap(self, router: Any, subnet: str) -> None:
        others = [(f"subnet {s.name or s.id} on router {router.name}", str(s.cidr))
                  for s in self._router_subnets(router)]
        overlap = find_overlap(subnet, others)
        if overlap is not None:
            raise Conflict(f"subnet {subnet} overlaps {overlap[1]} of {overlap[0]}")

    def _ensure_trunk(self, parent: str, undo: contextlib.ExitStack) -> Any:
        trunk = self._trunk_of(parent)
        if trunk is not None:
            return trunk
        made = self._call(f"create a trunk on port {parent}",
                          lambda: self.conn.network.create_trunk(
                              port_id=parent, name=f"{MARK}-{parent[:8]}",
                              description=mark("trunk")))
        undo.callback(self._quietly, f"delete trunk {made.id}",
                      lambda: self.conn.network.delete_trunk(made, ignore_missing=True))
        return made

    # --- pool ports ----------------------------------------------------------------

    def _plan(self, view: View, count: int) -> list[tuple[str, str, int]]:
        """(name, ip, tag) of ``count`` new pool ports on the lowest free addresses and tags."""
        reserved_tags = set(view.tags().values())
        if view.meta.mgmt_tag is not None:
            reserved_tags.add(view.meta.mgmt_tag)
        for port in view.own_ports():
            tag = tag_of_name(view.network.name, port.name)
            if tag is not None:
                reserved_tags.add(tag)
        return [(pool_port_name(view.network.name, tag), ip, tag)
                for ip, tag in plan_pool(view.meta.subnet, count, view.used_ips(),
                                         reserved_tags)]

    def add_pool_ports(self, switch: str, count: int) -> tuple[ChildPort, ...]:
        """Create ``count`` pool ports (bulk), retrying failures with a fresh plan."""
        if count <= 0:
            return ()
        with self._serialised():
            return self._create_retrying(switch, lambda view: self._plan(view, count))

    def _create_retrying(self, switch: str,
                         planner: Callable[[View], Sequence[tuple[str, str, int]]]
                         ) -> tuple[ChildPort, ...]:
        """Create the ports ``planner`` plans on a fresh view; retry a failure.

        Every attempt first removes incomplete ports, and a failed attempt
        removes whatever it created, so that only a success leaves ports.
        The lock must be held.
        """
        for attempt in range(1, ATTEMPTS + 1):
            view = self._pool_view(switch)
            if view.incomplete():
                self._remove_incomplete(view)
                view = self._pool_view(switch)
            plan = planner(view)
            try:
                return self._create_ports(view, plan)
            except ControlPlaneError as exc:
                self._remove_named(switch, {name for name, _, _ in plan})
                if attempt == ATTEMPTS or not isinstance(exc, RETRYABLE):
                    raise
                LOG.warning("creating %d ports on %s failed (%s); retry %d of %d", len(plan),
                            switch, exc, attempt, ATTEMPTS - 1)
                time.sleep(RETRY_DELAY * attempt)
        raise AssertionError("unreachable")

    def _pool_view(self, switch: str) -> View:
        view = self._view(switch)
        if view is None or view.subnet is None:
            raise ControlPlaneError(f"no node network {switch} (made by ovn-underlay)")
        return view

    def _create_ports(self, view: View, plan: Sequence[tuple[str, str, int]]
                      ) -> tuple[ChildPort, ...]:
        """Create the planned ports in concurrent bulk POSTs; make them children of the parent.

        After a failure the requests under way are finished, those not yet sent
        are dropped, and an error is raised (one not worth a retry first); ports
        already created may remain: the caller removes them by name.
        """
        chunks = split_plan(plan)
        if len(chunks) == 1:
            return self._create_chunk(view, chunks[0])
        failed = threading.Event()

        def create(chunk: Sequence[tuple[str, str, int]]) -> tuple[ChildPort, ...]:
            if failed.is_set():
                return ()
            try:
                return self._create_chunk(view, chunk)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=BULK_STREAMS) as pool:
            futures = [pool.submit(create, chunk) for chunk in chunks]
        errors = [exc for exc in (f.exception() for f in futures) if exc is not None]
        if errors:
            final = [e for e in errors if not isinstance(e, RETRYABLE)]
            raise (final or errors)[0]
        return tuple(port for future in futures for port in future.result())

    def _create_chunk(self, view: View, chunk: Sequence[tuple[str, str, int]]
                      ) -> tuple[ChildPort, ...]:
        """One bulk POST of ``chunk`` and, in trunk mode, one request adding the subports."""
        meta = view.meta
        mgmt = mgmt_port_name(view.network.name)
        fresh = self._fresh_groups(str(view.network.project_id or "")) if self.pod_groups \
            and any(name != mgmt for name, _, _ in chunk) else []
        bodies = []
        for name, ip, tag in chunk:
            body: dict[str, Any] = {
                "network_id": view.network.id, "name": name, "device_owner": PORT_OWNER,
                "description": mark("mgmt-port" if name == mgmt else "pool-port"),
                "fixed_ips": [{"subnet_id": view.subnet.id, "ip_address": ip}]}
            if name != mgmt and self.pod_groups:
                body["security_groups"] = fresh
            if meta.mode == BINDING_PROFILE:
                body["binding_profile"] = {"parent_name": meta.parent, "tag": tag}
            bodies.append(body)
        ports = self._call(f"create {len(chunk)} ports on {view.network.name}",
                           lambda data: list(self.conn.network.create_ports(data)), bodies)
        tags = {name: tag for name, _, tag in chunk}
        if meta.mode == TRUNK:
            trunk = view.trunk
            assert trunk is not None
            subports = [{"port_id": p.id, "segmentation_type": "vlan",
                         "segmentation_id": tags[p.name]} for p in ports]
            self._call(f"add {len(ports)} subports to trunk of {meta.parent}",
                       self.conn.network.add_trunk_subports, trunk, subports)
        return tuple(view.child_port(p, tags[p.name]) for p in ports)

    def _remove_incomplete(self, view: View) -> None:
        """Remove own ports that are not children (left by a crash between two steps)."""
        stray = view.incomplete()
        LOG.warning("removing %d incomplete ports of %s: %s", len(stray), view.network.name,
                    ", ".join(p.name for p in stray))
        self._delete_ports(view, stray)

    def _remove_named(self, switch: str, names: set[str]) -> None:
        """Remove the ports of ``switch`` with these names (the leftovers of a failure)."""
        view = self._pool_view(switch)
        leftovers = [p for p in view.ports if p.name in names]
        if leftovers:
            LOG.warning("removing %d ports a failed create left on %s", len(leftovers), switch)
            self._delete_ports(view, leftovers)

    def _delete_ports(self, view: View, ports: Iterable[Any]) -> None:
        """Delete ports (trunk subports are removed from the trunk first)."""
        ports = list(ports)
        if not ports:
            return
        subports = set(view.tags()) if view.meta.mode == TRUNK else set()
        on_trunk = [{"port_id": p.id} for p in ports if p.id in subports]
        trunk = view.trunk
        if on_trunk and trunk is not None:
            self._call(f"remove {len(on_trunk)} subports from trunk {trunk.id}",
                       self.conn.network.delete_trunk_subports, trunk, on_trunk)

        def delete(port: Any) -> None:
            self._call(f"delete port {port.name or port.id}",
                       lambda: self.conn.network.delete_port(port, ignore_missing=True))

        with ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
            list(pool.map(delete, ports))

    def delete_pool_ports(self, switch: str, names: Iterable[str]) -> None:
        """Delete the named (by id) pool ports of ``switch``; unknown ids are ignored."""
        wanted = set(names)
        view = self._view(switch)
        if view is None or not wanted:
            return
        hit = [p for p in view.ports if p.id in wanted]
        foreign = sorted(p.name or p.id for p in hit
                         if tag_of_name(view.network.name, p.name) is None)
        if foreign:
            raise ControlPlaneError(f"not deleting {', '.join(foreign)}: not pool ports of "
                                    f"{switch}")
        with self._serialised():
            self._delete_ports(view, hit)

    # --- destroy ---------------------------------------------------------------------

    def _delete_own_ports(self, switch: str) -> None:
        view = self._view(switch)
        if view is not None:
            self._delete_ports(view, view.own_ports())

    def destroy_node_network(self, switch: str) -> None:
        """Remove ports, router interface, network, and the router and trunk if made here.

        The network goes last: it holds what the node network was made with, so
        a destroy (or a setup) interrupted half-way is finished by running
        destroy again.
        """
        with self._serialised():
            for attempt in range(1, DESTROY_ATTEMPTS + 1):
                view = self._view(switch)
                if view is None:
                    return
                try:
                    self._destroy(view)
                    return
                except Conflict as exc:
                    if attempt == DESTROY_ATTEMPTS:
                        raise
                    LOG.warning("%s; retrying: a create cut short may still be under way",
                                exc)
                    time.sleep(RETRY_DELAY * 2)

    def _destroy(self, view: View) -> None:
        """One pass of destroy_node_network; Conflict while ports still appear."""
        self._delete_ports(view, view.own_ports())
        if view.meta.mode == TRUNK:
            self._delete_trunk_if_idle(view.meta.parent)
        router = self._call(f"look up router {view.meta.router}",
                            lambda: self.conn.network.find_router(view.meta.router))
        if router is not None and view.subnet is not None:
            self._remove_routes_into(router, view.meta.subnet)
            if any(str(p.device_owner or "").startswith(ROUTER_INTERFACE)
                   and p.device_id == router.id for p in view.ports):
                self._call(f"detach {view.meta.subnet} from router {router.name}",
                           lambda: self.conn.network.remove_interface_from_router(
                               router, subnet=view.subnet.id))
            self._delete_router_if_idle(router)
        self._call(f"delete network {view.network.name}",
                   lambda: self.conn.network.delete_network(view.network, ignore_missing=True))

    def _delete_router_if_idle(self, router: Any) -> None:
        if marked(router.description, "router") and not self._router_subnets(router) \
                and not router.external_gateway_info:
            self._call(f"delete router {router.name}",
                       lambda: self.conn.network.delete_router(router, ignore_missing=True))

    def _delete_trunk_if_idle(self, parent: str) -> None:
        trunk = self._trunk_of(parent)
        if trunk is not None and marked(trunk.description, "trunk") and not trunk.sub_ports:
            self._call(f"delete trunk {trunk.id}",
                       lambda: self.conn.network.delete_trunk(trunk, ignore_missing=True))

    # --- what the cluster controller needs ---------------------------------------------

    def ensure_router(self, router: str) -> None:
        """Create the router ``router`` (marked cluster-router) unless one has that name.

        An existing router of that name is kept as it is, whoever made it.  Conflict
        when several routers have the name, or a network has it.  Two clients creating
        it at once end with one (see :meth:`_make_router`).  destroy_node_network never
        deletes a cluster-router.
        """
        if not router:
            raise ControlPlaneError("the router name must not be empty")
        if self._one_router(router) is not None:
            return
        if self._call(f"look up networks named {router}",
                      lambda: list(self.conn.network.networks(name=router))):
            raise Conflict(f"router {router!r} has the name of an existing Neutron network: a "
                           "router and a switch must not share a name")
        self._make_router(router, "cluster-router")

    def port_holding(self, ip: str) -> str | None:
        """The id of the one VM port with the fixed IP ``ip``.

        VM ports are those not made here (no ovn-underlay mark, device_owner not
        ours), no router or DHCP port (``network:*``), no trunk subport and no
        binding-profile child.  None when no port or more than one holds the address.
        """
        try:
            wanted = str(ipaddress.IPv4Address(ip))
        except ValueError as exc:
            raise ControlPlaneError(f"invalid IPv4 address {ip!r}: {exc}") from exc
        ports = self._call(f"look up the ports with address {wanted}", lambda: list(
            self.conn.network.ports(fixed_ips=[f"ip_address={wanted}"])))
        found = [str(p.id) for p in ports
                 if any(str(f["ip_address"]) == wanted for f in p.fixed_ips or ())
                 and _is_vm_port(p)]
        return found[0] if len(found) == 1 else None

    def node_switches(self) -> list[str]:
        """The names of the networks that record a node network made here, sorted."""
        nets = self._call("list the networks",
                          lambda: list(self.conn.network.networks()))
        return sorted(str(n.name) for n in nets if Meta.decode(n.description) is not None)

    def port_exists(self, port: str) -> bool:
        """Whether the port with id ``port`` exists (as this project's credentials see)."""
        return bool(self._call(f"look up port {port}",
                               lambda: list(self.conn.network.ports(id=port))))

    # --- pods -----------------------------------------------------------------------

    def record_owners(self, owners: Mapping[str, PortOwner | None]) -> list[str]:
        """Nothing to do: the node's pool records the owner (see the module's docstring)."""
        del owners
        return []

    def set_port_security_groups(self, port: str, groups: Sequence[str],
                                 owner: PortOwner) -> None:
        """Give ``port`` exactly ``groups`` (names or ids, in the port's project); the owner
        is the node's to check."""
        del owner
        found = self._get_port(port)
        ids = [self._group_id(name, found.project_id) for name in groups]
        ids += [g for g in self.pod_groups if g not in ids]
        if set(found.security_group_ids or ()) != set(ids):  # Neutron does not keep order
            self._call(f"set security groups {', '.join(groups)} on port {port}",
                       lambda: self.conn.network.update_port(found, security_group_ids=ids))

    def clear_port_security_groups(self, port: str) -> None:
        """Give ``port`` its project's default security group back, as a new port has (and
        :attr:`pod_groups`)."""
        found = self._get_port(port)
        default = self._fresh_groups(found.project_id)
        if set(found.security_group_ids or ()) != set(default):
            self._call(f"reset the security groups of port {port}",
                       lambda: self.conn.network.update_port(found, security_group_ids=default))

    def _fresh_groups(self, project_id: str) -> list[str]:
        """The groups of a fresh pool port: the project's ``default``, then :attr:`pod_groups`."""
        default = self._group_id("default", project_id)
        return [default, *(g for g in self.pod_groups if g != default)]

    def ensure_pod_groups(self, router: str) -> int:
        """Add the :attr:`pod_groups` a pool port of a node network on ``router`` (name or
        id) lacks (one made before they were set), keeping its other groups; how many
        ports were updated.  One listing of the networks and one of the ports, then an
        update per port that lacks them."""
        found = self._one_router(router) if self.pod_groups else None
        if found is None:
            return 0
        nets = self._call("list the networks", lambda: list(self.conn.network.networks()))
        mine = {str(n.id) for n in nets
                if (meta := Meta.decode(n.description)) is not None and meta.router == found.id}
        ports = self._call("list the ports", lambda: list(self.conn.network.ports()))
        updated = 0
        for port in ports:
            if str(port.network_id) not in mine or not marked(port.description, "pool-port"):
                continue
            have = list(port.security_group_ids or ())
            missing = [g for g in self.pod_groups if g not in have]
            if missing:
                self._call(f"add security group(s) {', '.join(missing)} to port {port.id}",
                           lambda p=port, ids=have + missing: self.conn.network.update_port(
                               p, security_group_ids=ids))
                updated += 1
        return updated

    def ensure_services_group(self, name: str, cidr: str) -> str:
        """The security group ``name`` (marked ``services-group``) with exactly one rule:
        ingress from ``cidr`` (IPv4, any protocol); made if missing, its other rules (the
        egress rules Neutron gives a new group, a former range's) removed.  Its id.

        It admits a pod's own traffic back through its Service (hairpin: OVN's load
        balancer SNATs it to the VIP), one rule for the whole Service range however many
        Services there are; a group of that name not made here is a Conflict.
        """
        net = ipaddress.ip_network(cidr)
        groups = self._call(f"look up security group {name}", lambda: list(
            self.conn.network.security_groups(name=name)))
        ours = [g for g in groups if marked(g.description, "services-group")]
        if len(groups) > len(ours) or len(ours) > 1:
            raise Conflict(f"{len(groups)} security groups are named {name!r}, "
                           f"{len(ours)} of them made by ovn-underlay: remove all but one")
        group = ours[0] if ours else self._call(
            f"create security group {name}", lambda: self.conn.network.create_security_group(
                name=name, description=mark("services-group")))
        rules = self._call(f"list the rules of security group {name}", lambda: list(
            self.conn.network.security_group_rules(security_group_id=group.id)))
        wanted = [r for r in rules if r.direction == "ingress" and r.ether_type == "IPv4"
                  and r.protocol is None and r.port_range_min is None
                  and r.remote_group_id is None and r.remote_ip_prefix == str(net)]
        for rule in rules:
            if wanted and rule.id == wanted[0].id:
                continue
            self._call(f"delete rule {rule.id} of security group {name}",
                       lambda r=rule: self.conn.network.delete_security_group_rule(
                           r, ignore_missing=True))
        if not wanted:
            self._call(f"admit {net} in security group {name}",
                       lambda: self.conn.network.create_security_group_rule(
                           security_group_id=group.id, direction="ingress",
                           ether_type="IPv4", remote_ip_prefix=str(net)))
        return str(group.id)

    def subnet_layout(self, subnet: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """(CIDR, gateway IP or "", allocation pools as (start, end)) of the subnet
        ``subnet`` (name or id); ControlPlaneError when it is missing."""
        sub = self._call(f"look up subnet {subnet}",
                         lambda: self.conn.network.find_subnet(subnet))
        if sub is None:
            raise ControlPlaneError(f"subnet {subnet} not found in Neutron")
        pools = tuple((str(p["start"]), str(p["end"])) for p in sub.allocation_pools or ())
        return str(sub.cidr), str(sub.gateway_ip or ""), pools

    def ensure_router_interface(self, router: str, subnet: str) -> bool:
        """Attach the subnet ``subnet`` (name or id) to the router ``router`` (name or id)
        unless it is; True if it was attached now.  ControlPlaneError when either is
        missing (Conflict: several routers of that name)."""
        found = self._one_router(router)
        if found is None:
            raise ControlPlaneError(f"router {router} does not exist")
        sub = self._call(f"look up subnet {subnet}",
                         lambda: self.conn.network.find_subnet(subnet))
        if sub is None:
            raise ControlPlaneError(f"subnet {subnet} not found in Neutron")
        if any(s.id == sub.id for s in self._router_subnets(found)):
            return False
        self._call(f"attach subnet {sub.name or sub.id} to router {found.name or found.id}",
                   lambda: self.conn.network.add_interface_to_router(found, subnet=sub.id))
        return True

    def _get_port(self, port: str) -> Any:
        found = self._call(f"look up port {port}", lambda: self.conn.network.find_port(port))
        if found is None:
            raise ControlPlaneError(f"port {port} not found in Neutron")
        return found

    def _group_id(self, name_or_id: str, project_id: str) -> str:
        group = self._call(f"look up security group {name_or_id}",
                           lambda: self.conn.network.find_security_group(
                               name_or_id, project_id=project_id))
        if group is None:
            raise ControlPlaneError(f"security group {name_or_id!r} not found in project "
                                    f"{project_id}")
        return str(group.id)

    # --- the node's own addresses, the router's gateway ------------------------------

    def ensure_host_routes(self, switch: str) -> tuple[str, ...]:
        """The management port's allowed_address_pairs are the parent port's IPv4
        addresses, and the router has an extra route ``<ip>/32`` via the management
        port's address for each; extra routes into the node subnet for other
        addresses are removed."""
        view = self._pool_view(switch)
        mgmt = next((p for p in view.ports if p.name == mgmt_port_name(switch)), None)
        if mgmt is None or not mgmt.fixed_ips:
            return ()
        parent = self._get_port(view.meta.parent)
        ips = tuple(sorted(str(f["ip_address"]) for f in parent.fixed_ips or ()
                           if ipaddress.ip_address(f["ip_address"]).version == 4))
        have = sorted(str(pair["ip_address"]) for pair in mgmt.allowed_address_pairs or ())
        if have != list(ips):
            self._call(f"admit {', '.join(ips)} on port {mgmt.name}",
                       lambda: self.conn.network.update_port(
                           mgmt, allowed_address_pairs=[{"ip_address": ip} for ip in ips]))
        via = str(mgmt.fixed_ips[0]["ip_address"])
        wanted = [{"destination": f"{ip}/32", "nexthop": via} for ip in ips]
        router = self._call(f"look up router {view.meta.router}",
                            lambda: self.conn.network.get_router(view.meta.router))
        self._remove_routes_into(router, view.meta.subnet, keep=wanted)
        missing = [r for r in wanted if r not in (router.routes or [])]
        if missing:
            self._call(f"route {', '.join(ips)} to port {mgmt.name}",
                       lambda: self.conn.network.add_extra_routes_to_router(
                           router, {"router": {"routes": missing}}))
        return ips

    def _remove_routes_into(self, router: Any, subnet: str,
                            keep: Sequence[Mapping[str, str]] = ()) -> None:
        """Remove the router's extra routes whose next hop is in ``subnet``, but ``keep``."""
        net = ipaddress.ip_network(subnet)
        stale = [r for r in router.routes or []
                 if ipaddress.ip_address(r["nexthop"]) in net and r not in keep]
        if stale:
            self._call(f"remove {len(stale)} routes into {subnet} from router {router.name}",
                       lambda: self.conn.network.remove_extra_routes_from_router(
                           router, {"router": {"routes": stale}}))

    def ensure_router_gateway(self, router: str, external: str, snat: Sequence[str],
                              address: str = "", next_hop: str = "",
                              chassis: Sequence[str] = ()) -> str:
        """Set the router's external_gateway_info (network ``external``, enable_snat).

        Neutron SNATs every subnet on the router (``snat`` is not asked for), routes
        via the external subnet's gateway (not ``next_hop``) and schedules the
        gateway on its gateway chassis (not ``chassis``); ``address`` (an IP, a
        prefix is ignored) asks for that external fixed IP, which needs admin.
        """
        del snat, next_hop, chassis
        found = self._call(f"look up router {router}",
                           lambda: self.conn.network.find_router(router))
        if found is None:
            raise ControlPlaneError(f"router {router} does not exist")
        net = self._call(f"look up network {external}",
                         lambda: self.conn.network.find_network(external))
        if net is None or not net.is_router_external:
            raise ControlPlaneError(f"{external} is not an external Neutron network "
                                    "(router:external)")
        want: dict[str, Any] = {"network_id": net.id, "enable_snat": True}
        ip = str(ipaddress.ip_interface(address).ip) if address else ""
        if ip:
            want["external_fixed_ips"] = [{"ip_address": ip}]
        info = found.external_gateway_info or {}
        ips = [str(f["ip_address"]) for f in info.get("external_fixed_ips") or ()]
        if info.get("network_id") != net.id or not info.get("enable_snat") or \
                (ip and ip not in ips):
            found = self._call(f"set the gateway of router {router} on {external}",
                               lambda: self.conn.network.update_router(
                                   found, external_gateway_info=want))
            ips = [str(f["ip_address"]) for f in
                   (found.external_gateway_info or {}).get("external_fixed_ips") or ()]
        if not ips:
            raise ControlPlaneError(f"router {router} got no address on {external}")
        return ip or ips[0]

    # --- misc -----------------------------------------------------------------------

    def _quietly(self, action: str, func: Callable[[], object]) -> None:
        """Undo step: log a failure instead of hiding the error being handled."""
        try:
            self._call(action, func)
        except ControlPlaneError as exc:
            LOG.warning("could not %s while undoing: %s", action, exc)

    def check_access(self, parent: str) -> str:
        """Authenticate and read the parent port; return a line saying what was checked."""
        self._check_parent(parent)
        return f"Neutron reached with {self.creds.describe()}; parent port {parent} found"

    def close(self) -> None:
        """Close the HTTP sessions; idempotent."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
