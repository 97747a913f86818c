"""The node side: pod links (veth), gateway ARP probing and the local OVS database.

Submodules are imported on demand (``from ovn_underlay.dataplane import links``):
``links`` pulls in pyroute2 and ``ovs`` pulls in ovsdbapp, both slow to import.
"""
