"""The control plane on the OVN Northbound database, through ovsdbapp.

Rows made here, and how they are named (``<switch>`` is the node's switch):

* ``rtr-<switch>``: the router port, MAC ``0a:58:<gateway IP bytes>``, network
  ``<gateway>/<prefix>``;
* ``stor-<switch>``: the switch port of type ``router`` peering with it;
* ``<switch>-mgmt``: the management port (VLAN ``mgmt_tag``, second host address);
* ``<switch>-p<tag>``: the pool ports, children of the VM's port with VLAN ``<tag>``.

Every such row carries ``ovn-underlay:role`` in its external_ids (and the
ports ``ovn-underlay:switch``); the switch also records its subnet, router and
parent port, and a router carries ``ovn-underlay:role=router`` only if it was
created here, which is what lets :meth:`OvnNbControlPlane.destroy_node_network`
remove exactly what was made and keep a router that existed before.  The cluster
router that :meth:`OvnNbControlPlane.ensure_router` makes carries
``ovn-underlay:role=cluster-router`` instead and outlives its node networks.

Two keys of ``NB_Global.external_ids`` (the row is inserted if the database has
none) serialize and fence writers:

* ``ovn-underlay:routers-created`` counts the routers made here.  Each transaction
  creating a router increments it, conditional on the column as read (an OVSDB
  ``wait``), so of two clients creating a router of one name at once the second is
  refused, rerun on the refreshed replica, and finds the first one's router: OVN
  names are not unique, and without this both would insert one.
* ``ovn-underlay:leader-epoch`` is the epoch of the leader that last wrote.
  :meth:`OvnNbControlPlane.fence` raises it to this connection's epoch (never
  lowers it); from then on every transaction of the connection rewrites it
  unchanged, conditional on the column as read and on the replica holding this
  epoch, so once a later leader has raised it every transaction of this one fails
  as a whole with :class:`~ovn_underlay.control.base.Fenced`.

Reads come from the IDL's in-memory replica of the tables (taken under the
connection lock); each change is one OVSDB transaction, so a failed request
writes nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ovs import jsonrpc, poller, socket_util, stream
from ovsdbapp import exceptions as ovsdb_exceptions
from ovsdbapp.backend.ovs_idl import command as ovs_command
from ovsdbapp.backend.ovs_idl import connection as ovs_connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.schema.ovn_northbound import impl_idl

from ovn_underlay.config import DEFAULT_MGMT_TAG
from ovn_underlay.control.base import (
    ChildPort,
    Conflict,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    Fenced,
    NodeNetwork,
    PortOwner,
)
from ovn_underlay.control.planning import (
    check_request,
    find_overlap,
    gateway_ip,
    mac_for_ip,
    mgmt_ip,
    parse_subnet,
    plan_pool,
)
from ovn_underlay.names import EXT_CONTAINER_ID, EXT_POD_NAME, EXT_POD_NAMESPACE, EXT_PREFIX
from ovn_underlay.nb_ssl import OPTIONS as SSL_OPTIONS
from ovn_underlay.nb_ssl import NbSsl, ssl_targets
from ovn_underlay.ovsdb import OwnConnection

SCHEMA = "OVN_Northbound"
TABLES = ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port",
          "NB_Global", "Logical_Router_Static_Route", "NAT", "Gateway_Chassis",
          "Load_Balancer", "Load_Balancer_Group", "Logical_Router_Policy")

KEY_ROLE = EXT_PREFIX + "role"
KEY_SWITCH = EXT_PREFIX + "switch"
KEY_SUBNET = EXT_PREFIX + "subnet"
KEY_ROUTER = EXT_PREFIX + "router"
KEY_PARENT = EXT_PREFIX + "parent"
KEY_CLUSTER_SUBNET = EXT_PREFIX + "cluster-subnet"
KEY_EPOCH = EXT_PREFIX + "leader-epoch"
KEY_ROUTERS_CREATED = EXT_PREFIX + "routers-created"
OWNER_KEYS = (EXT_POD_NAMESPACE, EXT_POD_NAME, EXT_CONTAINER_ID)

ROLE_SWITCH = "node-switch"
ROLE_ROUTER = "router"
ROLE_CLUSTER_ROUTER = "cluster-router"
ROLE_GATEWAY = "gateway"
ROLE_ROUTER_PORT = "router-port"
ROLE_MGMT = "mgmt"
ROLE_POOL = "pool"
ROLE_HOST_ROUTE = "host-route"
ROLE_ROUTER_GATEWAY = "router-gateway"
ROLE_SERVICE_RANGE = "service-range"
SERVICE_RANGE_PRIORITY = 30000
"""The priority of the router policy dropping the Service range: above policies an
operator may have for the same destinations (a reroute of 0.0.0.0/0, say)."""

_LSP = "Logical_Switch_Port"
_NB_GLOBAL = "NB_Global"
_T = TypeVar("_T")


def router_port_name(switch: str) -> str:
    """The router port of ``switch``'s gateway."""
    return f"rtr-{switch}"


def switch_router_port_name(switch: str) -> str:
    """The switch port (type router) that peers with the router port."""
    return f"stor-{switch}"


def mgmt_port_name(switch: str) -> str:
    """The node's management port."""
    return f"{switch}-mgmt"


def pool_port_name(switch: str, tag: int) -> str:
    """The pool port of ``switch`` with VLAN ``tag``."""
    return f"{switch}-p{tag}"


def gateway_port_name(router: str) -> str:
    """The distributed gateway port of ``router`` (ensure_router_gateway)."""
    return f"gw-{router}"


def gateway_peer_name(router: str) -> str:
    """The switch port (type router) on the external switch that peers with it."""
    return f"gw-{router}-peer"


def address_ips(addresses: Iterable[str]) -> set[str]:
    """The IPv4 addresses in OVN ``addresses`` entries ("MAC IP..."; "router" etc. have none)."""
    ips: set[str] = set()
    for entry in addresses:
        for token in entry.split()[1:]:
            if token.count(".") == 3:
                ips.add(token.split("/")[0])
    return ips


@dataclass(frozen=True)
class _Port:
    """A Logical_Switch_Port as plain data."""

    name: str
    parent: str | None
    tag: int | None
    addresses: tuple[str, ...]
    external_ids: Mapping[str, str]

    @property
    def role(self) -> str | None:
        return self.external_ids.get(KEY_ROLE)

    def child(self, subnet: str, gateway: str) -> ChildPort:
        """This port of ``subnet`` as a ChildPort (it must carry a "MAC IP" address and a tag)."""
        fields = self.addresses[0].split() if self.addresses else []
        if len(fields) < 2 or self.tag is None:
            raise ControlPlaneError(f"port {self.name} has no 'MAC IP' address or no VLAN tag")
        return ChildPort(self.name, fields[0], fields[1], parse_subnet(subnet).prefixlen,
                         gateway, self.tag)


