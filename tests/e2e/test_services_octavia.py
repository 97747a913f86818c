"""ClusterIP Services through Octavia's OVN provider (issue 16's "Done when"), end to end.

A Neutron lab with Octavia and the test API server (``lab up --neutron --kube``: the API
server's Service range is the lab's Service range, inside the Neutron subnet
``services``), the real controller as :func:`ovn_underlay.lab.kube.start_controller`
runs it on such a lab (``--backend neutron --service-subnet services --service-cidr
198.18.128.0/20``, an openrc with Neutron's and Octavia's endpoints), agents on vm1 and
vm2 (vm3's Node is registered, and its agent started, only by the node test), pods
plumbed through each node's installed CNI binary, selector-less Services with
EndpointSlices the test writes, as a user writes them (the harness of
:mod:`tests.e2e.test_services_convergence`).  Each backend answers a TCP connection with
its name; clients open a new connection per request.

Traffic reaches every ready backend from pods on both VMs; a backend made not ready in
its slice stops getting traffic (how soon is printed); a deleted Service's load balancer
goes and its ClusterIP stops answering; a pod reaching its own Service lands on itself
(hairpin: the controller's security group ``ovn-underlay-services`` admits the Service
range on every pool port, also on a pod whose annotation names a group without any
ingress rule); a controller restart (SIGTERM, start) with a client sending
every 30 ms fails no request and leaves the same Octavia load balancers (ids) and
members, the new term's complete sync writing nothing.  A node added after the Services
exist: its new switch holds every Service's OVN row, and pods on it reach them.  The
repair of a load balancer forced into ERROR is the backend's own test.  Figures are
printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.controller.main import SERVICES_GROUP
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import octavia as lab_octavia
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET, Node
from ovn_underlay.lab.topology import Lab, nbctl
from ovn_underlay.names import EXT_PREFIX
from ovn_underlay.pods.security_groups import ALLOWED_ANNOTATION, ANNOTATION
from tests.conftest import skip_unless_octavia_possible
from tests.e2e.test_services_convergence import (
    NAMESPACE,
    READY_WITHIN,
    SLICES,
    Cluster,
    Pod,
    eventually,
    join_node,
    restart,
    sync_lines,
)

CLOSED = "so-closed"
"""A security group with Neutron's default rules only: egress, no ingress."""
HITS = 30
"""Requests per client where every one of three backends must answer: the chance that one
gets none is below 3 x (2/3)^30, 2e-5."""
PROGRAMMED_WITHIN = 30.0
CONTROLLER_SETTINGS = {"pool-size": "4"}
AGENT_SETTINGS = {"pool-high": "6", "pool-low": "2", "pool-batch": "4"}
"""Small pools: a Neutron port costs ~0.2 s of server CPU, and 5 pods per node suffice."""


