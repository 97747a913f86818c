"""The dispatcher a CNI binary's ``main`` calls: parse, call the plugin, reply on stdout.

Stdout carries exactly one JSON document (or nothing): the result of ADD, the
answer to VERSION, or an error object.  Logs go to the configured file, else
(or when ``logFile`` or ``logLevel`` is bad) to stderr, and anything the plugin
prints is redirected to stderr as well.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Protocol

from ovn_underlay.cni.netconf import LOG_KEYS, NetConf, parse_netconf
from ovn_underlay.cni.spec import (
    ERR_INTERNAL,
    SUPPORTED_VERSIONS,
    CniError,
    Request,
    Result,
    decode_config,
    merge_result,
    parse_request,
    reply_version,
    result_to_dict,
)
from ovn_underlay.logfile import private_file_handler

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TextIO

__all__ = ["Plugin", "dispatch", "run", "setup_logging"]

LOG = logging.getLogger(__name__)

_HANDLER_NAME = "ovn-underlay-cni"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class Plugin(Protocol):
    """What the network plugin implements; each method raises CniError to fail."""

    def add(self, req: Request) -> Result:
        """Attach the container; return our part of the result (prevResult is merged in)."""

    def delete(self, req: Request) -> None:
        """Detach the container; idempotent, tolerant of missing resources and netns."""

    def check(self, req: Request) -> None:
        """Verify the attachment described by ``req.prev_result``."""

    def status(self, req: Request) -> None:
        """Succeed when the plugin can serve ADD now."""

    def gc(self, req: Request) -> None:
        """Release whatever belongs to no pair in ``req.valid_attachments``."""


def run(plugin_factory: Callable[[Request], Plugin], environ: Mapping[str, str],
        stdin: bytes, stdout: TextIO) -> int:
    """Serve one CNI invocation and return the process exit code.

    The factory is called only once the request is valid, so a bad request never
    builds the plugin.  A CniError becomes the error object on *stdout* (exit 1);
    any other exception becomes ERR_INTERNAL with its text in ``details``.
    """
    config = _peek_config(stdin)
    setup_logging(_logging_of(config))
    request: Request | None = None
    try:
        request = parse_request(environ, stdin)
        reply = _execute(plugin_factory, request)
    except CniError as err:
        LOG.error("CNI %s failed: %s", environ.get("CNI_COMMAND", "?"), err)
        return _reply_error(err, request, config, stdout)
    except Exception as exc:
        LOG.exception("CNI %s raised an unexpected error", environ.get("CNI_COMMAND", "?"))
        internal = CniError(ERR_INTERNAL, "internal error", str(exc) or type(exc).__name__)
        return _reply_error(internal, request, config, stdout)
    if reply is not None:
        _write_json(stdout, reply)
    return 0


def _execute(plugin_factory: Callable[[Request], Plugin],
             request: Request) -> dict[str, Any] | None:
    """The reply to a valid request, or None for commands that print nothing."""
    if request.command == "VERSION":
        return {"cniVersion": request.cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    parse_netconf(request.config)  # a bad key is refused before the plugin is built
    LOG.info("CNI %s network=%s container=%s ifname=%s netns=%s pod=%s/%s", request.command,
             request.network_name, request.container_id, request.ifname, request.netns,
             request.pod_namespace, request.pod_name)
    with contextlib.redirect_stdout(sys.stderr):
        reply = dispatch(plugin_factory(request), request)
    LOG.info("CNI %s succeeded", request.command)
    return reply


def dispatch(plugin: Plugin, request: Request) -> dict[str, Any] | None:
    """Run the plugin method for the command; ADD's result is merged with prevResult.

    Returns the JSON reply of ADD, None for the commands that print nothing.
    """
    match request.command:
        case "ADD":
            ours = plugin.add(request)
            return result_to_dict(merge_result(request.prev_result, ours), request.cni_version)
        case "DEL":
            plugin.delete(request)
        case "CHECK":
            plugin.check(request)
        case "STATUS":
            plugin.status(request)
        case "GC":
            plugin.gc(request)
    return None


def _reply_error(err: CniError, request: Request | None, config: Mapping[str, Any],
                 stdout: TextIO) -> int:
    version = request.cni_version if request is not None else reply_version(config)
    _write_json(stdout, err.to_dict(version))
    return 1


def _peek_config(stdin: bytes) -> dict[str, Any]:
    """The configuration if stdin decodes at all (for logging and error replies), else {}."""
    try:
        return decode_config(stdin)
    except CniError:
        return {}


def _write_json(stdout: TextIO, obj: dict[str, Any]) -> None:
    stdout.write(json.dumps(obj, indent=2) + "\n")
    stdout.flush()


def _logging_of(config: Mapping[str, Any]) -> NetConf:
    """The logging ``config`` asks for, whatever its other keys hold; stderr and info if bad.

    A bad logging key is reported once the request is parsed (see _execute).
    """
    try:
        return parse_netconf({key: config[key] for key in LOG_KEYS if key in config})
    except CniError:
        return NetConf()


def setup_logging(netconf: NetConf) -> None:
    """Send logs to ``netconf.log_file`` (created 0600; else stderr) at ``netconf.log_level``.

    Never logs to stdout.  Calling it again replaces the handler it installed
    before.  A file that cannot be opened falls back to stderr, with a warning.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    problems: list[str] = []
    handler = _log_handler(netconf.log_file, problems)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(netconf.log_level)
    for problem in problems:
        LOG.warning("%s", problem)


def _log_handler(log_file: str, problems: list[str]) -> logging.Handler:
    if log_file:
        try:
            return private_file_handler(log_file)
        except OSError as exc:
            problems.append(f"cannot open logFile {log_file!r} ({exc}); logging to stderr")
    return logging.StreamHandler(sys.stderr)
