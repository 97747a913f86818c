"""``ovn-underlay``: the CNI binary a container runtime executes once per call.

Kept to the standard library until the request is known to be valid: VERSION
and malformed requests never import the networking libraries.
"""

from __future__ import annotations

import os
import sys

from ovn_underlay.cni.runner import Plugin, run
from ovn_underlay.cni.spec import Request


def _plugin(req: Request) -> Plugin:
    from ovn_underlay.cni.plugin import make_plugin

    return make_plugin(req)


def main() -> int:
    """Read the request from the environment and stdin, answer on stdout."""
    return run(_plugin, os.environ, sys.stdin.buffer.read(), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
