"""The CNI protocol layer: the spec's types and versions, the plugin's keys, one request path.

Nothing here knows pods or networks (:mod:`ovn_underlay.pods.cni_plugin` maps
the verbs onto the pod core).  The shim (:mod:`.shim`) and the wire format
between it and the daemon (:mod:`.wire`) import only built-in modules: a CNI
binary starts once per pod network call, and its start-up is on the pod's path.
"""
