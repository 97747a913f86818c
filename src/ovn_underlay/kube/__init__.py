"""The Kubernetes API side, on lightkube.

:mod:`.client` (configuration, a client, errors), :mod:`.informer` (list + watch of one
resource type into a cache), :mod:`.node_cache` (the node daemon's Pods and Namespaces).
Importing any of them imports lightkube (~0.1 s): callers import them only when a
Kubernetes API is configured.
"""
