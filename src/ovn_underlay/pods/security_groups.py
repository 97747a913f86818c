"""The seed's ``security-group`` pod annotation: which Neutron security groups a pod's port gets.

The annotation's value names one group or several, comma-separated, by name or id.  It is
read from the Kubernetes API (kubeconfig in the node setting ``ovn-underlay:kubeconfig``)
through the pod's namespace and name, which the runtime passes in CNI_ARGS: from the node
daemon's cache when there is one (:mod:`ovn_underlay.kube.node_cache`), else with a GET.
Without a kubeconfig the feature is off, which is logged once per node (a marker file in
the state directory remembers it), and nothing of the Kubernetes client is imported.

Which groups a pod may name is the cluster admin's decision, not the pod author's: the
pod's Namespace lists them in its :data:`ALLOWED_ANNOTATION` annotation (same syntax;
matched literally, so it lists the names or ids its pods use).  Without it, pods of that
namespace may name none.  A pod whose annotation cannot be read, or names a group its
namespace does not allow, is not started: running it without the groups it asked for
would open it up.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from ovn_underlay.config import NodeConfig, key_of
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.pods.pool import PodInterface

LOG = logging.getLogger(__name__)
ANNOTATION = "security-group"
ALLOWED_ANNOTATION = "ovn-underlay.io/allowed-security-groups"
"""On a Namespace: the groups (comma-separated names or ids) its pods may name."""
OFF_MARKER = "security-group-annotation-off"
"""File in the state dir: the "feature is off" line was logged."""


class GroupNotAllowed(ControlPlaneError):
    """The pod names a security group that its namespace does not allow."""


class AnnotationSource(Protocol):
    """Where annotations are read: a Kubernetes client, or the daemon's cache of one."""

    def pod_annotations(self, namespace: str, name: str) -> dict[str, str]: ...

    def namespace_annotations(self, name: str) -> dict[str, str]: ...


def parse_groups(value: str) -> tuple[str, ...]:
    """The group names or ids of an annotation value, in order, without repeats."""
    seen: dict[str, None] = {}
    for item in value.split(","):
        if item.strip():
            seen.setdefault(item.strip(), None)
    return tuple(seen)


def _unreadable(what: str, exc: Exception, unavailable: bool) -> ControlPlaneError:
    cls = ControlPlaneUnavailable if unavailable else ControlPlaneError
    return cls(f"cannot read {what}: {exc}")


class PodSecurityGroups:
    """Looks up the security groups a pod asks for, and checks its namespace allows them."""

    def __init__(self, cfg: NodeConfig, source: AnnotationSource | None = None) -> None:
        """``source``: where to read annotations (default: GETs with the node's kubeconfig)."""
        self.cfg = cfg
        self.source = source

    @property
    def enabled(self) -> bool:
        """Whether a Kubernetes API is configured."""
        return bool(self.cfg.kubeconfig)

    def groups_for(self, att: PodInterface) -> tuple[str, ...]:
        """The groups of the pod's annotation; () when it has none or the feature is off."""
        if not self.enabled:
            self._say_off_once()
            return ()
        if not att.pod_name:
            return ()
        from ovn_underlay.kube import client as kube

        namespace = att.pod_namespace or "default"
        pod = f"{namespace}/{att.pod_name}"
        try:
            source = self.source or kube.client_for(self.cfg.kubeconfig)
            groups = parse_groups(source.pod_annotations(namespace, att.pod_name)
                                  .get(ANNOTATION, ""))
        except kube.PodNotFound:
            LOG.warning("pod %s is not in the Kubernetes API: no security-group annotation "
                        "applies", pod)
            return ()
        except kube.KubeError as exc:
            raise _unreadable(f"the annotations of pod {pod}", exc,
                              isinstance(exc, kube.KubeUnavailable)) from exc
        if not groups:
            return ()
        try:
            allowed = source.namespace_annotations(namespace).get(ALLOWED_ANNOTATION)
        except kube.NotFound:
            allowed = None
        except kube.KubeError as exc:
            raise _unreadable(f"the annotations of namespace {namespace} (which security "
                              f"groups its pods may name, for pod {pod})", exc,
                              isinstance(exc, kube.KubeUnavailable)) from exc
        refused = [g for g in groups if g not in parse_groups(allowed or "")]
        if refused:
            allows = (f"it allows {allowed!r}" if allowed is not None
                      else "it has no such annotation, so its pods may name none")
            raise GroupNotAllowed(
                f"pod {pod} names security group(s) {', '.join(refused)}, which namespace "
                f"{namespace} does not allow: the cluster admin lists the groups its pods may "
                f"name in the namespace's {ALLOWED_ANNOTATION!r} annotation ({allows})")
        return groups

    def _say_off_once(self) -> None:
        marker = os.path.join(self.cfg.state_dir, OFF_MARKER)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            LOG.debug("cannot create %s: %s", marker, exc)
        else:
            os.close(fd)
        LOG.info("the %r pod annotation is off: no Kubernetes API is configured (set %s "
                 "with node-init --kubeconfig)", ANNOTATION, key_of("kubeconfig"))