def octavia_lbs(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Our load balancers by Service key: id, VIP, provisioning status, and the members
    (address:port) of each pool by pool name (none while a cascade delete is under way)."""
    return {name.removeprefix(EXT_PREFIX): lb
            for name, lb in lab_octavia.our_load_balancers(cluster.state).items()}


def nb_lbs(cluster: Cluster) -> str:
    """The NB's Load_Balancer rows (for a failure's message)."""
    return "\n".join(nbctl(cluster.state.nb, f"--columns={columns}", "list", table)
                     for table, columns in (
                         ("Load_Balancer", "_uuid,name,vips,external_ids"),
                         ("Logical_Switch", "name,load_balancer,external_ids"),
                         ("Logical_Router", "name,load_balancer")))


def networks_holding(cluster: Cluster, lb_id: str) -> set[str]:
    """The Neutron networks (names) whose switches hold every OVN row the provider wrote for
    load balancer ``lb_id`` (named by its id, one per protocol; none: no network)."""
    nb = cluster.state.nb
    rows = set(nbctl(nb, "--bare", "--columns=_uuid", "find", "Load_Balancer",
                     f"name={lb_id}").split())
    switches = json.loads(nbctl(nb, "--format=json", "--columns=load_balancer,external_ids",
                                "list", "Logical_Switch"))["data"]
    held = set()
    for lbs, ext in switches:
        refs = {ref[1] for ref in lbs[1]} if lbs[0] == "set" else {lbs[1]}
        if rows and rows <= refs:
            held.add(str(dict(ext[1]).get("neutron:network_name", "?")))
    return held


def on_router(cluster: Cluster, network: str) -> bool:
    """Whether Neutron network ``network``'s switch has its port on a router in the NB (the
    router port names the switch in ``external_ids:neutron:network_name``)."""
    nb = cluster.state.nb
    switch = nbctl(nb, "--bare", "--columns=name", "find", "Logical_Switch",
                   f'external_ids:"neutron:network_name"={network}').strip()
    return bool(switch) and bool(nbctl(
        nb, "--bare", "--columns=_uuid", "find", "Logical_Router_Port",
        f'external_ids:"neutron:network_name"={switch}').strip())


class FirstSeen(threading.Thread):
    """Tries each of ``checks`` every 50 ms from its start until each was true once, or
    :meth:`stop`: ``seen`` has when (epoch seconds) each first was."""

    def __init__(self, checks: dict[str, Callable[[], bool]]) -> None:
        super().__init__(daemon=True)
        self.checks = checks
        self.seen: dict[str, float] = {}
        self._stop_asked = threading.Event()

    def run(self) -> None:
        while not self._stop_asked.is_set() and len(self.seen) < len(self.checks):
            for name, check in self.checks.items():
                if name not in self.seen and check():
                    self.seen[name] = time.time()
            self._stop_asked.wait(0.05)

    def stop(self) -> dict[str, float]:
        """Stop trying; ``seen``."""
        self._stop_asked.set()
        self.join(10)
        return self.seen


def members(cluster: Cluster, name: str) -> set[str]:
    """The member addresses of Service ``name``'s load balancer (empty: none)."""
    lb = octavia_lbs(cluster).get(f"{NAMESPACE}/{name}")
    return {m.split(":")[0] for ms in (lb or {}).get("pools", {}).values() for m in ms}


def programmed(cluster: Cluster, name: str, backends: list[Pod]) -> None:
    """Wait until Service ``name``'s members in Octavia, then the backends of the OVN rows
    its provider wrote, are those of ``backends``, and the chassis have caught up with the
    NB (``--wait=hv``): the data path is in step, so a first request cannot beat it."""
    want = {p.ip for p in backends}
    eventually(lambda: members(cluster, name) == want, PROGRAMMED_WITHIN,
               lambda: f"{name}'s members: {octavia_lbs(cluster)}")
    lb = octavia_lbs(cluster)[f"{NAMESPACE}/{name}"]

    def in_rows() -> bool:
        vips = nbctl(cluster.state.nb, "--bare", "--columns=vips", "find", "Load_Balancer",
                     f"name={lb['id']}")
        return set(IPV4.findall(vips)) - {lb["vip"]} == want
    eventually(in_rows, PROGRAMMED_WITHIN, lambda: f"{name}'s rows: {nb_lbs(cluster)}")
    nbctl(cluster.state.nb, "--wait=hv", "--timeout=30", "sync")


IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
COMPLETE_OVER_3 = re.compile(r"complete sync of .* over 3 switch\(es\)")
"""The controller's log line of a complete sync once vm3's switch is there."""


def set_endpoints(cluster: Cluster, name: str, ready: list[Pod], not_ready: list[Pod]) -> None:
    endpoints = [{"addresses": [p.ip], "conditions": {"ready": r}, "nodeName": p.vm}
                 for pods, r in ((ready, True), (not_ready, False)) for p in pods]
    lab_kube.request(cluster.state, "PATCH", f"{SLICES}/{name}-user",
                     {"endpoints": endpoints}, content_type="application/merge-patch+json")


def group_id(cluster: Cluster) -> str:
    return str(lab_neutron.call(cluster.state, lambda conn: conn.network.find_security_group(
        SERVICES_GROUP).id))


def delete_service(cluster: Cluster, name: str) -> None:
    lab_kube.request(cluster.state, "DELETE",
                     f"/api/v1/namespaces/{NAMESPACE}/services/{name}")
    lab_kube.request(cluster.state, "DELETE", f"{SLICES}/{name}-user")


