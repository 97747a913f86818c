"""Octavia in the Neutron lab (``lab up --neutron``), through the CLI and openstacksdk.

One lab for the module (``--neutron --kube``, one VM): its Octavia answers with the
``ovn`` provider through the clouds.yaml and openrc the lab writes, a load balancer on
a VIP of the Service subnet goes ACTIVE, a TCP listener, a SOURCE_IP_PORT pool and a
member on a node network land in the OVN Northbound, a cascade delete removes them,
and ``lab down`` leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.lab import daemons, netns
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import octavia as lab_octavia
from ovn_underlay.lab.topology import Lab, LabState, nbctl
from tests.conftest import skip_unless_octavia_possible
from tests.e2e.test_lab import cli, status

ROUTER = "cluster"
NODE_SUBNET = "198.19.1.0/24"
VIP = "198.18.128.10"
MEMBER = "198.19.1.10"
NB_TIMEOUT = 5.0


def octavia_pids(st: dict[str, Any]) -> list[int]:
    """The pids of octavia-api, the driver agent and the agent's children."""
    own = [st["pids"]["hypervisor"][name] for name in ("octavia-api", "octavia-driver-agent")]
    children = Path(f"/proc/{own[1]}/task/{own[1]}/children").read_text().split()
    return [*own, *map(int, children)]


@pytest.fixture(scope="module")
def octavia_lab(lab_rundir: Path) -> Iterator[tuple[Path, LabState]]:
    skip_unless_octavia_possible()
    name = f"o{os.getpid() % 10000}"
    cli(lab_rundir, name, "down")
    started = time.monotonic()
    cli(lab_rundir, name, "up", "--neutron", "--kube", "--vms", "1")
    print(f"\nlab up --neutron --kube --vms 1: {time.monotonic() - started:.1f} s")
    state = Lab(name, lab_rundir).load()
    assert state is not None
    yield lab_rundir, state
    cli(lab_rundir, name, "down")


def test_status_names_octavia_and_its_clouds_entry_and_openrc_work(
        octavia_lab: tuple[Path, LabState]) -> None:
    rundir, state = octavia_lab
    octavia = state.octavia
    text = cli(rundir, state.name, "status").stdout
    assert f"  Octavia: {lab_octavia.api_url()} (noauth, provider ovn; creates name " \
           f"project_id {octavia['project_id']}), log {octavia['log']}\n" in text
    st = status(rundir, state.name)
    assert st["up"], st["problems"]
    assert st["octavia"] == octavia
    assert all(pid for pid in octavia_pids(st))
    sockets = Path(octavia["conf"]).parent / "run"
    assert sorted(p.name for p in sockets.iterdir()) == sorted(lab_octavia.AGENT_SOCKETS)
    assert not sockets.samefile(lab_octavia.SOCKET_DIR), "private to the lab's processes"

    clouds = json.loads(Path(octavia["clouds"]).read_text())["clouds"][state.name]
    openrc = dict(line.removeprefix("export ").split("=", 1) for line in
                  Path(octavia["openrc"]).read_text().splitlines()
                  if line.startswith("export "))
    assert openrc["OS_LOAD_BALANCER_ENDPOINT_OVERRIDE"] == octavia["url"]
    assert openrc.pop("OCTAVIA_PROJECT_ID") == octavia["project_id"]

    def providers(env: dict[str, str], config_file: str) -> list[str]:
        def read() -> list[str]:
            import openstack
            from openstack import config

            saved = dict(os.environ)
            os.environ.update(env)
            try:
                loader = config.OpenStackConfig(config_files=[config_file] if config_file
                                                else [], load_envvars=bool(env))
                region = loader.get_one(state.name if config_file else "envvars")
            finally:
                os.environ.clear()
                os.environ.update(saved)
            conn = openstack.connection.Connection(config=region)
            try:
                return [p.name for p in conn.load_balancer.providers()]
            finally:
                conn.close()
        return lab_neutron.in_netns(state.hv_netns, read)

    assert clouds["load_balancer_endpoint_override"] == octavia["url"]
    assert providers({}, octavia["clouds"]) == ["ovn"], "through clouds.yaml"
    assert providers({k: shlex.split(v)[0] for k, v in openrc.items()}, "") == ["ovn"], \
        "through the openrc's variables"


def test_the_service_range_lies_in_a_subnet_whose_pool_and_gateway_are_outside_it(
        octavia_lab: tuple[Path, LabState]) -> None:
    _, state = octavia_lab
    subnet = lab_neutron.call(state, lambda conn: conn.network.get_subnet(
        state.octavia["service_subnet"]))
    service_range = lab_octavia.SERVICE_RANGE
    assert (subnet.cidr, state.octavia["service_range"]) == (
        str(lab_octavia.SERVICE_SUBNET), str(service_range))
    assert ip_address(subnet.gateway_ip) not in service_range
    for pool in subnet.allocation_pools:
        assert ip_address(pool["start"]) > service_range[-1], pool
    # The test API server allocates ClusterIPs from that range: the kubernetes Service's
    # is its first address.
    cmdline = Path(f"/proc/{daemons.read_live_pid(Path(state.daemons['kubeapi']))}/cmdline")
    argv = cmdline.read_text().split("\0")
    assert argv[argv.index("--service-cluster-ip-range") + 1] == str(service_range)
    kubernetes = lab_kube.request(state, "GET", "/api/v1/namespaces/default/services/kubernetes")
    assert kubernetes["spec"]["clusterIP"] == str(service_range[1])


