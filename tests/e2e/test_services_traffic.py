"""ClusterIP Services from inside the pods, end to end: the real controller and agents,
Pods and Services as API objects, the test API server's EndpointSlice controller making the
slices, pods run by containerd and the kubelet stand-in, traffic from the pods
(:mod:`tests.e2e.services_lab` builds the lab, once for the module).

Each test makes its Services and removes them; the Pods (``w1``, ``w2`` on vm1 and ``w3``
on vm2 serve ``app=web``; ``c1`` on vm1 and ``c2`` on vm2 are clients) stay for the
module.  Hit counts are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import Counter
from ipaddress import ip_network

import pytest

from ovn_underlay.dataplane.nsenter import run_in_netns
from ovn_underlay.lab import external, netns
from ovn_underlay.lab.cluster import CLUSTER_ROUTER, CLUSTER_SUBNET
from ovn_underlay.lab.daemons import run
from ovn_underlay.lab.topology import nbctl
from tests.e2e.services_lab import (
    ECHO_PORT,
    TCP_PORT,
    UDP_PORT,
    ServicesLab,
    TcpEchoes,
    TcpStream,
    retried_after_ovs_abort,
    service_port,
    svc_lab,
    tcp_hits,
    tcp_try,
    udp_hits,
    udp_once,
    wait_until,
)

__all__ = ["svc_lab"]
WEB = ("w1", "w2", "w3")
CLIENTS = ("c1", "c2")
HITS = 30
"""Connections (or UDP flows) per client where every backend must be reached: with three
backends chosen evenly, the chance that one gets none is below 3 x (2/3)^30, 2e-5 (kept
low: every connection through a ClusterIP is a little more exposure to OVS 3.1.0's
conntrack abort, see ServicesLab.datapath_problem)."""
TCP = [service_port("tcp", 80, TCP_PORT)]
TCP_UDP = [*TCP, service_port("udp", 81, UDP_PORT, "UDP")]


@pytest.fixture(autouse=True)
def datapath(svc_lab: ServicesLab) -> None:
    """Each test starts with the lab's data path running: after an ovs-vswitchd abort in
    OVS 3.1.0's conntrack it is started again (said on stdout); any other stop fails."""
    svc_lab.recover("found before the test")
    problem = svc_lab.datapath_problem()
    if problem:
        pytest.fail(f"the lab has no data path: {problem}")


def _backends(lab: ServicesLab, names: tuple[str, ...], port: int = TCP_PORT) -> set[str]:
    return {f"{lab.pods[n].ip}:{port}" for n in names}


@retried_after_ovs_abort
def test_tcp_and_udp_from_both_vms_reach_every_ready_backend(svc_lab: ServicesLab) -> None:
    with svc_lab.service("web", TCP_UDP, {"app": "web"}) as vip:
        svc_lab.wait_backends("web", f"{vip}:80", {None: _backends(svc_lab, WEB)})
        svc_lab.wait_backends("web", f"{vip}:81", {None: _backends(svc_lab, WEB, UDP_PORT)})
        for name in CLIENTS:
            client = svc_lab.pods[name]
            tcp = tcp_hits(client, vip, 80, HITS)
            udp = udp_hits(client, vip, 81, HITS)
            print(f"{name} ({client.node}) -> {vip}: TCP {dict(sorted(tcp.items()))}, "
                  f"UDP {dict(sorted(udp.items()))}")
            for hits in (tcp, udp):
                assert set(hits) == set(WEB), hits  # every backend, no failed exchange
                assert sum(hits.values()) == HITS


