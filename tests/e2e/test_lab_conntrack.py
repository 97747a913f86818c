"""The lab's work-around for OVS 3.1.0's userspace-conntrack abort is in place.

:func:`ovn_underlay.lab.topology.hide_ct_zero_snat` says why: the hypervisor's datapath
reports ``ct_zero_snat`` as false, so ovn-controller commits connections without the
all-zero SNAT (``ct(commit,nat(src))``) that lets ovs-vswitchd 3.1.0 abort on
``conn->conn_type == CT_CONN_TYPE_DEFAULT`` under short connections through a load
balancer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ovn_underlay.lab.topology import ZERO_SNAT, LabState, nbctl, vsctl

ZERO_SNAT_COMMIT = re.compile(r"ct\(commit[^ ]*nat\(src\)")
"""An OpenFlow commit with an all-zero SNAT: ``nat(src)`` without an address."""


def test_the_hypervisor_datapath_reports_no_all_zero_snat(lab: LabState) -> None:
    uuid = vsctl(lab.hv_ovsdb, "get", "Open_vSwitch", ".", "datapaths:netdev").strip()
    assert vsctl(lab.hv_ovsdb, "get", "Datapath", uuid,
                 f"capabilities:{ZERO_SNAT}").strip() == '"false"'


def test_ovn_controller_commits_without_all_zero_snat(lab: LabState) -> None:
    """A load balancer on the VMs' switch (whose ports are bound on the hypervisor) makes
    ovn-controller install its stateful flows, ``ct_commit`` among them."""
    lb = f"zsnat{lab.name}"
    nbctl(lab.nb, "lb-add", lb, "198.18.0.250:9", "198.18.0.251:9", "tcp")
    try:
        nbctl(lab.nb, "ls-lb-add", lab.vm_switch, lb)
        nbctl(lab.nb, "--wait=hv", "sync")
        flows = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow15", "dump-flows",
             f"unix:{Path(lab.rundir) / 'hv' / 'br-int.mgmt'}"],
            capture_output=True, text=True, check=True, timeout=30).stdout
        commits = [line for line in flows.splitlines() if "ct(commit" in line]
        assert commits, "no ct(commit) flows: the check would prove nothing"
        assert [line for line in commits if ZERO_SNAT_COMMIT.search(line)] == []
    finally:
        nbctl(lab.nb, "--if-exists", "lb-del", lb)
