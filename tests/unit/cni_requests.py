"""CNI requests for the unit tests: environments and network configurations."""

from __future__ import annotations

import json
import math
from typing import Any

CONTAINER_ID = "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755"


def make_env(command: str, netns: str = "", **overrides: str) -> dict[str, str]:
    """A complete CNI environment for *command*; overrides of "" remove a variable."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": CONTAINER_ID,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value}


def make_config(**fields: Any) -> bytes:
    """A network configuration (cniVersion 1.1.0 unless given); a None field is removed."""
    config: dict[str, Any] = {"cniVersion": "1.1.0", "name": "underlay", "type": "ovn-underlay"}
    config.update(fields)
    return json.dumps({key: value for key, value in config.items() if value is not None}).encode()


BAD_CONFIGS = {
    **{f"readinessTimeout-{value!r}": make_config(readinessTimeout=value)
       for value in (math.nan, math.inf, 1e308, -1, 0, "5", True)},
    **{f"ovsdb-{value!r}": make_config(ovsdb=value) for value in (5, "", [])},
    **{f"logFile-{value!r}": make_config(logFile=value) for value in (5, "relative/path")},
    **{f"logLevel-{value!r}": make_config(logLevel=value) for value in (5, "chatty")},
}
"""Network configurations, by test id, whose plugin keys are refused with code 7."""
