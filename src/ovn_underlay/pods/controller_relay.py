"""The control plane of a node in cluster mode: requests to the cluster controller.

In cluster mode (backend ``cluster``) a node holds no OVN Northbound or Neutron
credentials.  :class:`ControllerRelay` implements the node's part of
:class:`~ovn_underlay.control.base.ControlPlane` over the node's UnderlayNode
(:mod:`ovn_underlay.kube.underlay_node`): each request is a JSON merge patch of the
object's ``spec``, each answer is read from its ``status``, which the controller
writes.  One informer watches that one object (``fieldSelector metadata.name=NODE``),
so reads cost no request and a wait ends as soon as the controller's answer arrives.

An answer counts once the status is of a controller pass that saw the request: its
``observedGeneration`` is at least the ``metadata.generation`` the patch produced (a
patch that changes nothing leaves the generation, and the current status answers).

* :meth:`get_node_network`: from the status (None until the controller made it).
* :meth:`add_pool_ports`: raises ``spec.poolPorts`` to the ports the status lists plus
  ``count`` (:meth:`request_pool_ports`: never lowers it), waits until the controller
  has seen the request, and returns the ports that are new: the controller grows a
  pool by one batch per pass and caps it at its own maximum, so these may be fewer
  (none, at the cap); the ports it lists later are the refill's to adopt.
* :meth:`record_owners`: one merge patch of ``spec.pods`` (an owner's entry; None
  deletes it), no wait: owners stay asynchronous as with the other backends.  An
  entry that held another container's request is replaced whole (its
  ``securityGroups`` are dropped), never merged into; an entry this relay wrote with
  security groups is not touched (the owners come late, from the background).
* :meth:`set_port_security_groups`: patches the port's entry with the pod and its
  groups and waits until ``status.securityGroups[port]`` equals them, or
  ``status.refused[port]`` says why not (ControlPlaneError with the controller's
  message); no answer in time is ControlPlaneUnavailable.  Either way the request is
  withdrawn again.
* :meth:`clear_port_security_groups`: patches the entry's ``securityGroups`` to null
  and waits until the status has no groups for the port.
* Everything else (creating or destroying node networks, deleting pool ports, the
  router, garbage collection, fencing) is the controller's: refused with
  ControlPlaneError.

Thread-safe: the daemon's request threads share one relay (lightkube's client is an
httpx client, which is).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any, NoReturn

from lightkube import SingleConfig
from lightkube.generic_resource import create_global_resource
from lightkube.types import PatchType

from ovn_underlay.config import DEFAULT_MGMT_TAG, NodeConfig
from ovn_underlay.control.base import (
    ChildPort,
    ControlPlaneError,
    ControlPlaneUnavailable,
    NodeNetwork,
    PortOwner,
)
from ovn_underlay.kube import underlay_node as un
from ovn_underlay.kube.client import (
    KubeClient,
    KubeError,
    KubeUnavailable,
    NotFound,
    load_config,
    translated,
)
from ovn_underlay.kube.informer import Informer

LOG = logging.getLogger(__name__)
DEFAULT_TIMEOUT = 10.0
"""Seconds a request waits for the controller's answer."""
UnderlayNode = create_global_resource(un.GROUP, un.VERSION, un.KIND, un.PLURAL)


