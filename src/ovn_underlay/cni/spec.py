"""CNI protocol types, request parsing and result conversion (spec 0.3.0 to 1.1.0).

Result shapes by spec version
    0.3.0, 0.3.1, 0.4.0
        every ``ips`` entry carries ``"version": "4"`` or ``"6"``.
    1.0.0
        ``ips`` entries have no ``version``; otherwise as 0.4.0.
    1.1.0
        as 1.0.0, plus the optional interface attributes ``mtu``, ``socketPath``
        and ``pciID`` and the optional route attributes ``mtu``, ``advmss``,
        ``priority``, ``table`` and ``scope``.  Older versions never show them.

Commands by spec version
    CHECK needs 0.4.0 or later; GC and STATUS need 1.1.0.

Only the standard library is imported, and ``typing`` only for type checkers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, replace

from ovn_underlay.names import ifname_problem

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "COMMANDS",
    "DNS",
    "ERR_DECODE",
    "ERR_INCOMPATIBLE_VERSION",
    "ERR_INTERNAL",
    "ERR_INVALID_CONFIG",
    "ERR_INVALID_ENV",
    "ERR_INVALID_NETNS",
    "ERR_IO",
    "ERR_LIMITED_CONNECTIVITY",
    "ERR_NOT_AVAILABLE",
    "ERR_NOT_READY",
    "ERR_POOL_EXHAUSTED",
    "ERR_TRY_AGAIN",
    "ERR_UNKNOWN_CONTAINER",
    "ERR_UNSUPPORTED_FIELD",
    "LATEST_VERSION",
    "SUPPORTED_VERSIONS",
    "CniError",
    "IPConfig",
    "Interface",
    "Request",
    "Result",
    "Route",
    "decode_config",
    "merge_result",
    "negotiate_version",
    "parse_cni_args",
    "parse_request",
    "read_config",
    "reply_version",
    "request_from_config",
    "result_from_dict",
    "result_to_dict",
]

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Well-known error codes (0-99 are reserved by the spec).
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_INVALID_NETNS = 8
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
# Plugin-specific error codes (100 and up).
ERR_POOL_EXHAUSTED = 100
ERR_NOT_READY = 101  # the interface was made, but its gateway is unreachable
ERR_INTERNAL = 102

_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
}
# The 1.1.0 spec text first named the GC key "cni.dev/attachments"; libcni sends both.
_ATTACHMENT_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_NAME_RULE = "it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
_OWN_NETNS = "/proc/self/ns/net"


class CniError(Exception):
    """A failure reported to the runtime as a CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        """The error object as the spec defines it; ``details`` only when there are some."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Interface:
    """An interface of an attachment; ``sandbox`` is the netns path ("" on the host).

    ``mtu``, ``socket_path`` and ``pci_id`` appear in 1.1.0 results only.
    """

    name: str
    mac: str
    sandbox: str = ""
    mtu: int | None = None
    socket_path: str = ""
    pci_id: str = ""


@dataclass(frozen=True)
class IPConfig:
    """An address ("a.b.c.d/nn" or "x::y/nn") and the index of its interface in the result."""

    address: str
    gateway: str | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    """A route; the attributes after ``gw`` appear in 1.1.0 results only."""

    dst: str
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True)
class DNS:
    """Resolver settings of a result; every field is optional."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when no field is set."""
        return not (self.nameservers or self.domain or self.search or self.options)


@dataclass(frozen=True)
class Result:
    """A version-independent ADD result; see :func:`result_to_dict` for the JSON."""

    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS | None = None


@dataclass(frozen=True)
class Request:
    """One validated plugin invocation.

    ``container_id``, ``netns`` and ``ifname`` are "" for GC, STATUS and VERSION;
    ``netns`` may also be "" (or name a vanished namespace) for DEL.
    ``valid_attachments`` holds GC's (containerID, ifname) pairs and is None for
    every other command.
    """

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: str
    config: dict[str, Any]
    cni_version: str
    prev_result: Result | None
    valid_attachments: tuple[tuple[str, str], ...] | None

    @property
    def network_name(self) -> str:
        """The network configuration's ``name`` ("" for VERSION)."""
        return str(self.config.get("name", ""))

    @property
    def pod_namespace(self) -> str:
        """K8S_POD_NAMESPACE from CNI_ARGS, "" when absent."""
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        """K8S_POD_NAME from CNI_ARGS, "" when absent."""
        return self.args.get("K8S_POD_NAME", "")


