"""The lab: one hypervisor and N VMs, each a network namespace, on real OVN.

Hypervisor namespace ``<lab>-hv``: OVN NB and SB ovsdb-servers, ovn-northd, a
local Open_vSwitch ovsdb-server, ovs-vswitchd (userspace datapath) and
ovn-controller as chassis ``<lab>-hv``.  VM ``i`` is namespace ``<lab>-vm<i>``
with its own ovsdb-server and ovs-vswitchd; its ``eth1`` is a veth whose peer
``tap-vm<i>`` sits on the hypervisor's br-int, bound to logical port
``vm<i>`` of the logical switch ``vmnet``.  The namespace ``<lab>-ext`` is the
outside, an external network behind the cluster router's gateway (see
:mod:`ovn_underlay.lab.external`).

Everything lives in the lab's namespaces, its run directory and its own
processes; the machine's interfaces, routes and sysctls are never touched.
Progress is recorded in ``lab.json`` as it is made, so ``down`` can clean up
after a crash half-way through ``up``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from ovn_underlay.lab import daemons, external, netns
from ovn_underlay.lab import kube as lab_kube
from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab import octavia as lab_octavia
from ovn_underlay.lab.daemons import DaemonError, run

DEFAULT_RUNDIR = Path("/run/ovn-underlay-lab")
VM_NETWORK = IPv4Network("198.18.0.0/24")
VM_SWITCH = "vmnet"
MAX_VMS = 200
BIND_TIMEOUT = 30.0


class LabError(RuntimeError):
    """The lab cannot be brought up, or is not in the state asked for."""


@dataclass
class VmInfo:
    """One VM of the lab, with what a user passes to the node commands."""

    name: str
    netns: str
    port: str
    mac: str
    ip: str
    ovsdb: str
    rundir: str
    daemons: dict[str, str] = field(default_factory=dict)
    mgmt_ip: str = ""
    openrc: str = ""


@dataclass
class LabState:
    """What ``up`` made so far; saved to ``lab.json`` after every step."""

    name: str
    rundir: str
    phase: str = "starting"
    hv_netns: str = ""
    nb: str = ""
    sb: str = ""
    hv_ovsdb: str = ""
    chassis: str = ""
    vm_switch: str = VM_SWITCH
    vm_network: str = str(VM_NETWORK)
    daemons: dict[str, str] = field(default_factory=dict)
    vms: list[VmInfo] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    neutron: dict[str, str] = field(default_factory=dict)
    """Neutron mode only: its API URL, log and config, and the VMs' network and subnet."""
    kube: dict[str, str] = field(default_factory=dict)
    """Kubernetes mode only: the test API server's URL, log, request log and kubeconfig."""
    octavia: dict[str, str] = field(default_factory=dict)
    """Neutron mode with Octavia only: its API URL, logs, config, openrc, clouds.yaml,
    project, and the Service network, subnet and range."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        """Rebuild a state from its JSON form."""
        vms = [VmInfo(**vm) for vm in data.pop("vms", [])]
        return cls(vms=vms, **data)


class Lab:
    """A lab named ``name`` whose files live in ``rundir/name``."""

    def __init__(self, name: str = "oul", rundir: Path = DEFAULT_RUNDIR) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 8:
            raise LabError(f"lab name {name!r}: use up to 8 letters, digits or '-'")
        self.name = name
        self.dir = rundir / name
        self.state_file = self.dir / "lab.json"

    # -- state ---------------------------------------------------------------
    def load(self) -> LabState | None:
        """The saved state, or None when no lab of this name was started."""
        try:
            return LabState.from_dict(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LabError(f"{self.state_file} is unreadable ({exc}); run 'lab down'") from exc

    def save(self, state: LabState) -> None:
        """Record ``state`` (e.g. the pid files of processes started for the lab)."""
        self._save(state)

    def _save(self, state: LabState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, self.state_file)

    # -- up ------------------------------------------------------------------
    def up(self, vms: int = 2, neutron: bool = False, kube: bool = False,
           octavia: bool = True) -> LabState:
        """Bring the lab up; a no-op when it is already up and healthy.

        With ``neutron``, a real neutron-server runs too and makes the VMs'
        ports (see :mod:`ovn_underlay.lab.neutron`), and unless ``octavia`` is
        false Octavia with its OVN provider and the Service network (see
        :mod:`ovn_underlay.lab.octavia`); with ``kube``, the test Kubernetes API
        server with a Node per VM (see :mod:`ovn_underlay.lab.kube`), whose
        Service range is the Service network's in a lab with Octavia.
        """
        if not 1 <= vms <= MAX_VMS:
            raise LabError(f"--vms must be between 1 and {MAX_VMS}, not {vms}")
        octavia = octavia and neutron
        existing = self.load()
        if existing is not None or netns.listed(f"{self.name}-"):
            return self._already_up(existing, vms, neutron, kube, octavia)
        self.dir.mkdir(parents=True, exist_ok=True)
        state = LabState(name=self.name, rundir=str(self.dir))
        if neutron:
            state.neutron["url"] = lab_neutron.api_url()
        if octavia:
            state.octavia["url"] = lab_octavia.api_url()
        if kube:
            state.kube["url"] = lab_kube.api_url()
        self._save(state)
        try:
            self._up_hypervisor(state)
            if neutron:
                lab_neutron.up(state, self.dir)
                self._save(state)
            if octavia:
                lab_octavia.up(state, self.dir)
                self._save(state)
            if kube:
                lab_kube.up(state, self.dir, service_range=state.octavia.get("service_range",
                                                                             ""))
                self._save(state)
            external.up(state)
            self._save(state)
            for index in range(1, vms + 1):
                self._up_vm(state, index)
            for vm in state.vms:
                self._wait_bound(state, vm)
            if kube:
                lab_kube.register_nodes(state)
        except BaseException:
            self.down()
            raise
        state.phase = "up"
        self._save(state)
        return state

    def _already_up(self, state: LabState | None, vms: int, neutron: bool = False,
                    kube: bool = False, octavia: bool = False) -> LabState:
        problems = self.health(state) if state else ["no lab.json, but namespaces exist"]
        if state is None or problems:
            raise LabError(f"lab {self.name!r} exists but is not healthy "
                           f"({'; '.join(problems)}): run 'lab down' first")
        if bool(state.neutron) != neutron:
            mode = "with" if state.neutron else "without"
            raise LabError(f"lab {self.name!r} is already up {mode} Neutron; run 'lab down' "
                           "first")
        if bool(state.octavia) != octavia:
            mode = "with" if state.octavia else "without"
            raise LabError(f"lab {self.name!r} is already up {mode} Octavia; run 'lab down' "
                           "first")
        if bool(state.kube) != kube:
            mode = "with" if state.kube else "without"
            raise LabError(f"lab {self.name!r} is already up {mode} Kubernetes (--kube); run "
                           "'lab down' first")
        if len(state.vms) != vms:
            raise LabError(f"lab {self.name!r} is already up with {len(state.vms)} VMs; "
                           f"run 'lab down' before asking for {vms}")
        return state

    def _ns(self, state: LabState, name: str) -> str:
        ns = f"{self.name}-{name}"
        state.namespaces.append(ns)
        self._save(state)
        netns.create(ns)
        return ns

    def _up_hypervisor(self, state: LabState) -> None:
        ns = self._ns(state, "hv")
        state.hv_netns = ns
        hv_dir = self.dir / "hv"
        nb_d, state.nb = daemons.start_ovsdb_server("nb", hv_dir, daemons.NB_SCHEMA, ns)
        sb_d, state.sb = daemons.start_ovsdb_server("sb", hv_dir, daemons.SB_SCHEMA, ns)
        conf_d, state.hv_ovsdb = daemons.start_ovsdb_server("conf", hv_dir,
                                                            daemons.OVS_SCHEMA, ns)
        state.daemons.update(nb=str(nb_d.pidfile), sb=str(sb_d.pidfile),
                             conf=str(conf_d.pidfile))
        self._save(state)
        north = daemons.start_northd("northd", hv_dir, state.nb, state.sb, ns)
        state.daemons["northd"] = str(north.pidfile)
        state.chassis = ns
        vsctl(state.hv_ovsdb, "init")
        vsctl(state.hv_ovsdb, "set", "Open_vSwitch", ".",
              f"external_ids:system-id={ns}", f"external_ids:hostname={ns}",
              f"external_ids:ovn-remote={state.sb}", "external_ids:ovn-encap-type=geneve",
              "external_ids:ovn-encap-ip=127.0.0.1",
              "external_ids:ovn-bridge-datapath-type=netdev")
        vsctl(state.hv_ovsdb, "--may-exist", "add-br", "br-int", "--", "set", "Bridge",
              "br-int", "datapath_type=netdev", "fail_mode=secure",
              "other_config:disable-in-band=true")
        vswitchd = start_hv_vswitchd(state)  # before ovn-controller reads its capabilities
        ctrl = daemons.start_controller("controller", hv_dir, state.hv_ovsdb, ns)
        state.daemons.update(vswitchd=str(vswitchd.pidfile), controller=str(ctrl.pidfile))
        if not state.neutron:
            nbctl(state.nb, "--may-exist", "ls-add", VM_SWITCH, "--", "set", "Logical_Switch",
                  VM_SWITCH, f"other_config:subnet={VM_NETWORK}")
        self._save(state)

    def _up_vm(self, state: LabState, index: int) -> None:
        name = f"vm{index}"
        ns = self._ns(state, name)
        vm_dir = self.dir / name
        ip = str(VM_NETWORK[10 + index])
        mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        conf_d, ovsdb = daemons.start_ovsdb_server("conf", vm_dir, daemons.OVS_SCHEMA, ns)
        vm = VmInfo(name=name, netns=ns, port=name, mac=mac, ip=ip, ovsdb=ovsdb,
                    rundir=str(vm_dir), daemons={"conf": str(conf_d.pidfile)})
        state.vms.append(vm)
        self._save(state)
        vsctl(ovsdb, "init")
        vswitchd = daemons.start_vswitchd("vswitchd", vm_dir, ovsdb, ns)
        vm.daemons["vswitchd"] = str(vswitchd.pidfile)
        self._save(state)
        tap = f"tap-{name}"
        run(["ip", "-n", state.hv_netns, "link", "add", tap, "type", "veth", "peer", "name",
             "eth1", "netns", ns])
        run(["ip", "-n", ns, "link", "set", "eth1", "address", mac])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/{VM_NETWORK.prefixlen}", "dev", "eth1"])
        for dev_ns, dev in ((ns, "eth1"), (state.hv_netns, tap)):
            run(["ip", "-n", dev_ns, "link", "set", dev, "up"])
            run(["ethtool", "-K", dev, "tx", "off"], netns=dev_ns)
        if state.kube and not state.neutron:  # Neutron's add_vm makes the management link
            lab_neutron.add_mgmt_link(state, vm, index)
        if state.neutron:
            vm.port = lab_neutron.add_vm(state, vm, index)
        else:
            nbctl(state.nb, "--may-exist", "lsp-add", VM_SWITCH, name, "--",
                  "lsp-set-addresses", name, f"{mac} {ip}")
        vsctl(state.hv_ovsdb, "--may-exist", "add-port", "br-int", tap, "--", "set",
              "Interface", tap, f"external_ids:iface-id={vm.port}")
        self._save(state)

    def _wait_bound(self, state: LabState, vm: VmInfo) -> None:
        deadline = time.monotonic() + BIND_TIMEOUT
        while nbctl(state.nb, "get", "Logical_Switch_Port", vm.port, "up").strip() != "true":
            if time.monotonic() > deadline:
                raise LabError(f"ovn-controller did not bind {vm.port} within "
                               f"{BIND_TIMEOUT:.0f}s; see {self.dir / 'hv' / 'controller.log'}")
            time.sleep(0.1)

    # -- health and status ---------------------------------------------------
    def health(self, state: LabState) -> list[str]:
        """What is wrong with a lab that should be up (empty when healthy)."""
        problems = [f"namespace {ns} is missing" for ns in state.namespaces
                    if not netns.exists(ns)]
        for owner, pidfiles in self._pidfiles(state):
            problems += [f"{owner} {name} is not running" for name, pidfile in pidfiles.items()
                         if daemons.read_live_pid(Path(pidfile)) is None]
        if state.phase != "up":
            problems.append(f"lab is in phase {state.phase!r} (up did not finish)")
        return problems

    @staticmethod
    def _pidfiles(state: LabState) -> list[tuple[str, dict[str, str]]]:
        return [("hypervisor", state.daemons)] + [(vm.name, vm.daemons) for vm in state.vms]

    def status(self) -> dict[str, Any]:
        """What runs, with pids, sockets and connection strings (JSON-ready)."""
        state = self.load()
        if state is None:
            return {"name": self.name, "up": False, "rundir": str(self.dir)}
        pids = {owner: {name: daemons.read_live_pid(Path(pf)) for name, pf in pidfiles.items()}
                for owner, pidfiles in self._pidfiles(state)}
        problems = self.health(state)
        return {"name": self.name, "up": not problems, "problems": problems,
                "rundir": str(self.dir), "pids": pids, **asdict(state)}

    # -- down ----------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything ``up`` made, also after a crash; return what was removed."""
        removed: list[str] = []
        try:
            state = self.load()
        except LabError:
            state = None
        if state is not None and state.kube:
            removed += lab_kube.release_sandboxes(state)
        # Every daemon's pid file lies under the run dir, also those lab.json did not
        # record yet when up was interrupted.
        for pidfile in sorted(self.dir.rglob("*.pid")) if self.dir.exists() else []:
            pid = daemons.read_live_pid(pidfile)
            if pid is not None:
                daemons.stop_pid(pid)
                removed.append(f"process {pidfile.stem} ({pid})")
        names = set(state.namespaces if state else []) | set(self._own_namespaces())
        for ns in sorted(names):
            if netns.exists(ns):
                netns.destroy(ns)
                removed.append(f"namespace {ns}")
        if self.dir.exists():
            shutil.rmtree(self.dir)
            removed.append(f"directory {self.dir}")
        return removed

    def _own_namespaces(self) -> list[str]:
        """The hypervisor's, the outside's, the VMs' and the pods' (``<lab>-vm<i>-<pod>``)
        namespaces."""
        prefix = f"{self.name}-"
        own = []
        for ns in netns.listed(prefix):
            rest = ns[len(prefix):]
            if rest in ("hv", "ext") or (rest.startswith("vm")
                                         and rest[2:].split("-")[0].isdigit()):
                own.append(ns)
        return own


