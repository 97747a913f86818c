"""Pod links on real namespaces: a "node" namespace plays the VM, a "pod" one the pod.

Plumbing runs from inside the node namespace, either in a thread that entered
it or in a separate process started there (as a CNI plugin would be).  What was
made is checked with iproute2/ethtool, not with the code under test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.dataplane import links, nsenter
from ovn_underlay.names import host_ifname
from tests.conftest import needs_netns

pytestmark = needs_netns

MAC = "0a:58:0a:4c:00:05"
OTHER_MAC = "0a:58:0a:4c:00:06"
IP_CIDR = "10.76.0.5/24"
GATEWAY = "10.76.0.1"
MTU = 1400


def ip_json(ns: str, *args: str) -> Any:
    """``ip -j -n NS ARGS`` parsed."""
    out = subprocess.run(["ip", "-j", "-n", ns, *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out) if out.strip() else []


def link_names(ns: str) -> set[str]:
    """The interface names in namespace ``ns``."""
    return {link["ifname"] for link in ip_json(ns, "link", "show")}


def tx_checksumming(ns: str, ifname: str) -> str:
    """The "tx-checksumming" line of ``ethtool -k`` in ``ns``: "on" or "off"."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", ifname],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("tx-checksumming:"))
    return line.split(":", 1)[1].strip()


@pytest.fixture
def make_netns() -> Iterator[Any]:
    """Create named namespaces ``oult-d-<role>-<pid>``; all deleted afterwards."""
    made: list[str] = []

    def make(role: str) -> str:
        name = f"oult-d-{role}-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def node(make_netns: Any) -> str:
    """The node (VM) namespace's name."""
    return str(make_netns("node"))


@pytest.fixture
def pod(make_netns: Any) -> str:
    """The pod namespace's name."""
    return str(make_netns("pod"))


def path(ns: str) -> str:
    """The bind-mount path of a named namespace."""
    return f"/var/run/netns/{ns}"


