"""The Service part of ``lab demo --kube``: a ClusterIP Service over the demo Pods.

Created through the API as a user would (``type: ClusterIP``, ``selector: app=demo``,
port 80 to ``targetPort`` 8080): the test API server allocates its ClusterIP and its
EndpointSlice controller stand-in writes the slice; the cluster controller programs the
OVN ``Load_Balancer`` row (in the group attached to every node switch).  The demo waits
for the three, then for the ClusterIP to answer from a pod, then sends :data:`REQUESTS`
HTTP GETs, a new connection each, from one pod per VM and counts the answers per backend:
each Pod's httpd serves a page naming it (:data:`POD_COMMAND`: the Pod's hostname,
which is its name).  One check per client: every backend reached, every request
answered.  At the end the Service is deleted, the controller's rows must go and the
ClusterIP must stop answering.

On a Neutron lab (``lab demo --neutron --kube``) the controller makes an Octavia load
balancer instead (``ovn-underlay:default/demo``, provider ``ovn``, its VIP the ClusterIP
in the lab's Service subnet): the demo waits for it to be ACTIVE with the four
members, then shows the OVN ``Load_Balancer`` row the OVN provider wrote from it (named
by the load balancer's id) and the switches it is on; at the end the load balancer and
its row must go.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ovn_underlay.lab import kube, octavia, probe
from ovn_underlay.lab.daemons import run
from ovn_underlay.lab.topology import LabState, nbctl

NAME = "demo"
NAMESPACE = "default"
PORT = 80
TARGET_PORT = 8080
REQUESTS = 40
SELECTOR = {"app": "demo"}
PROGRAM_TIMEOUT = 30.0
GONE_TIMEOUT = 15.0
SERVICE_KEY = "ovn-underlay:service"
"""The external_ids key naming a row's Service (control.ovn_lb's KEY_SERVICE, which the
lab, a layer beside the control plane, does not import)."""
GROUP = "ovn-underlay-services"
"""The controller's Load_Balancer_Group (control.ovn_lb's GROUP)."""
OCTAVIA_NAME = f"ovn-underlay:{NAMESPACE}/{NAME}"
"""The name of the Service's Octavia load balancer (control.octavia_lb's lb_name)."""
POD_COMMAND = ["sh", "-c", f"mkdir -p /tmp/www && hostname > /tmp/www/index.html && "
               f"exec httpd -f -p {TARGET_PORT} -h /tmp/www"]
"""The demo Pods' command: httpd serving a page that names the Pod (its hostname, which the
kubelet sets to the Pod's name)."""

_GETS = """\
import socket, sys
ip, port, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for _ in range(count):
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            conn.sendall(b"GET / HTTP/1.0\\r\\nHost: " + ip.encode() + b"\\r\\n\\r\\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        status = head.split(b"\\r\\n", 1)[0].split()
        ok = len(status) > 1 and status[1] == b"200"
        print(body.decode(errors="replace").strip() or "?" if ok else "-", flush=True)
    except OSError:
        print("-", flush=True)
"""


_T = TypeVar("_T")


def _until(read: Callable[[], _T], done: Callable[[_T], bool], deadline: float,
           poll: float = 0.05) -> tuple[_T, bool]:
    """``read()`` every ``poll`` s until ``done`` holds for its value or ``deadline`` (a
    ``time.monotonic()``) passed: (the last value, whether it was done)."""
    while not done(value := read()):
        if time.monotonic() > deadline:
            return value, False
        time.sleep(poll)
    return value, True


def _say(text: str) -> None:
    print(text, flush=True)


def manifest() -> dict[str, Any]:
    """The Service, as a user writes it (no clusterIP: the API server allocates one)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"type": "ClusterIP", "selector": dict(SELECTOR),
                     "ports": [{"name": "http", "protocol": "TCP", "port": PORT,
                                "targetPort": TARGET_PORT}]}}


def gets(src_netns: str, ip: str, port: int = PORT, count: int = 1,
         timeout: float = 2.0) -> list[str]:
    """``count`` HTTP GETs from ``src_netns`` to ``ip:port``, a new connection each: the
    answers' bodies, "-" for one that failed."""
    out = run([sys.executable, "-S", "-c", _GETS, ip, str(port), str(count), str(timeout)],
              netns=src_netns, timeout=count * (timeout + 1) + 10)
    answers = out.splitlines()
    return answers + ["-"] * (count - len(answers))


