"""A test Kubernetes API server (stdlib only), faithful where the project relies on it.

No kube-apiserver can be installed on the lab machines, and simpler emulators lack the
parts controllers depend on; this one implements them after the documented API behaviour
(https://kubernetes.io/docs/reference/using-api/api-concepts/ and the pages each module
cites): one global resourceVersion, list/watch resourceVersion semantics with a bounded
history (410 Gone beyond it), bookmarks, selectors with watch transitions, optimistic
concurrency (409), status subresources, graceful deletion and finalizers, Service IP and
node port allocation, static-token authentication and a request log, plus a stand-in for
the EndpointSlice controller (:mod:`.endpointslices`).

Embedded::

    with KubeApiServer() as server:      # 127.0.0.1, a free port
        client = lightkube.Client(KubeConfig.from_server(server.url))

As a program: ``python -m ovn_underlay.lab.kubeapi --listen 127.0.0.1:6443`` (``--help``).

Layout: :mod:`.store` (objects, counter, history, subscriptions), :mod:`.api` (the
semantics), :mod:`.kinds` (per-resource defaults and validation), :mod:`.resources`
(types and discovery), :mod:`.watch`, :mod:`.patch`, :mod:`.selectors`, :mod:`.auth`,
:mod:`.server` (HTTP), :mod:`.endpointslices`, :mod:`.bench` (a load measurement).
"""

from .errors import ApiError
from .server import KubeApiServer

__all__ = ["ApiError", "KubeApiServer"]
