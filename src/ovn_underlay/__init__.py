"""ovn-k8s-underlay: Kubernetes pods on OVN child ports of their VM's port."""

__version__ = "0.1.0"
