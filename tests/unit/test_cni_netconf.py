"""The plugin's network configuration keys (ovn_underlay.cni.netconf)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from ovn_underlay.cni.netconf import (
    DEFAULT_READINESS_TIMEOUT,
    MAX_READINESS_TIMEOUT,
    NetConf,
    parse_netconf,
)
from ovn_underlay.cni.shim import REPLY_TIMEOUT
from ovn_underlay.cni.spec import ERR_INVALID_CONFIG, CniError
from ovn_underlay.config import DEFAULT_OVSDB

SPEC_KEYS = {"cniVersion": "1.1.0", "name": "underlay", "type": "ovn-underlay"}


def refusal(**keys: Any) -> CniError:
    with pytest.raises(CniError) as info:
        parse_netconf({**SPEC_KEYS, **keys})
    assert info.value.code == ERR_INVALID_CONFIG
    return info.value


def test_defaults() -> None:
    assert parse_netconf(SPEC_KEYS) == NetConf(ovsdb=DEFAULT_OVSDB, readiness_timeout=5.0,
                                               log_file="", log_level=logging.INFO)
    assert NetConf() == parse_netconf({})
    assert DEFAULT_READINESS_TIMEOUT == 5.0


def test_readiness_timeout_is_bounded_by_the_shims_wait() -> None:
    assert MAX_READINESS_TIMEOUT == REPLY_TIMEOUT == 300


def test_every_key_is_read() -> None:
    conf = parse_netconf({**SPEC_KEYS, "ovsdb": "tcp:127.0.0.1:6640", "readinessTimeout": 300,
                          "logFile": "/var/log/cni.log", "logLevel": "Debug"})
    assert conf == NetConf(ovsdb="tcp:127.0.0.1:6640", readiness_timeout=300.0,
                           log_file="/var/log/cni.log", log_level=logging.DEBUG)
    assert isinstance(conf.readiness_timeout, float)


@pytest.mark.parametrize("value", [0.001, 1, 2.5, 300])
def test_readiness_timeout_in_bounds(value: float) -> None:
    assert parse_netconf({"readinessTimeout": value}).readiness_timeout == value


@pytest.mark.parametrize(("value", "shown"), [
    (math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), (1e308, "1e+308"),
    (300.5, "300.5"), (-1, "-1"), (0, "0"), ("5", '"5"'), (True, "true"), (None, "null"),
])
def test_readiness_timeout_out_of_bounds(value: Any, shown: str) -> None:
    err = refusal(readinessTimeout=value)
    text = str(err)
    assert "readinessTimeout" in text
    assert shown in text
    assert "a number of seconds, more than 0 and at most 300" in text


@pytest.mark.parametrize(("value", "shown"), [(5, "5"), ("", '""'), ([], "[]"), (None, "null")])
def test_ovsdb_is_a_non_empty_string(value: Any, shown: str) -> None:
    text = str(refusal(ovsdb=value))
    assert "ovsdb" in text
    assert shown in text
    assert "non-empty string" in text


@pytest.mark.parametrize(("value", "shown"), [
    (5, "5"), ("relative/path", '"relative/path"'), ("cni.log", '"cni.log"'), ("", '""'),
    ("/var/log/a\u0000b", '"/var/log/a\\u0000b"'), ("/var/log/\ud800", '"/var/log/\\ud800"'),
])
def test_log_file_is_an_absolute_path(value: Any, shown: str) -> None:
    text = str(refusal(logFile=value))
    assert "logFile" in text
    assert shown in text
    assert "absolute path" in text


@pytest.mark.parametrize(("value", "shown"), [(5, "5"), ("chatty", '"chatty"'), ([], "[]")])
def test_log_level_names_a_level(value: Any, shown: str) -> None:
    text = str(refusal(logLevel=value))
    assert "logLevel" in text
    assert shown in text
    assert "debug, info, warning, error or critical" in text


@pytest.mark.parametrize(("name", "level"), [("debug", logging.DEBUG), ("INFO", logging.INFO),
                                             ("warning", logging.WARNING),
                                             ("error", logging.ERROR),
                                             ("critical", logging.CRITICAL)])
def test_log_levels(name: str, level: int) -> None:
    assert parse_netconf({"logLevel": name}).log_level == level
