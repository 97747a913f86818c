"""Fixtures of the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def netns(tmp_path: Path) -> str:
    """A path that exists, standing in for a network namespace bind mount."""
    path = tmp_path / "netns"
    path.touch()
    return str(path)