def _slices(state: LabState) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"labelSelector": f"kubernetes.io/service-name={NAME}"})
    listed = kube.request(state, "GET", f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/"
                                        f"endpointslices?{query}")
    return list(listed["items"])


def _ready_endpoints(slices: list[dict[str, Any]]) -> list[str]:
    return sorted(addr for s in slices for e in s.get("endpoints") or []
                  if (e.get("conditions") or {}).get("ready", True)
                  for addr in e.get("addresses") or [])


def _rows(state: LabState) -> list[dict[str, Any]]:
    """The Service's Load_Balancer rows: {"uuid", "name", "vips": {vip: backends}}."""
    out = nbctl(state.nb, "--format=json", "--columns=_uuid,name,vips", "find",
                "Load_Balancer", f'external_ids:"{SERVICE_KEY}"="{NAMESPACE}/{NAME}"')
    rows = []
    for uuid, name, vips in json.loads(out)["data"]:
        rows.append({"uuid": uuid[1], "name": name, "vips": dict(vips[1])})
    return rows


def _octavia_lb(state: LabState) -> dict[str, Any] | None:
    """The Service's Octavia load balancer: {"id", "status", "members"} (None: none).  One
    being deleted (its pools going while they are read) has no members."""
    lb = octavia.our_load_balancers(state, OCTAVIA_NAME).get(OCTAVIA_NAME)
    if lb is None:
        return None
    return {"id": lb["id"], "status": lb["status"],
            "members": sorted(m for members in lb["pools"].values() for m in members)}


def _provider_row(state: LabState, lb_id: str) -> tuple[dict[str, str], list[str]]:
    """The OVN row the OVN provider wrote for load balancer ``lb_id``: (its vips, the
    Neutron networks of the switches it is on)."""
    rows = json.loads(nbctl(state.nb, "--format=json", "--columns=_uuid,vips", "find",
                            "Load_Balancer", f"name={lb_id}"))["data"]
    if not rows:
        return {}, []
    uuid, vips = rows[0][0][1], dict(rows[0][1][1])
    switches = json.loads(nbctl(state.nb, "--format=json", "--columns=load_balancer,"
                                "external_ids", "list", "Logical_Switch"))["data"]
    on = []
    for lbs, ext in switches:
        refs = [g[1] for g in lbs[1]] if lbs[0] == "set" else [lbs[1]]
        if uuid in refs:
            on.append(dict(ext[1]).get("neutron:network_name", "?"))
    return vips, sorted(on)


def _switches_with_group(state: LabState, lb_uuid: str) -> tuple[str, list[str]]:
    """(the group holding row ``lb_uuid``, the switches the group is attached to)."""
    groups = json.loads(nbctl(state.nb, "--format=json", "--columns=_uuid,name,load_balancer",
                              "list", "Load_Balancer_Group"))["data"]
    for uuid, name, members in groups:
        uuids = [m[1] for m in members[1]] if members[0] == "set" else [members[1]]
        if lb_uuid in uuids:
            switches = json.loads(nbctl(state.nb, "--format=json",
                                        "--columns=name,load_balancer_group", "list",
                                        "Logical_Switch"))["data"]
            attached = []
            for sw_name, sw_groups in switches:
                refs = ([g[1] for g in sw_groups[1]] if sw_groups[0] == "set"
                        else [sw_groups[1]])
                if uuid[1] in refs:
                    attached.append(sw_name)
            return name, sorted(attached)
    return "", []


@dataclass
class Spread:
    """One client's GETs to the ClusterIP: the answers per backend."""

    client: probe.Endpoint
    backends: list[str]
    answers: list[str] = field(default_factory=list)

    def hits(self, backend: str) -> int:
        return self.answers.count(backend)

    @property
    def failed(self) -> int:
        return sum(a not in self.backends for a in self.answers)

    @property
    def reached(self) -> int:
        return sum(self.hits(b) > 0 for b in self.backends)

    @property
    def ok(self) -> bool:
        """Every backend reached and every request answered by one of them."""
        return self.reached == len(self.backends) and not self.failed


