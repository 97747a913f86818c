"""ClusterIP Services as Octavia load balancers with the OVN provider (a ServicesBackend).

For a tenant of an OpenStack cloud (ML2/OVN), who cannot write OVN's Northbound: the OVN
provider turns Octavia's objects into OVN ``Load_Balancer`` rows.  Per Service (``<key>``
is its ``namespace/name``):

* one load balancer, provider ``ovn``, ``vip_address`` the Service's first ClusterIP on
  the Service subnet (a Neutron subnet whose allocation pool lies outside the Service
  range, so the address is free for the VIP port), named ``ovn-underlay:<key>``, with the
  description ``{"ovn-underlay": "service", "service": "<key>"}`` and the tag
  :data:`TAG`;
* one listener per (protocol, port), named ``ovn-underlay:<key>:<protocol>:<port>``,
  tagged, and one pool behind it of the same name, algorithm ``SOURCE_IP_PORT`` (the
  provider's only one);
* members: the port's endpoints whose address a node network holds (``switches`` maps
  a Node to its switch, which is the Neutron network's name), ``address`` and target
  port, ``subnet_id`` the Service subnet's, not the node's: the provider 3.0 counts each
  switch's members by their subnet and takes the load balancer off a node switch when
  that count drops to 0, though the router association had put it there for the
  switch's clients (pods on a node whose last backend went would reach no backend);
  OVN's rows do not use the member's subnet.  An endpoint on no node network is left
  out (:meth:`limits` says so).

A node switch attached to the cluster router after the load balancers exist gets no
write here: when the router port is made, the provider's driver agent puts every load
balancer of the router on the new switch (measured on 3.0: within 50 ms of the port),
and since no member names the node's subnet, no member count takes them off again.

A Service's load balancers on another address than its ClusterIP, and those of a given
Service without an IPv4 ClusterIP, are deleted.

A load balancer is ours when it has the tag, the name and the description above; only
ours, their listeners and pools tagged :data:`TAG`, and those pools' members are read or
changed.  A sync lists our load balancers, listeners and pools once (three requests, by
tag), the members of each pool of a Service it converges (one request per pool), and
the networks and subnets once (two requests); an unchanged Service gets no write.  A
missing load balancer is created fully populated (listeners, pools and members in one
POST, which the provider 3.0 takes); a changed one gets only the differences, one
request each: a listener and its pool deleted or added, one member added or removed, or
a pool's member set replaced with one batch member update (``PUT
/v2/lbaas/pools/{id}/members``) when more than one member changes, a pool's session
persistence set.
Octavia makes a load balancer ``PENDING_UPDATE`` after each change and refuses (409) any
other until it is ``ACTIVE`` again, so the writes of one Service are sequential, each
waiting for ``ACTIVE`` (polled every 50 ms at first, backing off to 0.5 s), while
Services are converged in parallel by a pool of ``workers`` threads.

A load balancer in ``PENDING_*`` is waited for up to ``pending_timeout`` (an Octavia 409
is such a wait, never an error); past it, the Service is left as it is and, once every
other Service is done, :class:`ServicesPending` names it.  A load balancer in ``ERROR`` is
deleted with cascade and, once it and its VIP port are gone, made again on the same VIP.
A create refused because the VIP address is still held by the port of a load balancer
that no longer exists (the provider 3.0 leaves the VIP port behind when Octavia refuses
a fully populated create after making it) deletes that port, ``ovn-lb-vip-<id>`` of a
deleted ``<id>`` holding the Service's own ClusterIP, and tries again; a VIP held by any
other port is a :class:`~ovn_underlay.control.base.Conflict`.

sessionAffinity ClientIP is the pool's ``SOURCE_IP`` session persistence, set only where
the provider applies it (ovn-octavia-provider 5.0 and later write it to OVN as
``affinity_timeout``; 3.0 accepts it and writes nothing).  Octavia offers no capability
for it (the provider answers no flavor capabilities), so the first Service asking for
affinity probes it on one of its TCP pools: the providers that apply SOURCE_IP refuse
any other type, so ``HTTP_COOKIE`` persistence refused (400/501 naming session
persistence) means it is applied; accepted, it is not, and the pool is put back at once
(two writes, no change in OVN: the provider ignores both).  The answer is kept for the
life of this object; a Service with affinity but no TCP port leaves it unknown (no
persistence, and :meth:`OctaviaLoadBalancers.limits` says so).

No health monitors: Kubernetes readiness already takes a failing endpoint out of the
EndpointSlice, so the member goes with it; and a monitor of the OVN provider needs a
``network:distributed`` port on the member's network, without which it goes to ERROR and
northd drops all traffic to the VIP.

Credentials are those of the :class:`~ovn_underlay.control.neutron.NeutronControlPlane`;
its connection must know Octavia's endpoint (the ``load-balancer`` service of the
catalogue, or ``load_balancer_endpoint_override``).  Without authentication (noauth)
Octavia needs a ``project_id`` in each create: the Service subnet's project is used;
with authentication none is sent (the token's project owns the load balancer).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ovn_underlay.control.base import Conflict, ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.control.credentials import AUTH_NONE
from ovn_underlay.control.neutron import NeutronControlPlane
from ovn_underlay.control.services import (
    MAX_AFFINITY_TIMEOUT,
    ServicesPending,
    ServiceState,
    SyncResult,
)

LOG = logging.getLogger(__name__)
TAG = "ovn-underlay"
NAME_PREFIX = "ovn-underlay:"
MARK_KIND = "service"
PROVIDER = "ovn"
ALGORITHM = "SOURCE_IP_PORT"
POLL_FIRST = 0.05
POLL_MAX = 0.5
POLL_GROWTH = 1.5
VIP_PORT_PREFIX = "ovn-lb-vip-"
"""The OVN provider's name for a load balancer's VIP port: this and the LB's id."""
LEFTOVER_GRACE = 2.0
"""Seconds a VIP port of a load balancer already gone is given to go by itself before
it is deleted as a leftover."""
CREATE_ATTEMPTS = 3
"""Creates of one load balancer, the VIP freed between them (see _free_vip)."""
TCP_PERSISTENCE_TIMEOUT = 360
"""What the OVN provider (5.0+) takes as affinity timeout for a TCP pool: Octavia
refuses ``persistence_timeout`` on TCP pools."""
_PENDING = "PENDING_"
_ACTIVE = "ACTIVE"
_ERROR = "ERROR"
_GONE = "DELETED"

