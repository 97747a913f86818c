"""Fixtures: a test API server per test, a relay in front of it, an admin client behind it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client

from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.kube.support import Relay, write_kubeconfig


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    """The test API server, with a bookmark after 0.3 s without events."""
    with KubeApiServer(bookmark_interval=0.3) as running:
        yield running


@pytest.fixture
def relay(server: KubeApiServer) -> Iterator[Relay]:
    """A relay to ``server`` that the code under test goes through."""
    front = Relay(server.port)
    yield front
    front.close()


@pytest.fixture
def kubeconfig(relay: Relay, tmp_path: Path) -> str:
    """A kubeconfig naming the relay."""
    return write_kubeconfig(tmp_path / "kubeconfig", relay.url)


@pytest.fixture
def admin(server: KubeApiServer, tmp_path: Path) -> Iterator[Client]:
    """A lightkube client straight to the server, to make the objects a test needs."""
    path = write_kubeconfig(tmp_path / "admin", server.url)
    client = KubeClient(load_config(path))
    yield client.api
    client.close()
