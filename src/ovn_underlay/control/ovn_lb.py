"""ClusterIP Services as OVN Northbound load balancers (a :class:`ServicesBackend`).

Rows made here (``<key>`` is the Service's ``namespace/name``, ``<p>`` its protocol):

* ``Service_<key>_<p>``: one ``Load_Balancer`` per Service and protocol, its ``vips``
  mapping every ``CLUSTERIP:PORT`` of that protocol to ``ip:port,ip:port`` (all the
  Service's endpoints), in the ``Load_Balancer_Group`` :data:`GROUP`, which is attached
  to every node switch given.  ``options:reject=true``: a VIP without endpoints answers
  a TCP reset or an ICMP port unreachable at once instead of letting the client hang.
* ``Service_<key>_<p>_node_<node>`` for an ``internalTrafficPolicy: Local`` Service:
  one row per node, in that node's switch's ``load_balancer`` column only, holding only
  that node's endpoints; without ``reject`` a VIP with none drops the packets, which is
  what Kubernetes asks for.

UDP rows have ``options:ct_flush=true``, which asks ovn-controller to flush the
conntrack entries of a backend that is removed, so a UDP flow does not keep reaching it
(a flow sending while the new flows are installed can still re-create its entry on the
old backend: tests/functional/test_ovn_lb.py measures it).  TCP and SCTP rows have
none, so established connections to a removed backend run on, as with kube-proxy
(which clears the stale entries of UDP Services only): that is how a terminating pod
drains (tests/e2e/test_services_traffic.py: with ct_flush on the TCP row the lab's OVN
23.03.1 reset them at once).

A ClientIP affinity is source-IP selection, ``selection_fields=ip_src``: the backend is
chosen by hashing the client's address alone, so one client stays on one backend as
long as the set of backends does not change, with no timeout.  OVN's own affinity
(``options:affinity_timeout``, at most :data:`MAX_AFFINITY_TIMEOUT` seconds) is used
only with ``learned_affinity=True`` (and beyond that cap source-IP selection still):
on the lab's OVN 23.03.1 with OVS 3.1's userspace datapath, a client's first
connection to such a VIP never completes (every SYN of it dropped; later ones
connect at once).  A pod reaching itself through its Service is left to
OVN's default hairpin handling (the connection is SNATed to the VIP: the pod sees
the VIP as its peer; no option needed).

Rows are ours by ``external_ids`` (``ovn-underlay:role=service``,
``ovn-underlay:service=<key>``, ``ovn-underlay:node`` on per-node rows); the group,
whose table has no external_ids, is ours by its name.  Only such rows are read,
changed or deleted; the group and the per-node rows are added to switches, never
removed from one (a row deleted here leaves every switch and group by itself: the
references are weak).  Writes go through the connection of an
:class:`~ovn_underlay.control.ovn_nb.OvnNbControlPlane`, so once it is fenced they
carry its leader epoch like every other write.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ovs.db.data import Atom
from ovs.db.types import UuidType

from ovn_underlay.control.ovn_nb import KEY_ROLE, OvnNbControlPlane
from ovn_underlay.control.services import (
    MAX_AFFINITY_TIMEOUT,
    ServiceState,
    SyncResult,
)
from ovn_underlay.names import EXT_PREFIX

GROUP = "ovn-underlay-services"
ROLE_SERVICE = "service"
KEY_SERVICE = EXT_PREFIX + "service"
KEY_NODE = EXT_PREFIX + "node"
DEFAULT_BATCH = 500
"""Row writes after which a transaction is closed (a Service's are never split, so one
may hold a few more)."""

_LB = "Load_Balancer"
_LBG = "Load_Balancer_Group"
_LS = "Logical_Switch"
_BY_SERVICE = "ovn-underlay:by-service"
"""The name of the index of Load_Balancer rows by the Service owning them (see
:func:`_owner`) that an :class:`OvnLoadBalancers` adds to its connection's IDL replica,
which keeps it current from then on."""
_UUID_FIRST, _UUID_LAST = uuidlib.UUID(int=0), uuidlib.UUID(int=(1 << 128) - 1)


@dataclass(frozen=True)
class LbRow:
    """The columns of one of our Load_Balancer rows, as desired or as read."""

    name: str
    protocol: str
    vips: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, str], ...]
    selection_fields: tuple[str, ...]
    external_ids: tuple[tuple[str, str], ...]

    @property
    def node(self) -> str | None:
        """The node of a per-node row (None: a row of the group)."""
        return dict(self.external_ids).get(KEY_NODE)

    def columns(self) -> dict[str, Any]:
        """The row's columns as ovsdbapp takes them."""
        return {"name": self.name, "protocol": self.protocol, "vips": dict(self.vips),
                "options": dict(self.options),
                "selection_fields": list(self.selection_fields),
                "external_ids": dict(self.external_ids)}