def vsctl(db: str, *args: str) -> str:
    """ovs-vsctl on the database ``db`` without waiting for ovs-vswitchd."""
    return run(["ovs-vsctl", f"--db={db}", "--no-wait", "--timeout=10", *args])


ZERO_SNAT = "ct_zero_snat"
"""The ``Datapath`` capability the lab reports as false on the hypervisor: see
:func:`hide_ct_zero_snat`."""


def _netdev_datapath(db: str) -> str:
    """The uuid of the ``netdev`` row of the ``Datapath`` table, made when missing (the row
    ovn-controller reads the datapath's capabilities from; ovs-vswitchd fills them)."""
    uuid = vsctl(db, "--if-exists", "get", "Open_vSwitch", ".", "datapaths:netdev").strip()
    if not uuid:
        vsctl(db, "--", "--id=@dp", "create", "Datapath", 'datapath_version=""', "--", "set",
              "Open_vSwitch", ".", "datapaths:netdev=@dp")
        uuid = vsctl(db, "get", "Open_vSwitch", ".", "datapaths:netdev").strip()
    return uuid


def start_hv_vswitchd(state: LabState) -> daemons.Daemon:
    """Start the hypervisor's ovs-vswitchd (at lab up, or again after it died) with the
    lab's workaround for OVS 3.1.0's conntrack abort: :func:`forget_ct_zero_snat`, then
    the daemon, then :func:`hide_ct_zero_snat`."""
    forget_ct_zero_snat(state.hv_ovsdb)
    vswitchd = daemons.start_vswitchd("vswitchd", Path(state.rundir) / "hv", state.hv_ovsdb,
                                      state.hv_netns)
    hide_ct_zero_snat(state.hv_ovsdb)
    return vswitchd