def write_settings(directory: Path, settings: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for option, value in settings.items():
        (directory / option).write_text(f"{value}\n")


@pytest.fixture(scope="module")
def cluster(lab_rundir: Path) -> Iterator[Cluster]:
    """The Neutron + Octavia lab of three VMs (vm3's Node deleted before the controller
    starts), the controller, agents on vm1 and vm2, pods a1 a2 c1 (vm1) and b1 c2 (vm2),
    a1 a2 b1 serving; Service ``web`` (a1, a2, b1) programmed."""
    skip_unless_octavia_possible()
    lab = Lab(f"so{os.getpid() % 1000}", lab_rundir)
    lab.down()
    started = time.monotonic()
    state = lab.up(3, neutron=True, kube=True)
    made = Cluster(lab, state, {vm.name: Node(state, vm) for vm in state.vms[:2]})
    try:
        up = time.monotonic() - started
        lab_kube.request(state, "DELETE", "/api/v1/nodes/vm3")
        lab_kube.install_cluster_mode(state)
        write_settings(lab.dir / "hv" / "cluster-controller" / "settings", CONTROLLER_SETTINGS)
        for vm in state.vms:
            write_settings(Path(vm.rundir) / "agent" / "settings", AGENT_SETTINGS)
        made.start_controller()
        for vm in state.vms[:2]:
            lab_kube.start_agent(state, vm, CLUSTER_SUBNET)
        lab.save(state)
        for vm in state.vms[:2]:
            lab_kube.wait_network_available(state, vm, READY_WITHIN * 2)
        nodes = time.monotonic() - started - up
        for vm, name in (("vm1", "a1"), ("vm1", "a2"), ("vm2", "b1"), ("vm1", "c1"),
                         ("vm2", "c2")):
            pod = made.plumb(vm, name)
            if not name.startswith("c"):
                made.serve(pod)
        t0 = time.monotonic()
        made.service("web", [made.pods[n] for n in ("a1", "a2", "b1")])
        programmed(made, "web", [made.pods[n] for n in ("a1", "a2", "b1")])
        print(f"\nlab up (Neutron, Octavia, API server, 3 VMs) in {up:.1f} s, vm1's and "
              f"vm2's networks in {nodes:.1f} s, Service web's load balancer with 3 members "
              f"{time.monotonic() - t0:.1f} s after its creation")
        yield made
    finally:
        made.close()
        lab.down()


def test_traffic_reaches_every_ready_backend_and_a_not_ready_one_stops(
        cluster: Cluster) -> None:
    """From a pod on each VM every backend of ``web`` answers (the hits per backend are
    printed); b1 made not ready in the slice stops getting traffic: its member goes and
    a client on vm1 sending meanwhile stops reaching it, without a failed request."""
    pods = cluster.pods
    a1, a2, b1 = (pods[n] for n in ("a1", "a2", "b1"))
    spread = {}
    for client in ("c1", "c2"):
        got = cluster.requests(pods[client], "web", HITS)
        assert all(o.ok for o in got), got
        spread[client] = {n: sum(o.what == n for o in got) for n in ("a1", "a2", "b1")}
        assert all(spread[client].values()), spread
    traffic = cluster.traffic(pods["c1"], "web")
    traffic.warm({"a1", "a2", "b1"})
    changed = time.time()
    try:
        set_endpoints(cluster, "web", [a1, a2], [b1])
        eventually(lambda: members(cluster, "web") == {a1.ip, a2.ip}, PROGRAMMED_WITHIN,
                   "b1's member gone")
        gone = time.time() - changed
        mark = time.time()
        eventually(lambda: len([o for o in traffic.outcomes() if o.at > mark]) >= 40, 20,
                   lambda: f"40 more requests: {traffic.summary('since the change')}; NB: "
                   f"{nb_lbs(cluster)}")
        traffic.stop()
        last_b1 = max((o.at for o in traffic.counted() if o.ok and o.what == "b1"),
                      default=changed)
        print(f"\nhits per backend, {HITS} requests from each: {spread}; b1 not ready: its "
              f"member gone from Octavia after {gone:.2f} s, its last hit "
              f"{max(0.0, last_b1 - changed):.2f} s after the change; "
              f"{traffic.summary('during the change')}")
        assert not traffic.failures(), traffic.summary("during the change")
        assert last_b1 <= mark, "b1 still reached once its member was gone"
        assert {o.what for o in traffic.counted() if o.at > mark} == {"a1", "a2"}
        assert set(cluster.nodes) == {"vm1", "vm2"}
    finally:
        traffic.stop()
        set_endpoints(cluster, "web", [a1, a2, b1], [])
        programmed(cluster, "web", [a1, a2, b1])


def test_a_client_on_a_node_whose_last_backend_went_still_reaches_the_service(
        cluster: Cluster) -> None:
    """b1, the one backend of ``web`` on vm2, made not ready: c2 on vm2 still reaches a1
    and a2 on vm1."""
    a1, a2, b1 = (cluster.pods[n] for n in ("a1", "a2", "b1"))
    try:
        set_endpoints(cluster, "web", [a1, a2], [b1])
        programmed(cluster, "web", [a1, a2])
        got = cluster.requests(cluster.pods["c2"], "web", 5)
        assert [o.ok for o in got] == [True] * 5, f"{got}; NB: {nb_lbs(cluster)}"
    finally:
        set_endpoints(cluster, "web", [a1, a2, b1], [])
        programmed(cluster, "web", [a1, a2, b1])


def test_a_pod_reaches_itself_through_its_own_service(cluster: Cluster) -> None:
    """Hairpin: a1 to a Service whose one backend is a1 gets a1's own answer; it works
    because the controller's group admits the Service range on a1's port (the provider
    SNATs hairpin traffic to the VIP), and the Service subnet is on the cluster router."""
    a1 = cluster.pods["a1"]
    cluster.service("self", [a1])
    programmed(cluster, "self", [a1])
    got = cluster.requests(a1, "self", 5)
    assert [o.what for o in got] == ["a1"] * 5 and all(o.ok for o in got), got
    assert {o.what for o in cluster.requests(cluster.pods["c2"], "self", 3)} == {"a1"}

    def look(conn: Any) -> tuple[list[str], list[Any], bool]:
        port = next(iter(conn.network.ports(fixed_ips=[f"ip_address={a1.ip}"])))
        groups = sorted(conn.network.get_security_group(g).name
                        for g in port.security_group_ids)
        group = conn.network.find_security_group(SERVICES_GROUP)
        rules = [(r.direction, r.remote_ip_prefix) for r in
                 conn.network.security_group_rules(security_group_id=group.id)]
        router = conn.network.find_router(CLUSTER_ROUTER)
        subnet = cluster.state.octavia["service_subnet"]
        attached = any(f["subnet_id"] == subnet for p in conn.network.ports(device_id=router.id)
                       for f in p.fixed_ips or ())
        return groups, rules, attached

    groups, rules, attached = lab_neutron.call(cluster.state, look)
    assert groups == sorted(["default", SERVICES_GROUP])
    assert rules == [("ingress", lab_octavia.SERVICE_RANGE.with_prefixlen)]
    assert attached
    log = cluster.log_since(0)
    assert f"attached the Service subnet services to router {CLUSTER_ROUTER}" in log, log
    assert (f"security group {SERVICES_GROUP} ({group_id(cluster)}) admits the Service range "
            f"{lab_octavia.SERVICE_RANGE} on every pool port (hairpin)") in log, log
    assert "Service subnet services:" not in log, log  # its layout is right
    delete_service(cluster, "self")


def test_a_pod_with_groups_from_its_annotation_reaches_itself_too(cluster: Cluster) -> None:
    """A pod whose annotation names a group without any ingress rule: another pod cannot
    reach it (the group is in force), yet it reaches itself through its own Service: its
    port has the annotation's group and ``ovn-underlay-services``."""
    state = cluster.state
    lab_neutron.call(state, lambda conn: conn.network.find_security_group(CLOSED) or
                     conn.network.create_security_group(name=CLOSED))
    lab_kube.request(state, "PATCH", f"/api/v1/namespaces/{NAMESPACE}",
                     {"metadata": {"annotations": {ALLOWED_ANNOTATION: CLOSED}}},
                     content_type="application/merge-patch+json")
    lab_kube.request(state, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "g1", "namespace": NAMESPACE,
                     "annotations": {ANNOTATION: CLOSED}},
        "spec": {"nodeName": "vm1", "containers": [{"name": "c", "image": "lab/none:1"}]}})
    g1 = cluster.plumb("vm1", "g1")
    cluster.serve(g1)
    cluster.service("gself", [g1])
    programmed(cluster, "gself", [g1])
    try:
        def groups(conn: Any) -> list[str]:
            port = next(iter(conn.network.ports(fixed_ips=[f"ip_address={g1.ip}"])))
            return sorted(conn.network.get_security_group(g).name
                          for g in port.security_group_ids)
        assert lab_neutron.call(state, groups) == sorted([CLOSED, SERVICES_GROUP])
        got = cluster.requests(g1, "gself", 5)
        assert [o.what for o in got] == ["g1"] * 5 and all(o.ok for o in got), got
        assert not any(o.ok for o in cluster.requests(cluster.pods["c2"], "gself", 2))
    finally:
        delete_service(cluster, "gself")


