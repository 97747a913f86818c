"""The HTTP front: routing, discovery, authentication, request log, watch streaming.

Paths and verbs as https://kubernetes.io/docs/reference/using-api/api-concepts/ "Standard
API terminology" lays them out (``/api/v1/...``, ``/apis/GROUP/VERSION/...``, namespaced
``namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]``, all-namespaces lists and watches), with
the discovery documents kubectl and client libraries read (``/api``, ``/api/v1``,
``/apis``, ``/apis/GROUP``, ``/apis/GROUP/VERSION``, ``/version``).  Every response is
JSON; errors are ``Status`` objects.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import errors as err
from .api import Api, Config, ListOptions, Selection, parse_rv
from .auth import ANONYMOUS, RequestLog, User, load_tokens
from .endpointslices import EndpointSliceController
from .errors import ApiError
from .jsonutil import Obj
from .resources import ResourceType, api_group, group_versions, resource_list
from .watch import WatchStream

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "",
           "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
           "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64"}
NAMESPACE_SUBRESOURCES = ("status", "finalize")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_bool(params: dict[str, str], name: str) -> bool | None:
    """A query parameter as Go's strconv.ParseBool reads it (None when absent)."""
    if name not in params:
        return None
    value = params[name]
    if value in _TRUE or value == "":
        return True
    if value in _FALSE:
        return False
    raise err.bad_request(f'{name}: Invalid value: "{value}": not a boolean')


def _int_param(params: dict[str, str], name: str) -> int | None:
    if name not in params or params[name] == "":
        return None
    try:
        return int(params[name])
    except ValueError:
        raise err.bad_request(f'{name}: Invalid value: "{params[name]}": not an integer') from None


class _Request:
    """What the path names (RequestInfo in kube-apiserver terms)."""

    def __init__(self) -> None:
        self.resource_request = False
        self.group = ""
        self.version = ""
        self.namespace: str | None = None
        self.resource = ""
        self.name = ""
        self.subresource = ""
        self.verb = ""