def forget_ct_zero_snat(db: str) -> None:
    """Before ovs-vswitchd (re)starts: drop the capability so that the value this
    ovs-vswitchd writes can be told from an older one (see :func:`hide_ct_zero_snat`)."""
    vsctl(db, "remove", "Datapath", _netdev_datapath(db), "capabilities", ZERO_SNAT)


def hide_ct_zero_snat(db: str, timeout: float = 10.0) -> None:
    """Report the all-zero SNAT capability of the hypervisor's datapath as false, once the
    ovs-vswitchd started after :func:`forget_ct_zero_snat` has written its own (it does so
    once, when it first sees the row), so ovn-controller commits connections with a plain
    ``ct(commit)`` and not ``ct(commit,nat(src))``.

    Why: Debian 12's OVS 3.1.0 userspace conntrack aborts ovs-vswitchd under many short
    connections through a load balancer (``conntrack.c:1063: assertion conn->conn_type ==
    CT_CONN_TYPE_DEFAULT failed in conn_update_state()``).  An all-zero SNAT commit whose
    tuple is free makes an entry plus an ``UN_NAT`` twin whose key is the entry's reverse;
    the key hash is symmetric, so both sit in one bucket, and the twin never expires on
    its own.  Once the entry has expired (or was force-expired by a SYN reusing the
    tuple) and before the sweeper (every 20 s) removes both, a lookup of the tuple skips
    the entry and matches the twin's reverse key, and the parent lookup returns the twin
    again: the assertion.  Seen here at the sweeper's wake-ups (20 s apart from
    ovs-vswitchd's start): a client port used again once its load-balanced entry is
    swept meets the backend zone's all-zero SNAT entry still there.  Fixed upstream by
    1116459b3ba8 "conntrack: Remove nat_conn introducing key directionality" (3.3.0;
    backported: 3.1.3 as 6753b108698e, 3.2.3, 3.0.5, 2.17.8); Debian 12 ships 3.1.0.
    Measured in the lab, one client pod to one ClusterIP, a new connection each time: as
    fast as it goes it aborted after 5,851-13,013 connections (3 of 3 runs), at ~65/s
    after 3,867 (46 s); with this, 9 runs of 100 s as fast as it goes (196,580
    connections) and 4 of 60 s at ~60/s (14,365) without an abort.  The cost: OVN uses
    the all-zero SNAT to give a committed tuple that collides with an existing one
    another source port; without it, as fast as it goes (client ports reused within
    conntrack's 30 s TIME_WAIT) ~0.4% of SYNs were dropped (TCP sequence check) and sent
    again after 1 s; at ~60/s none was.
    """
    uuid = _netdev_datapath(db)
    deadline = time.monotonic() + timeout
    while not vsctl(db, "--if-exists", "get", "Datapath", uuid,
                    f"capabilities:{ZERO_SNAT}").strip():
        if time.monotonic() > deadline:
            raise LabError(f"ovs-vswitchd wrote no capabilities:{ZERO_SNAT} within "
                           f"{timeout:.0f}s")
        time.sleep(0.05)
    vsctl(db, "set", "Datapath", uuid, f'capabilities:{ZERO_SNAT}="false"')


def nbctl(db: str, *args: str) -> str:
    """ovn-nbctl on the Northbound database ``db``."""
    return run(["ovn-nbctl", f"--db={db}", "--timeout=10", *args])


def require_tools() -> None:
    """Fail with the install hint when the lab's programs are missing."""
    missing = [t for t in ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller",
                           "ovs-vsctl", "ovn-nbctl", "ip", "ethtool")
               if shutil.which(t) is None]
    if missing:
        raise DaemonError(f"missing programs: {', '.join(missing)}; run 'make deps' "
                          "(Debian: openvswitch-switch ovn-central ovn-host iproute2 ethtool)")
