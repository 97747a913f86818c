"""OVN NB over SSL: OvnNbControlPlane, the node's connection and router-gateway against a
real ovsdb-server listening on ``pssl:`` with client certificates.

The server and every client run inside a network namespace of the test's own (its
loopback only; the machine's interfaces are never used).  The certificates are made
with openssl: a CA, the server's and the client's certificates it signs, and a second
CA that signs a server and a client certificate neither side trusts.  Results are read
with ``ovsdb-client`` on the server's unix socket, a client of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from ovn_underlay.cli.main import main
from ovn_underlay.config import ConfigError, from_external_ids
from ovn_underlay.control import factory, ovn_nb
from ovn_underlay.control.base import ControlPlaneError, ControlPlaneUnavailable
from ovn_underlay.control.ovn_nb import OvnNbControlPlane
from ovn_underlay.dataplane.nsenter import run_in_netns
from ovn_underlay.lab import daemons, netns
from ovn_underlay.nb_ssl import NbSsl, nb_ssl
from tests.conftest import NETNS_SKIP_REASON

pytestmark = pytest.mark.skipif(
    NETNS_SKIP_REASON is not None or shutil.which("openssl") is None
    or shutil.which("ovsdb-server") is None,
    reason=NETNS_SKIP_REASON or "openssl and ovsdb-server are needed")

GOOD_PORT = 6641
"""The server showing a certificate of our CA."""
STRANGE_PORT = 6642
"""The server showing a certificate of the other CA."""
TIMEOUT = 3.0
T = TypeVar("T")


@dataclass(frozen=True)
class Pki:
    """The files: our CA's and the other CA's certificates, and keys/certificates by name."""

    directory: Path

    def ca(self, name: str = "ca") -> str:
        return str(self.directory / f"{name}-cert.pem")

    def client(self, name: str = "client", ca: str = "ca") -> NbSsl:
        return NbSsl(str(self.directory / f"{name}-key.pem"),
                     str(self.directory / f"{name}-cert.pem"), self.ca(ca))


def _openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(directory / f"{name}-key.pem"),
             "-out", str(directory / f"{name}-cert.pem"), "-days", "2", "-subj", f"/CN={name}")


def _make_signed(directory: Path, name: str, ca: str) -> None:
    csr = directory / f"{name}.csr"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(directory / f"{name}-key.pem"), "-out", str(csr),
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / f"{ca}-cert.pem"),
             "-CAkey", str(directory / f"{ca}-key.pem"), "-CAcreateserial",
             "-out", str(directory / f"{name}-cert.pem"), "-days", "2")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other"):
        _make_ca(directory, ca)
    for name, ca in (("server", "ca"), ("client", "ca"), ("strange-server", "other"),
                     ("strange-client", "other")):
        _make_signed(directory, name, ca)
    return Pki(directory)


@dataclass(frozen=True)
class Servers:
    """The namespace's path and the unix sockets of the two NB servers inside it."""

    netns: str
    good: str
    strange: str

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` inside the namespace (a thread that entered it)."""
        return run_in_netns(self.netns, fn, *args)


def _start_server(name: str, rundir: Path, ns: str, port: int, cert: str, pki: Pki) -> str:
    """An NB ovsdb-server in ``ns`` on pssl:PORT:127.0.0.1 showing ``cert``, trusting
    clients of our CA; its unix socket (outside any network) for ovsdb-client."""
    dbfile, sock = rundir / f"{name}.db", rundir / f"{name}.sock"
    daemons.create_db(dbfile, daemons.NB_SCHEMA)
    daemons.run(["ovsdb-server", str(dbfile), f"--remote=punix:{sock}",
                 f"--remote=pssl:{port}:127.0.0.1",
                 f"--private-key={pki.directory / f'{cert}-key.pem'}",
                 f"--certificate={pki.directory / f'{cert}-cert.pem'}",
                 f"--ca-cert={pki.ca()}", f"--pidfile={rundir / f'{name}.pid'}",
                 f"--log-file={rundir / f'{name}.log'}", f"--unixctl={rundir / f'{name}.ctl'}",
                 "--detach", "--no-chdir"], netns=ns, env={**os.environ,
                                                            **daemons.ovs_env(rundir)})
    return f"unix:{sock}"


def _listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture(scope="module")
def servers(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    ns = f"oul-nbssl-{os.getpid() % 100000}"
    rundir = tmp_path_factory.mktemp("nb")
    netns.destroy(ns)
    netns.create(ns)
    try:
        good = _start_server("good", rundir, ns, GOOD_PORT, "server", pki)
        strange = _start_server("strange", rundir, ns, STRANGE_PORT, "strange-server", pki)
        found = Servers(netns.path(ns), good, strange)
        for port in (GOOD_PORT, STRANGE_PORT):
            found.run(_listening, port)
        yield found
    finally:
        netns.destroy(ns)


def dump(remote: str) -> str:
    """The whole database, as ovsdb-client prints it."""
    return subprocess.run(["ovsdb-client", "-f", "json", "dump", remote, "OVN_Northbound"],
                          capture_output=True, text=True, check=True).stdout


def router_names(remote: str) -> list[str]:
    out = subprocess.run(["ovn-nbctl", f"--db={remote}", "--bare", "--columns=name", "list",
                          "Logical_Router"], capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def _make_router(remote: str, files: NbSsl | None, router: str) -> float:
    """Connect, ensure ``router``, close; the seconds the connection took."""
    started = time.monotonic()
    control = OvnNbControlPlane(remote, timeout=TIMEOUT, ssl=files)
    took = time.monotonic() - started
    try:
        control.ensure_router(router)
    finally:
        control.close()
    return took


def _refused(remote: str, files: NbSsl | None) -> tuple[BaseException, float]:
    """The error connecting to ``remote`` raises, and how long it took to come."""
    started = time.monotonic()
    try:
        OvnNbControlPlane(remote, timeout=TIMEOUT, ssl=files).close()
    except Exception as exc:
        return exc, time.monotonic() - started
    raise AssertionError(f"connecting to {remote} succeeded")


# --- the control plane -------------------------------------------------------------------

def test_with_the_right_files_the_control_plane_works(servers: Servers, pki: Pki) -> None:
    took = servers.run(_make_router, f"ssl:127.0.0.1:{GOOD_PORT}", pki.client(), "r-ssl")
    assert "r-ssl" in router_names(servers.good)
    assert took < TIMEOUT


def test_the_first_ssl_server_that_works_of_a_list_is_used(servers: Servers, pki: Pki) -> None:
    remote = f"ssl:127.0.0.1:{STRANGE_PORT},ssl:127.0.0.1:{GOOD_PORT}"
    servers.run(_make_router, remote, pki.client(), "r-list")
    assert "r-list" in router_names(servers.good)
    assert "r-list" not in router_names(servers.strange)


def test_a_server_certificate_of_another_ca_is_refused_and_nothing_written(
        servers: Servers, pki: Pki) -> None:
    before = dump(servers.strange)
    exc, took = servers.run(_refused, f"ssl:127.0.0.1:{STRANGE_PORT}", pki.client())
    assert isinstance(exc, ControlPlaneUnavailable), exc
    assert "SSL: the server's certificate is refused" in str(exc)
    assert f"signed by the CA of --nb-ca-cert {pki.ca()}" in str(exc)
    assert took < TIMEOUT + 0.5
    assert dump(servers.strange) == before


def test_a_client_certificate_the_server_refuses_is_said_and_nothing_written(
        servers: Servers, pki: Pki) -> None:
    before = dump(servers.good)
    files = pki.client("strange-client")
    exc, took = servers.run(_refused, f"ssl:127.0.0.1:{GOOD_PORT}", files)
    assert isinstance(exc, ControlPlaneUnavailable), exc
    # ovsdb-server sends "unknown CA" and closes: the client sees one or the other first
    assert "refuses the client's certificate" in str(exc)
    assert f"is --nb-certificate {files.certificate} signed by the CA the server trusts?" \
           in str(exc)
    assert took < TIMEOUT + 0.5
    assert dump(servers.good) == before


def test_nothing_listening_is_unavailable_with_the_socket_error(servers: Servers,
                                                                pki: Pki) -> None:
    exc, _ = servers.run(_refused, "ssl:127.0.0.1:6643", pki.client())
    assert isinstance(exc, ControlPlaneUnavailable), exc
    assert "ssl:127.0.0.1:6643: Connection refused" in str(exc)


@pytest.mark.parametrize("broken", ["missing", "directory", "mismatched", "empty-ca"])
def test_a_file_that_cannot_be_used_is_named_before_connecting(
        servers: Servers, pki: Pki, tmp_path: Path, broken: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = pki.client()
    files, said = {
        "missing": (NbSsl(str(tmp_path / "nope.pem"), good.certificate, good.ca_cert),
                    f"--nb-private-key '{tmp_path / 'nope.pem'}': cannot read it (No such "
                    "file or directory)"),
        "directory": (NbSsl(good.private_key, good.certificate, str(tmp_path)),
                      f"--nb-ca-cert '{tmp_path}': cannot read it (Is a directory)"),
        "mismatched": (NbSsl(pki.client("strange-client").private_key, good.certificate,
                             good.ca_cert),
                       "is not the private key of --nb-certificate"),
        "empty-ca": (NbSsl(good.private_key, good.certificate, good.private_key),
                     "--nb-ca-cert " + good.private_key + ": holds no PEM CA certificate"),
    }[broken]
    connects: list[str] = []
    monkeypatch.setattr(ovn_nb, "_connect", lambda remote, *_: connects.append(remote))
    with pytest.raises(ConfigError) as err:
        servers.run(OvnNbControlPlane, f"ssl:127.0.0.1:{GOOD_PORT}", TIMEOUT, files)
    assert said in str(err.value)
    assert connects == []


def test_an_ssl_remote_needs_the_three_files_and_files_need_one(pki: Pki) -> None:
    with pytest.raises(ControlPlaneError, match=re.escape(
            "is ssl:, which needs the client's private key, certificate and CA certificate "
            "(--nb-private-key, --nb-certificate, --nb-ca-cert)")):
        OvnNbControlPlane(f"tcp:127.0.0.1:1,ssl:127.0.0.1:{GOOD_PORT}")
    with pytest.raises(ControlPlaneError, match=re.escape(
            "SSL files given for the OVN NB connection tcp:127.0.0.1:1, which has no ssl: "
            "server")):
        OvnNbControlPlane("tcp:127.0.0.1:1", ssl=pki.client())
    client = pki.client()
    with pytest.raises(ConfigError, match=re.escape(
            "'ssl:h:6641' is ssl:, which needs the client's private key, certificate and CA "
            "certificate: give --nb-ca-cert (PEM files")):
        nb_ssl("ssl:h:6641", client.private_key, client.certificate, "")
    with pytest.raises(ConfigError, match=re.escape(
            "--nb-certificate given, but the OVN NB connection 'tcp:h:6641' has no ssl: "
            "server")):
        nb_ssl("tcp:h:6641", "", client.certificate, "")
    assert nb_ssl("tcp:h:6641", "", "", "") is None
    assert nb_ssl("ssl:h:6641", client.private_key, client.certificate,
                  client.ca_cert) == client


def test_a_second_set_of_files_is_refused_while_the_first_is_in_use(
        servers: Servers, pki: Pki, tmp_path: Path) -> None:
    good = pki.client()
    copies = []
    for path in (good.private_key, good.certificate, good.ca_cert):
        copies.append(str(tmp_path / Path(path).name))
        shutil.copy(path, copies[-1])
    other = NbSsl(*copies)
    remote = f"ssl:127.0.0.1:{GOOD_PORT}"

    def both() -> BaseException:
        first = OvnNbControlPlane(remote, timeout=TIMEOUT, ssl=good)
        try:
            OvnNbControlPlane(remote, timeout=TIMEOUT, ssl=good).close()
            try:
                OvnNbControlPlane(remote, timeout=TIMEOUT, ssl=other).close()
            except ControlPlaneError as exc:
                refused = exc
            else:
                raise AssertionError("a second set of SSL files was taken")
            first.ensure_router("r-first")
        finally:
            first.close()
        OvnNbControlPlane(remote, timeout=TIMEOUT, ssl=other).close()
        return refused

    refused = servers.run(both)
    assert "python-ovs holds one set per process" in str(refused)
    assert str(good) in str(refused)
    assert "r-first" in router_names(servers.good)


# --- the node's connection and the command line ---------------------------------------

def test_the_node_connects_with_the_files_node_init_records(servers: Servers, pki: Pki) -> None:
    files = pki.client()
    cfg = from_external_ids({"ovn-underlay:nb": f"ssl:127.0.0.1:{GOOD_PORT}",
                             "ovn-underlay:nb-private-key": files.private_key,
                             "ovn-underlay:nb-certificate": files.certificate,
                             "ovn-underlay:nb-ca-cert": files.ca_cert})

    def node() -> None:
        control = factory.connect(cfg, timeout=TIMEOUT)
        try:
            assert isinstance(control, OvnNbControlPlane)
            control.ensure_router("r-node")
        finally:
            control.close()

    servers.run(node)
    assert "r-node" in router_names(servers.good)
    with pytest.raises(ConfigError, match="give node-init --nb-private-key, node-init "
                       "--nb-certificate, node-init --nb-ca-cert"):
        factory.connect(from_external_ids({"ovn-underlay:nb": "ssl:127.0.0.1:1"}))


def test_router_gateway_writes_through_an_ssl_nb(servers: Servers, pki: Pki,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["lr-add", "r-gw"], ["ls-add", "ext-gw"]):
        subprocess.run(["ovn-nbctl", f"--db={servers.good}", *argv], check=True)
    files = pki.client()
    code = servers.run(main, ["router-gateway", "r-gw", "ext-gw", "--address",
                              "203.0.113.2/24", "--snat", "198.19.0.0/16",
                              "--nb", f"ssl:127.0.0.1:{GOOD_PORT}",
                              "--nb-private-key", files.private_key,
                              "--nb-certificate", files.certificate,
                              "--nb-ca-cert", files.ca_cert])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    assert "router r-gw: gateway 203.0.113.2 on ext-gw" in out
    ports = subprocess.run(["ovn-nbctl", f"--db={servers.good}", "lrp-list", "r-gw"],
                           capture_output=True, text=True, check=True).stdout
    assert "gw-r-gw" in ports


@pytest.mark.parametrize(("argv", "said"), [
    (["--nb", "ssl:127.0.0.1:1"], "give --nb-private-key, --nb-certificate, --nb-ca-cert"),
    (["--nb-ca-cert", "/x"], "--nb-private-key, --nb-certificate, --nb-ca-cert go with --nb"),
])
def test_router_gateway_checks_the_files_first(argv: list[str], said: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["router-gateway", "r", "ext", "--snat", "198.19.0.0/16", *argv])
    assert code == 1
    assert said in capsys.readouterr().err
