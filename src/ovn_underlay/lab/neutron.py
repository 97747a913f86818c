"""Neutron in the lab (``lab up --neutron``): MariaDB and a real neutron-server on the lab's OVN.

Everything runs in the hypervisor namespace from Debian's packages:

* a private ``mariadbd`` on a unix socket (``--skip-networking``), its data
  directory made by ``mariadb-install-db`` in the lab's run directory;
* ``neutron-server`` (ML2/OVN, ``auth_strategy = noauth``, no message broker),
  run by Debian's ``/usr/bin/python3`` after ``neutron-db-manage upgrade
  heads``, pointed at the lab's NB and SB and listening on the hypervisor's
  address of the management network.

The management network (198.18.1.0/24) is a Linux bridge ``br-mgmt`` in the
hypervisor namespace with a veth to each VM, whose end is the VM's ``eth0``
(the seed's "mgmt interface"): the CLI and the CNI plugin in a VM reach
Neutron (and a test's Kubernetes API) over it.  The VMs' own ports are made
through Neutron on its network ``vmnet`` and bound to the hypervisor chassis
(``binding:host_id``); each VM gets an openrc naming Neutron and its port
(``OS_VIF_ID``).

The lab's code runs in the machine's namespace, where the API is not
reachable: :func:`call` runs a request in a thread that joined the
hypervisor's namespace (only that thread's sockets live there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ovn_underlay.dataplane import nsenter
from ovn_underlay.lab import netns
from ovn_underlay.lab.daemons import DaemonError, alive, run

if TYPE_CHECKING:
    from openstack.connection import Connection

    from ovn_underlay.lab.topology import LabState, VmInfo

MGMT_NETWORK = IPv4Network("198.18.1.0/24")
MGMT_BRIDGE = "br-mgmt"
API_PORT = 9696
VM_NETWORK_NAME = "vmnet"
SYSTEM_PYTHON = "/usr/bin/python3"
READY_TIMEOUT = 90.0
READY_STREAK = 4
TOOLS = ("neutron-server", "neutron-db-manage", "mariadbd", "mariadb-install-db", "mariadb")
_T = TypeVar("_T")

_NEUTRON_CONF = """\
[DEFAULT]
core_plugin = ml2
service_plugins = ovn-router,trunk
auth_strategy = noauth
bind_host = {host}
bind_port = {port}
api_workers = 2
rpc_workers = 0
# One request per connection: an eventlet API worker keeps every connection it
# accepts, so one client's concurrent requests can all land on one worker; in a
# deployment, the load balancer in front (haproxy) spreads requests over workers.
wsgi_keep_alive = false
rpc_state_report_workers = 0
transport_url = fake:/
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
state_path = {state}
debug = false

[database]
connection = mysql+pymysql://root@localhost/neutron?unix_socket={socket}

[oslo_concurrency]
lock_path = {state}/lock

[ml2]
type_drivers = geneve,vlan,flat
tenant_network_types = geneve
mechanism_drivers = ovn
extension_drivers = port_security

[ml2_type_geneve]
vni_ranges = 1:65536
max_header_size = 38

[ovn]
ovn_nb_connection = {nb}
ovn_sb_connection = {sb}
ovn_metadata_enabled = false
neutron_sync_mode = off
"""

_OPENRC = """\
# Neutron of lab {lab}: its neutron-server runs without authentication (noauth).
export OS_AUTH_TYPE=none
export OS_NETWORK_ENDPOINT_OVERRIDE={url}
export OS_VIF_ID={port}
"""


def hv_mgmt_ip() -> str:
    """The hypervisor's address on the management network (where Neutron listens)."""
    return str(MGMT_NETWORK[1])


def vm_mgmt_ip(index: int) -> str:
    """VM ``index``'s address on the management network (its eth0)."""
    return str(MGMT_NETWORK[10 + index])


def api_url() -> str:
    """The lab's Neutron API, as the VMs reach it."""
    return f"http://{hv_mgmt_ip()}:{API_PORT}"