@dataclass(frozen=True)
class _Switch:
    """A Logical_Switch with its ports, as plain data."""

    uuid: uuid.UUID
    name: str
    external_ids: Mapping[str, str]
    ports: tuple[_Port, ...]

    @property
    def ours(self) -> bool:
        ids = self.external_ids
        return (ids.get(KEY_ROLE) == ROLE_SWITCH
                and all(k in ids for k in (KEY_SUBNET, KEY_ROUTER, KEY_PARENT)))


@dataclass(frozen=True)
class _RouterPort:
    """A Logical_Router_Port as plain data."""

    uuid: uuid.UUID
    name: str
    mac: str
    networks: tuple[str, ...]
    external_ids: Mapping[str, str]


@dataclass(frozen=True)
class _Router:
    """A Logical_Router with its ports, as plain data."""

    uuid: uuid.UUID
    name: str
    external_ids: Mapping[str, str]
    ports: tuple[_RouterPort, ...]


@dataclass(frozen=True)
class _CreateView:
    """What create_node_network needs to know of the NB, read at once."""

    switch: _Switch | None
    gateway: _RouterPort | None
    router: _Router | None
    parent: _Port | None
    parent_tags: Mapping[int, str]
    other_subnets: tuple[tuple[str, str], ...]
    router_is_a_switch: bool
    switch_is_a_router: bool


@dataclass(frozen=True)
class _HostView:
    """What ensure_host_routes needs: the management port, the parent's addresses, routes."""

    mgmt_name: str
    mgmt_mac: str
    mgmt_ip: str
    port_security: tuple[str, ...]
    parent_ips: tuple[str, ...]
    router: uuid.UUID
    routes: tuple[tuple[uuid.UUID, str, str], ...]
    """(row, ip_prefix, nexthop) of the host routes marked with this switch."""


@dataclass(frozen=True)
class _GatewayView:
    """What ensure_router_gateway needs: the router, the external switch and our rows."""

    router: uuid.UUID
    external: uuid.UUID
    port_networks: tuple[str, ...] | None
    """The gateway port's networks (None: there is no gateway port)."""
    peer: bool
    chassis: Mapping[str, int]
    default_routes: tuple[tuple[uuid.UUID, str], ...]
    snats: tuple[tuple[uuid.UUID, str, str], ...]
    """(row, external_ip, logical_ip) of the snat rows marked as the gateway's."""


def _gateway_address(address: str) -> ipaddress.IPv4Interface:
    """The gateway's address as an IPv4 interface (ControlPlaneError if it is none)."""
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError as exc:
        raise ControlPlaneError(f"gateway address {address!r}: give it with its prefix on "
                                "the external network, e.g. 203.0.113.2/24") from exc
    if not isinstance(iface, ipaddress.IPv4Interface) or iface.network.prefixlen == 32:
        raise ControlPlaneError(f"gateway address {address!r}: an IPv4 address with the "
                                "external network's prefix, e.g. 203.0.113.2/24")
    return iface


def _optional(value: list[Any]) -> Any:
    """The value of an optional OVSDB column (the IDL gives a 0- or 1-element list)."""
    return value[0] if value else None


def _read_port(row: Any) -> _Port:
    tag = _optional(row.tag)
    if tag is None:
        tag = _optional(row.tag_request)
    return _Port(str(row.name), _optional(row.parent_name), tag, tuple(row.addresses),
                 dict(row.external_ids))


def _read_switch(row: Any) -> _Switch:
    return _Switch(row.uuid, str(row.name), dict(row.external_ids),
                   tuple(_read_port(p) for p in row.ports))


def _read_router_port(row: Any) -> _RouterPort:
    return _RouterPort(row.uuid, str(row.name), str(row.mac), tuple(row.networks),
                       dict(row.external_ids))


def _read_router(row: Any) -> _Router:
    return _Router(row.uuid, str(row.name), dict(row.external_ids),
                   tuple(_read_router_port(p) for p in row.ports))


def _node_network(switch: _Switch, gateway: _RouterPort | None) -> NodeNetwork:
    """The NodeNetwork stored as ``switch`` (one of ours) and its router port."""
    ids = switch.external_ids
    subnet = ids[KEY_SUBNET]
    if gateway is not None and gateway.networks:
        gw_ip, gw_mac = gateway.networks[0].split("/")[0], gateway.mac
    else:
        gw_ip = gateway_ip(subnet)
        gw_mac = mac_for_ip(gw_ip)
    pool = sorted((p.child(subnet, gw_ip) for p in switch.ports if p.role == ROLE_POOL),
                  key=lambda c: c.tag)
    mgmt = next((p.child(subnet, gw_ip) for p in switch.ports if p.role == ROLE_MGMT), None)
    return NodeNetwork(switch=switch.name, subnet=subnet, gateway_ip=gw_ip, gateway_mac=gw_mac,
                       router=ids[KEY_ROUTER], parent=ids[KEY_PARENT], mgmt=mgmt,
                       ports=tuple(pool))


def _child(name: str, ip: str, tag: int, subnet: str) -> ChildPort:
    """A new child port of ``subnet`` (whose router port has the first address)."""
    return ChildPort(name, mac_for_ip(ip), ip, parse_subnet(subnet).prefixlen,
                     gateway_ip(subnet), tag)


def _plan_network(switch: str, subnet: str, router: str, parent: str, pool_size: int,
                  mgmt_tag: int | None, parent_tags: Collection[int]) -> NodeNetwork:
    """The NodeNetwork to create: gateway, management port and pool, all addressed."""
    gw = gateway_ip(subnet)
    reserved_ips = {gw}
    reserved_tags = set(parent_tags)
    mgmt = None
    if mgmt_tag is not None:
        mgmt = _child(mgmt_port_name(switch), mgmt_ip(subnet), mgmt_tag, subnet)
        reserved_ips.add(mgmt.ip)
        reserved_tags.add(mgmt_tag)
    pool = tuple(_child(pool_port_name(switch, tag), ip, tag, subnet)
                 for ip, tag in plan_pool(subnet, pool_size, reserved_ips, reserved_tags))
    return NodeNetwork(switch=switch, subnet=subnet, gateway_ip=gw, gateway_mac=mac_for_ip(gw),
                       router=router, parent=parent, mgmt=mgmt, ports=pool)


def _check_names(view: _CreateView, switch: str, router: str) -> None:
    """Raise Conflict if the new switch and its router, or another of their kind, share a name."""
    shared = "router and a switch must not share a name"
    if router == switch:
        raise Conflict(f"router {router!r} has the name of the switch being created: a "
                       f"{shared}; choose another router name")
    if view.router_is_a_switch:
        raise Conflict(f"router {router!r} has the name of an existing logical switch: a "
                       f"{shared}; choose another router name")
    if view.switch_is_a_router:
        raise Conflict(f"switch {switch!r} has the name of an existing logical router: a "
                       f"{shared}; choose another switch name")