def nb_vips(state: LabState) -> dict[str, dict[str, str]]:
    """Load_Balancer name -> its vips, from the Northbound."""
    rows = json.loads(nbctl(state.nb, "--format=json", "--data=json", "--columns=name,vips",
                            "list", "Load_Balancer"))["data"]
    return {name: dict(vips[1]) for name, vips in rows}


def wait_nb(state: LabState, check: Any, what: str) -> float:
    """Seconds until ``check(nb_vips)`` holds (fails after NB_TIMEOUT)."""
    started = time.monotonic()
    while not check(nb_vips(state)):
        assert time.monotonic() - started < NB_TIMEOUT, f"{what}: NB has {nb_vips(state)}"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_load_balancer_on_a_service_vip_reaches_the_northbound_and_goes_with_cascade(
        octavia_lab: tuple[Path, LabState]) -> None:
    _, state = octavia_lab

    def node_network(conn: Any) -> str:
        net = conn.network.create_network(name="node1")
        sub = conn.network.create_subnet(network_id=net.id, name="node1", cidr=NODE_SUBNET,
                                         ip_version=4, enable_dhcp=False)
        router = conn.network.create_router(name=ROUTER)
        conn.network.add_interface_to_router(router, subnet=sub.id)
        return str(sub.id)

    node_subnet = lab_neutron.call(state, node_network)
    router = lab_octavia.attach_services(state, ROUTER)
    assert lab_octavia.attach_services(state, ROUTER) == router, "idempotent"
    times: dict[str, float] = {}

    def create(conn: Any) -> tuple[str, str]:
        lbs = conn.load_balancer
        started = time.monotonic()
        lb = lbs.create_load_balancer(name="svc", provider="ovn", vip_address=VIP,
                                      vip_subnet_id=state.octavia["service_subnet"],
                                      project_id=state.octavia["project_id"])
        lb = lbs.wait_for_load_balancer(lb.id, interval=0.05, wait=30)
        times["LB ACTIVE"] = time.monotonic() - started
        listener = lbs.create_listener(name="svc-80", protocol="TCP", protocol_port=80,
                                       load_balancer_id=lb.id)
        lbs.wait_for_load_balancer(lb.id, interval=0.05, wait=30)
        pool = lbs.create_pool(name="svc-80", protocol="TCP", lb_algorithm="SOURCE_IP_PORT",
                               listener_id=listener.id)
        lbs.wait_for_load_balancer(lb.id, interval=0.05, wait=30)
        started = time.monotonic()
        lbs.create_member(pool, address=MEMBER, protocol_port=8080, subnet_id=node_subnet)
        times["member API"] = time.monotonic() - started
        return str(lb.id), str(lb.vip_port_id)

    lb_id, vip_port = lab_octavia.call(state, create)
    times["member API -> NB"] = wait_nb(
        state, lambda vips: vips.get(lb_id) == {f"{VIP}:80": f"{MEMBER}:8080"}, "member")
    assert lab_neutron.call(state, lambda conn: conn.network.get_port(vip_port)).fixed_ips == [
        {"subnet_id": state.octavia["service_subnet"], "ip_address": VIP}]

    started = time.monotonic()
    lab_octavia.call(state, lambda conn: conn.load_balancer.delete_load_balancer(
        lb_id, cascade=True))
    wait_nb(state, lambda vips: lb_id not in vips, "deleted")
    times["cascade delete -> NB"] = time.monotonic() - started
    print("\n" + ", ".join(f"{what} {secs:.2f} s" for what, secs in times.items()))

    def vip_port_gone(conn: Any) -> bool:
        return conn.network.find_port(vip_port) is None

    deadline = time.monotonic() + 10
    while not lab_neutron.call(state, vip_port_gone):
        assert time.monotonic() < deadline, "the VIP's Neutron port outlived its LB"
        time.sleep(0.1)


def test_down_stops_every_octavia_process_and_leaves_run_octavia_alone(
        octavia_lab: tuple[Path, LabState]) -> None:
    rundir, state = octavia_lab
    pids = octavia_pids(status(rundir, state.name))
    before = sorted(os.listdir(lab_octavia.SOCKET_DIR))
    cli(rundir, state.name, "down")
    assert [p for p in pids if daemons.alive(p)] == []
    assert netns.listed(f"{state.name}-") == []
    assert sorted(os.listdir(lab_octavia.SOCKET_DIR)) == before
    assert lab_octavia.SOCKET_DIR not in Path("/proc/self/mountinfo").read_text()
