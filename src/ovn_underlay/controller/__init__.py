"""The cluster controller (one active instance per cluster).

:mod:`.leader`: leader election through a coordination.k8s.io/v1 Lease, with an epoch
per leadership term for fencing.  :mod:`.main`: the process (informers, the election,
one worker).  :mod:`.nodes`: the reconciler of one node (VM port, network, pool, owners,
security groups, garbage collection).  :mod:`.subnets`: the node subnets.
:mod:`.claims`: the check of a node's security-group request against the API.
:mod:`.events`: Events on the Nodes.
"""
