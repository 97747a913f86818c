"""Neutron credentials going wrong, through node-init in a VM of the Neutron lab.

A wrong password needs an identity service to refuse it: a keystone-shaped
endpoint (version discovery, and 401 to every token request) listens in the
lab's hypervisor namespace, like Neutron.  An unreachable identity service is
an address of that namespace where nothing listens.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ovn_underlay.lab import neutron as lab_neutron
from ovn_underlay.lab.cluster import Node
from ovn_underlay.lab.topology import LabState, vsctl

PASSWORD = "s3cret-Pa55word"


class _Refusing(BaseHTTPRequestHandler):
    """Keystone's version discovery, and 401 for every token request (recorded)."""

    server: _KeystoneServer

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        host, port = self.server.server_address[:2]
        self._reply(300, {"versions": {"values": [{
            "id": "v3.14", "status": "stable",
            "links": [{"rel": "self", "href": f"http://{host}:{port}/v3/"}]}]}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.token_requests.append((self.path, body.decode()))
        self._reply(401, {"error": {"code": 401, "title": "Unauthorized",
                                    "message": "The request you have made requires "
                                               "authentication."}})


class _KeystoneServer(ThreadingHTTPServer):
    token_requests: list[tuple[str, str]]


@pytest.fixture(scope="module")
def keystone(neutron_lab: LabState) -> Iterator[_KeystoneServer]:
    """The refusing identity endpoint, listening on the hypervisor's management address."""
    def make() -> _KeystoneServer:
        server = _KeystoneServer((lab_neutron.hv_mgmt_ip(), 0), _Refusing)
        server.token_requests = []
        return server

    server = lab_neutron.in_netns(neutron_lab.hv_netns, make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_openrc(node: Node, text: str, mode: int = 0o600) -> str:
    path = Path(node.vm.rundir) / "test-openrc"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def node_init(node: Node, openrc: str, *extra: str) -> tuple[int, str]:
    """node-init with this openrc only; (exit code, stdout + stderr)."""
    proc = node.cli("node-init", "--backend", "neutron", "--neutron-config", openrc, *extra,
                    check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def vm(neutron_lab: LabState) -> Iterator[Node]:
    node = Node(neutron_lab, neutron_lab.vms[1])
    before = node.cli("config", "show").stdout
    yield node
    assert node.cli("config", "show").stdout == before  # failed node-inits record nothing


def test_a_wrong_password_is_named_as_such_and_never_shown(
        vm: Node, keystone: _KeystoneServer) -> None:
    host, port = keystone.server_address[:2]
    openrc = write_openrc(vm, f"""# the seed's format, quoted and not
OS_AUTH_URL=http://{host}:{port}/v2.0
OS_TENANT_ID=015058d74d1c444b871fc39dbd4442b8
OS_TENANT_NAME="demo"
OS_USERNAME="demo"
OS_PASSWORD="{PASSWORD}"
OS_VIF_ID={vm.vm.port}
""")
    code, output = node_init(vm, openrc)
    assert code == 1
    assert f"refused the credentials of openrc {openrc}" in output
    assert "wrong user name, password or project" in output
    assert PASSWORD not in output
    assert any(PASSWORD in body for _, body in keystone.token_requests)  # it was really sent
    assert PASSWORD not in vm.cli("config", "show").stdout


def test_an_unreachable_identity_service_is_named_with_the_reason(vm: Node) -> None:
    openrc = write_openrc(vm, f"""export OS_AUTH_URL=http://{lab_neutron.hv_mgmt_ip()}:5999/v3
export OS_USERNAME=demo
export OS_PASSWORD='{PASSWORD}'
export OS_PROJECT_NAME=demo
export OS_VIF_ID={vm.vm.port}
""")
    started = time.monotonic()
    code, output = node_init(vm, openrc)
    assert code == 1 and time.monotonic() - started < 20
    assert f"cannot reach http://{lab_neutron.hv_mgmt_ip()}:5999" in output
    assert "Connection refused" in output
    assert PASSWORD not in output


def test_a_missing_os_vif_id_says_what_it_is(vm: Node) -> None:
    openrc = write_openrc(vm, Path(vm.vm.openrc).read_text().replace("OS_VIF_ID", "#"))
    recorded = vsctl(vm.vm.ovsdb, "get", "Open_vSwitch", ".", "external_ids").strip()
    vsctl(vm.vm.ovsdb, "remove", "Open_vSwitch", ".", "external_ids", "\"ovn-underlay:parent\"")
    try:
        code, output = node_init(vm, openrc)
    finally:
        vsctl(vm.vm.ovsdb, "set", "Open_vSwitch", ".", f"external_ids={recorded}")
    assert code == 1
    assert f"OS_VIF_ID is not set in openrc {openrc}" in output
    assert "this VM's own Neutron port" in output


def test_an_openrc_that_others_can_read_is_warned_about(vm: Node) -> None:
    openrc = write_openrc(vm, Path(vm.vm.openrc).read_text(), mode=0o644)
    code, output = node_init(vm, openrc, "--dry-run")
    assert code == 0
    assert f"openrc {openrc} is readable by other users (mode 644)" in output
    assert f"parent port {vm.vm.port} found" in output