def _check_against(view: _CreateView, subnet: str, router: str, parent: str,
                   mgmt_tag: int | None, create_router: bool) -> None:
    """Raise unless a new node network fits next to what the NB holds."""
    if view.parent is None:
        raise ControlPlaneError(f"parent port {parent} not found")
    if view.parent.parent is not None:
        raise ControlPlaneError(f"parent port {parent} is itself a child of "
                                f"{view.parent.parent}")
    if view.router is None and not create_router:
        raise ControlPlaneError(f"router {router} does not exist")
    others = [(f"logical switch {name}", net) for name, net in view.other_subnets]
    if view.router is not None:
        others += [(f"router port {p.name} of router {router}", net)
                   for p in view.router.ports for net in p.networks]
    overlap = find_overlap(subnet, others)
    if overlap is not None:
        raise Conflict(f"subnet {subnet} overlaps {overlap[1]} of {overlap[0]}")
    if mgmt_tag is not None and mgmt_tag in view.parent_tags:
        raise Conflict(f"management VLAN tag {mgmt_tag} is already used on parent port "
                       f"{parent} by port {view.parent_tags[mgmt_tag]}")


def _check_same(switch: _Switch, subnet: str, router: str, parent: str) -> None:
    """Raise Conflict unless the existing ``switch`` is our node network as requested."""
    if not switch.ours:
        raise Conflict(f"logical switch {switch.name} already exists and was not created "
                       "by ovn-underlay")
    wanted = {KEY_SUBNET: subnet, KEY_ROUTER: router, KEY_PARENT: parent}
    differs = [f"{key.removeprefix(EXT_PREFIX)} {switch.external_ids[key]} (not {value})"
               for key, value in wanted.items() if switch.external_ids[key] != value]
    if differs:
        raise Conflict(f"node network {switch.name} already exists with " + ", ".join(differs))


def _in_sync(idl: Any) -> bool:
    """Whether the IDL is connected and its replica follows the server.

    python-ovs has no public accessor for the session state; its ``_session``
    is the one place that knows, right away, that the connection dropped.
    """
    return bool(idl.state == idl.IDL_S_MONITORING and idl._session.is_connected())


def _ms_left(deadline: float) -> int:
    return max(int((deadline - time.monotonic()) * 1000), 0)


def _wait_for_rpc(rpc: Any, deadline: float) -> int:
    """Wait for ``rpc`` to make progress; errno.ETIMEDOUT once ``deadline`` passed."""
    left = _ms_left(deadline)
    if left == 0:
        return errno.ETIMEDOUT
    rpc.run()
    waiter = poller.Poller()
    rpc.wait(waiter)
    rpc.recv_wait(waiter)
    waiter.timer_wait(left)
    waiter.block()
    return 0


def _fetch_schema_from(target: str, deadline: float) -> Any:
    """The NB schema (JSON) from one ovsdb-server, or OSError; never past ``deadline``."""
    error, strm = stream.Stream.open_block(stream.Stream.open(target), _ms_left(deadline))
    if error:
        raise OSError(error, os.strerror(error))
    rpc = jsonrpc.Connection(strm)
    try:
        request = jsonrpc.Message.create_request("get_schema", [SCHEMA])
        error = rpc.send(request)
        while not error:
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                error = _wait_for_rpc(rpc, deadline)
            elif reply is not None and reply.id == request.id:
                if reply.error:
                    raise ControlPlaneError(f"{target} does not serve {SCHEMA}: {reply.error}")
                return reply.result
        raise OSError(error, os.strerror(error))
    finally:
        rpc.close()


def _fetch_schema(remote: str, deadline: float, files: NbSsl | None = None) -> Any:
    """The NB schema from the first of ``remote``'s comma-separated servers that answers.

    Done here rather than by ovsdbapp so that it cannot block past ``deadline``
    (a server that accepts but does not answer, a black-holed address).  For an
    ``ssl:`` server that fails, the reason given is :func:`_ssl_failure`'s: python-ovs
    turns every SSL error into an errno that does not say what failed.
    """
    failures: list[str] = []
    for target in idlutils.parse_connection(remote):
        try:
            return _fetch_schema_from(target, deadline)
        except OSError as exc:
            reason = None
            if files is not None and target.startswith("ssl:"):
                reason = _ssl_failure(target, files, deadline)
            failures.append(f"{target}: {reason or exc.strerror or exc}")
    raise ControlPlaneUnavailable(f"cannot reach OVN NB at {remote}: {'; '.join(failures)}")


def _ssl_failure(target: str, files: NbSsl, deadline: float) -> str | None:
    """Why talking to the ``ssl:`` server ``target`` fails, as Python's ssl module says,
    with the context python-ovs makes (TLS 1.2 or later, the server's certificate checked
    against the CA, not its name); None if it does not fail or no time is left before
    ``deadline``, "timed out" if that passes meanwhile.

    One connection of its own: the SSL handshake, then an ``echo`` request, whose answer
    is where a server refusing the client's certificate shows it under TLS 1.3
    (ovsdb-server sends the alert "unknown CA" and closes the connection: which of the
    two the client sees first varies).
    """
    if _ms_left(deadline) == 0:
        return None
    host, port = socket_util.inet_parse_active(target.removeprefix("ssl:"), 0, raises=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=files.ca_cert)
        context.load_cert_chain(files.certificate, files.private_key)
    except OSError as exc:
        return f"SSL: the client's files {files} cannot be loaded any more ({exc})"
    echo = json.dumps({"method": "echo", "params": [], "id": "ssl-check"}).encode()
    refused = (f"is {SSL_OPTIONS[1]} {files.certificate} signed by the CA the server "
               "trusts?")
    try:
        with socket.create_connection((host, port), timeout=_ms_left(deadline) / 1000) as raw, \
                context.wrap_socket(raw) as conn:
            conn.settimeout(max(_ms_left(deadline), 1) / 1000)
            conn.sendall(echo)
            conn.recv(1)
    except ssl.SSLCertVerificationError as exc:
        return (f"SSL: the server's certificate is refused ({exc.verify_message}): is it "
                f"signed by the CA of {SSL_OPTIONS[2]} {files.ca_cert}?")
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
        return ("SSL: the server closed the connection in the SSL exchange: it refuses the "
                f"client's certificate ({refused}), or does not speak SSL there")
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
            return f"SSL: the server refuses the client's certificate ({reason}): {refused}"
        return f"SSL: {reason}"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class _SslFiles:
    """python-ovs's SSL files in this process, and how many connections use them.

    python-ovs keeps one private key, certificate and CA certificate per process
    (class attributes of ``ovs.stream.Stream``), read at every SSL connect, the IDL's
    reconnections included.  While a connection uses one set, a different one is refused
    with ControlPlaneError instead of silently replacing (or being replaced by) it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: NbSsl | None = None
        self._users = 0

    def claim(self, files: NbSsl) -> None:
        """Make ``files`` python-ovs's SSL files, or refuse while others are in use."""
        with self._lock:
            if self._files is not None and self._files != files:
                raise ControlPlaneError(
                    f"this process already connects to OVN NB with the SSL files "
                    f"{self._files}; python-ovs holds one set per process, so {files} "
                    "cannot be used as well")
            stream.Stream.ssl_set_private_key_file(files.private_key)
            stream.Stream.ssl_set_certificate_file(files.certificate)
            stream.Stream.ssl_set_ca_cert_file(files.ca_cert)
            self._files = files
            self._users += 1

    def release(self) -> None:
        """One connection less uses them; with none left, any set may be claimed."""
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._files = None


