"""SubnetAllocator: podCIDRs, allocations from the cluster subnet, what is read back."""

from __future__ import annotations

import re

import pytest

from ovn_underlay.controller.subnets import SubnetAllocator, SubnetError


def test_blocks_are_handed_out_lowest_first_and_kept() -> None:
    alloc = SubnetAllocator("10.128.0.0/22", 24)
    assert [alloc.assign(n) for n in ("a", "b", "c")] == [
        "10.128.0.0/24", "10.128.1.0/24", "10.128.2.0/24"]
    assert alloc.assign("b") == "10.128.1.0/24"
    alloc.release("b")
    assert alloc.assign("d") == "10.128.1.0/24"


def test_what_is_loaded_is_kept_and_never_handed_out_again() -> None:
    alloc = SubnetAllocator("10.128.0.0/22", 24)
    alloc.load({"b": "10.128.0.0/24"}, taken=["10.128.1.0/25"])
    assert alloc.assign("b") == "10.128.0.0/24"
    assert alloc.assign("a") == "10.128.2.0/24"
    assert alloc.subnet_of("a") == "10.128.2.0/24"
    assert alloc.subnet_of("z") is None


def test_a_pod_cidr_wins_but_may_not_overlap_another_nodes() -> None:
    alloc = SubnetAllocator("10.128.0.0/16", 24)
    assert alloc.assign("a", "10.128.7.0/24") == "10.128.7.0/24"
    assert alloc.assign("b") == "10.128.0.0/24"
    with pytest.raises(SubnetError, match=re.escape("overlaps 10.128.7.0/24 of node a")):
        alloc.assign("c", "10.128.7.0/25")


def test_a_full_cluster_subnet_and_no_cluster_subnet_are_said_so() -> None:
    alloc = SubnetAllocator("10.128.0.0/23", 24)
    alloc.assign("a")
    alloc.assign("b")
    with pytest.raises(SubnetError, match="no free /24 left for node c"):
        alloc.assign("c")
    with pytest.raises(SubnetError, match=re.escape("no spec.podCIDR and no --cluster-subnet")):
        SubnetAllocator("").assign("a")
    assert SubnetAllocator("").assign("a", "10.1.0.0/24") == "10.1.0.0/24"


@pytest.mark.parametrize(("cluster", "prefix", "match"), [
    ("10.128.0.0/16", 12, "does not fit"), ("10.128.0.1/16", 24, "not a subnet"),
    ("fd00::/64", 120, "only IPv4")])
def test_bad_settings_are_refused(cluster: str, prefix: int, match: str) -> None:
    with pytest.raises(SubnetError, match=match):
        SubnetAllocator(cluster, prefix)
