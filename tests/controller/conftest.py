"""Fixtures: the test API server with the UnderlayNode CRD, a real NB with a VM network, and
controllers against both."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace

from ovn_underlay.control.base import ControlPlane
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.controller.main import DEFAULT_NAMESPACE, Controller, ControllerConfig
from ovn_underlay.controller.nodes import Settings
from ovn_underlay.kube.client import load_config
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.functional.test_ovn_nb import nb
from tests.kube.conftest import admin, server
from tests.kube.support import namespace, write_kubeconfig

__all__ = ["admin", "nb", "server"]
CRD = Path(__file__).resolve().parents[2] / "deploy" / "crd.yaml"
CLUSTER_SUBNET = "198.19.0.0/16"
LEASE = 2
"""Seconds; renew deadline 1 s, renewals every 0.3 s, tries every 0.1 s."""


@pytest.fixture
def kubeconfig(server: KubeApiServer, tmp_path: Path) -> str:
    """A kubeconfig naming the server itself (tests/kube's relay in between would add
    40 ms to some requests: Nagle's algorithm on its sockets against delayed ACKs)."""
    return write_kubeconfig(tmp_path / "kubeconfig", server.url)


@pytest.fixture
def cluster(admin: Client) -> Client:
    """The API server with the UnderlayNode CRD and the controller's namespace."""
    admin.create(CustomResourceDefinition.from_dict(yaml.safe_load(CRD.read_text())))
    with contextlib.suppress(ApiError):
        admin.create(namespace(DEFAULT_NAMESPACE))
    assert admin.get(Namespace, DEFAULT_NAMESPACE)
    return admin


class Replica:
    """A controller, with every control-plane connection it made."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.connections: list[ControlPlane] = []


MakeReplica = Callable[..., Replica]


@pytest.fixture
def replicas(cluster: Client, kubeconfig: str, nb: str) -> Iterator[MakeReplica]:
    """make(identity, **settings): a controller started on the API server and the NB."""
    made: list[Replica] = []

    def make(identity: str = "c1", start: bool = True, **settings: object) -> Replica:
        holder: list[Replica] = []

        def connect() -> ControlPlane:
            plane = OvnNbControlPlane(nb, timeout=5)
            holder[0].connections.append(plane)
            return plane

        options: dict[str, object] = {"cluster_subnet": CLUSTER_SUBNET, "pool_size": 4,
                                      "max_pool_ports": 8, "pool_batch": 3}
        options.update(settings)
        config = ControllerConfig(
            settings=Settings(**options),  # type: ignore[arg-type]
            identity=identity, lease_duration=LEASE, renew_deadline=1.0,
            renew_interval=0.3, retry_period=0.1, resync=0.5)
        replica = Replica(Controller(load_config(kubeconfig), config, connect))
        holder.append(replica)
        made.append(replica)
        if start:
            replica.controller.start()
        return replica

    yield make
    for replica in made:
        replica.controller.stop()
