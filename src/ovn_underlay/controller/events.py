"""Kubernetes Events for what the controller did or refused, on the Node, where ``kubectl
describe node`` shows them (in namespace ``default``, as the kubelet's own).  A refused
pod request is not recorded on the Pod: the node agent fails the pod's CNI ADD with the
controller's message, which the kubelet records on the Pod itself.

Events are for people: recording one is best effort (a failure is logged, never fails a
reconcile) and only the leader records them.  One Event per occurrence: the controller
records them on changes only (a network made or removed, a Ready condition turning
False, a request refused for a new reason), so there is nothing to aggregate.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable

from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from ovn_underlay.kube.client import KubeClient, KubeError, translated

LOG = logging.getLogger(__name__)
COMPONENT = "ovn-underlay-controller"
NODE_EVENTS_NAMESPACE = "default"
NORMAL, WARNING = "Normal", "Warning"


class EventRecorder:
    """Records Events through ``kube`` while ``may_write()``."""

    def __init__(self, kube: KubeClient, may_write: Callable[[], bool],
                 instance: str = "") -> None:
        self.kube = kube
        self._may_write = may_write
        self.instance = instance

    def node(self, name: str, kind: str, reason: str, message: str) -> None:
        """An Event on Node ``name`` (its uid is its name, as the kubelet's node Events have
        it and ``kubectl describe node`` looks them up)."""
        self.about(ObjectReference(apiVersion="v1", kind="Node", name=name, uid=name),
                   NODE_EVENTS_NAMESPACE, kind, reason, message)

    def about(self, obj: ObjectReference, namespace: str, kind: str, reason: str,
              message: str) -> None:
        """An Event of type ``kind`` on ``obj``, in ``namespace``; best effort (a refusal
        is logged), and nothing unless ``may_write()``."""
        if not self._may_write():
            return
        now = datetime.datetime.now(datetime.UTC)
        event = Event(
            metadata=ObjectMeta(name=f"{obj.name}.{uuid.uuid4().hex[:16]}",
                                namespace=namespace),
            involvedObject=obj, reason=reason, message=message[:1024], type=kind,
            source=EventSource(component=COMPONENT), reportingComponent=COMPONENT,
            reportingInstance=self.instance or None, firstTimestamp=now, lastTimestamp=now,
            count=1)
        try:
            with translated(self.kube.server, f"create Event {reason} on {obj.kind} "
                            f"{obj.name}"):
                self.kube.api.create(event, namespace=namespace)
        except KubeError as exc:
            LOG.info("not recorded as an Event: %s (%s)", message, exc)
