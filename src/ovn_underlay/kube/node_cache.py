"""What the node daemon keeps of the Kubernetes API: its node's Pods and every Namespace.

Two informers (:mod:`.informer`): Pods with ``spec.nodeName=<node>`` (a pod appears once
the scheduler binds it here, before the kubelet asks for its network) and Namespaces.
The security-group lookup reads their annotations here.  What the cache cannot answer is
read with a GET, whose failure fails the lookup: a pod newer than the cache (or a cache
not synced yet), and a pod being deleted (a new pod of the same name, a StatefulSet's,
may be the one starting).

The configuration is the kubeconfig of the node setting, read again whenever an
informer connects anew; the GETs go through :func:`~.client.client_for`, which follows
changes of that file too.
"""

from __future__ import annotations

import functools
import socket

from lightkube.resources.core_v1 import Namespace, Pod

from ovn_underlay.kube.client import annotations_of, client_for, load_config
from ovn_underlay.kube.informer import Informer


def node_name(configured: str) -> str:
    """The node's name in Kubernetes: the setting, else the hostname as the kubelet takes it."""
    return configured or socket.gethostname().strip().lower()


class NodeCache:
    """Pods bound to one node and all Namespaces, watched, with GETs behind them."""

    def __init__(self, kubeconfig: str, node: str) -> None:
        self.kubeconfig = kubeconfig
        self.node = node
        config = functools.partial(load_config, kubeconfig)
        self.pods: Informer[Pod] = Informer(config, Pod, fields={"spec.nodeName": node},
                                            name=f"pods of node {node}")
        self.namespaces: Informer[Namespace] = Informer(config, Namespace, name="namespaces")

    def start(self) -> None:
        """Start both informers (this returns at once; until they sync, GETs answer)."""
        self.pods.start()
        self.namespaces.start()

    def stop(self) -> None:
        """Stop both informers."""
        self.pods.stop()
        self.namespaces.stop()

    def pod_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """The pod's annotations, from the cache or else a GET (PodNotFound, KubeError)."""
        pod = self.pods.get(namespace, name)
        if pod is None or pod.metadata is None or pod.metadata.deletionTimestamp is not None:
            return client_for(self.kubeconfig).pod_annotations(namespace, name)
        return annotations_of(pod)

    def namespace_annotations(self, name: str) -> dict[str, str]:
        """The namespace's annotations, from the cache or else a GET (NotFound, KubeError)."""
        namespace = self.namespaces.get("", name)
        if namespace is None:
            return client_for(self.kubeconfig).namespace_annotations(name)
        return annotations_of(namespace)
