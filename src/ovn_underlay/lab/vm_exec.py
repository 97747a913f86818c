"""``lab exec VM -- CMD``: run a command as if on the VM, with the VM's own paths and database.

All lab VMs share the machine's filesystem, so the documented defaults of a
node (``/var/lib/ovn-underlay``, ``/opt/cni/bin``, ``/etc/cni/net.d``,
``/run/ovn-underlay``, the OVS database at ``/run/openvswitch/db.sock``) would
be one set for every VM: a second VM's node-init would overwrite the first's
conflist.  The command here runs in a mount namespace of its own where each of
those paths is the VM's own directory (under the VM's run directory,
:data:`VM_PATHS`), in the VM's network namespace with ``/sys`` showing the VM's
interfaces (the cgroup hierarchy under it kept, so container runtimes work),
with ``OVN_UNDERLAY_OVSDB`` naming the VM's database and the project's
commands first on ``PATH``.  Nothing changes outside that mount namespace,
except that missing mount points are created as empty directories.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import NoReturn

from ovn_underlay.dataplane import nsenter
from ovn_underlay.lab import netns
from ovn_underlay.lab.topology import LabState, VmInfo

VM_PATHS = {
    "/var/lib/ovn-underlay": "state",
    "/opt/cni/bin": "cni/bin",
    "/etc/cni/net.d": "cni/net.d",
    "/run/ovn-underlay": "run",
    "/run/openvswitch": "openvswitch",
}
"""A node's documented path -> the VM's own directory under its run directory."""
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CGROUP = "/sys/fs/cgroup"

_libc = ctypes.CDLL(None, use_errno=True)


class VmExecError(RuntimeError):
    """The command cannot be run on the VM."""


def vm_paths(vm: VmInfo) -> dict[str, Path]:
    """Each documented node path and the VM's directory that stands for it."""
    return {path: Path(vm.rundir) / own for path, own in VM_PATHS.items()}


def vm_environment(vm: VmInfo) -> dict[str, str]:
    """The environment of a command run on ``vm``."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return {**os.environ, "OVN_UNDERLAY_OVSDB": vm.ovsdb, "OVN_UNDERLAY_LAB_VM": vm.name,
            "PATH": f"{bin_dir}:{path}"}


def find_vm(state: LabState, name: str) -> VmInfo:
    """The VM called ``name`` (``vm1``, ...) of the lab."""
    for vm in state.vms:
        if vm.name == name:
            return vm
    names = ", ".join(vm.name for vm in state.vms)
    raise VmExecError(f"lab {state.name} has no VM {name!r} (it has {names})")


def exec_on_vm(vm: VmInfo, argv: list[str]) -> NoReturn:
    """Replace this process with ``argv`` run on ``vm`` (see the module's docstring)."""
    if not argv:
        raise VmExecError("nothing to run: lab exec VM -- COMMAND [ARGS...]")
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    nsenter.enter_netns(netns.path(vm.netns))
    _remount_sys(Path(vm.rundir))
    _bind_vm_paths(vm)
    try:
        os.execvpe(argv[0], argv, vm_environment(vm))
    except OSError as exc:
        raise VmExecError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc


def _remount_sys(scratch: Path) -> None:
    """A sysfs of the VM's network namespace on /sys, with the cgroup hierarchy kept."""
    keep = scratch / ".cgroup"
    cgroup = os.path.ismount(CGROUP)
    if cgroup:
        keep.mkdir(exist_ok=True)
        _mount(CGROUP, str(keep), None, MS_BIND | MS_REC)
    _check(_libc.umount2(b"/sys", MNT_DETACH), "umount /sys")
    _mount("sysfs", "/sys", "sysfs", 0)
    if cgroup:
        _mount(str(keep), CGROUP, None, MS_MOVE)


def _bind_vm_paths(vm: VmInfo) -> None:
    for target, own in vm_paths(vm).items():
        own.mkdir(parents=True, exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount(str(own), target, None, MS_BIND)
    ovs_dir = vm_paths(vm)["/run/openvswitch"]
    link = ovs_dir / "db.sock"
    if not link.is_symlink():
        link.symlink_to(vm.ovsdb.removeprefix("unix:"))


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(None if source is None else source.encode(), target.encode(),
                       None if fstype is None else fstype.encode(), flags, None),
           f"mount {source or ''} on {target}")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise VmExecError(f"{what}: {os.strerror(err)}")
