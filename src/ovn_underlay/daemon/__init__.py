"""The node daemon: CNI requests served from long-lived connections, pool refill, metrics.

The CNI binary (:mod:`ovn_underlay.cni.shim`) forwards each call over a unix
socket (:mod:`.protocol`); :mod:`.server` accepts them, :mod:`.service` runs
them on the node's open OVS, pool and control-plane connections,
:mod:`.refill` keeps the pool between its watermarks and :mod:`.metrics`
exports Prometheus metrics.  This package's ``__init__`` imports nothing: the
shim imports :mod:`.protocol` on every pod call.
"""
