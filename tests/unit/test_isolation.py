"""The host isolation ruleset as nft JSON: what it drops, and how its fingerprint moves."""

from __future__ import annotations

from typing import Any

from ovn_underlay.dataplane import isolation
from ovn_underlay.names import host_ifname, is_host_ifname


def rules(guard: isolation.HostGuard) -> list[dict[str, Any]]:
    return [c["add"]["rule"] for c in guard.commands() if "rule" in c.get("add", {})]


def matched(rule: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(m["match"]["left"]["meta"]["key"], m["match"]["op"], m["match"]["right"])
            for m in rule["expr"] if "match" in m]


def test_every_hook_drops_pods_host_ends_but_the_management_port_and_each_device() -> None:
    guard = isolation.HostGuard(("eth1", "eth2"))
    by_chain: dict[tuple[str, str], list[list[tuple[str, str, str]]]] = {}
    for rule in rules(guard):
        assert rule["expr"][-1] == {"drop": None} and {"counter": None} in rule["expr"]
        assert rule["comment"] == f"{isolation.MARK} {guard.digest()}"
        by_chain.setdefault((rule["family"], rule["chain"]), []).append(matched(rule))
    assert set(by_chain) == {("inet", "prerouting"), ("inet", "output"), ("arp", "input"),
                             ("arp", "output")}
    for (_, chain), found in by_chain.items():
        key = "oifname" if chain == "output" else "iifname"
        assert found == [[(key, "==", "oul*"), (key, "!=", "oul-mgmt")],
                         [(key, "==", "eth1")], [(key, "==", "eth2")]]


def test_the_tables_are_replaced_in_one_transaction() -> None:
    commands = isolation.HostGuard(()).commands()
    first = [next(iter(c)) for c in commands[:3]]
    assert first == ["add", "delete", "add"], "add-delete-add replaces a table atomically"
    chains = [c["add"]["chain"] for c in commands if "chain" in c.get("add", {})]
    assert {(c["hook"], c["prio"], c["policy"]) for c in chains if c["family"] == "inet"} == {
        ("prerouting", -300, "accept"), ("output", -300, "accept")}


def test_the_digest_follows_the_devices_only() -> None:
    assert isolation.HostGuard(("eth1",)).digest() == isolation.HostGuard(("eth1",)).digest()
    assert isolation.HostGuard(("eth1",)).digest() != isolation.HostGuard(("eth2",)).digest()
    assert isolation.HostGuard(("a", "b")).digest() == isolation.HostGuard(("b", "a")).digest()


def test_pods_host_ends_are_told_from_other_names() -> None:
    assert is_host_ifname(host_ifname("abc", "eth0"))
    assert not is_host_ifname("oul-mgmt")
    assert not is_host_ifname("oulbridge")
    assert not is_host_ifname("eth1")
