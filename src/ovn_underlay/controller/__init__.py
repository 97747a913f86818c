"""The cluster controller (one active instance per cluster).

:mod:`.leader`: leader election through a coordination.k8s.io/v1 Lease, with an epoch
per leadership term for fencing.
"""
