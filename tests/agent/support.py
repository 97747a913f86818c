"""What the node agent's tests share: the UnderlayNode CRD and a stand-in for the controller's
status writes.

:class:`StatusResponder` is a test double for one thing only: the cluster controller's
writes to ``UnderlayNode.status`` (node network, pool ports up to ``spec.poolPorts``,
security groups granted or refused, ``observedGeneration``, ``Ready``).  It talks to the
test API server like the controller does, through the API; it makes nothing in OVN.  The
end-to-end tests use the real controller instead.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client
from lightkube.types import PatchType

from ovn_underlay.kube import underlay_node as un
from ovn_underlay.kube.client import KubeClient, load_config
from ovn_underlay.kube.informer import Informer
from ovn_underlay.lab.kubeapi import KubeApiServer
from ovn_underlay.pods.controller_relay import UnderlayNode
from tests.kube.support import write_kubeconfig

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crd.yaml"
SUBNET = "198.19.7.0/24"


def install_crd(admin: Client) -> None:
    """Create the UnderlayNode CRD of ``deploy/crd.yaml`` on the test API server."""
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    admin.create(CustomResourceDefinition.from_dict(yaml.safe_load(CRD.read_text())))


def create_underlay_node(admin: Client, name: str) -> None:
    """The UnderlayNode ``name`` with an empty spec, as the controller creates it."""
    admin.create(UnderlayNode.from_dict({"apiVersion": un.API_VERSION, "kind": un.KIND,
                                         "metadata": {"name": name}, "spec": {}}))


def underlay_object(admin: Client, name: str) -> dict[str, Any]:
    """The UnderlayNode ``name`` as the API has it, as a dict."""
    return dict(admin.get(UnderlayNode, name).to_dict())


class StatusResponder:
    """A test double of the controller's status writes, for every UnderlayNode (module doc).

    ``refuse``: groups it refuses (``refused[port]`` says so); ``max_ports``: the pool cap;
    ``paused``: while set, it answers nothing (a controller that is down).
    """

    def __init__(self, server: KubeApiServer, tmp_path: Path, max_ports: int = 200,
                 refuse: frozenset[str] = frozenset()) -> None:
        path = write_kubeconfig(tmp_path / "responder-kubeconfig", server.url)
        self.kube = KubeClient(load_config(path))
        self.max_ports = max_ports
        self.refuse = refuse
        self.paused = threading.Event()
        self.writes = 0
        self._lock = threading.Lock()
        self.informer: Informer[Any] = Informer(
            lambda: load_config(path), UnderlayNode, on_add=self._answer,
            on_update=lambda _old, new: self._answer(new), name="status responder")

    def start(self) -> None:
        self.informer.start()

    def stop(self) -> None:
        self.informer.stop()
        self.kube.close()

    def resume(self) -> None:
        """Answer again, starting with every object as it is now."""
        self.paused.clear()
        for obj in self.informer.list():
            self._answer(obj)

    def _answer(self, obj: Any) -> None:
        if self.paused.is_set():
            return
        with self._lock:
            data = obj.to_dict()
            name = data["metadata"]["name"]
            spec, old = un.Spec.from_object(data), data.get("status") or {}
            ports = tuple(pool_port(name, i) for i in range(min(spec.pool_ports,
                                                               self.max_ports)))
            granted: dict[str, Any] = {}
            refused: dict[str, Any] = {}
            for port, claim in spec.pods.items():
                if claim.security_groups is None:
                    continue
                bad = [g for g in claim.security_groups if g in self.refuse]
                if bad:
                    refused[port] = f"namespace {claim.namespace} does not allow {bad[0]}"
                else:
                    granted[port] = list(claim.security_groups)
            status = un.Status(switch=f"{name}-pods", subnet=SUBNET, router="cluster",
                               gateway_ip="198.19.7.1", gateway_mac="0a:58:c6:13:07:01",
                               parent=f"{name}-vm-port", mgmt=un.Port(f"{name}-mgmt",
                                                                      "0a:58:c6:13:07:02",
                                                                      "198.19.7.2", 4094),
                               ports=ports,
                               observed_generation=int(data["metadata"].get("generation") or 0)
                               ).to_dict()
            status["securityGroups"], status["refused"] = granted, refused
            if {k: v for k, v in old.items() if k != "conditions"} == status:
                return  # answered already (its own write comes back as an update)
            for key, now in (("securityGroups", granted), ("refused", refused)):
                for port in old.get(key) or {}:
                    now.setdefault(port, None)  # a merge patch removes a key by null
            status["conditions"] = [{"type": un.READY, "status": "True", "reason": "Ready",
                                     "lastTransitionTime": now_iso()}]
            self.kube.api.patch(UnderlayNode.Status, name, {"status": status},
                                patch_type=PatchType.MERGE)
            self.writes += 1


def pool_port(node: str, index: int) -> un.Port:
    """The ``index``-th pool port the responder makes for ``node``."""
    return un.Port(f"{node}-p{index}", f"0a:58:c6:13:07:{index + 3:02x}",
                   f"198.19.7.{index + 3}", index + 1)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def responding(server: KubeApiServer, tmp_path: Path, **kwargs: Any) -> Iterator[StatusResponder]:
    """A started StatusResponder, stopped afterwards."""
    responder = StatusResponder(server, tmp_path, **kwargs)
    responder.start()
    try:
        yield responder
    finally:
        responder.stop()
