"""The node's local Open vSwitch database (Open_vSwitch schema), through ovsdbapp.

Where things are written:

* A pod port's ``external_ids`` (``iface-id`` and friends) go on the
  **Interface** row, where ovn-controller looks for them; they are not mirrored
  on the Port.  :meth:`Ovs.port` and :meth:`Ovs.ports_with` read both rows
  (Interface keys win), so ids written by other tools on the Port show too.
* Node settings (``ovn-remote``, ``ovn-encap-ip``, ...) are the
  ``external_ids`` of the single Open_vSwitch row (:meth:`Ovs.get_config`).

Transactions commit like ``ovs-vsctl --no-wait``: they do not wait for
ovs-vswitchd to apply them (ovsdbapp's default would block for ``timeout`` when
no ovs-vswitchd runs).  Use :meth:`Ovs.wait_for_ofport` where the datapath
port must exist, :meth:`Ovs.wait_applied` where a deleted one must be gone.
Map columns are merged key by key, never replaced, so keys that
ovn-controller adds (``ovn-installed``) survive a retried call.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ovs.db import idl as ovs_idl
from ovsdbapp import exceptions as ovsdbapp_exc
from ovsdbapp.backend.ovs_idl import command, idlutils, transaction
from ovsdbapp.backend.ovs_idl import connection as ovs_connection
from ovsdbapp.schema.open_vswitch import impl_idl

from ovn_underlay.config import DEFAULT_OVSDB
from ovn_underlay.ovsdb import OwnConnection

SCHEMA = "Open_vSwitch"
# The only columns monitored: enough for every method here, and none of the
# ones ovs-vswitchd rewrites every few seconds (statistics, status, ...).
_COLUMNS = {
    "Open_vSwitch": ["bridges", "external_ids", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "other_config", "external_ids"],
    "Port": ["name", "interfaces", "tag", "trunks", "vlan_mode", "external_ids"],
    "Interface": ["name", "type", "external_ids", "ofport", "error"],
}
_POLL_INTERVAL = 0.02


class OvsError(Exception):
    """An OVS database request failed."""


class OvsUnavailable(OvsError):
    """The OVS database cannot be reached (or stopped answering)."""


@dataclass(frozen=True)
class PortInfo:
    """One port as the database has it."""

    name: str
    tag: int | None
    external_ids: dict[str, str]
    """The Port's external_ids updated with its Interface's."""
    bridge: str | None
    ofport: int | None
    """The OpenFlow port number; None until ovs-vswitchd assigns one, -1 on error."""


class _Transaction(transaction.Transaction):  # type: ignore[misc]
    """A transaction that does not wait for ovs-vswitchd (``ovs-vsctl --no-wait``)."""

    def pre_commit(self, txn: Any) -> None:
        """Give ovsdbapp's add_port the set it records new interfaces in."""
        txn.expected_ifaces = set()