# --- versions -----------------------------------------------------------------------------


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _at_least(version: str, minimum: str) -> bool:
    return _version_key(version) >= _version_key(minimum)


def _incompatible(msg: str) -> CniError:
    return CniError(ERR_INCOMPATIBLE_VERSION, msg,
                    f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")


def negotiate_version(config: Mapping[str, Any]) -> str:
    """The spec version to speak for *config*.

    ``cniVersion`` wins when set; without it, the highest supported entry of
    ``cniVersions`` is chosen.
    """
    version = config.get("cniVersion")
    if version is not None and not isinstance(version, str):
        raise CniError(ERR_INVALID_CONFIG, "cniVersion must be a string")
    if version:
        if version not in SUPPORTED_VERSIONS:
            raise _incompatible(f"unsupported cniVersion {version!r}")
        return version
    return _highest_common_version(config.get("cniVersions"))


def _highest_common_version(offered: Any) -> str:
    if not offered:
        raise CniError(ERR_INVALID_CONFIG,
                       "network configuration has neither cniVersion nor cniVersions")
    if not isinstance(offered, list) or not all(isinstance(v, str) for v in offered):
        raise CniError(ERR_INVALID_CONFIG, "cniVersions must be a list of strings")
    common: list[str] = [version for version in offered if version in SUPPORTED_VERSIONS]
    if not common:
        raise _incompatible(f"none of cniVersions {offered} is supported")
    return max(common, key=_version_key)


def reply_version(config: Mapping[str, Any]) -> str:
    """The version to stamp on a reply: the negotiated one, else the latest supported."""
    try:
        return negotiate_version(config)
    except CniError:
        return LATEST_VERSION


# --- results: Result -> JSON ----------------------------------------------------------------


def result_to_dict(result: Result, version: str) -> dict[str, Any]:
    """*result* in the exact JSON shape of spec *version*, ``cniVersion`` included.

    Empty lists and an empty ``dns`` are left out, as the reference library does.
    """
    if version not in SUPPORTED_VERSIONS:
        raise _incompatible(f"cannot write a result for cniVersion {version!r}")
    out: dict[str, Any] = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [_interface_to_dict(iface, version) for iface in result.interfaces]
    if result.ips:
        out["ips"] = [_ip_to_dict(ip, version) for ip in result.ips]
    if result.routes:
        out["routes"] = [_route_to_dict(route, version) for route in result.routes]
    if result.dns is not None and not result.dns.empty:
        out["dns"] = _dns_to_dict(result.dns)
    return out


def _interface_to_dict(iface: Interface, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": iface.name}
    if iface.mac:
        out["mac"] = iface.mac
    if iface.sandbox:
        out["sandbox"] = iface.sandbox
    if _at_least(version, "1.1.0"):
        if iface.mtu is not None:
            out["mtu"] = iface.mtu
        if iface.socket_path:
            out["socketPath"] = iface.socket_path
        if iface.pci_id:
            out["pciID"] = iface.pci_id
    return out


def _ip_to_dict(ip: IPConfig, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not _at_least(version, "1.0.0"):
        out["version"] = str(ipaddress.ip_interface(ip.address).version)
    out["address"] = ip.address
    if ip.gateway:
        out["gateway"] = ip.gateway
    if ip.interface is not None:
        out["interface"] = ip.interface
    return out


def _route_to_dict(route: Route, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": route.dst}
    if route.gw:
        out["gw"] = route.gw
    if _at_least(version, "1.1.0"):
        extra = {"mtu": route.mtu, "advmss": route.advmss, "priority": route.priority,
                 "table": route.table, "scope": route.scope}
        out.update((key, value) for key, value in extra.items() if value is not None)
    return out


def _dns_to_dict(dns: DNS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dns.nameservers:
        out["nameservers"] = list(dns.nameservers)
    if dns.domain:
        out["domain"] = dns.domain
    if dns.search:
        out["search"] = list(dns.search)
    if dns.options:
        out["options"] = list(dns.options)
    return out


# --- results: JSON -> Result ----------------------------------------------------------------


def result_from_dict(data: Mapping[str, Any]) -> Result:
    """Parse a result of any supported version (a ``prevResult``), validating it.

    Malformed content raises CniError(ERR_DECODE); a ``cniVersion`` this module
    does not speak raises CniError(ERR_INVALID_CONFIG).
    """
    obj = _as_object(data, "result")
    version = obj.get("cniVersion")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INVALID_CONFIG, "invalid CNI result",
                       f"cniVersion {version!r} is not one of {', '.join(SUPPORTED_VERSIONS)}")
    interfaces = tuple(_interface_from_dict(raw, f"interfaces[{index}]")
                       for index, raw in enumerate(_list_field(obj, "interfaces", "result")))
    ips = tuple(_ip_from_dict(raw, f"ips[{index}]", len(interfaces))
                for index, raw in enumerate(_list_field(obj, "ips", "result")))
    routes = tuple(_route_from_dict(raw, f"routes[{index}]")
                   for index, raw in enumerate(_list_field(obj, "routes", "result")))
    return Result(interfaces=interfaces, ips=ips, routes=routes,
                  dns=_dns_from_dict(obj.get("dns")))


def _interface_from_dict(raw: Any, where: str) -> Interface:
    obj = _as_object(raw, where)
    return Interface(
        name=_str_field(obj, "name", where, required=True),
        mac=_str_field(obj, "mac", where),
        sandbox=_str_field(obj, "sandbox", where),
        mtu=_int_field(obj, "mtu", where),
        socket_path=_str_field(obj, "socketPath", where),
        pci_id=_str_field(obj, "pciID", where),
    )


def _ip_from_dict(raw: Any, where: str, interface_count: int) -> IPConfig:
    obj = _as_object(raw, where)
    address = _str_field(obj, "address", where, required=True)
    family = _cidr_version(address, f"{where}.address")
    declared = obj.get("version")
    if declared is not None and declared != str(family):
        raise _bad_result(f"{where}.version", f"{declared!r} does not match address {address}")
    gateway = _str_field(obj, "gateway", where) or None
    if gateway is not None:
        _check_ip(gateway, f"{where}.gateway")
    index = _int_field(obj, "interface", where)
    if index is not None and not 0 <= index < interface_count:
        raise _bad_result(f"{where}.interface",
                          f"{index} is not an index into {interface_count} interface(s)")
    return IPConfig(address=address, gateway=gateway, interface=index)


def _route_from_dict(raw: Any, where: str) -> Route:
    obj = _as_object(raw, where)
    dst = _str_field(obj, "dst", where, required=True)
    _cidr_version(dst, f"{where}.dst")
    gw = _str_field(obj, "gw", where) or None
    if gw is not None:
        _check_ip(gw, f"{where}.gw")
    return Route(dst=dst, gw=gw, mtu=_int_field(obj, "mtu", where),
                 advmss=_int_field(obj, "advmss", where),
                 priority=_int_field(obj, "priority", where),
                 table=_int_field(obj, "table", where), scope=_int_field(obj, "scope", where))


def _dns_from_dict(raw: Any) -> DNS | None:
    if raw is None:
        return None
    obj = _as_object(raw, "dns")
    dns = DNS(nameservers=_str_list_field(obj, "nameservers", "dns"),
              domain=_str_field(obj, "domain", "dns"),
              search=_str_list_field(obj, "search", "dns"),
              options=_str_list_field(obj, "options", "dns"))
    return None if dns.empty else dns


def _bad_result(where: str, problem: str) -> CniError:
    return CniError(ERR_DECODE, "invalid CNI result", f"{where}: {problem}")


def _as_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad_result(where, "expected a JSON object")
    return value


def _list_field(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad_result(f"{where}.{key}", "expected a list")
    return value


def _str_field(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise _bad_result(f"{where}.{key}", "missing")
        return ""
    if not isinstance(value, str):
        raise _bad_result(f"{where}.{key}", "expected a string")
    return value


def _int_field(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_result(f"{where}.{key}", "expected an integer")
    return value


def _str_list_field(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _list_field(obj, key, where)
    if not all(isinstance(value, str) for value in values):
        raise _bad_result(f"{where}.{key}", "expected a list of strings")
    return tuple(values)


def _cidr_version(text: str, where: str) -> int:
    """The IP version of "address/prefix" *text*."""
    if "/" not in text:
        raise _bad_result(where, f"{text!r} is not in address/prefix form")
    try:
        return ipaddress.ip_interface(text).version
    except ValueError as exc:
        raise _bad_result(where, str(exc)) from exc


def _check_ip(text: str, where: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError as exc:
        raise _bad_result(where, str(exc)) from exc


# --- chaining -------------------------------------------------------------------------------


def merge_result(prev: Result | None, ours: Result) -> Result:
    """Append *ours* to the result of the previous plugin in the chain.

    Our IPConfig.interface indexes are shifted to point at our interfaces in the
    merged list; routes are appended; DNS stays the previous one unless ours is set.
    """
    if prev is None:
        return ours
    offset = len(prev.interfaces)
    shifted = tuple(ip if ip.interface is None else replace(ip, interface=ip.interface + offset)
                    for ip in ours.ips)
    dns = ours.dns if ours.dns is not None and not ours.dns.empty else prev.dns
    return Result(interfaces=prev.interfaces + ours.interfaces, ips=prev.ips + shifted,
                  routes=prev.routes + ours.routes, dns=dns)


# --- requests -------------------------------------------------------------------------------


def parse_request(environ: Mapping[str, str], stdin: bytes) -> Request:
    """Validate one invocation (CNI_* environment and the network configuration on stdin).

    Raises CniError with the code the spec prescribes for the first problem found.
    """
    return request_from_config(environ, read_config(stdin))


def request_from_config(environ: Mapping[str, str],
                        config: dict[str, Any] | CniError) -> Request:
    """Validate one invocation from its environment and its stdin as :func:`read_config` read it.

    Raises CniError with the code the spec prescribes for the first problem
    found: the environment's command first, then the configuration (``config``
    itself, if stdin did not decode), then the rest of the environment.
    """
    command = _command(environ)
    if command == "VERSION":
        return _version_request(environ, config)
    if isinstance(config, CniError):
        raise config
    version = negotiate_version(config)
    _check_network(config)
    _check_command_version(command, version)
    container_id, netns, ifname = _attachment_env(command, environ)
    return Request(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=environ.get("CNI_PATH", ""),
        config=config,
        cni_version=version,
        prev_result=_prev_result(command, config),
        valid_attachments=_valid_attachments(command, config),
    )


def read_config(stdin: bytes) -> dict[str, Any] | CniError:
    """The network configuration on *stdin*, or the CniError(ERR_DECODE) saying why there is none.

    A call's stdin is decoded once: the request is validated from what this
    returns (:func:`request_from_config`), and error replies take their
    version from it.
    """
    try:
        return decode_config(stdin)
    except CniError as err:
        return err


def decode_config(stdin: bytes) -> dict[str, Any]:
    """The network configuration on *stdin*, which must be a JSON object (else ERR_DECODE)."""
    try:
        config = json.loads(stdin)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise CniError(ERR_DECODE, "cannot decode the network configuration", str(exc)) from exc
    if not isinstance(config, dict):
        raise CniError(ERR_DECODE, "the network configuration is not a JSON object")
    return config


def parse_cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS ("K=V;K=V") as a dict; empty segments are skipped."""
    args: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key or "=" in value:
            raise CniError(ERR_INVALID_ENV, "malformed CNI_ARGS",
                           f"expected KEY=VALUE pairs separated by ';', got {pair!r}")
        args[key] = value
    return args


def _command(environ: Mapping[str, str]) -> str:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(ERR_INVALID_ENV, "CNI_COMMAND is not set")
    if command not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}",
                       f"expected one of {', '.join(COMMANDS)}")
    return command


def _version_request(environ: Mapping[str, str], config: dict[str, Any] | CniError) -> Request:
    """VERSION is a probe: it is answered whatever stdin holds (the spec passes only cniVersion)."""
    if isinstance(config, CniError):
        config = {}
    return Request(command="VERSION", container_id="", netns="", ifname="", args={},
                   path=environ.get("CNI_PATH", ""), config=config,
                   cni_version=reply_version(config), prev_result=None, valid_attachments=None)


def _check_network(config: Mapping[str, Any]) -> None:
    for key in ("name", "type"):
        value = config.get(key)
        if not isinstance(value, str) or not value:
            raise CniError(ERR_INVALID_CONFIG,
                           f"the network configuration needs a non-empty string {key!r}")
    if not _NAME_RE.fullmatch(config["name"]):
        raise CniError(ERR_INVALID_CONFIG, f"invalid network name {config['name']!r}", _NAME_RULE)


def _check_command_version(command: str, version: str) -> None:
    minimum = _MIN_VERSION.get(command)
    if minimum is not None and not _at_least(version, minimum):
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"{command} needs cniVersion {minimum} or later",
                       f"the network configuration has cniVersion {version}")


def _attachment_env(command: str, environ: Mapping[str, str]) -> tuple[str, str, str]:
    """(container ID, netns, ifname) for ADD, CHECK and DEL; empty for GC and STATUS."""
    required = _REQUIRED_ENV.get(command)
    if required is None:
        return "", "", ""
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CniError(ERR_INVALID_ENV,
                       f"required environment variable(s) not set: {', '.join(missing)}")
    container_id = environ["CNI_CONTAINERID"]
    netns = environ.get("CNI_NETNS", "")
    ifname = environ["CNI_IFNAME"]
    if not _NAME_RE.fullmatch(container_id):
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_CONTAINERID {container_id!r}", _NAME_RULE)
    _check_ifname(ifname)
    _check_netns(command, netns)
    return container_id, netns, ifname


def _check_ifname(ifname: str) -> None:
    problem = ifname_problem(ifname)
    if problem is not None:
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}", problem)


def _check_netns(command: str, netns: str) -> None:
    """ADD and CHECK need an existing netns; none may be the plugin's own namespace."""
    if command != "DEL" and not os.path.exists(netns):
        raise CniError(ERR_INVALID_ENV, f"CNI_NETNS {netns} does not exist")
    if netns and _is_own_netns(netns):
        raise CniError(ERR_INVALID_NETNS,
                       f"CNI_NETNS {netns} is the plugin's own network namespace")


def _is_own_netns(path: str) -> bool:
    try:
        target, own = os.stat(path), os.stat(_OWN_NETNS)
    except OSError:
        return False
    return (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino)


def _prev_result(command: str, config: Mapping[str, Any]) -> Result | None:
    """The parsed ``prevResult`` for ADD, CHECK and DEL (CHECK requires one)."""
    if command not in _REQUIRED_ENV:
        return None
    raw = config.get("prevResult")
    if raw is None:
        if command == "CHECK":
            raise CniError(ERR_INVALID_CONFIG, "CHECK needs a prevResult in the configuration")
        return None
    try:
        return result_from_dict(raw)
    except CniError as err:
        raise CniError(err.code, "invalid prevResult", err.details) from err


def _valid_attachments(command: str,
                       config: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """GC's still-valid (containerID, ifname) pairs; a GC without the list is refused."""
    if command != "GC":
        return None
    raw = next((config[key] for key in _ATTACHMENT_KEYS if key in config), None)
    if not isinstance(raw, list):
        raise CniError(ERR_INVALID_CONFIG, f"GC needs a {_ATTACHMENT_KEYS[0]} list")
    return tuple(_attachment_pair(index, item) for index, item in enumerate(raw))


def _attachment_pair(index: int, item: Any) -> tuple[str, str]:
    if isinstance(item, dict):
        container_id, ifname = item.get("containerID"), item.get("ifname")
        if isinstance(container_id, str) and container_id and isinstance(ifname, str) and ifname:
            return container_id, ifname
    raise CniError(ERR_INVALID_CONFIG, f"invalid {_ATTACHMENT_KEYS[0]} entry",
                   f"entry {index} must be {{\"containerID\": ..., \"ifname\": ...}}, got {item!r}")
