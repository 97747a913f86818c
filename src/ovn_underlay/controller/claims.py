"""Checking a node's security-group request against the API: a node is not trusted with it.

A node agent asks for security groups on a pod's port by writing them into its
UnderlayNode's ``spec.pods[port].securityGroups``.  Before the controller sets them, it
checks with its own reads that the request is what the cluster allows:

* the pod exists and is bound to this node (``spec.nodeName``): a node cannot ask for
  another node's pods, nor for pods that are not there;
* the pod's annotation (:data:`~ovn_underlay.pods.security_groups.ANNOTATION`) names
  exactly these groups: a node cannot add groups a pod did not ask for;
* the pod's Namespace allows every one of them in its
  :data:`~ovn_underlay.pods.security_groups.ALLOWED_ANNOTATION` annotation (the cluster
  admin's list; without it the namespace's pods may name none).
"""

from __future__ import annotations

from ovn_underlay.kube.client import KubeClient, NotFound, PodNotFound, annotations_of
from ovn_underlay.kube.underlay_node import PodClaim
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION, parse_groups


def refusal(kube: KubeClient, node: str, claim: PodClaim) -> str | None:
    """Why the claim's security groups may not be set (None: they may).

    Raises KubeError (KubeUnavailable when worth retrying) when the API cannot answer.
    """
    groups = claim.security_groups or ()
    pod = f"{claim.namespace}/{claim.name}"
    try:
        found = kube.pod(claim.namespace, claim.name)
    except PodNotFound:
        return f"pod {pod} does not exist"
    bound = found.spec.nodeName if found.spec is not None else None
    if bound != node:
        return (f"pod {pod} is bound to {'node ' + bound if bound else 'no node'}, not to "
                f"node {node}")
    asked = parse_groups(annotations_of(found).get(ANNOTATION, ""))
    if set(asked) != set(groups):
        return (f"pod {pod} asks for security group(s) {', '.join(asked) or '(none)'} in its "
                f"{ANNOTATION!r} annotation, not for {', '.join(groups) or '(none)'}")
    try:
        allowed = annotations_of(kube.namespace(claim.namespace)).get(ALLOWED_ANNOTATION)
    except NotFound:
        allowed = None
    refused = [g for g in groups if g not in parse_groups(allowed or "")]
    if refused:
        allows = (f"it allows {allowed!r}" if allowed is not None
                  else "it has no such annotation, so its pods may name none")
        return (f"pod {pod} names security group(s) {', '.join(refused)}, which namespace "
                f"{claim.namespace} does not allow: the cluster admin lists the groups its "
                f"pods may name in the namespace's {ALLOWED_ANNOTATION!r} annotation "
                f"({allows})")
    return None