_SSL_FILES = _SslFiles()


class _GlobalKey(ovs_command.BaseCommand):  # type: ignore[misc]
    """Set one key of NB_Global.external_ids, conditional on the whole column as read.

    ``value`` maps the key's value in the replica (None: absent) to the one to write,
    or raises to abort the transaction.  The row is inserted when there is none (the
    table holds at most one, so of two clients inserting it one fails).  python-ovs
    sends a row's verify, an OVSDB ``wait`` until the column equals the replica's,
    only for rows the transaction writes, which the write here guarantees; when
    another client changed the column first the server refuses the transaction and
    ovsdbapp runs all its commands again once the replica has the change.
    """

    def __init__(self, api: Any, key: str, value: Callable[[str | None], str]) -> None:
        super().__init__(api)
        self.key = key
        self.value = value

    def run_idl(self, txn: Any) -> None:
        rows = list(self.api.tables[_NB_GLOBAL].rows.values())
        row = rows[0] if rows else txn.insert(self.api.tables[_NB_GLOBAL])
        # a row inserted by this transaction has no external_ids until a key is set
        stored = getattr(row, "external_ids", {}).get(self.key)
        row.verify("external_ids")
        row.setkey("external_ids", self.key, self.value(stored))


def _stored_epoch(stored: str | None) -> int | None:
    """The leader epoch as NB_Global holds it (None: none yet)."""
    if stored is None:
        return None
    try:
        return int(stored)
    except ValueError:
        raise ControlPlaneError(f"NB_Global external_ids {KEY_EPOCH}={stored!r} is not an "
                                "integer") from None


def _next_count(stored: str | None) -> str:
    """The routers-created counter after one more router."""
    try:
        return str(int(stored or "0") + 1)
    except ValueError:
        raise ControlPlaneError(f"NB_Global external_ids {KEY_ROUTERS_CREATED}={stored!r} "
                                "is not an integer") from None


def _is_vm_port(row: Any) -> bool:
    """Whether a Logical_Switch_Port can be a VM's port: a plain VIF, no child, not ours."""
    return (not row.type and not row.parent_name
            and KEY_ROLE not in row.external_ids and KEY_SWITCH not in row.external_ids)


class _NbApi(OwnConnection, impl_idl.OvnNbApiIdlImpl):  # type: ignore[misc]
    """The ovsdbapp NB API bound to a connection of its own."""


def _connect(remote: str, timeout: float, files: NbSsl | None = None) -> Any:
    """An ovsdbapp NB API connected to ``remote`` with the tables we use, within ``timeout``
    (``files``: the SSL files of its ``ssl:`` servers, already claimed)."""
    deadline = time.monotonic() + timeout
    helper = idlutils.create_schema_helper(_fetch_schema(remote, deadline, files))
    idl = ovs_connection.OvsdbIdl.from_server(remote, SCHEMA, helper=helper,
                                              helper_tables=TABLES)
    unavailable = ControlPlaneUnavailable(f"cannot connect to OVN NB at {remote} within "
                                          f"{timeout:g}s")
    left = deadline - time.monotonic()
    if left <= 0:
        idl.close()
        raise unavailable
    try:
        api = _NbApi(ovs_connection.Connection(idl, left))
    except ovsdb_exceptions.OvsdbConnectionUnavailable as exc:
        idl.close()
        raise unavailable from exc
    api.ovsdb_connection.timeout = timeout
    return api


