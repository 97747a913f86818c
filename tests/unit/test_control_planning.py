"""Address and VLAN planning of node networks (control.planning): pure, no backend."""

from __future__ import annotations

import ipaddress

import pytest

from ovn_underlay.control.base import DEFAULT_MGMT_TAG, VLAN_MAX, ControlPlaneError
from ovn_underlay.control.planning import (
    check_request,
    check_tag,
    check_within,
    find_overlap,
    free_address_count,
    free_tag_count,
    gateway_ip,
    mac_for_ip,
    mgmt_ip,
    parse_subnet,
    plan_addresses,
    plan_pool,
    plan_tags,
)


def test_parse_subnet_accepts_ipv4_networks() -> None:
    assert str(parse_subnet("198.19.1.0/24")) == "198.19.1.0/24"
    assert str(parse_subnet("10.0.0.0/30")) == "10.0.0.0/30"


@pytest.mark.parametrize(("subnet", "words"), [
    ("198.19.1.5/24", "host bits"),
    ("nonsense", "invalid subnet"),
    ("fd00::/64", "not IPv4"),
    ("10.0.0.0/31", "too small"),
    ("10.0.0.1/32", "too small"),
])
def test_parse_subnet_rejects(subnet: str, words: str) -> None:
    with pytest.raises(ControlPlaneError, match=words):
        parse_subnet(subnet)


def test_gateway_and_mgmt_are_the_first_two_hosts() -> None:
    assert gateway_ip("198.19.1.0/24") == "198.19.1.1"
    assert mgmt_ip("198.19.1.0/24") == "198.19.1.2"


def test_mac_for_ip_is_locally_administered_unicast_and_unique() -> None:
    mac = mac_for_ip("198.19.1.5")
    assert mac == "0a:58:c6:13:01:05"
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    macs = {mac_for_ip(str(ip)) for ip in ipaddress.ip_network("10.1.0.0/22").hosts()}
    assert len(macs) == 1022


def test_check_tag() -> None:
    check_tag(1)
    check_tag(VLAN_MAX)
    for bad in (0, 4095, -1):
        with pytest.raises(ControlPlaneError, match="out of range 1-4094"):
            check_tag(bad)


def test_check_within() -> None:
    check_within("198.19.1.0/24", "198.19.0.0/16")
    with pytest.raises(ControlPlaneError, match="not inside the cluster subnet"):
        check_within("198.20.1.0/24", "198.19.0.0/16")
    with pytest.raises(ControlPlaneError, match="invalid cluster subnet"):
        check_within("198.19.1.0/24", "198.19.0.1/16")


def test_check_request_returns_the_canonical_subnet() -> None:
    assert check_request("sw", "198.19.1.0/24", "r", "vm", 10, DEFAULT_MGMT_TAG,
                         "198.19.0.0/16") == "198.19.1.0/24"
    assert check_request("sw", "198.19.1.0/24", "r", "vm", 0, None, None) == "198.19.1.0/24"


@pytest.mark.parametrize(("args", "words"), [
    (("", "198.19.1.0/24", "r", "vm", 1, 4094, None), "switch name"),
    (("sw", "198.19.1.0/24", "", "vm", 1, 4094, None), "router name"),
    (("sw", "198.19.1.0/24", "r", "", 1, 4094, None), "parent port name"),
    (("sw", "198.19.1.0/24", "r", "vm", -1, 4094, None), "negative"),
    (("sw", "198.19.1.0/24", "r", "vm", 1, 0, None), "management VLAN tag 0"),
    (("sw", "198.19.1.0/24", "r", "vm", 1, 4094, "10.0.0.0/8"), "not inside"),
])
def test_check_request_rejects(args: tuple[str, str, str, str, int, int, str | None],
                               words: str) -> None:
    with pytest.raises(ControlPlaneError, match=words):
        check_request(*args)


def test_find_overlap() -> None:
    others = [("switch a", "10.0.0.0/24"), ("bogus", "not-a-net"), ("v6", "fd00::/64"),
              ("port p", "198.19.1.1/24")]
    assert find_overlap("10.0.1.0/24", others) is None
    assert find_overlap("10.0.0.128/25", others) == ("switch a", "10.0.0.0/24")
    assert find_overlap("198.19.0.0/16", others) == ("port p", "198.19.1.1/24")


def test_free_counts() -> None:
    assert free_address_count("10.0.0.0/29", []) == 6
    assert free_address_count("10.0.0.0/29", ["10.0.0.1", "10.0.0.1", "10.0.0.0",
                                              "10.0.0.7", "192.168.0.1"]) == 5
    assert free_tag_count([]) == 4094
    assert free_tag_count([0, 1, 1, 4094, 4095]) == 4092


def test_plan_addresses_takes_the_lowest_free_hosts() -> None:
    assert plan_addresses("10.0.0.0/29", 3, ["10.0.0.1", "10.0.0.3"]) == [
        "10.0.0.2", "10.0.0.4", "10.0.0.5"]
    assert plan_addresses("10.0.0.0/29", 6, []) == [f"10.0.0.{i}" for i in range(1, 7)]
    assert plan_addresses("10.0.0.0/29", 0, []) == []


def test_plan_addresses_is_lazy_on_huge_subnets() -> None:
    assert plan_addresses("10.0.0.0/8", 2, ["10.0.0.1"]) == ["10.0.0.2", "10.0.0.3"]


def test_plan_addresses_refuses_more_than_free() -> None:
    with pytest.raises(ControlPlaneError, match="only 5 host addresses are free"):
        plan_addresses("10.0.0.0/29", 6, ["10.0.0.1"])


def test_plan_tags_takes_the_lowest_free_tags() -> None:
    assert plan_tags(3, [1, 3]) == [2, 4, 5]
    assert plan_tags(2, set(range(1, 4093))) == [4093, 4094]
    with pytest.raises(ControlPlaneError, match="only 1 of 1-4094 are free"):
        plan_tags(2, set(range(1, 4094)))


def test_plan_pool_pairs_addresses_with_tags() -> None:
    assert plan_pool("10.0.0.0/29", 2, ["10.0.0.1", "10.0.0.2"], [4094, 1]) == [
        ("10.0.0.3", 2), ("10.0.0.4", 3)]


def test_plan_pool_limited_by_the_subnet_names_both_limits() -> None:
    reserved = ["198.19.1.1", "198.19.1.2"]
    assert len(plan_pool("198.19.1.0/24", 252, reserved, [4094])) == 252
    with pytest.raises(ControlPlaneError) as err:
        plan_pool("198.19.1.0/24", 253, reserved, [4094])
    message = str(err.value)
    assert "252 free host addresses" in message
    assert "4093 free VLAN tags" in message
    assert "at most 252" in message


def test_plan_pool_limited_by_the_vlan_space() -> None:
    pairs = plan_pool("10.64.0.0/16", 4093, ["10.64.0.1"], [4094])
    assert len({ip for ip, _ in pairs}) == len({tag for _, tag in pairs}) == 4093
    with pytest.raises(ControlPlaneError, match="at most 4093"):
        plan_pool("10.64.0.0/16", 4094, ["10.64.0.1"], [4094])
