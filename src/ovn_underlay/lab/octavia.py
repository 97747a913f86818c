"""Octavia in the Neutron lab (``lab up --neutron``): octavia-api, the driver agent, OVN provider.

Debian's packages (octavia-api, octavia-driver-agent, python3-ovn-octavia-provider),
run by Debian's ``/usr/bin/python3`` in the hypervisor namespace beside
neutron-server (see :mod:`ovn_underlay.lab.neutron`):

* the ``octavia`` database in the lab's MariaDB, made by ``octavia-db-manage
  upgrade head``;
* the API (Octavia's WSGI application, ``octavia.api.app:setup_app``) in gunicorn,
  one process of :data:`API_THREADS` threads (python3-gunicorn: a dependency of
  python3-octavia), as a cloud runs it under uWSGI or Apache: Debian's
  ``octavia-api`` console script serves one request at a time ("testing only", it
  warns), which made Services created together queue behind each VIP port's creation;
  listening on the hypervisor's management address, port :data:`API_PORT`, with
  ``auth_strategy = noauth``
  (every request runs as admin; a create names its ``project_id``), the ``ovn``
  provider the only and default one, Neutron reached without Keystone
  (``[service_auth] auth_type = none`` with Neutron's URL as endpoint), the
  compute noop driver (no amphorae);
* ``octavia-driver-agent`` with the OVN provider agent, without which no load
  balancer leaves PENDING_CREATE.

The OVN provider talks to the driver agent over unix sockets in
``/var/run/octavia`` whatever the configuration says, so each of the two runs in a
mount namespace of its own where the lab's directory ``hv/octavia/run`` is bound
over ``/run/octavia`` (:func:`launch`, ``python -m ovn_underlay.lab.octavia``):
two labs never share the sockets, and the machine's ``/run/octavia`` (made as an
empty mount point when missing) stays as it was for every other process.

The lab's plan for Kubernetes Services on Octavia (issue 16, item 2): the Service
range (:data:`SERVICE_RANGE`, the test API server's ``--service-cluster-ip-range``)
lies inside the Neutron subnet ``services`` (:data:`SERVICE_SUBNET`) whose gateway
and allocation pool are outside the range, so Neutron never hands out a
ClusterIP; each VIP is a port with a fixed address the API server allocated.  The
OVN provider puts a load balancer on the VIP's switch, that switch's router and
every switch on that router, so the subnet must be on the cluster router:
:func:`attach_services` (the router is the controller's or lswitch-setup's, made
after ``lab up``).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ovn_underlay.names import EXT_PREFIX

if TYPE_CHECKING:
    from openstack.connection import Connection

    from ovn_underlay.lab.topology import LabState

API_PORT = 9876
API_THREADS = 8
PROVIDER = "ovn"
PROJECT_ID = "0ab1ab0c7a7a4e1d9b5e0a11ab0ab1ab"
"""The project the lab's load balancers belong to (noauth: every create names one)."""
SOCKET_DIR = "/run/octavia"
"""Where the OVN provider and the driver agent meet (``/var/run/octavia``, /var/run -> /run)."""
SERVICE_NETWORK_NAME = "services"
SERVICE_SUBNET = IPv4Network("198.18.128.0/19")
SERVICE_RANGE = IPv4Network("198.18.128.0/20")
"""The Kubernetes Service range: the lower half of the subnet (its first address,
198.18.128.1, is the ``kubernetes`` Service); the upper half holds the gateway
(198.18.144.1) and the allocation pool."""
SYSTEM_PYTHON = "/usr/bin/python3"
TOOLS = ("octavia-api", "octavia-driver-agent", "octavia-db-manage")
MODULES = ("octavia", "ovn_octavia_provider", "gunicorn")
READY_TIMEOUT = 90.0
AGENT_SOCKETS = ("status.sock", "stats.sock", "get.sock")
_T = TypeVar("_T")