def row_name(key: str, protocol: str, node: str | None = None) -> str:
    """``Service_<key>_<protocol>``, with ``_node_<node>`` for a per-node row."""
    name = f"Service_{key}_{protocol}"
    return name if node is None else f"{name}_node_{node}"


def desired_rows(service: ServiceState, nodes: Iterable[str],
                 learned_affinity: bool = False) -> list[LbRow]:
    """The rows ``service`` needs (per node in ``nodes`` if it is ``local_only``);
    ``learned_affinity``: OVN's affinity_timeout where the timeout allows it."""
    rows = []
    for protocol in sorted({p.protocol for p in service.ports}):
        ports = [p for p in service.ports if p.protocol == protocol]
        for node in sorted(nodes) if service.local_only else [None]:
            vips = sorted(
                (f"{ip}:{port.port}",
                 ",".join(f"{e.ip}:{e.port}" for e in port.endpoints
                          if node is None or e.node == node))
                for ip in service.cluster_ips for port in ports)
            options = {"reject": "false" if service.local_only else "true"}
            if protocol == "udp":
                options["ct_flush"] = "true"
            fields: tuple[str, ...] = ()
            if learned_affinity and 0 < service.affinity_timeout <= MAX_AFFINITY_TIMEOUT:
                options["affinity_timeout"] = str(service.affinity_timeout)
            elif service.affinity_timeout > 0:
                fields = ("ip_src",)
            ext = {KEY_ROLE: ROLE_SERVICE, KEY_SERVICE: service.key}
            if node is not None:
                ext[KEY_NODE] = node
            rows.append(LbRow(row_name(service.key, protocol, node), protocol, tuple(vips),
                              tuple(sorted(options.items())), fields,
                              tuple(sorted(ext.items()))))
    return rows


def _read_row(row: Any) -> LbRow:
    return LbRow(row.name, row.protocol[0] if row.protocol else "",
                 tuple(sorted(row.vips.items())), tuple(sorted(row.options.items())),
                 tuple(sorted(row.selection_fields)), tuple(sorted(row.external_ids.items())))


def _owner(entry: Any) -> tuple[int, str, Any]:
    """The key of a Load_Balancer row (an index entry: its uuid and external_ids) in the
    index :data:`_BY_SERVICE`: ``(1, <key>, uuid)`` for a row of ours of the Service
    ``<key>``, ``(0, "", uuid)`` for any other row.  The uuid makes every key unique:
    removing an entry, the index compares it with each entry of an equal key, which
    without it would be every row not ours."""
    ext = entry.external_ids
    if ext.get(KEY_ROLE) == ROLE_SERVICE and KEY_SERVICE in ext:
        return 1, ext[KEY_SERVICE], entry.uuid
    return 0, "", entry.uuid


def _refers(row: Any, column: str, ref: Any) -> bool:
    """Whether the reference set ``column`` of the IDL row ``row`` holds the uuid ``ref``.

    Looked up in the datum python-ovs stores for the column as the server sent it (a
    dict keyed by atoms; no transaction is open while a sync reads): one hash lookup,
    where reading ``row.<column>`` would build a row object for every reference (the
    group holds every Service's rows)."""
    return Atom(UuidType, ref) in row._data[column]


@dataclass(frozen=True)
class _View:
    """What a sync reads: our rows, the group, the given switches, where rows are."""

    ours: dict[str, list[tuple[Any, LbRow]]]
    """Our rows by name (more than one only if something duplicated a name)."""
    group: Any
    """The group's uuid (None: there is none yet)."""
    switches: dict[str, tuple[Any, bool]]
    """By node, for the given switches the NB has: the switch's uuid, whether it has the
    group."""
    wanted: dict[str, LbRow]
    """The rows wanted by name: those of the group, and the per-node ones of the nodes
    in ``switches``."""
    placed: frozenset[Any]
    """The uuids of our rows (the first of a name) already where their wanted row
    belongs: in the group, or in its node's switch's load_balancer column."""