@retried_after_ovs_abort
def test_a_backend_made_not_ready_gets_no_new_connection_within_a_second(
        svc_lab: ServicesLab) -> None:
    """Pod r1's Ready condition set False through the API (as kubelet reports a failed
    readiness probe) while c1 and c2 connect one after another: r1's last hit comes less
    than 1 s after the patch, and after that r2 answers everything."""
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(svc_lab.set_ready, "r1", True)  # for a retry
        vip = cleanup.enter_context(svc_lab.service("flip", TCP, {"app": "flip"}))
        svc_lab.wait_backends("flip", f"{vip}:80", {None: _backends(svc_lab, ("r1", "r2"))})
        streams = [TcpStream(svc_lab.pods[c], vip, 80) for c in CLIENTS]
        with contextlib.ExitStack() as stack:
            for stream in streams:
                stack.enter_context(stream)
            wait_until("each client reaches r1 and r2",
                       lambda: all({"r1", "r2"} <= s.seen() for s in streams), 10)
            patched = time.monotonic()
            svc_lab.set_ready("r1", False)
            svc_lab.wait_backends("flip", f"{vip}:80", {None: _backends(svc_lab, ("r2",))})
            programmed = time.monotonic() - patched
            settled = patched + 1.0
            wait_until("20 connections per client after the cut-off", lambda: all(
                sum(t > settled for t, _ in list(s.hits)) >= 20 for s in streams), 10)
        for stream in streams:
            assert stream.error is None, stream.error
        hits = sorted(h for s in streams for h in s.hits)
        last_r1 = max(t for t, answer in hits if answer == "r1")
        after = Counter(answer for t, answer in hits if t > settled)
        around = Counter(answer for t, answer in hits if patched <= t <= settled)
        print(f"r1 not Ready: its last connection {last_r1 - patched:+.3f}s after the patch "
              f"(rows and chassis updated {programmed:.3f}s after it); "
              f"within 1 s after it {dict(around)}, later {dict(after)}")
        assert last_r1 - patched < 1.0
        assert set(after) == {"r2"}, after


@retried_after_ovs_abort
def test_established_connections_to_a_not_ready_backend_run_on(svc_lab: ServicesLab) -> None:
    """A backend made not ready gets no new connections but keeps its established ones
    (TCP rows have no ct_flush), as with kube-proxy: a terminating pod drains."""
    r1, r2 = svc_lab.pods["r1"], svc_lab.pods["r2"]
    with TcpEchoes(r1, r2), contextlib.ExitStack() as cleanup:
        cleanup.callback(svc_lab.set_ready, "r1", True)
        vip = cleanup.enter_context(svc_lab.service(
            "drain", [service_port("tcp", 80, ECHO_PORT)], {"app": "flip"}))
        svc_lab.wait_backends("drain", f"{vip}:80", {None: _backends(svc_lab, ("r1", "r2"),
                                                                     ECHO_PORT)})

        def connect() -> list[tuple[socket.socket, str]]:
            opened: list[tuple[socket.socket, str]] = []
            while len(opened) < 20 and sum(a == "r1:a" for _, a in opened) < 3:
                sock = socket.create_connection((vip, 80), timeout=2)
                cleanup.callback(sock.close)
                sock.sendall(b"a")
                opened.append((sock, sock.recv(256).decode()))
            return opened

        opened = run_in_netns(svc_lab.pods["c1"].netns, connect)
        svc_lab.set_ready("r1", False)
        svc_lab.wait_backends("drain", f"{vip}:80", {None: _backends(svc_lab, ("r2",),
                                                                     ECHO_PORT)})
        after = []
        for sock, _ in opened:
            try:
                sock.sendall(b"b")
                after.append(sock.recv(256).decode() or "EOF")
            except OSError as exc:
                after.append(type(exc).__name__)
        print(f"established connections, r1 made not Ready: before {[a for _, a in opened]}, "
              f"after {after}")
        assert [a.split(":")[0] for a in after] == [a.split(":")[0] for _, a in opened]


@retried_after_ovs_abort
def test_a_deleted_service_stops_answering(svc_lab: ServicesLab) -> None:
    c1, c2 = (svc_lab.pods[c] for c in CLIENTS)
    vip = svc_lab.create_service("gone", TCP, {"app": "web"})
    try:
        svc_lab.wait_backends("gone", f"{vip}:80", {None: _backends(svc_lab, WEB)})
        assert set(tcp_hits(c1, vip, 80, 10)) <= set(WEB)
    finally:
        deleted = time.monotonic()
        svc_lab.delete_service("gone")

    def fails() -> tuple[str, float] | None:
        started = time.monotonic()
        outcome = tcp_try(c1, vip, 80, 0.3)[0]
        return (outcome, started - deleted) if outcome != "connected" else None

    outcome, failed_after = wait_until("a connect to the deleted Service fails", fails, 5)
    svc_lab.wait_gone("gone")
    later = [tcp_try(client, vip, 80, 0.5)[0] for client in (c1, c2) for _ in range(2)]
    print(f"deleted Service: the first connect that failed ({outcome}) was started "
          f"{failed_after:.3f}s after the delete; later: {later}")
    assert failed_after < 1.0
    assert "connected" not in later, later