def in_node(node: str, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` from inside the node namespace (a thread that entered it)."""
    return nsenter.run_in_netns(path(node), fn, *args)


def plumb(node: str, pod_path: str, ifname: str = "eth0", mac: str = MAC,
          host_if: str | None = None, gateway: str = GATEWAY, mtu: int = MTU) -> str:
    """plumb_pod from the node namespace with the test defaults; return the host end."""
    host_if = host_if or host_ifname(f"cid-{pod_path}", ifname)
    in_node(node, links.plumb_pod, pod_path, ifname, host_if, mac, IP_CIDR, gateway, mtu,
            True)
    return host_if


def test_host_ifname_is_deterministic_and_short() -> None:
    name = host_ifname("0123456789abcdef" * 4, "eth0")
    assert name == host_ifname("0123456789abcdef" * 4, "eth0")
    assert len(name) == 15 and name.startswith("oul")
    assert name != host_ifname("0123456789abcdef" * 4, "eth1")
    assert host_ifname("cid1", "eth0") != host_ifname("cid", "1eth0")


def test_plumb_configures_both_ends(node: str, pod: str) -> None:
    started = time.perf_counter()
    host_if = plumb(node, path(pod))
    elapsed = time.perf_counter() - started
    print(f"\nplumb_pod (thread in node ns, tx offload off): {elapsed * 1000:.1f} ms")

    [eth0] = ip_json(pod, "addr", "show", "dev", "eth0")
    assert eth0["address"] == MAC and eth0["mtu"] == MTU and "UP" in eth0["flags"]
    assert [f"{a['local']}/{a['prefixlen']}" for a in eth0["addr_info"]
            if a["family"] == "inet"] == [IP_CIDR]
    [default] = ip_json(pod, "route", "show", "default")
    assert default["gateway"] == GATEWAY and default["dev"] == "eth0"
    [host] = ip_json(node, "-d", "link", "show", "dev", host_if)
    assert host["mtu"] == MTU and "UP" in host["flags"]
    assert host["linkinfo"]["info_kind"] == "veth"
    assert tx_checksumming(pod, "eth0") == "off"
    assert tx_checksumming(node, host_if) == "off"
    assert links.inspect_pod(path(pod), "eth0") == links.PodLinkState(
        ifname="eth0", mac=MAC, mtu=MTU, addresses=(IP_CIDR,), default_gateway=GATEWAY,
        up=True)


def test_plumb_by_proc_path_from_a_process_in_the_node_namespace(
        node: str, make_netns: Any) -> None:
    """As a CNI plugin: the process runs in the node ns, the pod ns is /proc/PID/ns/net."""
    anon = make_netns("anon")
    sleeper = subprocess.Popen(["ip", "netns", "exec", anon, "sleep", "60"])
    try:
        proc_path = f"/proc/{sleeper.pid}/ns/net"
        deadline = time.monotonic() + 5
        while os.readlink(proc_path) == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "sleep did not enter its namespace"
            time.sleep(0.01)
        subprocess.run(["ip", "netns", "del", anon], check=True)  # only the /proc path is left
        host_if = host_ifname("cid-proc", "eth0")
        code = ("import sys, time; from ovn_underlay.dataplane import links; "
                "t = time.perf_counter();"
                "links.plumb_pod(*sys.argv[1:7], int(sys.argv[7]), True);"
                "print((time.perf_counter() - t) * 1000)")
        started = time.perf_counter()
        out = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", code,
                              proc_path, "eth0", host_if, MAC, IP_CIDR, GATEWAY, str(MTU)],
                             capture_output=True, text=True, check=True).stdout
        total = time.perf_counter() - started
        print(f"\nplumb_pod in a process in the node ns: {float(out):.1f} ms "
              f"(whole process incl. imports: {total * 1000:.0f} ms)")
        assert host_if in link_names(node)
        state = links.inspect_pod(proc_path, "eth0")
        assert state is not None
        assert (state.mac, state.addresses, state.default_gateway, state.mtu, state.up) == (
            MAC, (IP_CIDR,), GATEWAY, MTU, True)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_retried_plumb_succeeds_without_change(node: str, pod: str) -> None:
    host_if = host_ifname(f"cid-{path(pod)}", "eth0")
    assert in_node(node, links.plumb_pod, path(pod), "eth0", host_if, MAC, IP_CIDR, GATEWAY,
                   MTU, True) is True, "the first call makes the pair"
    before = ip_json(pod, "link", "show", "dev", "eth0")[0]["ifindex"]
    assert in_node(node, links.plumb_pod, path(pod), "eth0", host_if, MAC, IP_CIDR, GATEWAY,
                   MTU, True) is False, "a retried call made nothing (nothing to undo)"
    assert ip_json(pod, "link", "show", "dev", "eth0")[0]["ifindex"] == before
    assert link_names(node) == {"lo", host_if}


def test_ifname_taken_with_another_mac_is_refused_and_nothing_is_left(
        node: str, pod: str) -> None:
    first = plumb(node, path(pod))
    with pytest.raises(links.LinkError, match=f"already has eth0 with MAC {MAC}"):
        plumb(node, path(pod), mac=OTHER_MAC, host_if="oulother0")
    assert link_names(node) == {"lo", first}
    assert ip_json(pod, "link", "show", "dev", "eth0")[0]["address"] == MAC


def test_failure_half_way_removes_the_veth(node: str, pod: str) -> None:
    with pytest.raises(links.LinkError, match=re.escape("default route via 10.99.0.1")):
        plumb(node, path(pod), gateway="10.99.0.1")  # outside the pod's subnet
    assert link_names(node) == {"lo"}
    assert link_names(pod) == {"lo"}


def test_leftover_host_veth_is_replaced(node: str, pod: str) -> None:
    host_if = host_ifname("cid-leftover", "eth0")
    subprocess.run(["ip", "-n", node, "link", "add", host_if, "type", "veth", "peer", "name",
                    "leftover"], check=True)
    plumb(node, path(pod), host_if=host_if)
    assert link_names(node) == {"lo", host_if}
    assert links.inspect_pod(path(pod), "eth0") is not None


def test_incomplete_pair_of_an_interrupted_call_is_rebuilt(node: str, pod: str) -> None:
    """A call killed after making the veth left eth0 with our MAC but no address."""
    host_if = host_ifname("cid-interrupted", "eth0")
    subprocess.run(["ip", "-n", node, "link", "add", host_if, "type", "veth", "peer", "name",
                    "eth0", "address", MAC, "netns", pod], check=True)
    plumb(node, path(pod), host_if=host_if)
    assert links.inspect_pod(path(pod), "eth0") == links.PodLinkState(
        ifname="eth0", mac=MAC, mtu=MTU, addresses=(IP_CIDR,), default_gateway=GATEWAY,
        up=True)
    assert "UP" in ip_json(node, "link", "show", "dev", host_if)[0]["flags"]


def test_a_non_veth_host_name_is_never_deleted(node: str, pod: str) -> None:
    subprocess.run(["ip", "-n", node, "link", "add", "oulbridge", "type", "bridge"], check=True)
    with pytest.raises(links.LinkError, match="not a veth"):
        plumb(node, path(pod), host_if="oulbridge")
    with pytest.raises(links.LinkError, match="not a veth"):
        in_node(node, links.unplumb_pod, "oulbridge")
    assert link_names(node) == {"lo", "oulbridge"}
    assert link_names(pod) == {"lo"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mac": "01:00:5e:00:00:01"}, "not a unicast MAC"),
    ({"mac": "0a:58:0a"}, "not a unicast MAC"),
    ({"gateway": "10.76.0.300"}, "bad IPv4 address"),
    ({"ifname": "a-very-long-ifname"}, "not a valid interface name"),
    ({"mtu": 40}, "MTU 40"),
])
def test_bad_arguments_make_nothing(node: str, pod: str, kwargs: dict[str, Any],
                                    message: str) -> None:
    with pytest.raises(links.LinkError, match=message):
        plumb(node, path(pod), **kwargs)
    assert link_names(node) == {"lo"}
    assert link_names(pod) == {"lo"}


def test_default_mtu_when_zero(node: str, pod: str) -> None:
    host_if = plumb(node, path(pod), mtu=0)
    assert ip_json(pod, "link", "show", "dev", "eth0")[0]["mtu"] == 1500
    assert ip_json(node, "link", "show", "dev", host_if)[0]["mtu"] == 1500


def test_unplumb_is_idempotent(node: str, pod: str) -> None:
    host_if = plumb(node, path(pod))
    assert in_node(node, links.unplumb_pod, host_if) is True
    assert link_names(node) == {"lo"}
    assert link_names(pod) == {"lo"}
    assert links.inspect_pod(path(pod), "eth0") is None
    assert in_node(node, links.unplumb_pod, host_if) is False


def test_unplumb_never_touches_the_pod_side(node: str, pod: str) -> None:
    """With the host end gone nothing of ours is left: an eth0 there is someone else's."""
    subprocess.run(["ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name",
                    "other"], check=True)
    assert in_node(node, links.unplumb_pod, "oulnosuchlink") is False
    assert link_names(pod) == {"lo", "eth0", "other"}


def test_an_ifname_without_our_host_end_is_not_ours_and_is_left_alone(
        node: str, pod: str) -> None:
    """E.g. a later pod in a reused netns path holds eth0 with the port's old MAC."""
    subprocess.run(["ip", "-n", pod, "link", "add", "eth0", "address", MAC, "type", "veth",
                    "peer", "name", "other"], check=True)
    with pytest.raises(links.LinkError, match="not ours"):
        plumb(node, path(pod))
    assert link_names(pod) == {"lo", "eth0", "other"}
    assert link_names(node) == {"lo"}


def test_missing_or_bogus_netns(node: str, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-netns"
    bogus.touch()
    for where in (f"/var/run/netns/oult-d-missing-{os.getpid()}", str(bogus)):
        with pytest.raises(links.NetnsNotFound, match=where):
            plumb(node, where)
        with pytest.raises(links.NetnsNotFound):
            links.inspect_pod(where, "eth0")
        with pytest.raises(links.NetnsNotFound):
            links.set_tx_offload("eth0", False, where)
    assert link_names(node) == {"lo"}


def test_set_tx_offload_by_path(node: str, pod: str) -> None:
    plumb(node, path(pod))
    links.set_tx_offload("eth0", True, path(pod))
    assert tx_checksumming(pod, "eth0") == "on"
    links.set_tx_offload("eth0", False, path(pod))
    assert tx_checksumming(pod, "eth0") == "off"
    with pytest.raises(links.LinkError, match="ENODEV"):
        links.set_tx_offload("nosuchif", False, path(pod))
