"""The seed's ``security-group`` pod annotation: which Neutron security groups a pod's port gets.

The annotation's value names one group or several, comma-separated, by name
or id.  It is read from the Kubernetes API (kubeconfig in the node setting
``ovn-underlay:kubeconfig``) through the pod's namespace and name, which the
runtime passes in CNI_ARGS.  Without a kubeconfig the feature is off, which
is logged once per node (a marker file in the state directory remembers it).
A pod whose annotation cannot be read is not started: running it without the
groups it asked for would open it up.
"""

from __future__ import annotations

import logging
import os

from ovn_underlay.config import NodeConfig, key_of
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.pods.pool import PodInterface

LOG = logging.getLogger(__name__)
ANNOTATION = "security-group"
OFF_MARKER = "security-group-annotation-off"
"""File in the state dir: the "feature is off" line was logged."""


def parse_groups(value: str) -> tuple[str, ...]:
    """The group names or ids of an annotation value, in order, without repeats."""
    seen: dict[str, None] = {}
    for item in value.split(","):
        if item.strip():
            seen.setdefault(item.strip(), None)
    return tuple(seen)


class PodSecurityGroups:
    """Looks up the security groups a pod asks for."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg

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

        try:
            client = kube.client_for(self.cfg.kubeconfig)
            annotations = client.pod_annotations(att.pod_namespace or "default", att.pod_name)
        except kube.PodNotFound:
            LOG.warning("pod %s/%s is not in the Kubernetes API: no security-group "
                        "annotation applies", att.pod_namespace, att.pod_name)
            return ()
        except kube.KubeUnavailable as exc:
            raise ControlPlaneUnavailable(f"cannot read the annotations of pod "
                                          f"{att.pod_namespace}/{att.pod_name}: {exc}") from exc
        except kube.KubeError as exc:
            raise ControlPlaneError(f"cannot read the annotations of pod "
                                    f"{att.pod_namespace}/{att.pod_name}: {exc}") from exc
        return parse_groups(annotations.get(ANNOTATION, ""))

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