_OCTAVIA_CONF = """\
[DEFAULT]
debug = false
transport_url = fake:/

[api_settings]
bind_host = {host}
bind_port = {port}
auth_strategy = noauth
enabled_provider_drivers = ovn: The Octavia OVN driver
default_provider_driver = ovn

[database]
connection = mysql+pymysql://root@localhost/octavia?unix_socket={socket}

[service_auth]
auth_type = none
endpoint = {neutron}

[neutron]
endpoint = {neutron}

[networking]
allow_invisible_resource_usage = true

[controller_worker]
compute_driver = compute_noop_driver

[driver_agent]
enabled_provider_agents = ovn
status_socket_path = {sockets}/status.sock
stats_socket_path = {sockets}/stats.sock
get_socket_path = {sockets}/get.sock

[oslo_concurrency]
lock_path = {workdir}/lock

[ovn]
ovn_nb_connection = {nb}
ovn_sb_connection = {sb}
"""

_OPENRC = """\
# Neutron and Octavia of lab {lab}: both run without authentication (noauth). Octavia
# wants a project_id in every create: the lab's is OCTAVIA_PROJECT_ID (not OS_PROJECT_ID,
# which openstacksdk would hand to the "none" auth plugin, which refuses it).
export OS_AUTH_TYPE=none
export OS_NETWORK_ENDPOINT_OVERRIDE={neutron}
export OS_LOAD_BALANCER_ENDPOINT_OVERRIDE={octavia}
export OCTAVIA_PROJECT_ID={project}
"""


def api_url() -> str:
    """The lab's Octavia API (root URL), as the VMs reach it."""
    from ovn_underlay.lab.neutron import hv_mgmt_ip

    return f"http://{hv_mgmt_ip()}:{API_PORT}"


def missing_tools() -> list[str]:
    """The programs of the lab's Octavia that are not installed."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    for module in MODULES:
        if not missing and subprocess.run([SYSTEM_PYTHON, "-c", f"import {module}"],
                                          capture_output=True, check=False).returncode != 0:
            missing.append(f"the {module} module of {SYSTEM_PYTHON}")
    return missing


def require_tools() -> None:
    """Fail with the install hint when Octavia's programs are missing."""
    from ovn_underlay.lab.daemons import DaemonError

    missing = missing_tools()
    if missing:
        raise DaemonError(f"missing for lab up --neutron: {', '.join(missing)}; run 'make "
                          "deps' (Debian, without recommends: octavia-api "
                          "octavia-driver-agent python3-ovn-octavia-provider) or pass "
                          "--no-octavia")


def clouds_entry(state: LabState) -> dict[str, Any]:
    """The lab's clouds.yaml entry: both endpoints overridden, no authentication (no
    project either: the "none" auth plugin refuses one; creates name it themselves)."""
    return {"auth_type": "none", "network_endpoint_override": state.neutron["url"],
            "load_balancer_endpoint_override": state.octavia["url"]}


def call(state: LabState, func: Callable[[Connection], _T]) -> _T:
    """``func(connection)``: openstacksdk on the lab's Neutron and Octavia, from the
    hypervisor's namespace (``connection.load_balancer`` is Octavia)."""
    import openstack

    from ovn_underlay.lab.neutron import in_netns

    entry = clouds_entry(state)

    def with_connection() -> _T:
        conn = openstack.connect(**entry, load_yaml_config=False, load_envvars=False,
                                 api_timeout=60)
        try:
            return func(conn)
        finally:
            conn.close()

    return in_netns(state.hv_netns, with_connection)



def our_load_balancers(state: LabState, name: str | None = None) -> dict[str, dict[str, Any]]:
    """The controller's load balancers (names starting ``ovn-underlay:``; ``name``: that one
    only) by name: id, VIP, provisioning status and each pool's members (address:port)
    by pool name.  One whose pools go while they are read (a cascade delete under way)
    is listed with no pools."""
    from openstack.exceptions import NotFoundException

    def read(conn: Connection) -> dict[str, dict[str, Any]]:
        found = {}
        for lb in conn.load_balancer.load_balancers(**({"name": name} if name else {})):
            lb_name = str(lb.name or "")
            if not lb_name.startswith(EXT_PREFIX):
                continue
            try:
                pools = {str(pool.name): sorted(f"{m.address}:{m.protocol_port}"
                                                for m in conn.load_balancer.members(pool))
                         for pool in conn.load_balancer.pools(loadbalancer_id=lb.id)}
            except NotFoundException:
                pools = {}
            found[lb_name] = {"id": str(lb.id), "vip": lb.vip_address,
                              "status": str(lb.provisioning_status), "pools": pools}
        return found
    return call(state, read)