def test_a_deleted_service_stops_answering(cluster: Cluster) -> None:
    """Its load balancer goes from Octavia (cascade) and its ClusterIP stops answering:
    how soon, from the delete, is printed."""
    b1 = cluster.pods["b1"]
    cluster.service("doomed", [b1])
    programmed(cluster, "doomed", [b1])
    traffic = cluster.traffic(cluster.pods["c1"], "doomed")
    traffic.warm({"b1"})
    deleted = time.time()
    delete_service(cluster, "doomed")
    eventually(lambda: f"{NAMESPACE}/doomed" not in octavia_lbs(cluster), PROGRAMMED_WITHIN,
               "doomed's load balancer gone")
    lb_gone = time.time() - deleted

    def silent() -> bool:  # the last 5 requests all failed
        tail = traffic.outcomes()[-5:]
        return len(tail) == 5 and tail[0].at > deleted and not any(o.ok for o in tail)
    eventually(silent, 20, lambda: f"doomed still answering: {traffic.outcomes()[-5:]}")
    traffic.stop()
    last_ok = max(o.at for o in traffic.outcomes() if o.ok)
    print(f"\ndeleted Service: load balancer gone from Octavia {lb_gone:.2f} s after the "
          f"delete, the last answer {max(0.0, last_ok - deleted):.2f} s after it")
    after = [o for o in traffic.outcomes() if o.at > last_ok]
    assert after and not any(o.ok for o in after)


