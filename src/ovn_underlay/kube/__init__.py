"""The Kubernetes API side: the client the node reads pods' annotations with."""