class ControllerRelay:
    """The ControlPlane of one node in cluster mode, through its UnderlayNode."""

    def __init__(self, config: Callable[[], SingleConfig], node: str,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        """Watch the UnderlayNode ``node`` of the API that ``config`` describes."""
        self.node = node
        self.timeout = timeout
        self._cond = threading.Condition()
        self._writing = threading.Lock()
        self._written: dict[str, un.PodClaim | None] = {}
        """spec.pods entries as this relay last wrote them (None: deleted)."""
        self._kube = KubeClient(config())
        self._informer: Informer[Any] = Informer(
            config, UnderlayNode, fields={"metadata.name": node},
            on_add=self._changed, on_update=lambda _old, _new: self._changed(_new),
            on_delete=self._changed, name=f"UnderlayNode {node}")
        self._informer.start()

    @classmethod
    def for_node(cls, cfg: NodeConfig, timeout: float = DEFAULT_TIMEOUT) -> ControllerRelay:
        """The relay of the node ``cfg`` describes: its kubeconfig (else the pod's service
        account) and its Node name (else the hostname, as the kubelet takes it)."""
        from ovn_underlay.kube.node_cache import node_name

        return cls(functools.partial(load_config, cfg.kubeconfig), node_name(cfg.node_name),
                   timeout)

    # -- reading the object ------------------------------------------------------------
    def _changed(self, _obj: object) -> None:
        with self._cond:
            self._cond.notify_all()

    def _object(self) -> dict[str, Any]:
        """The UnderlayNode as last seen ({} when there is none)."""
        if not self._informer.wait_for_sync(self.timeout):
            raise ControlPlaneUnavailable(f"cannot read UnderlayNode {self.node} from the "
                                          f"Kubernetes API within {self.timeout:g}s")
        obj = self._informer.get("", self.node)
        return dict(obj.to_dict()) if obj is not None else {}

    def _generation(self) -> int:
        """The object's ``metadata.generation`` as last seen."""
        return int((self._object().get("metadata") or {}).get("generation") or 0)

    def status(self) -> un.Status:
        """The controller's answer as last seen (empty while there is no object)."""
        return un.Status.from_object(self._object())

    def spec(self) -> un.Spec:
        """The node's request as last seen."""
        return un.Spec.from_object(self._object())

    def wait_ready(self, timeout: float) -> un.Status | None:
        """The status once the controller reports the node network Ready (None: not within
        ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        if not self._informer.wait_for_sync(timeout):
            return None
        with self._cond:
            while True:
                st = self.status()
                left = deadline - time.monotonic()
                if st.ready or left <= 0:
                    return st if st.ready else None
                self._cond.wait(left)

    def _wait(self, generation: int, answered: Callable[[un.Status], bool],
              what: str) -> un.Status:
        """The first status of a pass that saw ``generation`` and for which ``answered``."""
        deadline = time.monotonic() + self.timeout

        def ready() -> bool:
            st = un.Status.from_object(self._object())
            return st.observed_generation >= generation and answered(st)

        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ControlPlaneUnavailable(
                        f"the cluster controller did not answer {what} on UnderlayNode "
                        f"{self.node} within {self.timeout:g}s (is it running?)")
                self._cond.wait(left)
        return self.status()

    def _patch(self, spec: Mapping[str, Any], what: str) -> int:
        """Merge-patch ``spec`` into the UnderlayNode; the generation it now has."""
        try:
            with translated(self._kube.server, f"PATCH UnderlayNode {self.node} ({what})"):
                obj = self._kube.api.patch(UnderlayNode, self.node, {"spec": dict(spec)},
                                           patch_type=PatchType.MERGE)
        except NotFound as exc:
            raise ControlPlaneUnavailable(
                f"there is no UnderlayNode {self.node} yet: the cluster controller makes it "
                "when it sees the Node") from exc
        except KubeUnavailable as exc:
            raise ControlPlaneUnavailable(str(exc)) from exc
        except KubeError as exc:
            raise ControlPlaneError(str(exc)) from exc
        meta = obj.metadata
        return int(meta.generation or 0) if meta is not None else 0

    # -- the node network --------------------------------------------------------------
    def get_node_network(self, switch: str) -> NodeNetwork | None:
        """The node network of the status, if the controller made it as ``switch``."""
        st = self.status()
        if not st.switch or st.switch != switch:
            return None
        return node_network(st)

    def add_pool_ports(self, switch: str, count: int) -> tuple[ChildPort, ...]:
        """Ask the controller for ``count`` more pool ports; the new ones it made."""
        st = self.status()
        if not st.switch:
            raise ControlPlaneUnavailable(f"the cluster controller has not made the network "
                                          f"of node {self.node} yet")
        if st.switch != switch:
            raise ControlPlaneError(f"the cluster controller made switch {st.switch or '-'} "
                                    f"for node {self.node}, not {switch}")
        known = {p.name for p in st.ports}
        net = node_network(self.request_pool_ports(len(known) + count))
        return tuple(p for p in net.ports if p.name not in known)

    def request_pool_ports(self, total: int) -> un.Status:
        """Raise ``spec.poolPorts`` to ``total`` unless it is that high already; the status
        once the controller has seen it (its first batch towards ``total``, at most its
        ``max-pool-ports``)."""
        generation = self._patch({"poolPorts": total}, f"{total} pool ports in all") \
            if total > self.spec().pool_ports else self._generation()
        return self._wait(generation, lambda _st: True, f"a request for {total} pool ports")

    def delete_pool_ports(self, switch: str, names: Iterable[str]) -> None:
        """Refused: the controller owns the pool's size."""
        del switch, names
        raise ControlPlaneError("in cluster mode the cluster controller owns the pool's size: "
                                "a node lowers no spec.poolPorts and deletes no port")

    # -- owners and security groups ----------------------------------------------------
    def record_owners(self, owners: Mapping[str, PortOwner | None]) -> list[str]:
        """One merge patch of ``spec.pods``; the ports with an owner the status lacks.

        A port whose entry this relay wrote with security groups is left alone: its ADD
        wrote its owner with them, and its DEL resets them before its "no owner" comes,
        so an owner or a None arriving meanwhile is older than that entry (the owners are
        written in the background).  An entry left by an earlier run that held another
        container's groups is replaced whole.
        """
        if not owners:
            return []
        with self._writing:
            held = self.spec().pods
            pods: dict[str, Any] = {}
            for port, owner in owners.items():
                mine = self._written.get(port)
                if mine is not None and mine.security_groups is not None:
                    continue
                if owner is None:
                    pods[port] = None
                    continue
                entry = claim(owner).to_dict()
                before = mine or held.get(port)
                if before is not None and before.container_id != owner.container_id:
                    entry["securityGroups"] = None
                pods[port] = entry
            if pods:
                self._patch({"pods": pods}, f"the owners of {len(pods)} port(s)")
                for port, value in pods.items():
                    self._written[port] = None if value is None else un.PodClaim.from_dict(value)
        known = {p.name for p in self.status().ports}
        return [port for port, owner in owners.items() if owner is not None
                and port not in known]

    def set_port_security_groups(self, port: str, groups: Sequence[str],
                                 owner: PortOwner) -> None:
        """Ask for ``groups`` on ``port`` for ``owner``; wait for the controller's verdict.

        Refused or unanswered, the request is withdrawn (its groups patched to null), so
        that the controller does not set them later on a port whose pod did not start.
        """
        want = tuple(groups)
        entry = claim(owner, want)
        with self._writing:
            generation = self._patch({"pods": {port: entry.to_dict()}},
                                     f"security groups of {port}")
            self._written[port] = entry

        def answered(st: un.Status) -> bool:
            refusal = st.refused.get(port)
            if refusal is not None:
                raise ControlPlaneError(f"the cluster controller refused security group(s) "
                                        f"{', '.join(want)} on port {port} for pod "
                                        f"{owner.pod_namespace}/{owner.pod_name}: {refusal}")
            return st.security_groups.get(port) == want

        try:
            self._wait(generation, answered, f"security groups {', '.join(want)} on {port}")
        except ControlPlaneError:
            try:
                self._withdraw(port)
            except ControlPlaneError as exc:
                LOG.warning("could not withdraw the security groups asked for %s: %s", port,
                            exc)
            raise

    def _withdraw(self, port: str) -> int:
        """Patch the port's ``securityGroups`` to null (if its entry has any); the generation."""
        with self._writing:
            mine = self._written.get(port)
            exists = mine is not None if port in self._written else port in self.spec().pods
            if not exists:  # a patch would make an entry without its required fields
                return self._generation()
            generation = self._patch({"pods": {port: {"securityGroups": None}}},
                                     f"reset of the security groups of {port}")
            if mine is not None:
                self._written[port] = dataclasses.replace(mine, security_groups=None)
            return generation

    def clear_port_security_groups(self, port: str) -> None:
        """Ask for a fresh pool port's groups on ``port``; wait until the status says so."""
        generation = self._withdraw(port)
        self._wait(generation, lambda st: port not in st.security_groups,
                   f"the reset of the security groups of {port}")

    # -- what only the controller does -------------------------------------------------
    def _refuse(self, what: str) -> NoReturn:
        raise ControlPlaneError(f"in cluster mode the cluster controller {what}; a node "
                                "holds no control-plane credentials")

    def create_node_network(self, switch: str, subnet: str, router: str, parent: str,
                            pool_size: int, mgmt_tag: int | None = DEFAULT_MGMT_TAG,
                            create_router: bool = True,
                            cluster_subnet: str | None = None) -> NodeNetwork:
        """Refused: the controller makes each node's network."""
        del switch, subnet, router, parent, pool_size, mgmt_tag, create_router, cluster_subnet
        self._refuse("makes each node's network (lswitch-setup is for the standalone mode)")

    def destroy_node_network(self, switch: str) -> None:
        """Refused: the controller removes a deleted Node's network."""
        del switch
        self._refuse("removes a node's network once its Node is deleted")

    def ensure_router(self, router: str) -> None:
        """Refused: the controller makes the cluster router."""
        del router
        self._refuse("makes the cluster router")

    def port_holding(self, ip: str) -> str | None:
        """Refused: the controller maps Nodes to their VMs' ports."""
        del ip
        self._refuse("maps each Node to its VM's port")

    def node_switches(self) -> list[str]:
        """Refused: the controller collects stale node networks."""
        self._refuse("collects the networks of deleted nodes")

    def port_exists(self, port: str) -> bool:
        """Refused: the controller reads the control plane's ports."""
        del port
        self._refuse("reads the control plane's ports")

    def fence(self, epoch: int) -> None:
        """Refused: only the controller's leader fences its writes."""
        del epoch
        self._refuse("fences its own writes")

    def close(self) -> None:
        """Stop watching and close the connections."""
        self._informer.stop()
        self._kube.close()


def claim(owner: PortOwner, groups: tuple[str, ...] | None = None) -> un.PodClaim:
    """The ``spec.pods`` entry of ``owner`` (asking for ``groups``, if any)."""
    return un.PodClaim(owner.pod_namespace, owner.pod_name, owner.container_id, groups)


def node_network(st: un.Status) -> NodeNetwork:
    """The status's node network as the ControlPlane interface describes one."""
    prefixlen = IPv4Network(st.subnet, strict=False).prefixlen if st.subnet else 0

    def child(port: un.Port) -> ChildPort:
        return ChildPort(port.name, port.mac, port.ip, prefixlen, st.gateway_ip, port.tag)

    return NodeNetwork(switch=st.switch, subnet=st.subnet, gateway_ip=st.gateway_ip,
                       gateway_mac=st.gateway_mac, router=st.router, parent=st.parent,
                       mgmt=child(st.mgmt) if st.mgmt is not None else None,
                       ports=tuple(child(p) for p in st.ports))
