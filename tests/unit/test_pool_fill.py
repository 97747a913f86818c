"""How lswitch-setup splits the pool, and the fill's progress bar."""

from __future__ import annotations

import io

import pytest

from ovn_underlay.cli.lswitch import FIRST_BATCH, first_batch
from ovn_underlay.cli.pool import ProgressBar
from ovn_underlay.config import ConfigError, NodeConfig


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_only_neutron_splits_the_pool_into_a_first_batch() -> None:
    assert first_batch(NodeConfig(backend="ovn"), 250, None) == 250
    assert first_batch(NodeConfig(backend="neutron"), 250, None) == FIRST_BATCH
    assert first_batch(NodeConfig(backend="neutron"), 250, 20) == 20
    assert first_batch(NodeConfig(backend="neutron"), 5, None) == 5
    with pytest.raises(ConfigError, match="must not be negative"):
        first_batch(NodeConfig(backend="neutron"), 5, -1)


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_the_line() -> None:
    out = Terminal()
    bar = ProgressBar(out, width=10)
    bar(4, 10)
    bar(10, 10)
    lines = out.getvalue().split("\r")
    assert lines[1].startswith("pool [####......] 4/10 ports (")
    assert lines[2].startswith("pool [##########] 10/10 ports (") and lines[2].endswith("s)\n")
    assert out.getvalue().count("\n") == 1


def test_elsewhere_the_bar_prints_a_line_per_round() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=4)
    bar(0, 8)
    bar(9, 8)
    assert [line.split(" (")[0] for line in out.getvalue().splitlines()] == [
        "pool [....] 0/8 ports", "pool [####] 8/8 ports"]
