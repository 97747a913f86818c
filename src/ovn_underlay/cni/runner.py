"""One CNI call, from its environment and stdin to what the CNI binary answers.

:func:`serve` is the one request path, in-process and in the node daemon
alike: it decodes stdin once, validates the request (:mod:`.spec`) and the
plugin's keys (:mod:`.netconf`), answers VERSION itself, builds the plugin for
every other command and calls it, and turns any failure into the spec's error
object in the version the call asked for.  It touches nothing process-wide;
what a process needs around it comes in as :class:`Hooks`.  :func:`run` is
the in-process wrapper: logs go to the configured file, else (or when
``logFile`` or ``logLevel`` is bad) to stderr, anything the plugin prints is
redirected to stderr, and the answer is written to stdout.

Stdout carries exactly one JSON document (or nothing): the result of ADD, the
answer to VERSION, or an error object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ovn_underlay.cni.netconf import LOG_KEYS, NetConf, parse_netconf
from ovn_underlay.cni.spec import (
    ERR_INTERNAL,
    SUPPORTED_VERSIONS,
    CniError,
    Request,
    Result,
    merge_result,
    read_config,
    reply_version,
    request_from_config,
    result_to_dict,
)
from ovn_underlay.logfile import private_file_handler

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = [
    "NO_HOOKS",
    "Hooks",
    "Outcome",
    "Plugin",
    "PluginFactory",
    "dispatch",
    "error_reply",
    "run",
    "serve",
    "setup_logging",
]

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


PluginFactory = Callable[[Request, NetConf], Plugin]
"""Builds the plugin of a valid request from the request and its validated keys."""


def _ignore(config: Mapping[str, Any]) -> None:
    del config


def _nothing_around(request: Request) -> AbstractContextManager[object]:
    del request
    return contextlib.nullcontext()


class Hooks:
    """What a wrapper of :func:`serve` adds to a call; the defaults add nothing.

    ``configured`` is called first, before anything is logged, with the
    decoded network configuration ({} if stdin did not decode), whatever its
    keys hold.  ``around_plugin`` is entered around building and calling the
    plugin: for a valid request whose plugin keys are valid too, every command
    but VERSION.  (Plain classes here rather than dataclasses: making one costs
    the in-process CNI binary's start ~0.3 ms.)
    """

    __slots__ = ("around_plugin", "configured")

    def __init__(self, configured: Callable[[Mapping[str, Any]], None] = _ignore,
                 around_plugin: Callable[[Request], AbstractContextManager[object]]
                 = _nothing_around) -> None:
        self.configured = configured
        self.around_plugin = around_plugin


NO_HOOKS = Hooks()


class Outcome:
    """What one CNI call comes to: the CNI binary's exit code and stdout, and for metrics
    the command and the error code.

    ``exit_code`` is 0, or 1 with an error object in ``stdout``; ``stdout`` one
    JSON document, or b"" for the commands that print nothing; ``command`` is
    CNI_COMMAND as the caller set it ("" if unset, and perhaps no command at
    all); ``error_code`` the CNI error code of a failed call, None otherwise.
    """

    __slots__ = ("command", "error_code", "exit_code", "stdout")

    def __init__(self, exit_code: int, stdout: bytes, command: str,
                 error_code: int | None = None) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.command = command
        self.error_code = error_code


def serve(environ: Mapping[str, str], stdin: bytes, plugin_factory: PluginFactory,
          hooks: Hooks = NO_HOOKS) -> Outcome:
    """The outcome of the CNI call given by ``environ`` (its ``CNI_*`` variables) and ``stdin``.

    The factory is called only once the request and the plugin's keys are
    valid, so a bad request never builds the plugin.  A CniError becomes the
    error object (exit code 1); any other exception becomes ERR_INTERNAL with
    its text in ``details``.
    """
    command = environ.get("CNI_COMMAND", "")
    config = read_config(stdin)
    hooks.configured({} if isinstance(config, CniError) else config)
    try:
        reply = _execute(request_from_config(environ, config), plugin_factory, hooks)
    except CniError as err:
        LOG.error("CNI %s failed: %s", command or "?", err)
        failure = err
    except Exception as exc:
        LOG.exception("CNI %s raised an unexpected error", command or "?")
        failure = CniError(ERR_INTERNAL, "internal error", str(exc) or type(exc).__name__)
    else:
        return Outcome(0, b"" if reply is None else _json(reply), command)
    return Outcome(1, error_reply(failure, config), command, failure.code)


def error_reply(err: CniError, config: Mapping[str, Any] | CniError) -> bytes:
    """The error object of ``err`` as the CNI binary prints it, in the version the call asked for.

    ``config`` is the call's stdin as :func:`~.spec.read_config` read it.  The
    version is the one it negotiates (a valid request's own), else the latest
    supported: an error reply is always in a version the runtime can read.
    """
    version = reply_version({} if isinstance(config, CniError) else config)
    return _json(err.to_dict(version))


def _execute(request: Request, plugin_factory: PluginFactory,
             hooks: Hooks) -> dict[str, Any] | None:
    """The reply to a valid request, or None for commands that print nothing."""
    if request.command == "VERSION":
        return {"cniVersion": request.cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    netconf = parse_netconf(request.config)  # a bad key is refused before the plugin is built
    LOG.info("CNI %s container=%s ifname=%s netns=%s pod=%s/%s network=%s", request.command,
             request.container_id, request.ifname, request.netns, request.pod_namespace,
             request.pod_name, request.network_name)
    with hooks.around_plugin(request):
        reply = dispatch(plugin_factory(request, netconf), request)
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


def _json(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


# --- in-process -----------------------------------------------------------------------------


def run(plugin_factory: PluginFactory, environ: Mapping[str, str], stdin: bytes,
        stdout: BinaryIO) -> int:
    """Serve one CNI call in this process, writing the answer to ``stdout``; the exit code.

    Logging is set up from the call's configuration (:func:`setup_logging`, a
    process-wide handler) and the plugin's prints go to ``sys.stderr``.
    """
    outcome = serve(environ, stdin, plugin_factory, _IN_PROCESS)
    stdout.write(outcome.stdout)
    stdout.flush()
    return outcome.exit_code


def _log_as_configured(config: Mapping[str, Any]) -> None:
    setup_logging(_logging_of(config))


def _prints_to_stderr(request: Request) -> AbstractContextManager[object]:
    del request
    return contextlib.redirect_stdout(sys.stderr)


_IN_PROCESS = Hooks(configured=_log_as_configured, around_plugin=_prints_to_stderr)


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