def parse_path(path: str) -> _Request | None:
    """Split a resource path; None for non-resource paths."""
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
    info = _Request()
    if len(parts) >= 2 and parts[0] == "api":
        info.version, rest = parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        info.group, info.version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    info.resource_request = True
    if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
        info.namespace = rest[1]
        rest = rest[2:]
    info.resource = rest[0]
    info.name = rest[1] if len(rest) > 1 else ""
    info.subresource = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3:
        return None
    return info


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    """socketserver's backlog of 5 reset connections when ~100 pod workers wrote at once."""
    block_on_close = False
    kube: KubeApiServer
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(10)
            request = self.ssl_context.wrap_socket(request, server_side=True)
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that vanish mid-request are not worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "kubeapi-emulator"
    wbufsize = 1 << 16  # a response leaves in one write (flushed per request, per event)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the request log, not to stderr."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # --- plumbing -----------------------------------------------------------------------

    def _handle(self) -> None:
        kube = self.server.kube
        started = time.time()
        split = urllib.parse.urlsplit(self.path)
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(
            split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        info = parse_path(split.path)
        entry: dict[str, Any] = {"method": self.command, "path": split.path,
                                 "userAgent": self.headers.get("User-Agent", ""),
                                 "user": "", "uid": "", "groups": [],
                                 "time": round(started, 3)}
        self._entry: dict[str, Any] | None = entry
        self._code = 0
        try:
            if info is None:
                entry.update(verb=self.command.lower(), nonResourceURL=split.path)
            else:
                info.verb = _verb(self.command, info, params)
                entry.update(verb=info.verb, apiGroup=info.group, apiVersion=info.version,
                             resource=info.resource, subresource=info.subresource,
                             namespace=info.namespace or "", name=info.name)
            user = kube.authenticate(self.headers.get("Authorization"))
            entry.update(user=user.name, uid=user.uid, groups=list(user.groups))
            if info is None:
                self._non_resource(split.path)
            else:
                self._resource(info, params, body)
        except ApiError as exc:
            self._send_json(exc.code, exc.status(), exc.retry_after)
        except (ConnectionError, OSError):
            self.close_connection = True
        finally:
            self._log(self._code)

    def _log(self, code: int) -> None:
        """Append this request to the log, once, before the client can see the answer."""
        self._code = code
        if self._entry is not None:
            self._entry["code"] = code
            self.server.kube.log.append(self._entry)
            self._entry = None

    def _send_json(self, code: int, body: Obj, retry_after: int | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._log(code)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self._log(code)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self, body: bytes) -> Any:
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0]
        if content_type.strip() not in ("application/json", "", "*/*"):
            raise err.unsupported_media_type(content_type, ["application/json"])
        try:
            return json.loads(body or b"{}")
        except ValueError as exc:
            raise err.bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    # --- non-resource paths -------------------------------------------------------------

    def _non_resource(self, path: str) -> None:
        kube = self.server.kube
        api = kube.api
        parts = [p for p in path.strip("/").split("/") if p]
        if self.command != "GET":
            raise err.method_not_allowed()
        if parts in (["healthz"], ["livez"], ["readyz"]):
            self._send_text(200, "ok")
            return
        if parts == ["version"]:
            self._send_json(200, VERSION)
            return
        served = api.served()
        groups = group_versions(served)
        if parts == ["api"]:
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0",
                                       "serverAddress": kube.host_port}]})
        elif parts == ["api", "v1"]:
            self._send_json(200, resource_list("v1", [t for t in served if t.group == ""]))
        elif parts == ["apis"]:
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                api_group(name, versions) for name, versions in groups.items() if name]})
        elif len(parts) == 2 and parts[0] == "apis" and parts[1] in groups and parts[1]:
            document = api_group(parts[1], groups[parts[1]])
            self._send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **document})
        elif (len(parts) == 3 and parts[0] == "apis" and parts[1]
              and parts[2] in groups.get(parts[1], [])):
            self._send_json(200, resource_list(f"{parts[1]}/{parts[2]}", [
                t for t in served if t.group == parts[1] and t.version == parts[2]]))
        else:
            self._send_text(404, "404 page not found")

    # --- resources ----------------------------------------------------------------------

    def _resource(self, info: _Request, params: dict[str, str], body: bytes) -> None:
        kube = self.server.kube
        api = kube.api
        rtype = api.type_for(info.group, info.version, info.resource)
        if info.namespace is not None and not rtype.namespaced:
            raise err.route_not_found()
        namespace = info.namespace or ""
        if rtype.namespaced and info.namespace is None and info.name:
            raise err.route_not_found()
        if info.subresource and not (
                (info.subresource == "status" and rtype.status)
                or (info.subresource == "binding" and rtype.kind == "Pod")):
            raise err.route_not_found()
        dry_run = params.get("dryRun") == "All"
        verb = info.verb
        if verb == "get":
            if info.subresource == "binding":
                raise err.method_not_allowed()
            self._send_json(200, api.get(rtype, namespace, info.name,
                                         params.get("resourceVersion")))
        elif verb == "list":
            scope = info.namespace if rtype.namespaced else None
            self._send_json(200, api.list_objects(rtype, scope, self._list_options(params)))
        elif verb == "watch":
            self._watch(rtype, info.namespace if rtype.namespaced else None, params)
        elif verb == "create":
            if info.subresource == "binding":
                self._send_json(201, api.bind(namespace, info.name, self._json_body(body)))
            elif info.name or (rtype.namespaced and info.namespace is None):
                raise err.method_not_allowed()
            else:
                self._send_json(201, api.create(rtype, namespace, self._json_body(body),
                                                dry_run))
        elif verb == "update":
            self._require_name(info)
            obj, created = api.update(rtype, namespace, info.name, self._json_body(body),
                                      info.subresource, dry_run)
            self._send_json(201 if created else 200, obj)
        elif verb == "patch":
            self._require_name(info)
            self._send_json(200, api.patch(rtype, namespace, info.name,
                                           self.headers.get("Content-Type") or "", body,
                                           info.subresource, dry_run))
        elif verb == "delete":
            if info.subresource:
                raise err.method_not_allowed()
            options = self._json_body(body) if body else {}
            if not isinstance(options, dict):
                raise err.bad_request("DeleteOptions must be a JSON object")
            grace = _int_param(params, "gracePeriodSeconds")
            if grace is not None:
                options["gracePeriodSeconds"] = grace
            self._send_json(200, api.delete(rtype, namespace, info.name, options, dry_run))
        else:
            raise err.method_not_allowed()

    @staticmethod
    def _require_name(info: _Request) -> None:
        if not info.name or info.subresource == "binding":
            raise err.method_not_allowed()

    @staticmethod
    def _list_options(params: dict[str, str]) -> ListOptions:
        return ListOptions(label_selector=params.get("labelSelector"),
                           field_selector=params.get("fieldSelector"),
                           resource_version=params.get("resourceVersion"),
                           resource_version_match=params.get("resourceVersionMatch"),
                           limit=_int_param(params, "limit") or 0,
                           continue_token=params.get("continue") or None)

    def _watch(self, rtype: ResourceType, namespace: str | None, params: dict[str, str]) -> None:
        kube = self.server.kube
        selection = Selection(rtype, namespace, params.get("labelSelector"),
                              params.get("fieldSelector"))
        timeout = _int_param(params, "timeoutSeconds")
        stream = WatchStream(kube.api, rtype, selection, params.get("resourceVersion"),
                             params.get("resourceVersionMatch"),
                             bool(parse_bool(params, "allowWatchBookmarks")),
                             parse_bool(params, "sendInitialEvents"),
                             float(timeout) if timeout is not None else None,
                             kube.bookmark_interval)
        if params.get("resourceVersion") not in (None, "", "0"):
            parse_rv(params["resourceVersion"])
        with kube.watch_lock:
            if kube.watches_dropped:
                raise err.too_many_requests("storage is (re)initializing")
            stream.open()
            kube.open_watches.add(stream)
        try:
            self._log(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for event in stream.events(self._client_alive):
                data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        finally:
            with kube.watch_lock:
                kube.open_watches.discard(stream)
            stream.close()

    def _client_alive(self) -> bool:
        """False once a plain-TCP client has closed its end (TLS: assumed alive)."""
        sock = self.connection
        if isinstance(sock, ssl.SSLSocket):
            return not self.server.kube.stopping
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                return False
        except (OSError, ValueError):
            return False
        return not self.server.kube.stopping


def _verb(method: str, info: _Request, params: dict[str, str]) -> str:
    if method == "GET":
        if info.name:
            return "get"
        return "watch" if parse_bool(params, "watch") else "list"
    if method == "DELETE":
        return "delete" if info.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


class KubeApiServer:
    """A test Kubernetes API server, in-process (``start()``/``stop()``) or as a program.

    ``port=0`` picks a free port; ``url`` is where clients connect.  See the package
    docstring for what is served and how faithfully.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 tokens_file: str | Path | None = None,
                 service_cluster_ip_range: str = "198.18.128.0/20",
                 service_node_port_range: tuple[int, int] = (30000, 32767),
                 advertise_address: str | None = None,
                 request_log: str | Path | None = None, watch_history: int = 10000,
                 bookmark_interval: float = 60.0, endpointslice_controller: bool = True,
                 expire_graceful_deletions: bool = True) -> None:
        self.api = Api(Config(service_cluster_ip_range, service_node_port_range,
                              watch_history, expire_graceful_deletions))
        self.tokens: dict[str, User] | None = load_tokens(tokens_file) if tokens_file else None
        self.log = RequestLog(request_log)
        self.bookmark_interval = bookmark_interval
        self.stopping = False
        self.watch_lock = threading.Lock()
        self.open_watches: set[WatchStream] = set()
        self.watches_dropped = False
        """Between drop_watches() and resume_watches(): watch requests get 429."""
        self._host, self._port = host, port
        self._tls = (tls_cert, tls_key) if tls_cert else None
        self._advertise = advertise_address
        self._with_controller = endpointslice_controller
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._controller: EndpointSliceController | None = None

    @property
    def controller(self) -> EndpointSliceController | None:
        """The running EndpointSlice stand-in (None when turned off)."""
        return self._controller

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def host_port(self) -> str:
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host_port}"

    def advertise_address(self) -> str:
        if self._advertise:
            return self._advertise
        try:
            address = ipaddress.ip_address(self._host)
        except ValueError:
            return "127.0.0.1"
        return "127.0.0.1" if address.is_unspecified else str(address)

    def start(self) -> KubeApiServer:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        httpd = server_class((self._host, self._port), _Handler)
        httpd.kube = self
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._tls[0]), str(self._tls[1]) if self._tls[1] else None)
            httpd.ssl_context = context
        self._httpd = httpd
        self.api.seed(self.port, self.advertise_address())
        self.api.start()
        if self._with_controller:
            self._controller = EndpointSliceController(self.api)
            self._controller.start()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="kubeapi-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping = True
        if self._controller is not None:
            self._controller.stop()
        self.api.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.log.close()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def authenticate(self, header: str | None) -> User:
        if self.tokens is None:
            return ANONYMOUS
        if header and header.startswith("Bearer "):
            user = self.tokens.get(header[len("Bearer "):].strip())
            if user is not None:
                return user
        raise err.unauthorized()

    def request_log(self) -> list[dict[str, Any]]:
        """Every request so far: user, groups, verb, apiGroup, resource, ..., code."""
        return self.log.entries()

    def compact(self) -> int:
        """Test hook: drop the watch history; a watch from an older RV now gets 410."""
        return self.api.store.compact()

    def drop_watches(self) -> int:
        """The watch cache re-initializes, as kube-apiserver's does when its watch of etcd
        breaks (etcd compacted past it, etcd restarted): every open watch ends now, and
        watch requests are answered 429 ``storage is (re)initializing`` (Retry-After: 1)
        until :meth:`resume_watches`; lists and writes go on.  Returns how many watches
        were ended."""
        with self.watch_lock:
            self.watches_dropped = True
            streams = list(self.open_watches)
        for stream in streams:
            stream.end()
        return len(streams)

    def resume_watches(self) -> int:
        """The watch cache is ready again, its history beginning now: watches are served,
        and one from an older resourceVersion gets 410 Expired (the writes made while it
        was down cannot be replayed: a client lists again).  Returns the resourceVersion
        the history begins at."""
        with self.watch_lock:
            rv = self.api.store.compact()
            self.watches_dropped = False
        return rv
