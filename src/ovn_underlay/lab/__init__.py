"""The one-machine OVN cloud: real OVN/OVS daemons in network namespaces."""