def test_a_controller_restart_fails_no_request_and_keeps_the_load_balancers(
        cluster: Cluster) -> None:
    """SIGTERM and start again while a client sends to ``web`` every 20 ms: not one request
    fails, the load balancers (ids, VIPs, members) are the same, and the new term's
    complete sync writes nothing."""
    traffic = cluster.traffic(cluster.pods["c2"], "web")
    traffic.warm({"a1", "a2", "b1"})
    before = octavia_lbs(cluster)
    done = restart(cluster, signal.SIGTERM)
    mark = time.time()
    eventually(lambda: len([o for o in traffic.outcomes() if o.at > mark]) >= 25, 10,
               "25 more requests")
    traffic.stop()
    after = octavia_lbs(cluster)
    print(f"\n{traffic.summary('controller restart')}; restart to leading "
          f"{done.leading:.2f} s; its complete sync: {done.complete}")
    assert not traffic.failures(), traffic.summary("controller restart")
    assert after == before
    assert done.complete[1:4] == (0, 0, 0), done.complete
    assert set(traffic.hits()) == {"a1", "a2", "b1"}


def test_a_node_added_after_the_services_gets_their_rows_and_reaches_them(
        cluster: Cluster) -> None:
    """vm3's Node registers (its agent starts) after ``web`` and ``solo`` (b1 alone) are
    programmed: the controller makes its network ``node-vm3`` on the cluster router, whose
    switch then holds every one of our load balancers' OVN rows, with nothing written to
    Octavia (no sync of the controller writes, the complete one over the three switches
    included: the provider's driver agent associates the router's load balancers with a
    switch when its router port is made); a pod on vm3 reaches every ready backend of
    both Services, and pods on vm1 and vm2 still do.  A pod on vm3 made a backend of
    ``web`` gets a member and is reached from vm1, and the rows stay on vm3's switch
    through that member's addition and removal.  Printed: when vm3's router port, then
    the rows, were in the NB, and when the first request from vm3 through ``web``'s
    ClusterIP succeeded, counted from vm3's NetworkUnavailable turning False."""
    state = cluster.state
    vm3 = state.vms[2]
    switch = f"node-{vm3.name}"
    a1, a2, b1 = (cluster.pods[n] for n in ("a1", "a2", "b1"))
    cluster.service("solo", [b1])
    programmed(cluster, "solo", [b1])
    ids = {key: lb["id"] for key, lb in octavia_lbs(cluster).items()}
    assert {f"{NAMESPACE}/web", f"{NAMESPACE}/solo"} <= ids.keys(), ids

    def on_vm3() -> bool:
        return all(switch in networks_holding(cluster, lb) for lb in ids.values())
    assert not on_vm3()
    offset = cluster.log_size()
    watch = FirstSeen({"router port": lambda: on_router(cluster, switch), "rows": on_vm3})
    watch.start()
    registered = time.time()
    join_node(cluster, vm3, READY_WITHIN * 2)
    cluster.nodes[vm3.name] = Node(state, vm3)
    available = time.time()
    try:
        eventually(lambda: len(watch.seen) == 2, PROGRAMMED_WITHIN,
                   lambda: f"vm3's router port, then our rows {ids} on its switch: "
                   f"{nb_lbs(cluster)}")
        seen = watch.stop()
        c3 = cluster.plumb(vm3.name, "c3")
        plumbed = time.time()
        from_vm3 = cluster.traffic(c3, "web")
        from_vm3.warm({"a1", "a2", "b1"})
        first = min(o.at for o in from_vm3.outcomes() if o.ok)
        from_vm3.stop()
        failed_first = sum(not o.ok for o in from_vm3.outcomes() if o.at < first)
        spread = {}
        for client in ("c3", "c1", "c2"):
            got = cluster.requests(cluster.pods[client], "web", HITS)
            assert all(o.ok for o in got), got
            spread[client] = {n: sum(o.what == n for o in got) for n in ("a1", "a2", "b1")}
            assert all(spread[client].values()), spread
            solo = cluster.requests(cluster.pods[client], "solo", 3)
            assert [o.what for o in solo] == ["b1"] * 3 and all(o.ok for o in solo), solo
        eventually(lambda: COMPLETE_OVER_3.search(cluster.log_since(offset)),
                   PROGRAMMED_WITHIN, "a complete sync over the three switches")
        syncs = sync_lines(cluster.log_since(offset))
        assert all(sync[1:] == (0, 0, 0, 0) for sync in syncs), syncs
        print(f"\nvm3's router port in the NB {seen['router port'] - registered:.1f} s "
              f"after its Node registered, our {len(ids)} rows on its switch "
              f"{max(0.0, seen['rows'] - seen['router port']):.2f} s after that (the "
              f"provider's driver agent); vm3's network available {available - registered:.1f} s "
              f"after the Node registered, and from then: c3 plumbed after "
              f"{plumbed - available:.2f} s, the first request from c3 through web's "
              f"ClusterIP answered after {first - available:.2f} s ({failed_first} failed "
              f"before it); hits per backend, {HITS} requests from each: {spread}")

        v3 = cluster.plumb(vm3.name, "v3")
        cluster.serve(v3)
        set_endpoints(cluster, "web", [a1, a2, b1, v3], [])
        programmed(cluster, "web", [a1, a2, b1, v3])
        assert on_vm3(), nb_lbs(cluster)
        got = cluster.requests(cluster.pods["c1"], "web", HITS)
        assert all(o.ok for o in got) and "v3" in {o.what for o in got}, got
    finally:
        watch.stop()
        set_endpoints(cluster, "web", [a1, a2, b1], [])
        programmed(cluster, "web", [a1, a2, b1])
        delete_service(cluster, "solo")
    assert switch in networks_holding(cluster, ids[f"{NAMESPACE}/web"]), nb_lbs(cluster)