def test_an_address_of_the_service_range_no_service_holds_stays_inside(
        svc_lab: ServicesLab) -> None:
    """With the router's gateway attached, a packet to an unused ClusterIP (a deleted
    Service's, say) must not follow the default route out, SNATed: the router drops the
    Service range.  Tested with the external host holding that address and listening."""
    state = svc_lab.state
    service_range = state.kube["service_range"]
    unused = str(ip_network(service_range)[-2])
    external.attach(state, CLUSTER_ROUTER, [CLUSTER_SUBNET])
    ext = netns.path(external.namespace(state.name))
    run(["ip", "-n", external.namespace(state.name), "addr", "replace", f"{unused}/32",
         "dev", "lo"])
    server = run_in_netns(ext, lambda: socket.create_server(("0.0.0.0", 80)))
    try:
        run_in_netns(ext, lambda: socket.create_connection((unused, 80), 1.0).close())
        outcomes = [tcp_try(svc_lab.pods[name], unused, 80, 1.0)[0] for name in CLIENTS]
        print(f"pods -> {unused} (no Service; the external host holds it): {outcomes}")
        assert outcomes == ["timeout", "timeout"], outcomes
        policies = nbctl(state.nb, "--columns=priority,match,action,external_ids", "list",
                         "Logical_Router_Policy")
        assert f'"ip4.dst == {service_range}"' in policies, policies
    finally:
        server.close()


@retried_after_ovs_abort
def test_a_service_without_endpoints_refuses_at_once(svc_lab: ServicesLab) -> None:
    with svc_lab.service("empty", TCP_UDP, {"app": "nothing"}) as vip:
        svc_lab.wait_backends("empty", f"{vip}:80", {None: set()})
        svc_lab.wait_backends("empty", f"{vip}:81", {None: set()})
        for name in CLIENTS:
            client = svc_lab.pods[name]
            outcome, seconds = tcp_try(client, vip, 80, 3.0)
            udp = run_in_netns(client.netns, lambda: udp_once(vip, 81, 1.0, tries=1))
            print(f"{name} -> Service without endpoints: TCP {outcome} after {seconds:.3f}s, "
                  f"UDP {udp}")
            assert (outcome, seconds < 1.0) == ("ConnectionRefusedError", True)
            assert udp == "!ConnectionRefusedError"  # ICMP port unreachable, at once


@retried_after_ovs_abort
def test_client_ip_affinity_keeps_each_client_on_one_backend(svc_lab: ServicesLab) -> None:
    with svc_lab.service("sticky", TCP_UDP, {"app": "web"}, sessionAffinity="ClientIP") as vip:
        rows = svc_lab.wait_backends("sticky", f"{vip}:80", {None: _backends(svc_lab, WEB)})
        svc_lab.wait_backends("sticky", f"{vip}:81", {None: _backends(svc_lab, WEB, UDP_PORT)})
        assert all(row["selection_fields"] == ["ip_src"] for row in rows.values()), rows
        for name in CLIENTS:
            client = svc_lab.pods[name]
            tcp, udp = tcp_hits(client, vip, 80, 20), udp_hits(client, vip, 81, 20)
            print(f"{name} with ClientIP affinity: TCP {dict(tcp)}, UDP {dict(udp)}")
            for hits in (tcp, udp):
                assert len(hits) == 1 and set(hits) <= set(WEB), hits


@retried_after_ovs_abort
def test_a_named_target_port_reaches_each_backend_on_its_own_number(
        svc_lab: ServicesLab) -> None:
    """targetPort ``srv`` is containerPort 9001 on n1 (vm1) and 9002 on n2 (vm2)."""
    n1, n2 = svc_lab.pods["n1"], svc_lab.pods["n2"]
    with svc_lab.service("named", [service_port("tcp", 80, "srv")], {"app": "named"}) as vip:
        svc_lab.wait_backends("named", f"{vip}:80", {None: {f"{n1.ip}:9001", f"{n2.ip}:9002"}})
        for name in CLIENTS:
            hits = tcp_hits(svc_lab.pods[name], vip, 80, 20)
            print(f"{name} -> named targetPort: {dict(hits)}")
            assert set(hits) == {"n1", "n2"}, hits