def missing_tools() -> list[str]:
    """The programs of neutron mode that are not installed."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not missing and subprocess.run([SYSTEM_PYTHON, "-c", "import neutron"],
                                      capture_output=True, check=False).returncode != 0:
        missing.append(f"the neutron module of {SYSTEM_PYTHON}")
    return missing


def require_tools() -> None:
    """Fail with the install hint when neutron mode's programs are missing."""
    missing = missing_tools()
    if missing:
        raise DaemonError(f"missing for lab up --neutron: {', '.join(missing)}; run 'make "
                          "deps' (Debian: neutron-common mariadb-server-core "
                          "mariadb-client-core)")


# --- running code in the hypervisor's namespace -------------------------------------------


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into the named network namespace."""
    nsenter.enter_netns(netns.path(name))


def in_netns(name: str, func: Callable[[], _T]) -> _T:
    """``func()`` run in a thread inside the named network namespace."""
    return nsenter.run_in_netns(netns.path(name), func)


def call(state: LabState, func: Callable[[Connection], _T]) -> _T:
    """``func(connection)`` with an openstacksdk connection to the lab's Neutron."""
    import openstack

    def with_connection() -> _T:
        conn = openstack.connect(auth_type="none", network_endpoint_override=api_url(),
                                 load_yaml_config=False, load_envvars=False, api_timeout=60)
        try:
            return func(conn)
        finally:
            conn.close()

    return in_netns(state.hv_netns, with_connection)


# --- bringing it up ------------------------------------------------------------------------


def _spawn(name: str, argv: list[str], workdir: Path, ns: str) -> Path:
    """Start a program that does not daemonise; write its pid file; return the file."""
    pidfile = workdir / f"{name}.pid"
    with open(workdir / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True, close_fds=True)
    pidfile.write_text(f"{proc.pid}\n")
    return pidfile


def _wait(what: str, ready: Callable[[], bool], pid: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        if not alive(pid):
            raise DaemonError(f"{what} exited during start-up; see {log}")
        if time.monotonic() > deadline:
            raise DaemonError(f"{what} not ready within {READY_TIMEOUT:.0f}s; see {log}")
        time.sleep(0.1)


def _start_mariadb(state: LabState, workdir: Path) -> Path:
    datadir, socket = workdir / "mysql", workdir / "mysql.sock"
    tuning = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M", "--skip-log-bin"]
    run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
         "--auth-root-authentication-method=socket", "--skip-test-db", *tuning], timeout=120)
    pidfile = _spawn("mariadb", ["mariadbd", "--no-defaults", f"--datadir={datadir}",
                                 f"--socket={socket}", "--skip-networking", "--user=root",
                                 f"--log-error={workdir / 'mariadb.log'}",
                                 f"--pid-file={workdir / 'mariadbd.pid'}", *tuning],
                     workdir, state.hv_netns)
    state.daemons["mariadb"] = str(pidfile)
    _wait("mariadbd", socket.exists, int(pidfile.read_text()), workdir / "mariadb.log")
    run(["mariadb", f"--socket={socket}", "-uroot", "-e", "CREATE DATABASE neutron"])
    return socket


def _sees_chassis(chassis: str) -> bool:
    """Whether the API answers and lists the hypervisor's ovn-controller as an agent.

    That needs the answering worker's Southbound connection, which a port
    binding needs too; a worker may answer before it has one.
    """
    try:
        with urllib.request.urlopen(api_url() + "/v2.0/agents", timeout=2) as reply:
            agents = json.loads(reply.read()).get("agents", [])
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(a.get("host") == chassis and a.get("alive") for a in agents)


def _api_ready(state: LabState) -> Callable[[], bool]:
    """A readiness check: the chassis seen READY_STREAK times in a row (every worker)."""
    streak = [0]

    def ready() -> bool:
        seen = in_netns(state.hv_netns, lambda: _sees_chassis(state.chassis))
        streak[0] = streak[0] + 1 if seen else 0
        return streak[0] >= READY_STREAK

    return ready