Member = tuple[str, int, str]
"""(address, protocol_port, subnet_id)."""
PortKey = tuple[str, int]
"""(Octavia protocol, port): ("TCP", 80)."""


class _StillPending(Exception):
    """Internal: a load balancer stayed PENDING_* past the deadline."""


class _Broken(Exception):
    """Internal: a load balancer went to ERROR."""


@dataclass
class _Listener:
    id: str
    key: PortKey
    pool: str | None = None
    persistence: tuple[str, int | None] | None = None
    """Its pool's session persistence."""


@dataclass
class _Lb:
    id: str
    key: str
    vip: str
    status: str
    listeners: dict[PortKey, _Listener] = field(default_factory=dict)


@dataclass(frozen=True)
class _Want:
    key: str
    vip: str
    ports: dict[PortKey, frozenset[Member]]
    affinity: int
    """sessionAffinity ClientIP's timeout (0: none)."""


@dataclass
class _Outcome:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    pending: bool = False
    error: ControlPlaneError | None = None


@dataclass(frozen=True)
class _Subnets:
    """The node networks' IPv4 subnets as the last sync read them."""

    by_switch: dict[str, list[tuple[ipaddress.IPv4Network, str]]]


def lb_name(key: str) -> str:
    """``ovn-underlay:<namespace>/<name>``."""
    return NAME_PREFIX + key


def child_name(key: str, port: PortKey) -> str:
    """The name of a listener and of its pool: ``ovn-underlay:<key>:<protocol>:<port>``."""
    return f"{NAME_PREFIX}{key}:{port[0].lower()}:{port[1]}"


def description(key: str) -> str:
    """The description that marks a load balancer as the one of Service ``key``."""
    return json.dumps({"ovn-underlay": MARK_KIND, "service": key}, sort_keys=True)


def _key_of(lb: Mapping[str, Any]) -> str | None:
    """The Service of one of our load balancers (None: not ours)."""
    if TAG not in (lb.get("tags") or ()):
        return None
    try:
        mark = json.loads(lb.get("description") or "")
    except ValueError:
        return None
    if not isinstance(mark, dict) or mark.get("ovn-underlay") != MARK_KIND:
        return None
    key = mark.get("service")
    return key if isinstance(key, str) and lb.get("name") == lb_name(key) else None


def _persistence_of(pool: Mapping[str, Any]) -> tuple[str, int | None] | None:
    sp = pool.get("session_persistence")
    if not sp or not sp.get("type"):
        return None
    timeout = sp.get("persistence_timeout")
    return str(sp["type"]), int(timeout) if timeout is not None else None


