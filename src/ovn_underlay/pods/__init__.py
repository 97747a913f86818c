"""The pod core: the node's port pool, attaching and detaching pods, the node network."""