class OvnLoadBalancers:
    """The :class:`~ovn_underlay.control.services.ServicesBackend` on OVN Northbound."""

    def __init__(self, plane: OvnNbControlPlane, batch: int = DEFAULT_BATCH,
                 learned_affinity: bool = False) -> None:
        """Write through ``plane``'s NB connection, ``batch`` row writes a transaction;
        ``learned_affinity``: ClientIP affinity as OVN's affinity_timeout (see the module
        docstring).

        Adds the index :data:`_BY_SERVICE` to the connection's replica unless it has it
        (under the connection's lock, filled with the Load_Balancer rows the replica
        holds: ~30 us a row), so no sync pays for building it.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._plane = plane
        self._api = plane._api
        self._batch = batch
        self._learned_affinity = learned_affinity
        with self._api.ovsdb_connection.lock:
            self._index = self._service_index()

    def sync(self, services: Iterable[ServiceState], switches: Mapping[str, str],
             complete: bool) -> SyncResult:
        """Make our rows match ``services`` (see ServicesBackend.sync).

        Rows already right are left alone; a changed row has only its changed columns
        written; missing rows are inserted, with the group or the node's switch; rows
        of the given Services that are no longer wanted (a protocol or a node gone),
        and with ``complete`` the rows of every other Service, are deleted.  Switches
        of ``switches`` missing the group get it; a switch the NB does not have is
        skipped (its node's rows are made when it appears).

        What is read: the group, the switches (every Logical_Switch's name) and, for each
        wanted row found, whether its group or switch holds it (one lookup each).  Our
        rows: with ``complete`` every Load_Balancer row is read; without it only those of
        the given Services, found through the index :data:`_BY_SERVICE`, so one
        Service's sync costs the same however many Services there are.
        """
        given = {s.key: s for s in services}
        keys = None if complete else given.keys()
        rows = [row for s in given.values()
                for row in desired_rows(s, switches, self._learned_affinity)]
        view = self._plane._read(lambda: self._view(switches, keys, rows))
        transactions = 0
        head = self._group_commands(view)
        if head:
            self._plane._commit(head, f"attach load balancer group {GROUP}")
            transactions += 1
            view = self._plane._read(lambda: self._view(switches, keys, rows))
        wanted = view.wanted
        ops: dict[str, list[list[Any]]] = {}
        created = updated = deleted = 0
        for name, found in sorted(view.ours.items()):
            service = dict(found[0][1].external_ids).get(KEY_SERVICE, "")
            extra = found[1:] if name in wanted else found
            ops.setdefault(service, []).extend(
                [self._api.db_destroy(_LB, uuid)] for uuid, _ in extra)
            deleted += len(extra)
        for name, row in sorted(wanted.items()):
            service = dict(row.external_ids)[KEY_SERVICE]
            if name not in view.ours:
                create = self._api.db_create_row(_LB, **row.columns())
                ops.setdefault(service, []).append([create, *self._attach(create, row, view)])
                created += 1
                continue
            uuid, current = view.ours[name][0]
            change = self._update(uuid, current, row, view)
            if change:
                ops.setdefault(service, []).append(change)
                updated += 1
        return SyncResult(created=created, updated=updated, deleted=deleted,
                          transactions=transactions + self._run(ops, "sync Services"))

    def delete(self, keys: Iterable[str]) -> SyncResult:
        """Delete every row of ours of the Services ``keys``; idempotent."""
        gone = set(keys)
        found = self._plane._read(lambda: self._ours(gone))
        ops: dict[str, list[list[Any]]] = {}
        for rows in found.values():
            for uuid, row in rows:
                service = dict(row.external_ids)[KEY_SERVICE]
                ops.setdefault(service, []).append([self._api.db_destroy(_LB, uuid)])
        return SyncResult(deleted=sum(map(len, ops.values())),
                          transactions=self._run(ops, "delete Services"))

    def limits(self, state: ServiceState) -> tuple[str, ...]:
        """Nothing: OVN's Northbound does all of a ServiceState."""
        del state
        return ()

    # --- reads (under the connection lock) --------------------------------------------

    def _ours(self, keys: Collection[str] | None) -> dict[str, list[tuple[Any, LbRow]]]:
        """Our rows by name: of the Services ``keys`` (looked up in the index
        :data:`_BY_SERVICE`), or of all (None: every Load_Balancer row read)."""
        table = self._api.tables[_LB].rows
        if keys is None:
            found = [row for row in table.values()
                     if row.external_ids.get(KEY_ROLE) == ROLE_SERVICE]
        else:
            found = []
            for key in keys:
                ids = {KEY_ROLE: ROLE_SERVICE, KEY_SERVICE: key}
                found += self._index.irange(table.IndexEntry(uuid=_UUID_FIRST, external_ids=ids),
                                      table.IndexEntry(uuid=_UUID_LAST, external_ids=ids))
        ours: dict[str, list[tuple[Any, LbRow]]] = {}
        for row in found:
            ours.setdefault(row.name, []).append((row.uuid, _read_row(row)))
        for rows in ours.values():
            rows.sort(key=lambda r: str(r[0]))
        return ours

    def _service_index(self) -> Any:
        """The replica's index :data:`_BY_SERVICE` of Load_Balancer rows, made (and filled
        with the rows there are) if it is not there yet."""
        table = self._api.tables[_LB].rows
        index = table.indexes.get(_BY_SERVICE)
        if index is None:
            index = table.index_create(_BY_SERVICE)
            index.add_column("external_ids", key=_owner)
            for row in table.values():
                index.add(row)
        return index

    def _view(self, switches: Mapping[str, str], keys: Collection[str] | None,
              rows: Iterable[LbRow]) -> _View:
        """The view, ``rows`` being every row the given Services want on any node of
        ``switches`` (those of nodes whose switch the NB lacks are left out)."""
        groups = [g for g in self._api.tables[_LBG].rows.values() if g.name == GROUP]
        group = groups[0] if groups else None
        by_name = {sw.name: sw for sw in self._api.tables[_LS].rows.values()}
        found = {node: by_name[switch] for node, switch in switches.items()
                 if switch in by_name}
        attached = {node: (sw.uuid, group is not None
                           and _refers(sw, "load_balancer_group", group.uuid))
                    for node, sw in found.items()}
        wanted = {row.name: row for row in rows if row.node is None or row.node in found}
        ours = self._ours(keys)
        placed = set()
        for name, row in wanted.items():
            if name in ours:
                uuid = ours[name][0][0]
                where = group if row.node is None else found[row.node]
                if where is not None and _refers(where, "load_balancer", uuid):
                    placed.add(uuid)
        return _View(ours=ours, group=None if group is None else group.uuid,
                     switches=attached, wanted=wanted, placed=frozenset(placed))

    # --- commands ---------------------------------------------------------------------

    def _group_commands(self, view: _View) -> list[Any]:
        """Create the group if there is none; attach it to the given switches missing it."""
        missing = [uuid for uuid, has_group in view.switches.values() if not has_group]
        if view.group is not None:
            return [self._api.db_add(_LS, uuid, "load_balancer_group", view.group)
                    for uuid in missing]
        if not missing:
            return [self._api.db_create(_LBG, name=GROUP)]
        group = self._api.db_create_row(_LBG, name=GROUP)
        return [group, *(self._api.db_add(_LS, uuid, "load_balancer_group", group)
                         for uuid in missing)]

    def _attach(self, ref: Any, row: LbRow, view: _View) -> list[Any]:
        """Put ``ref`` (a row of ``row``'s kind) where it belongs: group or node switch."""
        if row.node is None:
            return [self._api.db_add(_LBG, view.group, "load_balancer", ref)]
        return [self._api.db_add(_LS, view.switches[row.node][0], "load_balancer", ref)]

    def _update(self, uuid: Any, current: LbRow, row: LbRow, view: _View) -> list[Any]:
        """The changed columns of ``current`` and, if missing, its attachment."""
        new, old = row.columns(), current.columns()
        changed = [(column, value) for column, value in new.items() if old[column] != value]
        commands = [self._api.db_set(_LB, uuid, *changed)] if changed else []
        return commands if uuid in view.placed else [*commands, *self._attach(uuid, row, view)]

    def _run(self, ops: Mapping[str, list[list[Any]]], action: str) -> int:
        """Commit the row operations, a Service's all in one transaction; how many ran.

        A transaction takes whole Services until it holds ``batch`` row operations or
        more, so a Service never shows half its new rows (from one row for the cluster
        to rows per node, say) between two transactions.
        """
        transactions = 0
        commands: list[Any] = []
        count = 0
        for service in sorted(ops):
            for op in ops[service]:
                commands += op
            count += len(ops[service])
            if count >= self._batch:
                self._plane._commit(commands, action)
                transactions += 1
                commands, count = [], 0
        if commands:
            self._plane._commit(commands, action)
            transactions += 1
        return transactions