# --- a process with a private /run/octavia --------------------------------------------------

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def launch(netns_path: str, sockets: str, argv: list[str]) -> None:
    """Become ``argv``: in a mount namespace of its own with ``sockets`` bound over
    :data:`SOCKET_DIR`, in the network namespace at ``netns_path``."""
    from ovn_underlay.dataplane import nsenter

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    os.makedirs(SOCKET_DIR, exist_ok=True)  # the mount point; empty, for nobody else
    check(libc.mount(sockets.encode(), SOCKET_DIR.encode(), None, MS_BIND, None),
          f"bind {sockets} on {SOCKET_DIR}")
    nsenter.enter_netns(netns_path)
    os.execv(argv[0], argv)


def _spawn(name: str, argv: list[str], workdir: Path, state: LabState) -> Path:
    """Start ``argv`` through :func:`launch`; write its pid file (the same process after
    exec) and record it in ``state.daemons``; return the file."""
    from ovn_underlay.lab import netns

    pidfile = workdir / f"{name}.pid"
    launcher = [sys.executable, "-m", "ovn_underlay.lab.octavia", netns.path(state.hv_netns),
                str(workdir / "run"), "--", *argv]
    with open(workdir / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(launcher, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True, cwd=workdir)
    pidfile.write_text(f"{proc.pid}\n")
    state.daemons[name] = str(pidfile)
    return pidfile


def _wait(what: str, ready: Callable[[], bool], pidfiles: list[Path], log: Path) -> None:
    from ovn_underlay.lab.daemons import DaemonError, read_live_pid

    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        for pidfile in pidfiles:
            if read_live_pid(pidfile) is None:
                raise DaemonError(f"{pidfile.stem} exited while waiting for {what}; see "
                                  f"{log} and {pidfile.with_suffix('.out')}")
        if time.monotonic() > deadline:
            raise DaemonError(f"{what} not ready within {READY_TIMEOUT:.0f}s; see {log}")
        time.sleep(0.1)


def _providers(state: LabState) -> list[str]:
    """The providers Octavia's API lists ([] while it does not answer)."""
    from ovn_underlay.lab.neutron import in_netns

    def get() -> list[str]:
        try:
            with urllib.request.urlopen(api_url() + "/v2/lbaas/providers", timeout=2) as reply:
                return [p["name"] for p in json.loads(reply.read()).get("providers", [])]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return []

    return in_netns(state.hv_netns, get)


def mariadb_socket(lab_dir: Path) -> Path:
    """The unix socket of the lab's MariaDB (:mod:`ovn_underlay.lab.neutron` starts it)."""
    return lab_dir / "hv" / "neutron" / "mysql.sock"


def up(state: LabState, lab_dir: Path) -> None:
    """The Octavia database, octavia-api and the driver agent, ready; the Service network.

    Neutron must be up.  Pid files go into ``state.daemons`` as soon as each process
    exists (``lab down`` stops them).
    """
    from ovn_underlay.lab.daemons import run
    from ovn_underlay.lab.neutron import hv_mgmt_ip

    workdir = lab_dir / "hv" / "octavia"
    for sub in ("lock", "run"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    socket = mariadb_socket(lab_dir)
    run(["mariadb", f"--socket={socket}", "-uroot", "-e",
         "CREATE DATABASE IF NOT EXISTS octavia"])
    conf = workdir / "octavia.conf"
    conf.write_text(_OCTAVIA_CONF.format(host=hv_mgmt_ip(), port=API_PORT, socket=socket,
                                         neutron=state.neutron["url"], sockets=SOCKET_DIR,
                                         workdir=workdir, nb=state.nb, sb=state.sb))
    run(["octavia-db-manage", "--config-file", str(conf), "upgrade", "head"], timeout=300)
    api_log, agent_log = workdir / "octavia-api.log", workdir / "octavia-driver-agent.log"
    agent = _spawn("octavia-driver-agent",
                   [SYSTEM_PYTHON, shutil.which("octavia-driver-agent") or
                    "/usr/bin/octavia-driver-agent", "--config-file", str(conf),
                    "--log-file", str(agent_log)], workdir, state)
    app = ["octavia-api", "--config-file", str(conf), "--log-file", str(api_log)]
    api = _spawn("octavia-api", [SYSTEM_PYTHON, "-m", "gunicorn", "--workers", "1",
                                 "--threads", str(API_THREADS), "--bind",
                                 f"{hv_mgmt_ip()}:{API_PORT}",
                                 f"octavia.api.app:setup_app(argv={app!r})"], workdir, state)
    _wait("the driver agent's sockets",
          lambda: all((workdir / "run" / s).exists() for s in AGENT_SOCKETS), [agent],
          agent_log)
    _wait("octavia-api", lambda: PROVIDER in _providers(state), [api, agent], api_log)
    openrc = workdir / "openrc"
    fd = os.open(openrc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(_OPENRC.format(lab=state.name, neutron=state.neutron["url"],
                                    octavia=api_url(), project=PROJECT_ID))
    state.octavia.update(url=api_url(), log=str(api_log), agent_log=str(agent_log),
                         conf=str(conf), openrc=str(openrc), project_id=PROJECT_ID)
    clouds = workdir / "clouds.yaml"
    clouds.write_text(json.dumps({"clouds": {state.name: clouds_entry(state)}}, indent=2)
                      + "\n")
    state.octavia["clouds"] = str(clouds)
    _service_network(state)


def _service_network(state: LabState) -> None:
    """The Neutron network and subnet of the Service range (see the module's docstring)."""
    from ovn_underlay.lab import neutron as lab_neutron

    gateway = SERVICE_SUBNET[SERVICE_RANGE.num_addresses + 1]
    pool = {"start": str(gateway + 1), "end": str(SERVICE_SUBNET[-2])}

    def make(conn: Connection) -> tuple[str, str]:
        net = conn.network.find_network(SERVICE_NETWORK_NAME) or conn.network.create_network(
            name=SERVICE_NETWORK_NAME, description=json.dumps({"ovn-underlay": "services"}))
        sub = conn.network.find_subnet(SERVICE_NETWORK_NAME) or conn.network.create_subnet(
            network_id=net.id, name=SERVICE_NETWORK_NAME, cidr=str(SERVICE_SUBNET),
            ip_version=4, enable_dhcp=False, gateway_ip=str(gateway),
            allocation_pools=[pool], description=json.dumps(
                {"ovn-underlay": "services", "service-range": str(SERVICE_RANGE)}))
        return str(net.id), str(sub.id)

    state.octavia["service_network"], state.octavia["service_subnet"] = lab_neutron.retrying(
        lambda: lab_neutron.call(state, make))
    state.octavia["service_range"] = str(SERVICE_RANGE)


def attach_services(state: LabState, router: str) -> str:
    """The Service subnet on the Neutron router ``router`` (name or id); idempotent.

    Returns the router's id.  The router must exist (the cluster controller or
    lswitch-setup makes it).
    """
    subnet = state.octavia["service_subnet"]

    def attach(conn: Connection) -> str:
        found = conn.network.find_router(router, ignore_missing=False)
        ports = conn.network.ports(device_id=found.id, device_owner="network:router_interface")
        if not any(ip.get("subnet_id") == subnet for p in ports for ip in p.fixed_ips or ()):
            conn.network.add_interface_to_router(found, subnet=subnet)
        return str(found.id)

    from ovn_underlay.lab import neutron as lab_neutron

    return lab_neutron.call(state, attach)


def _main(args: list[str]) -> int:
    """``python -m ovn_underlay.lab.octavia NETNS_PATH SOCKET_DIR -- PROGRAM ARGS...``."""
    if len(args) < 4 or args[2] != "--":
        print("usage: python -m ovn_underlay.lab.octavia NETNS_PATH SOCKET_DIR -- PROGRAM "
              "[ARGS...]", file=sys.stderr)
        return 2
    launch(args[0], args[1], args[3:])
    return 1  # not reached: launch execs


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