@retried_after_ovs_abort
def test_two_endpoint_slices_of_one_service(svc_lab: ServicesLab) -> None:
    """A Service without selector and two slices written as a user writes them, w1 in
    one, w3 in the other: both reached; the second deleted: only w1."""
    ports = [{"name": "tcp", "port": TCP_PORT, "protocol": "TCP"}]
    w1, w3 = svc_lab.pods["w1"], svc_lab.pods["w3"]
    with svc_lab.service("manual", TCP) as vip:
        try:
            svc_lab.create_slice("manual-a", "manual", ports, [w1])
            svc_lab.create_slice("manual-b", "manual", ports, [w3])
            svc_lab.wait_backends("manual", f"{vip}:80", {None: _backends(svc_lab,
                                                                          ("w1", "w3"))})
            for name in CLIENTS:
                hits = tcp_hits(svc_lab.pods[name], vip, 80, 20)
                print(f"{name} -> two slices: {dict(hits)}")
                assert set(hits) == {"w1", "w3"}, hits
            svc_lab.delete_slice("manual-b")
            svc_lab.wait_backends("manual", f"{vip}:80", {None: _backends(svc_lab, ("w1",))})
            for name in CLIENTS:
                hits = tcp_hits(svc_lab.pods[name], vip, 80, 10)
                assert hits == Counter(w1=10), hits
        finally:
            svc_lab.delete_slice("manual-a")
            svc_lab.delete_slice("manual-b")


@retried_after_ovs_abort
def test_internal_traffic_policy_local(svc_lab: ServicesLab) -> None:
    """``all``: endpoints on both VMs, each client reaches only its own VM's; ``vm1``:
    endpoints on vm1 only, the client on vm2 gets nothing (dropped: no refusal, no answer
    from vm1's endpoints)."""
    c1, c2 = (svc_lab.pods[c] for c in CLIENTS)
    local = {"internalTrafficPolicy": "Local"}
    with svc_lab.service("local-all", TCP, {"app": "web"}, **local) as everywhere, \
            svc_lab.service("local-vm1", TCP, {"app": "web", "at": "vm1"}, **local) as one:
        svc_lab.wait_backends("local-all", f"{everywhere}:80", {
            "vm1": _backends(svc_lab, ("w1", "w2")), "vm2": _backends(svc_lab, ("w3",))})
        svc_lab.wait_backends("local-vm1", f"{one}:80", {
            "vm1": _backends(svc_lab, ("w1", "w2")), "vm2": set()})
        seen = {(c.name, vip): tcp_hits(c, vip, 80, 20)
                for c in (c1, c2) for vip in (everywhere, one) if (c, vip) != (c2, one)}
        dropped = [tcp_try(c2, one, 80, 0.5)[0] for _ in range(3)]
        print(f"Local: {({k: dict(v) for k, v in seen.items()})}; c2 -> local-vm1: TCP "
              f"{dropped}")
        assert set(seen["c1", everywhere]) == {"w1", "w2"}
        assert set(seen["c2", everywhere]) == {"w3"}
        assert set(seen["c1", one]) == {"w1", "w2"}
        assert dropped == ["timeout"] * 3


@retried_after_ovs_abort
def test_a_pod_reaches_itself_through_its_own_service(svc_lab: ServicesLab) -> None:
    """w3, the Service's only backend, connects to the ClusterIP: it lands on itself, and
    sees the ClusterIP as the source (OVN's hairpin SNAT)."""
    w3 = svc_lab.pods["w3"]
    with svc_lab.service("self", TCP_UDP, {"pod": "w3"}) as vip:
        svc_lab.wait_backends("self", f"{vip}:80", {None: _backends(svc_lab, ("w3",))})
        svc_lab.wait_backends("self", f"{vip}:81", {None: _backends(svc_lab, ("w3",),
                                                                     UDP_PORT)})
        tcp = tcp_hits(w3, vip, 80, 10)
        udp = run_in_netns(w3.netns, lambda: udp_once(vip, 81, 0.5))
        print(f"w3 -> its own Service: TCP {dict(tcp)}, UDP answer {udp!r}")
        assert tcp == Counter(w3=10)
        assert udp == f"w3 {vip}"