class OvnNbControlPlane(ControlPlane):
    """Node networks as rows of the OVN Northbound database."""

    def __init__(self, connection: str, timeout: float = 10.0, ssl: NbSsl | None = None) -> None:
        """Connect to the NB at ``connection`` ("unix:/path", "tcp:host:6641",
        "ssl:host:6641", or several, comma-separated).

        An ``ssl:`` server needs ``ssl``, the client's files, and only one needs them:
        without, or with files and no ``ssl:`` server, ControlPlaneError; a file that
        cannot be used, ConfigError naming it (:meth:`NbSsl.check`), before connecting.
        The files are python-ovs's, which holds one set per process: while another
        connection of this process uses a different set, ControlPlaneError.  Raises
        ControlPlaneUnavailable if the NB does not answer within ``timeout`` seconds,
        which also bounds every later request; for an SSL failure (a server certificate
        the CA did not sign, our certificate refused) the message says so.
        """
        self._remote = connection
        self._timeout = timeout
        self._epoch: int | None = None
        if ssl_targets(connection) and ssl is None:
            raise ControlPlaneError(
                f"the OVN NB connection {connection} is ssl:, which needs the client's "
                f"private key, certificate and CA certificate ({', '.join(SSL_OPTIONS)})")
        if ssl is not None and not ssl_targets(connection):
            raise ControlPlaneError(f"SSL files given for the OVN NB connection {connection}, "
                                    "which has no ssl: server")
        if ssl is not None:
            ssl.check()
            _SSL_FILES.claim(ssl)
        self._ssl_claimed = ssl is not None
        try:
            self._api = _connect(connection, timeout, ssl)
        except BaseException:
            self._release_ssl()
            raise

    # --- the interface ---------------------------------------------------------------

    def create_node_network(self, switch: str, subnet: str, router: str, parent: str,
                            pool_size: int, mgmt_tag: int | None = DEFAULT_MGMT_TAG,
                            create_router: bool = True,
                            cluster_subnet: str | None = None) -> NodeNetwork:
        """Create switch, router attachment, management port and pool in one transaction."""
        subnet = check_request(switch, subnet, router, parent, pool_size, mgmt_tag,
                               cluster_subnet)
        view = self._read(lambda: self._create_view(switch, router, parent))
        if view.switch is not None:
            _check_same(view.switch, subnet, router, parent)
            return _node_network(view.switch, view.gateway)
        _check_names(view, switch, router)
        _check_against(view, subnet, router, parent, mgmt_tag, create_router)
        net = _plan_network(switch, subnet, router, parent, pool_size, mgmt_tag,
                            view.parent_tags.keys())
        children = [net.mgmt] if net.mgmt is not None else []
        self._check_names_free([switch_router_port_name(switch),
                                *(c.name for c in (*children, *net.ports))],
                               [router_port_name(switch)])
        commands = self._network_commands(net, view.router, cluster_subnet)
        self._commit(commands, f"create node network {switch}")
        return net

    def add_pool_ports(self, switch: str, count: int) -> tuple[ChildPort, ...]:
        """Add ``count`` pool ports on the lowest free addresses and VLAN tags."""
        sw, parent_tags = self._read(lambda: self._pool_view(switch))
        subnet = sw.external_ids[KEY_SUBNET]
        used_ips = {gateway_ip(subnet)}.union(*(address_ips(p.addresses) for p in sw.ports))
        ports = tuple(_child(pool_port_name(switch, tag), ip, tag, subnet)
                      for ip, tag in plan_pool(subnet, count, used_ips, parent_tags.keys()))
        self._check_names_free([p.name for p in ports], [])
        commands: list[Any] = []
        for port in ports:
            commands += self._child_commands(sw.uuid, sw.external_ids[KEY_PARENT], port,
                                             ROLE_POOL, switch)
        self._commit(commands, f"add {count} pool ports to {switch}")
        return ports

    def delete_pool_ports(self, switch: str, names: Iterable[str]) -> None:
        """Delete the named pool ports of ``switch``; names not on it are ignored."""
        wanted = set(names)
        sw = self._read(lambda: self._find_switch(switch))
        if sw is None:
            return
        victims = sorted(p.name for p in sw.ports if p.name in wanted)
        foreign = [p.name for p in sw.ports if p.name in wanted and p.role != ROLE_POOL]
        if foreign:
            raise ControlPlaneError(f"not deleting {', '.join(sorted(foreign))}: not pool "
                                    f"ports of {switch}")
        self._commit([self._api.lsp_del(name, switch=sw.uuid, if_exists=True)
                      for name in victims], f"delete pool ports of {switch}")

    def get_node_network(self, switch: str) -> NodeNetwork | None:
        """The node network of ``switch`` as the NB holds it (None if there is no switch)."""
        sw, gateway = self._read(lambda: (self._find_switch(switch),
                                          self._find_router_port(router_port_name(switch))))
        if sw is None:
            return None
        if not sw.ours:
            raise Conflict(f"logical switch {switch} was not created by ovn-underlay")
        return _node_network(sw, gateway)

    def destroy_node_network(self, switch: str) -> None:
        """Delete the switch (and its ports), the router port, and the router if ours and idle."""
        sw, gateway, router = self._read(lambda: self._destroy_view(switch))
        if sw is not None and not sw.ours:
            raise Conflict(f"logical switch {switch} was not created by ovn-underlay; "
                           "not deleting it")
        commands: list[Any] = []
        if sw is not None:
            commands.append(self._api.ls_del(sw.uuid, if_exists=True))
        if gateway is not None and router is not None:
            commands += self._read(lambda: self._host_route_removals(switch, router.uuid))
            commands.append(self._api.lrp_del(gateway.uuid, router=router.uuid, if_exists=True))
            if (router.external_ids.get(KEY_ROLE) == ROLE_ROUTER
                    and all(p.uuid == gateway.uuid for p in router.ports)):
                commands.append(self._api.lr_del(router.uuid, if_exists=True))
        self._commit(commands, f"destroy node network {switch}")

    def record_owners(self, owners: Mapping[str, PortOwner | None]) -> list[str]:
        """Set or clear the ovn-underlay:pod-* external_ids of many ports in one transaction.

        Ports already as asked are left out; with nothing to change nothing is
        committed (no work for ovn-northd).
        """
        sets, clears, skipped = self._read(lambda: self._owner_changes(owners))
        commands = [self._api.db_set(_LSP, port, ("external_ids", ids), if_exists=True)
                    for port, ids in sets.items()]
        commands += [self._api.db_remove(_LSP, port, "external_ids", *OWNER_KEYS,
                                         if_exists=True) for port in clears]
        if commands:
            self._commit(commands, f"record the pods of {len(commands)} port(s)")
        return skipped

    def _owner_changes(self, owners: Mapping[str, PortOwner | None]
                       ) -> tuple[dict[str, dict[str, str]], list[str], list[str]]:
        """(owner external_ids to set, ports to clear, ports skipped) for record_owners."""
        sets: dict[str, dict[str, str]] = {}
        clears: list[str] = []
        skipped: list[str] = []
        for port, owner in owners.items():
            lsp = self._find_port(port)
            if lsp is None or KEY_SWITCH not in lsp.external_ids:
                if owner is not None:
                    skipped.append(port)
                continue
            if owner is None:
                if any(k in lsp.external_ids for k in OWNER_KEYS):
                    clears.append(port)
                continue
            want = {EXT_POD_NAMESPACE: owner.pod_namespace, EXT_POD_NAME: owner.pod_name,
                    EXT_CONTAINER_ID: owner.container_id}
            if any(lsp.external_ids.get(k) != v for k, v in want.items()):
                sets[port] = want
        return sets, clears, skipped

    def ensure_router(self, router: str) -> None:
        """Create the logical router ``router`` (role cluster-router) unless one has that name.

        An existing router of that name is kept as it is, whoever made it.  Conflict
        when more than one router has the name, or a switch has it.  The creation
        increments NB_Global's routers-created counter conditionally, so two clients
        creating it at once make one router.
        """
        if not router:
            raise ControlPlaneError("the router name must not be empty")
        existing, is_a_switch = self._read(lambda: (
            self._find_router(router), self._row("Logical_Switch", router) is not None))
        if existing is not None:
            return
        if is_a_switch:
            raise Conflict(f"router {router!r} has the name of an existing logical switch: a "
                           "router and a switch must not share a name")
        self._commit([_GlobalKey(self._api, KEY_ROUTERS_CREATED, _next_count),
                      self._api.lr_add(router, may_exist=True,
                                       external_ids={KEY_ROLE: ROLE_CLUSTER_ROUTER})],
                     f"create router {router}")

    def port_holding(self, ip: str) -> str | None:
        """The name of the one VM port whose addresses or dynamic_addresses include ``ip``.

        VM ports are plain VIFs (type ""), not children, without ovn-underlay's
        external_ids.  None when no port or more than one holds the address.
        """
        try:
            wanted = str(ipaddress.IPv4Address(ip))
        except ValueError as exc:
            raise ControlPlaneError(f"invalid IPv4 address {ip!r}: {exc}") from exc

        def holders() -> list[str]:
            return [str(row.name) for row in self._api.tables[_LSP].rows.values()
                    if _is_vm_port(row)
                    and wanted in address_ips([*row.addresses, *row.dynamic_addresses])]
        found = self._read(holders)
        return found[0] if len(found) == 1 else None

    def node_switches(self) -> list[str]:
        """The names of the node networks' switches made here, sorted."""
        return sorted(self._read(lambda: [
            sw.name for sw in map(_read_switch, self._api.tables["Logical_Switch"].rows.values())
            if sw.ours]))

    def port_exists(self, port: str) -> bool:
        """Whether a Logical_Switch_Port named ``port`` exists."""
        return bool(self._read(lambda: self._row(_LSP, port) is not None))

    def fence(self, epoch: int) -> None:
        """Raise NB_Global's leader epoch to ``epoch``; later transactions require it.

        One transaction, conditional on the epoch read: Fenced when the stored epoch
        is higher than ``epoch`` (a later leader wrote), and then nothing changes.
        Afterwards every transaction of this connection fails with Fenced once the
        stored epoch differs from ``epoch``.
        """
        def raised(stored: str | None) -> str:
            current = _stored_epoch(stored)
            if current is not None and current > epoch:
                raise self._fenced(current, epoch)
            return str(epoch)
        self._transact([_GlobalKey(self._api, KEY_EPOCH, raised)], f"fence epoch {epoch}")
        self._epoch = epoch

    def _held(self, stored: str | None) -> str:
        """The stored epoch, unchanged, if it is this connection's; else raise Fenced."""
        current = _stored_epoch(stored)
        if current != self._epoch:
            raise self._fenced(current, self._epoch)
        return str(current)

    def _fenced(self, stored: int | None, ours: int | None) -> Fenced:
        held = "no leader epoch" if stored is None else f"leader epoch {stored}"
        return Fenced(f"OVN NB at {self._remote} holds {held}, this writer's is {ours}: a "
                      "later leader has taken over (or NB_Global was replaced)")

    # --- the node's own addresses, the router's gateway --------------------------------

    def ensure_host_routes(self, switch: str) -> tuple[str, ...]:
        """Admit the parent port's addresses on the management port; route them to it.

        The routes are Logical_Router_Static_Route rows ``<ip>/32`` via the
        management port's address, out of ``rtr-<switch>``, marked
        ``ovn-underlay:role=host-route`` and ``ovn-underlay:switch``; those of
        addresses the parent no longer has are removed.  One transaction, none
        when everything is in place.
        """
        view = self._read(lambda: self._host_view(switch))
        if view is None:
            return ()
        api = self._api
        commands: list[Any] = []
        security = [" ".join((view.mgmt_mac, view.mgmt_ip, *view.parent_ips))]
        if list(view.port_security) != security:
            commands.append(api.db_set(_LSP, view.mgmt_name, ("port_security", security)))
        wanted = {f"{ip}/32" for ip in view.parent_ips}
        kept = set()
        for row, prefix, nexthop in view.routes:
            if prefix in wanted and nexthop == view.mgmt_ip and prefix not in kept:
                kept.add(prefix)
            else:
                commands.append(api.db_remove("Logical_Router", view.router, "static_routes",
                                              row, if_exists=True))
        for prefix in sorted(wanted - kept):
            route = api.db_create("Logical_Router_Static_Route", ip_prefix=prefix,
                                  nexthop=view.mgmt_ip, output_port=router_port_name(switch),
                                  external_ids={KEY_ROLE: ROLE_HOST_ROUTE, KEY_SWITCH: switch})
            commands += [route, api.db_add("Logical_Router", view.router, "static_routes",
                                           route)]
        self._commit(commands, f"route the addresses of {switch}'s node to its management "
                               "port")
        return view.parent_ips

    def ensure_router_gateway(self, router: str, external: str, snat: Sequence[str],
                              address: str = "", next_hop: str = "",
                              chassis: Sequence[str] = ()) -> str:
        """The distributed gateway port ``gw-<router>`` on the switch ``external``.

        ``address`` (CIDR) is the port's network and the SNAT address; the port's
        MAC is derived from it, its peer ``gw-<router>-peer`` on ``external`` is a
        switch port of type router, ``chassis`` become its Gateway_Chassis rows
        (priority from the first down), a default route goes via ``next_hop``
        (if given) and each subnet of ``snat`` gets a snat row.  Routes and NAT
        rows are marked ``ovn-underlay:role=router-gateway``; marked ones no longer
        asked for are removed.  One transaction.
        """
        iface = _gateway_address(address)
        view = self._read(lambda: self._gateway_view(router, external))
        api, port = self._api, gateway_port_name(router)
        marks = {KEY_ROLE: ROLE_ROUTER_GATEWAY, KEY_ROUTER: router}
        ip = str(iface.ip)
        commands: list[Any] = []
        if view.port_networks is None:
            commands.append(api.lrp_add(view.router, port, mac_for_ip(ip), [str(iface)],
                                        external_ids=marks))
        elif list(view.port_networks) != [str(iface)]:
            commands.append(api.db_set("Logical_Router_Port", port, ("networks", [str(iface)])))
        if not view.peer:
            commands.append(api.lsp_add(view.external, gateway_peer_name(router), type="router",
                                        addresses=["router"], options={"router-port": port},
                                        external_ids=marks))
        wanted_chassis = {name: len(chassis) - i for i, name in enumerate(chassis)}
        commands += [api.lrp_del_gateway_chassis(port, name, if_exists=True)
                     for name in view.chassis if name not in wanted_chassis]
        commands += [api.lrp_set_gateway_chassis(port, name, priority)
                     for name, priority in wanted_chassis.items()
                     if view.chassis.get(name) != priority]
        routes = [] if not next_hop else [next_hop]
        for row, nexthop in view.default_routes:
            if nexthop in routes:
                routes.remove(nexthop)
            else:
                commands.append(api.db_remove("Logical_Router", view.router, "static_routes",
                                              row, if_exists=True))
        for nexthop in routes:
            route = api.db_create("Logical_Router_Static_Route", ip_prefix="0.0.0.0/0",
                                  nexthop=nexthop, output_port=port, external_ids=marks)
            commands += [route, api.db_add("Logical_Router", view.router, "static_routes",
                                           route)]
        subnets = [str(parse_subnet(net)) for net in snat]
        for row, external_ip, logical_ip in view.snats:
            if external_ip == ip and logical_ip in subnets:
                subnets.remove(logical_ip)
            else:
                commands.append(api.db_remove("Logical_Router", view.router, "nat", row,
                                              if_exists=True))
        for logical_ip in subnets:
            nat = api.db_create("NAT", type="snat", external_ip=ip, logical_ip=logical_ip,
                                external_ids=marks)
            commands += [nat, api.db_add("Logical_Router", view.router, "nat", nat)]
        self._commit(commands, f"give router {router} its gateway on {external}")
        return ip

    def ensure_service_range_dropped(self, router: str, cidr: str) -> bool:
        """Make ``router`` drop what it would route to an address of the Service range
        ``cidr`` ("": drop nothing); returns whether it wrote.

        A packet to a Service's ClusterIP is DNATed to a backend by the node switch's
        load balancers before it reaches the router, so what the router sees for the
        range is for an address no Service holds (a deleted Service's, or one never
        allocated): without this it would follow the default route out through the
        gateway, SNATed.  One Logical_Router_Policy ``ip4.dst == <cidr>``, action drop,
        priority :data:`SERVICE_RANGE_PRIORITY`, marked ``ovn-underlay:role=
        service-range`` and ``ovn-underlay:router``; marked ones for another range go,
        no other policy is touched.  One transaction, none when
        it is in place.
        """
        wanted = [(SERVICE_RANGE_PRIORITY, f"ip4.dst == {parse_subnet(cidr)}", "drop")] \
            if cidr else []
        router_row, policies = self._read(lambda: self._range_view(router))
        api, commands = self._api, []
        for row, priority, match, action in policies:
            if (priority, match, action) in wanted:
                wanted.remove((priority, match, action))
            else:
                commands.append(api.db_remove("Logical_Router", router_row, "policies", row,
                                              if_exists=True))
        for priority, match, action in wanted:
            policy = api.db_create("Logical_Router_Policy", priority=priority, match=match,
                                   action=action, external_ids={KEY_ROLE: ROLE_SERVICE_RANGE,
                                                                KEY_ROUTER: router})
            commands += [policy, api.db_add("Logical_Router", router_row, "policies", policy)]
        self._commit(commands, f"make router {router} drop the Service range {cidr}"
                     if cidr else f"stop router {router} dropping a Service range")
        return bool(commands)

    def close(self) -> None:
        """Stop the connection's thread and close the connection, then end its use of the
        process's SSL files (:class:`_SslFiles`); idempotent."""
        self._api.ovsdb_connection.stop(self._timeout)
        self._release_ssl()

    def _release_ssl(self) -> None:
        if self._ssl_claimed:
            self._ssl_claimed = False
            _SSL_FILES.release()

    def _host_view(self, switch: str) -> _HostView | None:
        sw = self._find_switch(switch)
        if sw is None or not sw.ours:
            raise ControlPlaneError(f"no node network {switch} (made by ovn-underlay)")
        mgmt = self._row(_LSP, mgmt_port_name(switch))
        lrp = self._row("Logical_Router_Port", router_port_name(switch))
        router = None if lrp is None else next(
            (r for r in self._api.tables["Logical_Router"].rows.values()
             if any(p.uuid == lrp.uuid for p in r.ports)), None)
        if mgmt is None or not mgmt.addresses or router is None:
            return None
        mac, ip = str(mgmt.addresses[0]).split()[:2]
        parent = self._find_port(sw.external_ids[KEY_PARENT])
        ips = tuple(sorted(address_ips(parent.addresses))) if parent is not None else ()
        routes = tuple((r.uuid, str(r.ip_prefix), str(r.nexthop)) for r in router.static_routes
                       if r.external_ids.get(KEY_ROLE) == ROLE_HOST_ROUTE
                       and r.external_ids.get(KEY_SWITCH) == switch)
        return _HostView(mgmt_name=str(mgmt.name), mgmt_mac=mac, mgmt_ip=ip,
                         port_security=tuple(mgmt.port_security), parent_ips=ips,
                         router=router.uuid, routes=routes)

    def _host_route_removals(self, switch: str, router: uuid.UUID) -> list[Any]:
        """Commands removing the host routes of ``switch`` from the router ``router``."""
        row = self._api.tables["Logical_Router"].rows.get(router)
        routes = [] if row is None else [
            r.uuid for r in row.static_routes
            if r.external_ids.get(KEY_ROLE) == ROLE_HOST_ROUTE
            and r.external_ids.get(KEY_SWITCH) == switch]
        return [self._api.db_remove("Logical_Router", router, "static_routes", r,
                                    if_exists=True) for r in routes]

    def _gateway_view(self, router: str, external: str) -> _GatewayView:
        row = self._one_router(router)
        ext = self._row("Logical_Switch", external)
        if ext is None:
            raise ControlPlaneError(f"external logical switch {external} not found")
        lrp = self._row("Logical_Router_Port", gateway_port_name(router))
        chassis = {} if lrp is None else {str(g.chassis_name): int(g.priority)
                                          for g in lrp.gateway_chassis}
        marked = [r for r in row.static_routes
                  if r.external_ids.get(KEY_ROLE) == ROLE_ROUTER_GATEWAY]
        snats = tuple((n.uuid, str(n.external_ip), str(n.logical_ip)) for n in row.nat
                      if n.type == "snat" and n.external_ids.get(KEY_ROLE) == ROLE_ROUTER_GATEWAY)
        return _GatewayView(router=row.uuid, external=ext.uuid,
                            port_networks=None if lrp is None else tuple(lrp.networks),
                            peer=self._row(_LSP, gateway_peer_name(router)) is not None,
                            chassis=chassis,
                            default_routes=tuple((r.uuid, str(r.nexthop)) for r in marked),
                            snats=snats)

    def _range_view(self, router: str) -> tuple[Any, list[tuple[Any, int, str, str]]]:
        row = self._one_router(router)
        return row.uuid, [(p.uuid, int(p.priority), str(p.match), str(p.action))
                          for p in row.policies
                          if p.external_ids.get(KEY_ROLE) == ROLE_SERVICE_RANGE]

    # --- reads (run under the connection lock) ----------------------------------------

    def _read(self, reader: Callable[[], _T]) -> _T:
        """Run ``reader`` on the IDL replica, once it is connected (within the timeout)."""
        idl = self._api.idl
        deadline = time.monotonic() + self._timeout
        while not _in_sync(idl):
            if time.monotonic() > deadline:
                raise ControlPlaneUnavailable(f"not connected to OVN NB at {self._remote} "
                                              f"(waited {self._timeout:g}s)")
            time.sleep(0.05)
        with self._api.ovsdb_connection.lock:
            return reader()

    def _one_router(self, name: str) -> Any:
        """The one logical router named ``name`` (Conflict: several; ControlPlaneError: none)."""
        routers = [r for r in self._api.tables["Logical_Router"].rows.values()
                   if r.name == name]
        if len(routers) != 1:
            raise (Conflict if routers else ControlPlaneError)(
                f"{len(routers)} logical routers are named {name}")
        return routers[0]

    def _row(self, table: str, name: str) -> Any:
        return idlutils.row_by_value(self._api.idl, table, "name", name, None)

    def _find_switch(self, name: str) -> _Switch | None:
        row = self._row("Logical_Switch", name)
        return None if row is None else _read_switch(row)

    def _find_port(self, name: str) -> _Port | None:
        row = self._row(_LSP, name)
        return None if row is None else _read_port(row)

    def _find_router(self, name: str) -> _Router | None:
        """The router named ``name``; Conflict when more than one has that name."""
        found = [r for r in self._api.tables["Logical_Router"].rows.values() if r.name == name]
        if len(found) > 1:
            raise Conflict(f"{len(found)} logical routers are named {name!r}; remove all but "
                           "one")
        return _read_router(found[0]) if found else None

    def _find_router_port(self, name: str) -> _RouterPort | None:
        row = self._row("Logical_Router_Port", name)
        return None if row is None else _read_router_port(row)

    def _parent_tags(self, parent: str) -> dict[int, str]:
        """VLAN tag -> name of every child port of ``parent``."""
        tags: dict[int, str] = {}
        for row in self._api.tables[_LSP].rows.values():
            if _optional(row.parent_name) == parent:
                port = _read_port(row)
                if port.tag is not None:
                    tags[port.tag] = port.name
        return tags

    def _create_view(self, switch: str, router: str, parent: str) -> _CreateView:
        others = tuple((str(r.name), str(r.other_config["subnet"]))
                       for r in self._api.tables["Logical_Switch"].rows.values()
                       if "subnet" in r.other_config and r.name != switch)
        return _CreateView(switch=self._find_switch(switch),
                           gateway=self._find_router_port(router_port_name(switch)),
                           router=self._find_router(router), parent=self._find_port(parent),
                           parent_tags=self._parent_tags(parent), other_subnets=others,
                           router_is_a_switch=self._row("Logical_Switch", router) is not None,
                           switch_is_a_router=self._row("Logical_Router", switch) is not None)

    def _pool_view(self, switch: str) -> tuple[_Switch, dict[int, str]]:
        sw = self._find_switch(switch)
        if sw is None or not sw.ours:
            raise ControlPlaneError(f"no node network {switch} (made by ovn-underlay)")
        return sw, self._parent_tags(sw.external_ids[KEY_PARENT])

    def _destroy_view(self, switch: str
                      ) -> tuple[_Switch | None, _RouterPort | None, _Router | None]:
        sw = self._find_switch(switch)
        row = self._row("Logical_Router_Port", router_port_name(switch))
        if row is None or row.external_ids.get(KEY_SWITCH) != switch:
            return sw, None, None
        router = next((r for r in self._api.tables["Logical_Router"].rows.values()
                       if any(p.uuid == row.uuid for p in r.ports)), None)
        return sw, _read_router_port(row), None if router is None else _read_router(router)

    def _check_names_free(self, switch_ports: Iterable[str], router_ports: Iterable[str]) -> None:
        """Raise Conflict if any of these port names is taken."""
        def taken() -> list[str]:
            return ([n for n in switch_ports if self._row(_LSP, n) is not None]
                    + [n for n in router_ports
                       if self._row("Logical_Router_Port", n) is not None])
        names = self._read(taken)
        if names:
            raise Conflict(f"port names already taken: {', '.join(names)}")

    # --- writes -----------------------------------------------------------------------

    def _network_commands(self, net: NodeNetwork, router: _Router | None,
                          cluster_subnet: str | None) -> list[Any]:
        """The commands creating ``net`` (and its router when ``router`` is None)."""
        api = self._api
        commands: list[Any] = []
        router_ref: Any = net.router if router is None else router.uuid
        if router is None:
            router_ref = api.lr_add(net.router, may_exist=True,
                                    external_ids={KEY_ROLE: ROLE_ROUTER})
            commands += [_GlobalKey(api, KEY_ROUTERS_CREATED, _next_count), router_ref]
        prefix = parse_subnet(net.subnet).prefixlen
        commands.append(api.lrp_add(router_ref, router_port_name(net.switch), net.gateway_mac,
                                    [f"{net.gateway_ip}/{prefix}"],
                                    external_ids={KEY_ROLE: ROLE_GATEWAY,
                                                  KEY_SWITCH: net.switch}))
        switch_ids = {KEY_ROLE: ROLE_SWITCH, KEY_SUBNET: net.subnet, KEY_ROUTER: net.router,
                      KEY_PARENT: net.parent}
        if cluster_subnet is not None:
            switch_ids[KEY_CLUSTER_SUBNET] = cluster_subnet
        excluded = [net.gateway_ip] + ([net.mgmt.ip] if net.mgmt is not None else [])
        ls = api.ls_add(net.switch, other_config={"subnet": net.subnet,
                                                  "exclude_ips": " ".join(excluded)},
                        external_ids=switch_ids)
        commands.append(ls)
        commands.append(api.lsp_add(ls, switch_router_port_name(net.switch), type="router",
                                    addresses=["router"],
                                    options={"router-port": router_port_name(net.switch)},
                                    external_ids={KEY_ROLE: ROLE_ROUTER_PORT,
                                                  KEY_SWITCH: net.switch}))
        if net.mgmt is not None:
            commands += self._child_commands(ls, net.parent, net.mgmt, ROLE_MGMT, net.switch)
        for port in net.ports:
            commands += self._child_commands(ls, net.parent, port, ROLE_POOL, net.switch)
        return commands

    def _child_commands(self, switch_ref: Any, parent: str, port: ChildPort, role: str,
                        switch: str) -> list[Any]:
        """Commands adding ``port`` as a child of ``parent`` on the switch ``switch_ref``.

        Both tag_request and tag are set: ovn-northd keeps a requested tag as
        the tag, and the tag is right even before northd has seen the port.
        """
        address = f"{port.mac} {port.ip}"
        lsp = self._api.lsp_add(switch_ref, port.name, parent_name=parent, tag=port.tag,
                                addresses=[address], port_security=[address],
                                external_ids={KEY_ROLE: role, KEY_SWITCH: switch})
        return [lsp, self._api.db_set(_LSP, lsp, ("tag", port.tag), if_exists=False)]

    def _commit(self, commands: list[Any], action: str) -> None:
        """Run ``commands`` as one transaction, conditional on the epoch once fenced."""
        if not commands:
            return
        if self._epoch is not None:
            commands = [_GlobalKey(self._api, KEY_EPOCH, self._held), *commands]
        self._transact(commands, action)

    def _transact(self, commands: list[Any], action: str) -> None:
        """Run ``commands`` as one transaction; map failures to ControlPlaneError.

        A transaction that inserted the NB_Global row while another client did is
        refused (the table holds one row); it is run once more, when the replica
        has the other client's row.
        """
        for attempt in (1, 2):
            try:
                with self._api.transaction(check_error=True, log_errors=False) as txn:
                    for command in commands:
                        txn.add(command)
                return
            except ovsdb_exceptions.TimeoutException as exc:
                raise ControlPlaneUnavailable(f"{action}: OVN NB at {self._remote} did not "
                                              f"answer within {self._timeout:g}s") from exc
            except RuntimeError as exc:
                if not _in_sync(self._api.idl):
                    raise ControlPlaneUnavailable(f"{action}: lost connection to OVN NB at "
                                                  f"{self._remote}") from exc
                if (attempt == 1 and "constraint violation" in str(exc)
                        and _NB_GLOBAL in str(exc) and self._await_nb_global()):
                    continue
                raise ControlPlaneError(f"{action} failed in OVN NB at {self._remote}: "
                                        f"{exc}") from exc

    def _await_nb_global(self) -> bool:
        """Wait (within the timeout) for the replica to hold an NB_Global row."""
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._read(lambda: bool(self._api.tables[_NB_GLOBAL].rows)):
                return True
            time.sleep(0.05)
        return False