class DemoService:
    """The demo's Service on a lab whose Pods are Ready."""

    def __init__(self, state: LabState, backends: dict[str, tuple[str, str]]) -> None:
        """``backends``: Pod name -> (its node, its IP)."""
        self.state = state
        self.backends = backends
        self.cluster_ip = ""
        self.created = False
        self.lb_id = ""
        """The Octavia load balancer's id (a Neutron lab), once seen."""

    def create(self) -> str:
        """Create the Service; its ClusterIP."""
        made = kube.request(self.state, "POST", f"/api/v1/namespaces/{NAMESPACE}/services",
                            manifest())
        self.created = True
        self.cluster_ip = str(made["spec"]["clusterIP"])
        return self.cluster_ip

    def show_programmed(self, client: probe.Endpoint) -> bool:
        """Wait for the slice, the controller's row and an answer from ``client``, saying
        each with its time; False when one did not come within :data:`PROGRAM_TIMEOUT`."""
        t0 = time.monotonic()
        deadline = t0 + PROGRAM_TIMEOUT
        self.create()
        _say(f"Service {NAMESPACE}/{NAME} created through the API: type ClusterIP, selector "
             f"app=demo, port {PORT} -> targetPort {TARGET_PORT}; the API server allocated "
             f"ClusterIP {self.cluster_ip}")
        want = sorted(ip for _, ip in self.backends.values())
        slices, done = _until(lambda: _slices(self.state),
                              lambda found: _ready_endpoints(found) == want, deadline)
        ready = _ready_endpoints(slices)
        if not done:
            _say(f"  EndpointSlice: ready endpoints {ready}, not {want}, after "
                 f"{PROGRAM_TIMEOUT:.0f}s: FAILED")
            return False
        _say(f"  EndpointSlice {', '.join(s['metadata']['name'] for s in slices)} (the API "
             f"server's EndpointSlice controller): {len(ready)} ready endpoints after "
             f"{time.monotonic() - t0:.1f}s")
        vip = f"{self.cluster_ip}:{PORT}"
        if self.state.octavia:
            if not self._show_octavia(want, deadline, t0):
                return False
        elif not self._show_rows(want, deadline, t0):
            return False
        if not _until(lambda: gets(client.netns, self.cluster_ip, timeout=1.0),
                      lambda answers: answers != ["-"], deadline, poll=0)[1]:
            _say(f"  http://{vip}/ does not answer {client.label} after "
                 f"{PROGRAM_TIMEOUT:.0f}s: FAILED")
            return False
        _say(f"  http://{vip}/ answers {client.label} after {time.monotonic() - t0:.1f}s")
        return True

    def _show_octavia(self, want: list[str], deadline: float, t0: float) -> bool:
        """Wait for the Octavia load balancer with ``want`` as members, ACTIVE; say it
        and the OVN row its provider wrote."""
        members = sorted(f"{ip}:{TARGET_PORT}" for ip in want)
        lb, done = _until(lambda: _octavia_lb(self.state), lambda found: bool(
            found and found["members"] == members and found["status"] == "ACTIVE"),
            deadline, poll=0.1)
        if not done or lb is None:
            _say(f"  Octavia: no ACTIVE load balancer {OCTAVIA_NAME} with members "
                 f"{', '.join(members)} after {PROGRAM_TIMEOUT:.0f}s ({lb}): FAILED (see "
                 "the controller's log)")
            return False
        self.lb_id = str(lb["id"])
        _say(f"  Octavia load balancer {OCTAVIA_NAME} (made by the controller, provider "
             f"ovn): ACTIVE, VIP {self.cluster_ip}, listener TCP {PORT}, {len(members)} "
             f"members, after {time.monotonic() - t0:.1f}s")
        vip = f"{self.cluster_ip}:{PORT}"
        row, done = _until(lambda: _provider_row(self.state, self.lb_id),
                           lambda found: sorted(found[0].get(vip, "").split(",")) == members,
                           deadline)
        if not done:
            _say(f"  OVN Load_Balancer {self.lb_id}: {row[0]} after "
                 f"{PROGRAM_TIMEOUT:.0f}s, not {vip} -> {members}: FAILED")
            return False
        _say(f"  OVN Load_Balancer {self.lb_id} (written by Octavia's OVN provider): {vip} "
             f"-> {len(members)} backends, on switches of networks {', '.join(row[1])}")
        return True

    def _show_rows(self, want: list[str], deadline: float, t0: float) -> bool:
        """Wait for the controller's OVN row with ``want`` as backends; say it."""
        vip = f"{self.cluster_ip}:{PORT}"
        backends = ",".join(sorted(f"{ip}:{TARGET_PORT}" for ip in want))
        rows, done = _until(lambda: [
            r for r in _rows(self.state)
            if sorted(r["vips"].get(vip, "").split(",")) == backends.split(",")], bool, deadline)
        if not done:
            _say(f"  OVN Load_Balancer: no row with {vip} -> {backends} after "
                 f"{PROGRAM_TIMEOUT:.0f}s: FAILED (see the controller's log)")
            return False
        group, switches = _switches_with_group(self.state, rows[0]["uuid"])
        _say(f"  OVN Load_Balancer {rows[0]['name']} (written by the controller): {vip} -> "
             f"{len(want)} backends, in group {group or '-'} on switches "
             f"{', '.join(switches) or '-'}, after {time.monotonic() - t0:.1f}s")
        return True

    def spread(self, clients: list[probe.Endpoint], count: int = REQUESTS) -> list[Spread]:
        """``count`` GETs from each client; the table of hits per backend printed."""
        names = sorted(self.backends)
        t0 = time.monotonic()
        spreads = [Spread(c, names, gets(c.netns, self.cluster_ip, count=count))
                   for c in clients]
        _say(f"{count} HTTP GETs to http://{self.cluster_ip}:{PORT}/ from one pod per VM, "
             f"a new connection each, in {time.monotonic() - t0:.1f}s; each backend's page "
             "names it:")
        head = ("backend", "VM", "IP", *[f"from {s.client.label}" for s in spreads])
        rows = [(name, *self.backends[name], *[str(s.hits(name)) for s in spreads])
                for name in names]
        rows.append(("no answer / other", "", "", *[str(s.failed) for s in spreads]))
        checks = [("check", "from", "to", "result"),
                  *[("service every backend", f"{s.client.label} ({s.client.ip})",
                     f"{NAME} ({self.cluster_ip}:{PORT})",
                     f"{'ok' if s.ok else 'FAIL'}: {s.reached}/{len(names)} backends, "
                     f"{count - s.failed}/{count} answered") for s in spreads]]
        _say(probe.columns([head, *rows]))
        _say(probe.columns(checks))
        return spreads

    def delete(self, client: probe.Endpoint | None) -> bool:
        """Delete the Service; True when the controller's rows went and (from ``client``)
        the ClusterIP stopped answering within :data:`GONE_TIMEOUT`.  Says so."""
        if not self.created:
            return True
        t0 = time.monotonic()
        deadline = t0 + GONE_TIMEOUT
        kube.request(self.state, "DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/{NAME}")
        self.created = False
        if not _until(self._rows_left, lambda left: not left, deadline)[1]:
            _say(f"teardown: Service {NAMESPACE}/{NAME} deleted, its "
                 f"{'load balancer' if self.state.octavia else 'OVN rows'} still there "
                 f"after {GONE_TIMEOUT:.0f}s: FAILED")
            return False
        rows_gone = time.monotonic() - t0
        silent = ""
        if client is not None and self.cluster_ip:
            if not _until(lambda: gets(client.netns, self.cluster_ip, timeout=0.5),
                          lambda answers: answers == ["-"], deadline)[1]:
                _say(f"teardown: Service {NAMESPACE}/{NAME} deleted, rows gone, but "
                     f"{self.cluster_ip}:{PORT} still answers {client.label}: FAILED")
                return False
            silent = (f", {self.cluster_ip}:{PORT} silent for {client.label} (no answer "
                      f"within 0.5s) {time.monotonic() - t0:.1f}s after the delete")
        what = ("its Octavia load balancer and the provider's OVN row removed"
                if self.state.octavia else "its OVN rows removed")
        _say(f"teardown: Service {NAMESPACE}/{NAME} deleted through the API, {what} by the "
             f"controller after {rows_gone:.1f}s{silent}: ok")
        return True

    def _rows_left(self) -> bool:
        """Whether the Service's rows (or its load balancer and its provider row) remain."""
        if not self.state.octavia:
            return bool(_rows(self.state))
        return _octavia_lb(self.state) is not None or bool(
            self.lb_id and _provider_row(self.state, self.lb_id)[0])
