"""Ovs against real ovsdb-servers (Open_vSwitch schema), and once with ovs-vswitchd.

What was written is read back with ovs-vsctl, not with the code under test.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ovn_underlay.dataplane.ovs import Ovs, OvsError, OvsUnavailable
from ovn_underlay.lab import daemons
from tests.conftest import needs_netns
from tests.waiting import eventually


def vsctl(conn: str, *args: str) -> str:
    """``ovs-vsctl --no-wait`` on ``conn``; its stdout, stripped."""
    return subprocess.run(["ovs-vsctl", f"--db={conn}", "--no-wait", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def bare_db(ovsdb_factory: Any) -> str:
    """A fresh Open_vSwitch database without its root row."""
    return str(ovsdb_factory("conf", daemons.OVS_SCHEMA))


@pytest.fixture
def db(bare_db: str) -> str:
    """A fresh, initialised Open_vSwitch database."""
    vsctl(bare_db, "init")
    return bare_db


@pytest.fixture
def ovs(db: str) -> Iterator[Ovs]:
    """An Ovs connected to ``db``; closed afterwards."""
    client = Ovs(db, timeout=5)
    yield client
    client.close()


def test_uninitialised_database(bare_db: str) -> None:
    client = Ovs(bare_db, timeout=5)
    try:
        with pytest.raises(OvsError, match="not initialised"):
            client.get_config()
        with pytest.raises(OvsError, match="not initialised"):
            client.set_config({"a": "b"})
    finally:
        client.close()


def test_unreachable_fails_fast_naming_the_connection(tmp_path: Path) -> None:
    conn = f"unix:{tmp_path}/nothing.sock"
    started = time.perf_counter()
    with pytest.raises(OvsUnavailable, match=conn):
        Ovs(conn, timeout=5)
    assert time.perf_counter() - started < 1.0


def test_ensure_bridge(ovs: Ovs, db: str) -> None:
    assert ovs.bridge_datapath_type("br-int") is None
    assert ovs.bridge_other_config("br-int") == {}
    ovs.ensure_bridge("br-int", "netdev", {"disable-in-band": "true"})
    ovs.ensure_bridge("br-int", "netdev", {"hwaddr": "0a:58:00:00:00:01"})
    ovs.ensure_bridge("br-int", "netdev")
    assert vsctl(db, "list-br") == "br-int"
    assert vsctl(db, "get", "Bridge", "br-int", "datapath_type") == "netdev"
    assert vsctl(db, "get", "Bridge", "br-int", "other_config") == (
        '{disable-in-band="true", hwaddr="0a:58:00:00:00:01"}')
    assert vsctl(db, "get", "Interface", "br-int", "type") == "internal"
    assert ovs.bridge_datapath_type("br-int") == "netdev"
    assert ovs.bridge_other_config("br-int") == {"disable-in-band": "true",
                                                 "hwaddr": "0a:58:00:00:00:01"}


def test_access_port_is_idempotent_and_merges_ids(ovs: Ovs, db: str) -> None:
    ovs.ensure_bridge("br-int", "netdev")
    ovs.add_access_port("br-int", "oulpod1", 101, {"iface-id": "lsp1", "k": "1"})
    ovs.add_access_port("br-int", "oulpod1", 102, {"k": "2"})
    vsctl(db, "set", "Interface", "oulpod1", "external_ids:ovn-installed=true")
    ovs.add_access_port("br-int", "oulpod1", 102, {"iface-id": "lsp1"})
    assert vsctl(db, "list-ports", "br-int") == "oulpod1"
    assert vsctl(db, "get", "Port", "oulpod1", "tag") == "102"
    assert vsctl(db, "get", "Port", "oulpod1", "external_ids") == "{}"
    assert vsctl(db, "get", "Interface", "oulpod1", "type") == '""'
    assert vsctl(db, "get", "Interface", "oulpod1", "external_ids") == (
        '{iface-id=lsp1, k="2", ovn-installed="true"}')
    info = ovs.port("oulpod1")
    assert info is not None
    assert (info.name, info.tag, info.bridge, info.ofport) == ("oulpod1", 102, "br-int", None)
    assert info.external_ids == {"iface-id": "lsp1", "k": "2", "ovn-installed": "true"}
    assert ovs.port("nosuchport") is None


def test_internal_and_trunk_ports(ovs: Ovs, db: str) -> None:
    ovs.ensure_bridge("br-int", "netdev")
    ovs.add_access_port("br-int", "oulmgmt", 7, {"iface-id": "mgmt"}, internal=True)
    assert vsctl(db, "get", "Interface", "oulmgmt", "type") == "internal"
    ovs.add_trunk_port("br-int", "eth1")
    ovs.add_trunk_port("br-int", "eth1")
    assert vsctl(db, "get", "Port", "eth1", "tag") == "[]"
    assert vsctl(db, "get", "Port", "eth1", "trunks") == "[]"
    # an access port turned into a trunk loses its tag
    ovs.add_access_port("br-int", "eth2", 9, {})
    ovs.add_trunk_port("br-int", "eth2")
    assert vsctl(db, "get", "Port", "eth2", "tag") == "[]"
    info = ovs.port("eth2")
    assert info is not None and info.tag is None


def test_port_errors(ovs: Ovs) -> None:
    ovs.ensure_bridge("br-int", "netdev")
    ovs.ensure_bridge("br-ex", "netdev")
    ovs.add_access_port("br-int", "oulpod1", 5, {})
    with pytest.raises(OvsError, match="already on bridge br-int"):
        ovs.add_access_port("br-ex", "oulpod1", 5, {})
    with pytest.raises(OvsError, match="already on bridge br-int"):
        ovs.add_trunk_port("br-ex", "oulpod1")
    with pytest.raises(OvsError, match="br-nope"):
        ovs.add_access_port("br-nope", "oulpod2", 5, {})
    with pytest.raises(OvsError, match="4096"):
        ovs.add_access_port("br-int", "oulpod3", 4096, {})


def test_ports_with_looks_at_interface_and_port(ovs: Ovs, db: str) -> None:
    ovs.ensure_bridge("br-int", "netdev")
    ovs.add_access_port("br-int", "oulb", 5, {"owner": "b"})
    ovs.add_access_port("br-int", "oula", 6, {"owner": "a"})
    ovs.add_access_port("br-int", "oulc", 7, {"other": "c"})
    vsctl(db, "add-port", "br-int", "byhand", "--", "set", "Port", "byhand",
          "external_ids:owner=hand")
    eventually(lambda: [(p.name, p.external_ids["owner"]) for p in ovs.ports_with("owner")]
               == [("byhand", "hand"), ("oula", "a"), ("oulb", "b")],
               what="another client's port in the replica")
    assert ovs.ports_with("nobody") == []


def test_del_port_is_idempotent(ovs: Ovs, db: str) -> None:
    ovs.ensure_bridge("br-int", "netdev")
    ovs.add_access_port("br-int", "oulpod1", 5, {"iface-id": "x"})
    ovs.del_port("oulpod1")
    ovs.del_port("oulpod1")
    assert vsctl(db, "list-ports", "br-int") == ""
    assert vsctl(db, "--columns=name", "find", "Interface", "name=oulpod1") == ""
    assert ovs.port("oulpod1") is None
    assert not ovs.wait_applied(0.05)  # no ovs-vswitchd here to apply it: reported, not hung


def test_config(ovs: Ovs, db: str) -> None:
    assert ovs.get_config() == {}
    ovs.set_config({"ovn-remote": "tcp:192.0.2.1:6642", "ovn-encap-type": "geneve"})
    ovs.set_config({"ovn-encap-ip": "192.0.2.5"})
    assert vsctl(db, "get", "Open_vSwitch", ".", "external_ids:ovn-encap-ip") == '"192.0.2.5"'
    ovs.remove_config(["ovn-encap-type", "not-there"])
    assert ovs.get_config() == {"ovn-remote": "tcp:192.0.2.1:6642",
                                "ovn-encap-ip": "192.0.2.5"}
    vsctl(db, "set", "Open_vSwitch", ".", "external_ids:system-id=node1")
    eventually(lambda: ovs.get_config().get("system-id") == "node1",
               what="another client's write in the replica")  # it follows, not at once


def test_two_databases_stay_apart(ovsdb_factory: Any) -> None:
    """ovsdbapp shares one connection per API class; Ovs must not."""
    first, second = ovsdb_factory("one", daemons.OVS_SCHEMA), ovsdb_factory(
        "two", daemons.OVS_SCHEMA)
    for conn in (first, second):
        vsctl(conn, "init")
    a, b = Ovs(first, timeout=5), Ovs(second, timeout=5)
    try:
        a.ensure_bridge("br-a", "netdev")
        b.ensure_bridge("br-b", "netdev")
        assert vsctl(first, "list-br") == "br-a"
        assert vsctl(second, "list-br") == "br-b"
    finally:
        a.close()
        b.close()


class Vswitchd(NamedTuple):
    """An ovs-vswitchd running in a namespace of its own."""

    netns: str
    ctl: str
    """Its control socket (ovs-appctl -t)."""


@pytest.fixture
def vswitchd(tmp_path: Path, db: str) -> Iterator[Vswitchd]:
    """A namespace running ovs-vswitchd on ``db``; both gone afterwards."""
    ns = f"oult-d-ovs-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    rundir = tmp_path / "vswitchd"
    rundir.mkdir()
    daemon = None
    try:
        daemon = daemons.start_vswitchd("vswitchd", rundir, db, ns)
        yield Vswitchd(ns, str(daemon.ctl))
    finally:
        pid = daemon.pid() if daemon is not None else None
        if pid is not None:
            daemons.stop_pid(pid)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@needs_netns
def test_ports_reach_the_userspace_datapath(ovs: Ovs, vswitchd: Vswitchd) -> None:
    ns = vswitchd.netns
    ovs.ensure_bridge("br-int", "netdev")
    subprocess.run(["ip", "-n", ns, "link", "add", "oulpod1", "type", "veth", "peer", "name",
                    "pod-eth0"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "oulpod1", "up"], check=True)
    started = time.perf_counter()
    ovs.add_access_port("br-int", "oulpod1", 100, {"iface-id": "lsp1"})
    ofport = ovs.wait_for_ofport("oulpod1", timeout=10)
    print(f"\naccess port: ofport {ofport} after {(time.perf_counter() - started) * 1000:.0f} ms")
    assert ofport > 0
    ovs.add_access_port("br-int", "oulmgmt", 7, {}, internal=True)
    assert ovs.wait_for_ofport("oulmgmt", timeout=10) > 0
    shown = subprocess.run(["ip", "-n", ns, "link", "show", "oulmgmt"], capture_output=True,
                           text=True, check=False)
    assert shown.returncode == 0, "ovs-vswitchd did not create the internal port's device"
    ovs.add_access_port("br-int", "oulnodev", 5, {})
    with pytest.raises(OvsError, match="oulnodev"):
        ovs.wait_for_ofport("oulnodev", timeout=0.5)


@needs_netns
def test_a_deleted_port_leaves_the_datapath_before_wait_applied_returns(
        ovs: Ovs, db: str, vswitchd: Vswitchd) -> None:
    ovs.ensure_bridge("br-int", "netdev")
    subprocess.run(["ip", "-n", vswitchd.netns, "link", "add", "oulpod1", "type", "veth",
                    "peer", "name", "pod-eth0"], check=True)
    ovs.add_access_port("br-int", "oulpod1", 100, {})
    ovs.wait_for_ofport("oulpod1", timeout=10)
    assert "oulpod1" in _datapath_ports(vswitchd)
    asked = int(vsctl(db, "get", "Open_vSwitch", ".", "next_cfg"))
    ovs.del_port("oulpod1")
    assert int(vsctl(db, "get", "Open_vSwitch", ".", "next_cfg")) == asked + 1
    assert ovs.wait_applied(10)
    assert int(vsctl(db, "get", "Open_vSwitch", ".", "cur_cfg")) >= asked + 1
    assert "oulpod1" not in _datapath_ports(vswitchd)


def _datapath_ports(vswitchd: Vswitchd) -> str:
    shown = subprocess.run(["ovs-appctl", "-t", vswitchd.ctl, "dpif/show"],
                           capture_output=True, text=True, check=True)
    return shown.stdout