class _Idl(ovs_connection.OvsdbIdl):  # type: ignore[misc]
    """The IDL, waking :meth:`wait_for_cfg` whenever ovs-vswitchd's ``cur_cfg`` moves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._applied = threading.Condition()
        self._cur_cfg = 0

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        """Called by the IDL thread (holding the connection's lock) for every row change."""
        if event != ovs_idl.ROW_DELETE and row._table.name == SCHEMA:
            self._note_cfg(row.cur_cfg)

    def _note_cfg(self, cur_cfg: int) -> None:
        with self._applied:
            if cur_cfg > self._cur_cfg:
                self._cur_cfg = cur_cfg
                self._applied.notify_all()

    def wait_for_cfg(self, wanted: int, applied: int, timeout: float) -> bool:
        """Wait until ``cur_cfg`` reaches ``wanted`` (``applied``: its value as last read).

        Takes only its own lock, never the connection's: the IDL thread takes
        them in the other order.
        """
        self._note_cfg(applied)
        deadline = time.monotonic() + timeout
        with self._applied:
            while self._cur_cfg < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._applied.wait(remaining)
            return True


class _RequestReport(command.BaseCommand):  # type: ignore[misc]
    """Increment ``next_cfg``: ovs-vswitchd copies it to ``cur_cfg`` once it applied the txn."""

    def run_idl(self, txn: Any) -> None:
        _root_row(self.api.tables).increment("next_cfg")


class _Api(OwnConnection, impl_idl.OvsdbIdl):  # type: ignore[misc]
    """ovsdbapp's Open_vSwitch API with a per-instance connection and no vswitchd wait."""

    def create_transaction(self, check_error: bool = False, log_errors: bool = True,
                           **_: Any) -> _Transaction:
        """A transaction that commits without waiting for ovs-vswitchd."""
        return _Transaction(self, self.ovsdb_connection, check_error=check_error,
                            log_errors=log_errors)


class Ovs:
    """A connection to one Open_vSwitch database; close() it when done."""

    def __init__(self, connection: str = DEFAULT_OVSDB, timeout: float = 10.0) -> None:
        """Connect to ``connection`` and load the monitored tables.

        Raises OvsUnavailable (naming ``connection``) if the server cannot be
        reached: at once for a missing unix socket or a refused TCP port,
        after the system's connect timeout for an unreachable host, or after
        ``timeout`` seconds if the server does not send its contents.
        """
        self.connection = connection
        self.timeout = timeout
        self._api = _connect(connection, timeout)

    def close(self) -> None:
        """Stop the connection's thread and close it."""
        self._api.ovsdb_connection.stop(self.timeout)

    def ensure_bridge(self, name: str, datapath_type: str,
                      other_config: dict[str, str] | None = None) -> None:
        """Create bridge ``name`` if missing; set its datapath type and other_config keys."""
        with self._transaction(f"ensuring bridge {name}") as txn:
            txn.add(self._api.add_br(name, may_exist=True, datapath_type=datapath_type))
            if other_config:
                txn.add(self._api.db_set("Bridge", name, ("other_config", other_config)))

    def bridge_datapath_type(self, name: str) -> str | None:
        """The datapath_type of bridge ``name`` ("" means "system"); None if no such bridge."""
        with self._read() as tables:
            bridge = _bridge_row(tables, name)
            return None if bridge is None else str(bridge.datapath_type)

    def bridge_other_config(self, name: str) -> dict[str, str]:
        """The other_config of bridge ``name``; empty if no such bridge."""
        with self._read() as tables:
            bridge = _bridge_row(tables, name)
            return {} if bridge is None else dict(bridge.other_config)

    def add_access_port(self, bridge: str, port: str, tag: int, external_ids: dict[str, str],
                        internal: bool = False) -> None:
        """Add (or update) ``port`` on ``bridge`` as an access port of VLAN ``tag``.

        ``external_ids`` are merged into the Interface's.  ``internal`` makes it
        an OVS internal port (ovs-vswitchd creates the device); otherwise it is
        an existing device of that name (type "").  OvsError if the port is on
        another bridge.
        """
        if not 0 <= tag <= 4095:
            raise OvsError(f"VLAN tag {tag} of port {port} is outside 0..4095")
        self._check_port_bridge(port, bridge)
        with self._transaction(f"adding access port {port} to {bridge}") as txn:
            txn.add(self._api.add_port(bridge, port, may_exist=True))
            txn.add(self._api.db_set("Port", port, ("tag", tag), ("vlan_mode", [])))
            txn.add(self._api.db_set("Interface", port, ("external_ids", external_ids),
                                     ("type", "internal" if internal else "")))

    def add_trunk_port(self, bridge: str, port: str) -> None:
        """Add ``port`` (an existing NIC) to ``bridge`` carrying all VLANs, untagged config."""
        self._check_port_bridge(port, bridge)
        with self._transaction(f"adding trunk port {port} to {bridge}") as txn:
            txn.add(self._api.add_port(bridge, port, may_exist=True))
            txn.add(self._api.db_set("Port", port, ("tag", []), ("trunks", []),
                                     ("vlan_mode", [])))
            txn.add(self._api.db_set("Interface", port, ("type", "")))

    def del_port(self, port: str) -> None:
        """Remove ``port`` from its bridge; a missing port is fine.

        The transaction also asks ovs-vswitchd to report when it has applied it
        (``next_cfg``), for :meth:`wait_applied`.
        """
        with self._transaction(f"deleting port {port}") as txn:
            txn.add(self._api.del_port(port, if_exists=True))
            txn.add(_RequestReport(self._api))

    def wait_applied(self, timeout: float) -> bool:
        """Wait until ovs-vswitchd has applied every change that asked for a report so far.

        Returns False if it has not within ``timeout`` seconds (or none runs).
        """
        with self._read() as tables:
            root = _root_row(tables)
            wanted, applied = root.next_cfg, root.cur_cfg
        watcher: _Idl = self._api.ovsdb_connection.idl
        return watcher.wait_for_cfg(wanted, applied, timeout)

    def port(self, port: str) -> PortInfo | None:
        """The port named ``port``, None if there is none."""
        with self._read() as tables:
            for row in tables["Port"].rows.values():
                if row.name == port:
                    return _port_info(row, _bridge_of(tables, row))
        return None

    def ports_with(self, key: str) -> list[PortInfo]:
        """Ports whose Interface or Port external_ids has ``key``, sorted by name."""
        with self._read() as tables:
            found = [_port_info(row, _bridge_of(tables, row))
                     for row in tables["Port"].rows.values()]
        return sorted((p for p in found if key in p.external_ids), key=lambda p: p.name)

    def userspace_interfaces(self) -> list[tuple[str, str]]:
        """(name, type) of every Interface on a bridge of the userspace (netdev) datapath."""
        with self._read() as tables:
            return sorted((str(iface.name), str(iface.type))
                          for bridge in tables["Bridge"].rows.values()
                          if bridge.datapath_type == "netdev"
                          for port in bridge.ports for iface in port.interfaces)

    def wait_for_ofport(self, port: str, timeout: float | None = None) -> int:
        """Wait until ovs-vswitchd gives ``port`` an OpenFlow port number; return it.

        OvsError after ``timeout`` (default: the connection's) with the
        Interface's error if ovs-vswitchd reported one (ofport -1).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            info = self.port(port)
            if info is not None and info.ofport is not None and info.ofport > 0:
                return info.ofport
            if time.monotonic() >= deadline:
                raise OvsError(f"port {port} got no OpenFlow port number: "
                               f"{self._interface_error(port) or 'no ovs-vswitchd?'}")
            time.sleep(_POLL_INTERVAL)

    def get_config(self) -> dict[str, str]:
        """The external_ids of the Open_vSwitch row (the node's OVN settings)."""
        with self._read() as tables:
            return dict(_root_row(tables).external_ids)

    def set_config(self, values: dict[str, str]) -> None:
        """Set these keys of the Open_vSwitch row's external_ids (others are kept)."""
        self._require_root()
        with self._transaction("setting Open_vSwitch external_ids") as txn:
            txn.add(self._api.db_set(SCHEMA, ".", ("external_ids", values)))

    def remove_config(self, keys: Iterable[str]) -> None:
        """Remove these keys from the Open_vSwitch row's external_ids (missing ones are fine)."""
        keys = list(keys)
        self._require_root()
        with self._transaction("removing Open_vSwitch external_ids") as txn:
            txn.add(self._api.db_remove(SCHEMA, ".", "external_ids", *keys))

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[Any]:
        """A committed-on-exit transaction whose failures become OvsError("{what}: ...")."""
        try:
            with self._api.transaction(check_error=True, log_errors=False) as txn:
                yield txn
        except ovsdbapp_exc.TimeoutException as exc:
            raise OvsUnavailable(f"{what}: {self.connection} did not answer within "
                                 f"{self.timeout:g}s") from exc
        except idlutils.RowNotFound as exc:
            raise OvsError(f"{what}: {exc}") from exc
        except RuntimeError as exc:
            raise OvsError(f"{what}: {exc}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """The IDL's tables, held still (the connection's lock) for a consistent read."""
        with self._api.ovsdb_connection.lock:
            yield self._api.tables

    def _require_root(self) -> None:
        """Raise OvsError unless the Open_vSwitch row exists."""
        with self._read() as tables:
            _root_row(tables)

    def _check_port_bridge(self, port: str, bridge: str) -> None:
        """Raise OvsError if ``port`` exists on a bridge other than ``bridge``."""
        info = self.port(port)
        if info is not None and info.bridge not in (None, bridge):
            raise OvsError(f"port {port} is already on bridge {info.bridge}, not {bridge}")

    def _interface_error(self, name: str) -> str | None:
        """The error column of Interface ``name``, if set."""
        with self._read() as tables:
            for row in tables["Interface"].rows.values():
                if row.name == name and row.error:
                    return str(row.error[0])
        return None


def _connect(connection: str, timeout: float) -> _Api:
    """Fetch the schema from ``connection``, monitor _COLUMNS and start the IDL thread."""
    try:
        helper = idlutils.get_schema_helper(connection, SCHEMA)
    except Exception as exc:  # ovsdbapp raises a bare Exception when unreachable
        raise OvsUnavailable(f"cannot reach the OVS database at {connection}: {exc}") from exc
    for table, columns in _COLUMNS.items():
        helper.register_columns(table, columns)
    idl = _Idl(connection, helper)
    try:
        return _Api(ovs_connection.Connection(idl, timeout))
    except ovsdbapp_exc.OvsdbConnectionUnavailable as exc:
        idl.close()
        raise OvsUnavailable(f"the OVS database at {connection} did not send its contents "
                             f"within {timeout:g}s: {exc}") from exc


def _root_row(tables: Any) -> Any:
    """The single Open_vSwitch row; OvsError if the database was never initialised."""
    rows = list(tables[SCHEMA].rows.values())
    if not rows:
        raise OvsError("the Open_vSwitch table is empty: the database is not initialised "
                       "(ovs-vsctl init, or start ovs-vswitchd via ovs-ctl)")
    return rows[0]


def _bridge_row(tables: Any, name: str) -> Any | None:
    """The Bridge row named ``name``, None if there is none."""
    return next((b for b in tables["Bridge"].rows.values() if b.name == name), None)


def _bridge_of(tables: Any, port_row: Any) -> str | None:
    """The name of the bridge holding ``port_row``, None if none does."""
    for bridge in tables["Bridge"].rows.values():
        if port_row in bridge.ports:
            return str(bridge.name)
    return None


def _port_info(row: Any, bridge: str | None) -> PortInfo:
    """PortInfo of a Port row (its first Interface supplies ids and ofport)."""
    external_ids = dict(row.external_ids)
    ofport = None
    if row.interfaces:
        iface = row.interfaces[0]
        external_ids.update(iface.external_ids)
        ofport = iface.ofport[0] if iface.ofport else None
    return PortInfo(name=str(row.name), tag=row.tag[0] if row.tag else None,
                    external_ids=external_ids, bridge=bridge, ofport=ofport)