class OctaviaLoadBalancers:
    """The :class:`~ovn_underlay.control.services.ServicesBackend` on Octavia (OVN provider)."""

    def __init__(self, neutron: NeutronControlPlane, service_subnet: str, workers: int = 8,
                 pending_timeout: float = 60.0) -> None:
        """Talk to Octavia through ``neutron``'s connection; VIPs on ``service_subnet``
        (a Neutron subnet's name or id); ``workers`` Services converged at once; a
        PENDING load balancer waited for ``pending_timeout`` seconds."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._neutron = neutron
        self._service_subnet = service_subnet
        self._workers = workers
        self._pending_timeout = pending_timeout
        self._subnet: dict[str, str] | None = None
        self._subnets = _Subnets({})
        self._persistence: bool | None = None
        self._probe_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.last_result = SyncResult()
        """What the last sync or delete did, also when it raised."""
        self.writes = 0
        """Octavia and Neutron write requests sent so far (POST, PUT, DELETE)."""

    # --- the interface -------------------------------------------------------------------

    def sync(self, services: Iterable[ServiceState], switches: Mapping[str, str],
             complete: bool) -> SyncResult:
        """Make our load balancers match ``services`` (see the module docstring).

        With ``complete``, our load balancers of any other Service are deleted (cascade).
        Raises :class:`ServicesPending` after converging all the others when some load
        balancers stayed PENDING; any other failure of a Service is raised after the
        others are done (the first one; each is logged).
        """
        given = {s.key: s for s in services}
        writes = self.writes
        self._subnets = self._read_subnets(switches)
        subnet = self._vip_subnet()
        found = self._list_ours()
        tasks: list[Callable[[], _Outcome]] = []
        for key, state in sorted(given.items()):
            want = self._want(state)
            lbs = found.get(key, [])
            if want is None:
                tasks.append(partial(self._delete_all, lbs))
            else:
                tasks.append(partial(self._converge, want, lbs, subnet))
        if complete:
            for key in sorted(found.keys() - given.keys()):
                tasks.append(partial(self._delete_all, found[key]))
        return self._run(tasks, [*sorted(given), *(sorted(found.keys() - given.keys())
                                                   if complete else [])], writes)

    def delete(self, keys: Iterable[str]) -> SyncResult:
        """Delete (cascade) our load balancers of the Services ``keys`` and wait until
        they are gone; idempotent."""
        wanted = set(keys)
        writes = self.writes
        found = self._list_ours(listeners=False)
        names = sorted(k for k in wanted if k in found)
        tasks: list[Callable[[], _Outcome]] = [partial(self._delete_all, found[k])
                                               for k in names]
        return self._run(tasks, names, writes)

    def limits(self, state: ServiceState) -> tuple[str, ...]:
        """What Octavia's OVN provider does not do of ``state``, as plain sentences."""
        said: list[str] = []
        if len(state.cluster_ips) > 1:
            said.append(f"only the first ClusterIP {state.cluster_ips[0]} is served through "
                        "Octavia (one VIP per load balancer)")
        if state.affinity_timeout > 0:
            if self._persistence is None:
                said.append("sessionAffinity ClientIP is not applied yet: whether this OVN "
                            "provider applies SOURCE_IP session persistence is checked on "
                            "a TCP pool, and none has been checked")
            elif not self._persistence:
                said.append("sessionAffinity ClientIP is not applied: this Octavia OVN "
                            "provider accepts SOURCE_IP session persistence but does not "
                            "write it to OVN (it does from ovn-octavia-provider 5.0)")
            elif any(p.protocol == "tcp" for p in state.ports):
                said.append("sessionAffinity ClientIP on TCP ports keeps a client for "
                            f"{TCP_PERSISTENCE_TIMEOUT} s, not "
                            f"{state.affinity_timeout} s: Octavia takes no timeout for TCP "
                            "pools")
            elif state.affinity_timeout > MAX_AFFINITY_TIMEOUT:
                said.append(f"sessionAffinity ClientIP keeps a client for "
                            f"{MAX_AFFINITY_TIMEOUT} s at most (OVN's cap), not "
                            f"{state.affinity_timeout} s")
        if state.local_only:
            said.append("internalTrafficPolicy Local is not applied through Octavia: every "
                        "client reaches every endpoint")
        for port in state.ports:
            if not port.endpoints:
                said.append(f"port {port.protocol.upper()} {port.port} has no ready "
                            "endpoints: the OVN provider drops its VIP, so connections "
                            "time out instead of being refused")
        skipped = sorted({e.ip for p in state.ports for e in p.endpoints
                          if not self._on_node_network(e.ip)})
        if skipped and self._subnets.by_switch:
            said.append(f"endpoints {', '.join(skipped)} are on no node network, so they "
                        "get no Octavia member (the provider needs the member's subnet)")
        return tuple(said)

    # --- desired state -------------------------------------------------------------------

    def _want(self, state: ServiceState) -> _Want | None:
        """What the Service asks of Octavia; None without an IPv4 ClusterIP."""
        vips = [ip for ip in state.cluster_ips if ipaddress.ip_address(ip).version == 4]
        if not vips:
            return None
        ports: dict[PortKey, frozenset[Member]] = {}
        member_subnet = self._vip_subnet()["id"]
        for port in state.ports:
            key = (port.protocol.upper(), port.port)
            members = {(e.ip, e.port, member_subnet) for e in port.endpoints
                       if self._on_node_network(e.ip)}
            ports[key] = frozenset(members)
        return _Want(state.key, vips[0], ports, max(0, state.affinity_timeout))

    def _persistence_for(self, want: _Want,
                         protocol: str) -> tuple[str, int | None] | None:
        """The session persistence of ``want``'s pool of ``protocol`` (None: none):
        SOURCE_IP where the provider applies it, with the timeout where Octavia takes
        one (not on TCP pools)."""
        if want.affinity <= 0 or not self._persistence:
            return None
        if protocol == "TCP":
            return ("SOURCE_IP", None)
        return ("SOURCE_IP", min(want.affinity, MAX_AFFINITY_TIMEOUT))

    def _on_node_network(self, ip: str) -> bool:
        """Whether a node network's subnet holds ``ip``."""
        address = ipaddress.ip_address(ip)
        return any(address in net for nets in self._subnets.by_switch.values()
                   for net, _ in nets)

    # --- reads ---------------------------------------------------------------------------

    @property
    def _lb(self) -> Any:
        return self._neutron.conn.load_balancer

    def _read_subnets(self, switches: Mapping[str, str]) -> _Subnets:
        """The IPv4 subnets of the node networks named in ``switches`` (two requests)."""
        wanted = set(switches.values())
        if not wanted:
            return _Subnets({})
        conn = self._neutron.conn
        nets = self._neutron._call("list the networks", lambda: list(conn.network.networks()))
        ids = {str(n.id): str(n.name) for n in nets if n.name in wanted}
        subnets = self._neutron._call("list the subnets", lambda: list(conn.network.subnets()))
        by_switch: dict[str, list[tuple[ipaddress.IPv4Network, str]]] = {}
        for sub in subnets:
            if str(sub.network_id) in ids and sub.ip_version == 4:
                by_switch.setdefault(ids[str(sub.network_id)], []).append(
                    (ipaddress.IPv4Network(sub.cidr), str(sub.id)))
        return _Subnets(by_switch)

    def _vip_subnet(self) -> dict[str, str]:
        """The Service subnet's id, network and project (looked up once)."""
        if self._subnet is None:
            conn = self._neutron.conn
            found = self._neutron._call(
                f"look up the Service subnet {self._service_subnet}",
                lambda: conn.network.find_subnet(self._service_subnet))
            if found is None:
                raise ControlPlaneError(f"the Service subnet {self._service_subnet!r} does "
                                        "not exist in Neutron")
            self._subnet = {"id": str(found.id), "network": str(found.network_id),
                            "project": str(found.project_id or "")}
        return self._subnet

    def _project(self) -> dict[str, str]:
        """``project_id`` for a create: the Service subnet's without authentication."""
        if self._neutron.creds.auth_type == AUTH_NONE and self._subnet and \
                self._subnet["project"]:
            return {"project_id": self._subnet["project"]}
        return {}

    def _send(self, method: str, path: str, action: str, body: Any = None,
              params: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        """One request to Octavia: its status and JSON body (a fault's text when it
        failed).  Unreachable: ControlPlaneUnavailable."""
        if method != "get":
            with self._count_lock:
                self.writes += 1
        kwargs: dict[str, Any] = {"raise_exc": False}
        if body is not None:
            kwargs["json"] = body
        if params:
            kwargs["params"] = dict(params)
        reply = self._neutron._call(action, lambda: getattr(self._lb, method)(path, **kwargs))
        status = int(reply.status_code)
        if not reply.content:
            return status, None
        try:
            data = reply.json()
        except ValueError:
            data = reply.text
        return status, data

    def _fail(self, status: int, data: Any, action: str) -> ControlPlaneError:
        fault = data.get("faultstring", data) if isinstance(data, dict) else data
        text = f"{action}: Octavia answered {status}: {str(fault).strip()}"
        if status >= 500 and status != 501:
            return ControlPlaneUnavailable(text)
        if status == 409:
            return Conflict(text)
        return ControlPlaneError(text)

    def _get(self, path: str, action: str, params: Mapping[str, Any] | None = None) -> Any:
        status, data = self._send("get", path, action, params=params)
        if status != 200:
            raise self._fail(status, data, action)
        return data

    def _list(self, path: str, key: str, action: str,
              params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a collection, following Octavia's ``next`` links."""
        data = self._get(path, action, params)
        items: list[dict[str, Any]] = list(data.get(key) or [])
        while True:
            nxt = next((link["href"] for link in data.get(f"{key}_links") or []
                        if link.get("rel") == "next"), None)
            if nxt is None:
                return items
            data = self._get(nxt, action)
            items += data.get(key) or []

    def _list_ours(self, listeners: bool = True) -> dict[str, list[_Lb]]:
        """Our load balancers by Service, with their listeners and pools."""
        ours: dict[str, list[_Lb]] = {}
        by_id: dict[str, _Lb] = {}
        for lb in self._list("/lbaas/loadbalancers", "loadbalancers",
                             "list our load balancers", {"tags": TAG}):
            key = _key_of(lb)
            if key is not None:
                found = _Lb(str(lb["id"]), key, str(lb.get("vip_address") or ""),
                            str(lb.get("provisioning_status") or ""))
                ours.setdefault(key, []).append(found)
                by_id[found.id] = found
        if not listeners or not by_id:
            return ours
        for item in self._list("/lbaas/listeners", "listeners", "list our listeners",
                               {"tags": TAG}):
            for ref in item.get("loadbalancers") or ():
                lb_obj = by_id.get(str(ref.get("id")))
                if lb_obj is not None:
                    port = (str(item["protocol"]), int(item["protocol_port"]))
                    lb_obj.listeners[port] = _Listener(str(item["id"]), port,
                                                       item.get("default_pool_id"))
        pools = {str(p["id"]): p for p in self._list("/lbaas/pools", "pools",
                                                     "list our pools", {"tags": TAG})}
        for lb_obj in by_id.values():
            for listener in lb_obj.listeners.values():
                pool = pools.get(str(listener.pool))
                if pool is None:
                    listener.pool = None  # not ours (or gone): ours is made
                else:
                    listener.persistence = _persistence_of(pool)
        return ours

    def _members(self, pool: str) -> dict[Member, str]:
        """The members of ``pool``: their ids by (address, port, subnet)."""
        return {(str(m["address"]), int(m["protocol_port"]), str(m.get("subnet_id") or "")):
                str(m["id"]) for m in self._list(f"/lbaas/pools/{pool}/members", "members",
                                                 f"list the members of pool {pool}")}

    # --- waiting and writing --------------------------------------------------------------

    def _status(self, lb: str) -> str:
        status, data = self._send("get", f"/lbaas/loadbalancers/{lb}",
                                  f"read load balancer {lb}")
        if status == 404:
            return _GONE
        if status != 200:
            raise self._fail(status, data, f"read load balancer {lb}")
        return str(data["loadbalancer"]["provisioning_status"])

    def _wait(self, lb: str) -> str:
        """Poll until the load balancer is not PENDING_*, for ``pending_timeout`` at most
        (then _StillPending); its status (DELETED: gone)."""
        deadline = time.monotonic() + self._pending_timeout
        delay = POLL_FIRST
        while True:
            status = self._status(lb)
            if not status.startswith(_PENDING):
                return status
            if time.monotonic() >= deadline:
                raise _StillPending(lb)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * POLL_GROWTH, POLL_MAX)

    def _write(self, lb: str, method: str, path: str, action: str,
               body: Any = None, params: Mapping[str, Any] | None = None,
               accept: tuple[int, ...] = ()) -> tuple[int, Any]:
        """A change to load balancer ``lb`` (or its children), then wait for it to be
        ACTIVE again; a 409 for an immutable (PENDING) load balancer waits for ACTIVE and
        tries again, for ``pending_timeout`` at most.  Statuses in ``accept`` are returned
        instead of raised."""
        deadline = time.monotonic() + self._pending_timeout
        while True:
            status, data = self._send(method, path, action, body, params)
            if _immutable(status, data):
                state = self._wait(lb)
                if state == _ERROR:
                    raise _Broken(lb)
                if time.monotonic() >= deadline:
                    raise _StillPending(lb)
                continue
            if status >= 300 and status not in accept:
                raise self._fail(status, data, action)
            after = self._wait(lb)
            if after == _ERROR:
                raise _Broken(lb)
            return status, data

    # --- one Service ----------------------------------------------------------------------

    def _converge(self, want: _Want, lbs: list[_Lb], subnet: Mapping[str, str]) -> _Outcome:
        out = _Outcome()
        try:
            keep = next((lb for lb in lbs if lb.vip == want.vip), None)
            for extra in lbs:
                if extra is not keep:
                    self._delete_lb(extra.id)
                    out.deleted += 1
            for attempt in (1, 2):
                try:
                    self._converge_one(want, keep, subnet, out)
                    break
                except _Broken:
                    if attempt == 2:
                        raise
                    LOG.warning("the Octavia load balancer of Service %s went to ERROR; "
                                "recreating it", want.key)
                    keep = self._find(want.key, want.vip)
        except _StillPending:
            LOG.warning("the Octavia load balancer of Service %s stayed PENDING beyond %g s;"
                        " left for a retry", want.key, self._pending_timeout)
            out.pending = True
        except _Broken:
            out.error = ControlPlaneError(f"the Octavia load balancer of Service {want.key} "
                                          "went to ERROR again after being recreated")
        except ControlPlaneError as exc:
            out.error = exc
        return out

    def _find(self, key: str, vip: str) -> _Lb | None:
        """Service ``key``'s load balancer on ``vip`` as Octavia holds it now."""
        return next((lb for lb in self._list_ours().get(key, []) if lb.vip == vip), None)

    def _converge_one(self, want: _Want, keep: _Lb | None, subnet: Mapping[str, str],
                      out: _Outcome) -> None:
        if keep is not None:
            status = keep.status
            if status.startswith(_PENDING):
                status = self._wait(keep.id)
                if status == _ACTIVE:  # what it was changed to is read again
                    keep = self._find(want.key, want.vip)
                    status = keep.status if keep is not None else _GONE
            if status == _ERROR and keep is not None:
                LOG.warning("the Octavia load balancer %s of Service %s is in ERROR: "
                            "deleting it (cascade) and making it again on %s", keep.id,
                            want.key, want.vip)
                self._delete_lb(keep.id, vip=want.vip, subnet=subnet["id"])
                out.deleted += 1
                keep = None
            elif status == _GONE:
                keep = None
        if keep is None:
            lb = self._create(want, subnet)
            out.created += 1
        else:
            lb = keep.id
            if self._update(keep, want):
                out.updated += 1
        if want.affinity and self._persistence is None and self._probe(lb):
            keep = self._find(want.key, want.vip)  # persistence is known now: set it
            if keep is not None and self._update(keep, want) and \
                    out.created == 0:
                out.updated += 1

    def _pool_body(self, want: _Want, port: PortKey) -> dict[str, Any]:
        body: dict[str, Any] = {"name": child_name(want.key, port), "protocol": port[0],
                                "lb_algorithm": ALGORITHM, "tags": [TAG]}
        sp = _sp_body(self._persistence_for(want, port[0]))
        if sp is not None:
            body["session_persistence"] = sp
        return body

    @staticmethod
    def _member_bodies(members: Iterable[Member]) -> list[dict[str, Any]]:
        return [{"address": ip, "protocol_port": port, "subnet_id": subnet, "tags": [TAG]}
                for ip, port, subnet in sorted(members)]

    def _create(self, want: _Want, subnet: Mapping[str, str]) -> str:
        """The fully populated load balancer of ``want``, ACTIVE; its id."""
        listeners = []
        for port, members in sorted(want.ports.items()):
            pool = self._pool_body(want, port)
            pool["members"] = self._member_bodies(members)
            listeners.append({"name": child_name(want.key, port), "protocol": port[0],
                              "protocol_port": port[1], "tags": [TAG], "default_pool": pool})
        body = {"loadbalancer": {"name": lb_name(want.key), "description": description(
            want.key), "provider": PROVIDER, "vip_address": want.vip, "vip_subnet_id":
            subnet["id"], "tags": [TAG], "listeners": listeners, **self._project()}}
        action = f"create the load balancer of Service {want.key} on {want.vip}"
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            status, data = self._send("post", "/lbaas/loadbalancers", action, body)
            if status < 300:
                lb = str(data["loadbalancer"]["id"])
                if self._wait(lb) == _ERROR:
                    raise _Broken(lb)
                return lb
            text = str(data)
            if attempt < CREATE_ATTEMPTS and ("already allocated" in text
                                              or "IpAddressAlreadyAllocated" in text):
                self._free_vip(want, subnet)
                continue
            raise self._fail(status, data, action)
        raise AssertionError("not reached")

    def _free_vip(self, want: _Want, subnet: Mapping[str, str]) -> None:
        """Wait until the VIP address is free; delete a VIP port left by a load balancer
        that is gone (see the module docstring); Conflict for any other holder."""
        conn = self._neutron.conn
        deadline = time.monotonic() + self._pending_timeout
        grace = time.monotonic() + LEFTOVER_GRACE
        while True:
            ports = self._neutron._call(
                f"look up the port holding {want.vip}", lambda: list(conn.network.ports(
                    fixed_ips=[f"ip_address={want.vip}", f"subnet_id={subnet['id']}"])))
            if not ports:
                return
            port = ports[0]
            name = str(port.name or "")
            owner = name[len(VIP_PORT_PREFIX):] if name.startswith(VIP_PORT_PREFIX) else ""
            if not owner:
                raise Conflict(f"ClusterIP {want.vip} of Service {want.key} is held by Neutron "
                               f"port {port.id} ({name or 'no name'}), not a load "
                               "balancer's VIP port")
            status = self._status(owner)
            if status != _GONE:
                if status.startswith(_PENDING) and time.monotonic() < deadline:
                    self._wait(owner)
                    continue
                raise Conflict(f"ClusterIP {want.vip} of Service {want.key} is the VIP of "
                               f"Octavia load balancer {owner} ({status})")
            if time.monotonic() >= grace:
                LOG.warning("deleting VIP port %s left by load balancer %s (gone), holding "
                            "ClusterIP %s of Service %s", port.id, owner, want.vip, want.key)
                with self._count_lock:
                    self.writes += 1
                self._neutron._call(f"delete the leftover VIP port {port.id}",
                                    conn.network.delete_port, port.id)
                continue
            if time.monotonic() >= deadline:
                raise _StillPending(owner)
            time.sleep(0.1)

    def _update(self, lb: _Lb, want: _Want) -> bool:
        """Write only what differs between ``lb`` and ``want``; whether anything was."""
        changed = False
        for port, listener in sorted(lb.listeners.items()):
            if port in want.ports:
                continue
            if listener.pool:
                self._write(lb.id, "delete", f"/lbaas/pools/{listener.pool}",
                            f"delete pool {listener.pool} of Service {want.key}",
                            accept=(404,))
            self._write(lb.id, "delete", f"/lbaas/listeners/{listener.id}",
                        f"delete listener {listener.id} of Service {want.key}",
                        accept=(404,))
            changed = True
        for port, members in sorted(want.ports.items()):
            found = lb.listeners.get(port)
            if found is None:
                _, data = self._write(
                    lb.id, "post", "/lbaas/listeners", f"add listener {port} to Service "
                    f"{want.key}", {"listener": {
                        "name": child_name(want.key, port), "protocol": port[0],
                        "protocol_port": port[1], "loadbalancer_id": lb.id, "tags": [TAG],
                        **self._project()}})
                found = _Listener(str(data["listener"]["id"]), port)
                changed = True
            if found.pool is None:
                _, data = self._write(
                    lb.id, "post", "/lbaas/pools", f"add pool {port} to Service {want.key}",
                    {"pool": {**self._pool_body(want, port), "listener_id": found.id,
                              **self._project()}})
                found.pool = str(data["pool"]["id"])
                have: dict[Member, str] = {}
                changed = True
            else:
                have = self._members(found.pool)
                wanted = self._persistence_for(want, port[0])
                if found.persistence != wanted:
                    self._write(lb.id, "put", f"/lbaas/pools/{found.pool}",
                                f"set the session persistence of pool {found.pool}",
                                {"pool": {"session_persistence": _sp_body(wanted)}})
                    changed = True
            if have.keys() != members:
                self._set_members(lb.id, found.pool, have, members,
                                  f"{want.key} {port[0]} {port[1]}")
                changed = True
        return changed

    def _set_members(self, lb: str, pool: str, have: Mapping[Member, str],
                     members: frozenset[Member], what: str) -> None:
        """Make ``pool``'s members ``members``: one member added or removed is one
        request of its own (0.43 s to ACTIVE against 0.67 s for a batch, measured on the
        lab), more changes one batch member update (0.80 s against 0.92 s for a removal
        and an addition)."""
        added, removed = members - have.keys(), have.keys() - members
        base = f"/lbaas/pools/{pool}/members"
        if len(added) + len(removed) == 1 and added:
            self._write(lb, "post", base, f"add a member to pool {pool} ({what})",
                        {"member": self._member_bodies(added)[0]})
        elif len(added) + len(removed) == 1:
            member = have[next(iter(removed))]
            self._write(lb, "delete", f"{base}/{member}",
                        f"remove member {member} from pool {pool} ({what})", accept=(404,))
        else:
            self._write(lb, "put", base, f"set the members of pool {pool} ({what})",
                        {"members": self._member_bodies(members)})

    def _probe(self, lb: str) -> bool:
        """Find out whether the provider applies SOURCE_IP persistence (see the module
        docstring), on a TCP pool of ``lb``; whether it does (False: not known either)."""
        with self._probe_lock:
            if self._persistence is not None:
                return self._persistence
            pools = self._list("/lbaas/pools", "pools", "list the pools of a load balancer",
                               {"loadbalancer_id": lb, "tags": TAG})
            tcp = next((p for p in pools if p.get("protocol") == "TCP"), None)
            if tcp is None:
                return False
            path = f"/lbaas/pools/{tcp['id']}"
            status, data = self._write(
                lb, "put", path, "probe the provider's session persistence",
                {"pool": {"session_persistence": {"type": "HTTP_COOKIE"}}},
                accept=(400, 501))
            if status < 300:
                self._write(lb, "put", path, "undo the session persistence probe",
                            {"pool": {"session_persistence": _sp_body(
                                _persistence_of(tcp))}})
                self._persistence = False
            elif re.search(r"persistence", str(data), re.IGNORECASE):
                self._persistence = True
            else:
                LOG.warning("the session persistence probe got %s: %s", status, data)
                return False
            LOG.info("the Octavia OVN provider %s SOURCE_IP session persistence",
                     "applies" if self._persistence else "does not apply")
            return self._persistence

    # --- deletes --------------------------------------------------------------------------

    def _delete_all(self, lbs: list[_Lb]) -> _Outcome:
        out = _Outcome()
        try:
            for lb in lbs:
                self._delete_lb(lb.id)
                out.deleted += 1
        except _StillPending:
            out.pending = True
        except ControlPlaneError as exc:
            out.error = exc
        return out

    def _delete_lb(self, lb: str, vip: str = "", subnet: str = "") -> None:
        """Delete ``lb`` with cascade and wait until it is gone (and, with ``vip``, until
        no port holds the VIP); a PENDING one is waited for first (``pending_timeout``
        for each wait)."""
        action = f"delete load balancer {lb}"
        deadline = time.monotonic() + self._pending_timeout
        while True:
            status, data = self._send("delete", f"/lbaas/loadbalancers/{lb}", action,
                                      params={"cascade": "true"})
            if _immutable(status, data) and time.monotonic() < deadline:
                if self._wait(lb) == _GONE:
                    break
                continue
            if status >= 300 and status != 404:
                raise self._fail(status, data, action)
            break
        after = self._wait(lb)
        if after != _GONE:
            raise ControlPlaneError(f"{action}: Octavia left it {after}")
        if vip:
            conn = self._neutron.conn
            deadline = time.monotonic() + self._pending_timeout
            while self._neutron._call(f"look up the port holding {vip}", lambda: list(
                    conn.network.ports(fixed_ips=[f"ip_address={vip}",
                                                  f"subnet_id={subnet}"]))):
                if time.monotonic() >= deadline:
                    raise _StillPending(lb)
                time.sleep(0.1)

    # --- running ---------------------------------------------------------------------------

    def _run(self, tasks: list[Callable[[], _Outcome]], keys: list[str],
             writes: int) -> SyncResult:
        if not tasks:
            return SyncResult()
        with ThreadPoolExecutor(max_workers=min(self._workers, len(tasks))) as pool:
            outcomes = list(pool.map(lambda task: task(), tasks))
        pending = [key for key, out in zip(keys, outcomes, strict=True) if out.pending]
        errors = [(key, out.error) for key, out in zip(keys, outcomes, strict=True)
                  if out.error is not None]
        for key, error in errors:
            LOG.warning("Service %s: %s", key, error)
        result = SyncResult(created=sum(o.created for o in outcomes),
                            updated=sum(o.updated for o in outcomes),
                            deleted=sum(o.deleted for o in outcomes),
                            transactions=self.writes - writes)
        self.last_result = result
        if errors:
            raise errors[0][1]
        if pending:
            raise ServicesPending(pending, self._pending_timeout)
        return result


def _immutable(status: int, data: Any) -> bool:
    """Whether Octavia refused a change because the load balancer is PENDING_* (409,
    "... is immutable and cannot be updated"): a wait, not an error."""
    return status == 409 and "immutable" in str(data).lower()


def _sp_body(sp: tuple[str, int | None] | None) -> dict[str, Any] | None:
    if sp is None:
        return None
    return {"type": sp[0], **({"persistence_timeout": sp[1]} if sp[1] is not None else {})}