def retrying(func: Callable[[], _T]) -> _T:
    """``func()``, again while Neutron answers 5xx (a worker still starting)."""
    from openstack import exceptions as sdk

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            return func()
        except sdk.HttpException as exc:
            if (exc.status_code or 0) < 500 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def add_mgmt_bridge(state: LabState) -> None:
    """The management bridge in the hypervisor, with the hypervisor's address on it."""
    hv = state.hv_netns
    run(["ip", "-n", hv, "link", "add", MGMT_BRIDGE, "type", "bridge"])
    run(["ip", "-n", hv, "addr", "add", f"{hv_mgmt_ip()}/{MGMT_NETWORK.prefixlen}", "dev",
         MGMT_BRIDGE])
    run(["ip", "-n", hv, "link", "set", MGMT_BRIDGE, "up"])


def up(state: LabState, lab_dir: Path) -> None:
    """Management bridge, MariaDB, migrations, neutron-server and the VMs' network.

    Pid files go into ``state.daemons`` as soon as each process exists, so
    that ``lab down`` stops them even after a failure half-way.
    """
    workdir = lab_dir / "hv" / "neutron"
    (workdir / "lock").mkdir(parents=True, exist_ok=True)
    add_mgmt_bridge(state)
    socket = _start_mariadb(state, workdir)
    conf = workdir / "neutron.conf"
    conf.write_text(_NEUTRON_CONF.format(host=hv_mgmt_ip(), port=API_PORT, state=workdir,
                                         socket=socket, nb=state.nb, sb=state.sb))
    run(["neutron-db-manage", "--config-file", str(conf), "upgrade", "heads"], timeout=300)
    log = workdir / "neutron-server.log"
    pidfile = _spawn("neutron-server", [SYSTEM_PYTHON, shutil.which("neutron-server") or
                                        "neutron-server", "--config-file", str(conf),
                                        "--log-file", str(log)], workdir, state.hv_netns)
    state.daemons["neutron-server"] = str(pidfile)
    _wait("neutron-server", _api_ready(state), int(pidfile.read_text()), log)
    state.neutron.update(url=api_url(), log=str(log), conf=str(conf))

    def vm_network(conn: Connection) -> tuple[str, str]:
        net = conn.network.find_network(VM_NETWORK_NAME) or conn.network.create_network(
            name=VM_NETWORK_NAME)
        sub = conn.network.find_subnet(VM_NETWORK_NAME) or conn.network.create_subnet(
            network_id=net.id, name=VM_NETWORK_NAME, cidr=state.vm_network, ip_version=4,
            enable_dhcp=False, gateway_ip=None)
        return str(net.id), str(sub.id)

    state.neutron["network"], state.neutron["subnet"] = retrying(
        lambda: call(state, vm_network))


def add_mgmt_link(state: LabState, vm: VmInfo, index: int) -> None:
    """The VM's ``eth0`` on the management bridge, with its address there."""
    hv_end = f"mgmt-{vm.name}"
    run(["ip", "-n", state.hv_netns, "link", "add", hv_end, "type", "veth", "peer", "name",
         "eth0", "netns", vm.netns])
    run(["ip", "-n", state.hv_netns, "link", "set", hv_end, "master", MGMT_BRIDGE, "up"])
    vm.mgmt_ip = vm_mgmt_ip(index)
    run(["ip", "-n", vm.netns, "addr", "add", f"{vm.mgmt_ip}/{MGMT_NETWORK.prefixlen}", "dev",
         "eth0"])
    run(["ip", "-n", vm.netns, "link", "set", "eth0", "up"])


def add_vm(state: LabState, vm: VmInfo, index: int) -> str:
    """The VM's management link, its Neutron port (bound to the chassis) and openrc.

    Returns the port's id, the VM's logical port.
    """
    add_mgmt_link(state, vm, index)

    def vm_port(conn: Connection) -> str:
        port = conn.network.find_port(vm.name) or conn.network.create_port(
            network_id=state.neutron["network"], name=vm.name, mac_address=vm.mac,
            fixed_ips=[{"subnet_id": state.neutron["subnet"], "ip_address": vm.ip}],
            binding_host_id=state.chassis)
        return str(port.id)

    port = retrying(lambda: call(state, vm_port))
    openrc = Path(vm.rundir) / "openrc"
    fd = os.open(openrc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(_OPENRC.format(lab=state.name, url=api_url(), port=port))
    vm.openrc = str(openrc)
    return port
