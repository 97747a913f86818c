"""The node daemon: CNI requests served from long-lived connections, pool refill, metrics.

The CNI binary (:mod:`ovn_underlay.cni.shim`) forwards each call over a unix
socket (:mod:`ovn_underlay.cni.wire`); :mod:`.server` accepts them, :mod:`.service` runs
them on the node's open OVS, pool and control-plane connections,
:mod:`.refill` keeps the pool between its watermarks and :mod:`.metrics`
exports Prometheus metrics.
"""
