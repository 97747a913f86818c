"""The plugin's own keys of the network configuration, read into one :class:`NetConf`.

Besides the spec's keys (``cniVersion``, ``name``, ``type``: see :mod:`.spec`):

``ovsdb``
    a non-empty string, the node's Open_vSwitch database (default
    :data:`ovn_underlay.config.DEFAULT_OVSDB`).
``readinessTimeout``
    the seconds ADD waits for the pod's gateway: a number more than 0 and at
    most :data:`MAX_READINESS_TIMEOUT` (default :data:`DEFAULT_READINESS_TIMEOUT`).
``logFile``
    the absolute path of the plugin's log file (default: stderr).
``logLevel``
    debug, info, warning, error or critical, in any case (default info).

An absent key takes its default; a present one (``null`` included) must hold a
valid value, else CniError(ERR_INVALID_CONFIG) names the key, the value as
JSON and what it must be.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovn_underlay.cni.shim import REPLY_TIMEOUT
from ovn_underlay.cni.spec import ERR_INVALID_CONFIG, CniError
from ovn_underlay.config import DEFAULT_OVSDB

__all__ = [
    "DEFAULT_READINESS_TIMEOUT",
    "LOG_KEYS",
    "MAX_READINESS_TIMEOUT",
    "NetConf",
    "parse_netconf",
]

DEFAULT_READINESS_TIMEOUT = 5.0
MAX_READINESS_TIMEOUT = REPLY_TIMEOUT
"""How long the CNI binary waits for the daemon's answer: an ADD waiting longer
for its gateway would be reported "try again" while it still runs."""
LOG_KEYS = ("logFile", "logLevel")
"""The keys of :attr:`NetConf.log_file` and :attr:`NetConf.log_level`."""


@dataclass(frozen=True)
class NetConf:
    """The plugin's keys of one network configuration, validated."""

    ovsdb: str = DEFAULT_OVSDB
    readiness_timeout: float = DEFAULT_READINESS_TIMEOUT
    log_file: str = ""
    """An absolute path, or "" for stderr."""
    log_level: int = logging.INFO


def parse_netconf(config: Mapping[str, Any]) -> NetConf:
    """The plugin's keys of the decoded network configuration ``config``.

    Raises CniError(ERR_INVALID_CONFIG) for the first key holding a bad value.
    """
    return NetConf(ovsdb=_ovsdb(config), readiness_timeout=_readiness_timeout(config),
                   log_file=_log_file(config), log_level=_log_level(config))


def _ovsdb(config: Mapping[str, Any]) -> str:
    value = config.get("ovsdb", DEFAULT_OVSDB)
    if not isinstance(value, str) or not value:
        raise _invalid("ovsdb", value, f"a non-empty string (the node's OVS database, such as "
                       f"{DEFAULT_OVSDB})")
    return value


def _readiness_timeout(config: Mapping[str, Any]) -> float:
    value = config.get("readinessTimeout", DEFAULT_READINESS_TIMEOUT)
    # NaN fails both comparisons and infinity the second: only finite numbers pass.
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 < value <= MAX_READINESS_TIMEOUT):
        raise _invalid("readinessTimeout", value, f"a number of seconds, more than 0 and at "
                       f"most {MAX_READINESS_TIMEOUT:g}")
    return float(value)


def _log_file(config: Mapping[str, Any]) -> str:
    if "logFile" not in config:
        return ""
    value = config["logFile"]
    if not isinstance(value, str) or not os.path.isabs(value) or not _is_path(value):
        raise _invalid("logFile", value, "an absolute path")
    return value


def _is_path(text: str) -> bool:
    """Whether the kernel can be given ``text`` as a path (no NUL, encodable)."""
    try:
        return b"\0" not in os.fsencode(text)
    except UnicodeEncodeError:
        return False


def _log_level(config: Mapping[str, Any]) -> int:
    if "logLevel" not in config:
        return logging.INFO
    value = config["logLevel"]
    level = (logging.getLevelNamesMapping().get(value.upper()) if isinstance(value, str)
             else None)
    if level is None:
        raise _invalid("logLevel", value, "one of debug, info, warning, error or critical")
    return level


def _invalid(key: str, value: Any, rule: str) -> CniError:
    return CniError(ERR_INVALID_CONFIG, f"{key} must be {rule}, not {json.dumps(value)}")
