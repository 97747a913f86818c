"""The lab end to end, through the CLI a user runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.lab import daemons, netns, probe
from ovn_underlay.lab.topology import LabState
from tests.conftest import skip_unless_lab_possible

CLI = [sys.executable, "-m", "ovn_underlay.cli"]


def cli(rundir: Path, name: str, *args: str,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, "lab", "--name", name, "--rundir", str(rundir), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def status(rundir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(rundir, name, "status", "--json", check=False).stdout)
    return data


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def all_pids(st: dict[str, Any]) -> list[int]:
    return [pid for pids in st["pids"].values() for pid in pids.values() if pid]


def assert_gone(rundir: Path, name: str, pids: list[int]) -> None:
    assert netns.listed(f"{name}-") == []
    assert [p for p in pids if daemons.alive(p)] == []
    assert not (rundir / name).exists()


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, str]:
    skip_unless_lab_possible()
    name = f"f{os.getpid() % 10000}"
    yield tmp_path, name
    cli(tmp_path, name, "down", check=False)


def test_up_reach_down_leaves_nothing(fresh: tuple[Path, str]) -> None:
    rundir, name = fresh
    before = root_links()
    cli(rundir, name, "up", "--vms", "2")
    st = status(rundir, name)
    assert st["up"] is True, st["problems"]
    assert st["nb"].startswith("unix:") and st["sb"].startswith("unix:")
    vm1, vm2 = (probe.Endpoint(v["name"], v["netns"], v["ip"]) for v in st["vms"])
    for src, dst in ((vm1, vm2), (vm2, vm1)):
        assert probe.ping(src.netns, dst.ip), f"{src.label} cannot ping {dst.label}"
        assert probe.tcp(src.netns, dst), f"{src.label} cannot reach {dst.label} over TCP"
    pids = all_pids(st)
    assert len(pids) == 10
    assert root_links() == before, "the lab changed the machine's own interfaces"
    cli(rundir, name, "down")
    assert_gone(rundir, name, pids)
    assert root_links() == before


def test_up_twice_is_noop_when_healthy_and_refused_when_broken(fresh: tuple[Path, str]) -> None:
    rundir, name = fresh
    cli(rundir, name, "up", "--vms", "1")
    first = status(rundir, name)
    cli(rundir, name, "up", "--vms", "1")
    assert all_pids(status(rundir, name)) == all_pids(first)
    os.kill(first["pids"]["vm1"]["vswitchd"], signal.SIGKILL)
    time.sleep(0.2)
    again = cli(rundir, name, "up", "--vms", "1", check=False)
    assert again.returncode == 1
    assert "vswitchd is not running" in again.stderr and "lab down" in again.stderr
    assert cli(rundir, name, "status", check=False).returncode == 1


@pytest.mark.parametrize("delay", [0.05, 0.2])
def test_down_cleans_up_after_a_crash_half_way_through_up(fresh: tuple[Path, str],
                                                          delay: float) -> None:
    rundir, name = fresh
    up = subprocess.Popen([*CLI, "lab", "--name", name, "--rundir", str(rundir), "up",
                           "--vms", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    up.send_signal(signal.SIGKILL)
    up.wait()
    pids = [int(p.read_text()) for p in rundir.rglob("*.pid") if p.read_text().strip()]
    cli(rundir, name, "down")
    assert_gone(rundir, name, pids)


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    proc = cli(tmp_path, "bad name!", "status", check=False)
    assert proc.returncode == 1 and "lab name" in proc.stderr
    skip_unless_lab_possible()
    proc = cli(tmp_path, "zz", "up", "--vms", "0", check=False)
    assert proc.returncode == 1 and "--vms must be between" in proc.stderr
    assert not netns.listed("zz-")


def test_status_of_a_neutron_lab_names_its_api_and_each_vms_openrc(
        neutron_lab: LabState) -> None:
    rundir, name = Path(neutron_lab.rundir).parent, neutron_lab.name
    text = cli(rundir, name, "status").stdout
    url = neutron_lab.neutron["url"]
    assert f"  Neutron: {url} (noauth; the VMs reach it on eth0), log " \
           f"{neutron_lab.neutron['log']}\n" in text
    for vm in neutron_lab.vms:
        assert f"openrc {vm.openrc}, management address {vm.mgmt_ip}\n" in text
        assert f"OS_NETWORK_ENDPOINT_OVERRIDE={url}" in Path(vm.openrc).read_text()
    st = status(rundir, name)
    assert st["neutron"]["url"] == url
    assert [(v["openrc"], v["mgmt_ip"]) for v in st["vms"]] == [
        (vm.openrc, vm.mgmt_ip) for vm in neutron_lab.vms]
