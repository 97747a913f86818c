"""What the node commands print: help, warnings, ``lswitch-setup``'s summary, ``pool show``.

The commands run through ``main`` as a user runs them; only the node's OVS
database, the data plane and the control plane are stood in for (the pool is a
real SQLite file).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.cli import lswitch as lswitch_cli
from ovn_underlay.cli import main as cli_main
from ovn_underlay.cli import node_init as node_init_cli
from ovn_underlay.cli import pool as pool_cli
from ovn_underlay.config import NodeConfig, key_of, to_external_ids
from ovn_underlay.control.base import ChildPort, NodeNetwork
from ovn_underlay.pods.pool import PodInterface, Pool

CLUSTER_WARNING = "no cluster subnet"
FIX = "node-init --cluster-subnet CIDR"


class FakeOvs:
    """The node's Open_vSwitch external_ids, in memory."""

    def __init__(self, config: dict[str, str] | None = None) -> None:
        self.config = dict(config or {})

    def get_config(self) -> dict[str, str]:
        return dict(self.config)

    def set_config(self, values: dict[str, str]) -> None:
        self.config.update(values)


class FakeNodeInit:
    """node-init's data-plane plan, with nothing left to do."""

    def __init__(self, ovs: FakeOvs, cfg: NodeConfig) -> None:
        del ovs, cfg

    def plan(self) -> list[Any]:
        return []

    def apply(self, changes: list[Any], report: Any) -> None:
        """As the real one: report each change, then make it."""
        for change in changes:
            report(change.what)
            change.apply()


class FakeControl:
    """A control plane that is only closed (setup itself is stood in for)."""

    def close(self) -> None:
        """Nothing to release."""


def use_ovs(monkeypatch: pytest.MonkeyPatch, module: Any, ovs: FakeOvs) -> None:
    @contextmanager
    def open_ovs(_args: Any) -> Iterator[FakeOvs]:
        yield ovs

    monkeypatch.setattr(module, "open_ovs", open_ovs)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- help ------------------------------------------------------------------------------

def test_pool_high_help_says_ports_are_never_deleted(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    with pytest.raises(SystemExit):
        cli_main.main(["node-init", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    high = text.rsplit("--pool-high POOL_HIGH", 1)[1].split("--pool-batch", 1)[0]
    assert "ports above it" not in high
    assert "never deleted" in high and "lswitch-destroy" in high


# --- the cluster subnet warning -----------------------------------------------------------

BACKEND_ARGS = {
    "ovn": ["--nb", "tcp:192.0.2.1:6641", "--parent", "vm1"],
    "neutron": ["--backend", "neutron", "--neutron-config", "/nonexistent/openrc"],
}


@pytest.fixture
def node_init_fakes(monkeypatch: pytest.MonkeyPatch) -> FakeOvs:
    """node-init with no data plane and, for Neutron, no credentials check."""
    from ovn_underlay.cli import neutron as neutron_cli
    from ovn_underlay.dataplane import node_init as dataplane_node_init

    ovs = FakeOvs()
    use_ovs(monkeypatch, node_init_cli, ovs)
    monkeypatch.setattr(dataplane_node_init, "NodeInit", FakeNodeInit)
    monkeypatch.setattr(neutron_cli, "check_node",
                        lambda cfg, _parent: (cfg, "Neutron reached"))
    return ovs


@pytest.mark.parametrize("backend", sorted(BACKEND_ARGS))
def test_node_init_without_a_cluster_subnet_warns_and_says_how_to_fix_it(
        node_init_fakes: FakeOvs, capsys: pytest.CaptureFixture[str], backend: str) -> None:
    code, out, err = run(["node-init", *BACKEND_ARGS[backend], "--dry-run"], capsys)
    assert code == 0
    assert CLUSTER_WARNING in err and FIX in err and "other nodes" in err
    assert CLUSTER_WARNING not in out


@pytest.mark.parametrize("backend", sorted(BACKEND_ARGS))
def test_node_init_with_a_cluster_subnet_given_or_recorded_does_not_warn(
        node_init_fakes: FakeOvs, capsys: pytest.CaptureFixture[str], backend: str) -> None:
    argv = ["node-init", *BACKEND_ARGS[backend], "--dry-run"]
    code, _, err = run([*argv, "--cluster-subnet", "198.19.0.0/16"], capsys)
    assert code == 0 and CLUSTER_WARNING not in err
    node_init_fakes.config[key_of("cluster_subnet")] = "198.19.0.0/16"
    code, _, err = run(argv, capsys)
    assert code == 0 and CLUSTER_WARNING not in err


# --- NB over SSL ------------------------------------------------------------------------

SSL_NB = ["--nb", "ssl:192.0.2.1:6641", "--parent", "vm1", "--cluster-subnet",
          "198.19.0.0/16"]


@pytest.fixture
def pem_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A key and its self-signed certificate (also the CA), named relative to the cwd."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem",
                    "-out", "cert.pem", "-days", "1", "-subj", "/CN=nb-client"],
                   cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    return ["key.pem", "cert.pem", "cert.pem"]


def test_node_init_records_the_nb_ssl_files_for_the_node_to_connect_with(
        node_init_fakes: FakeOvs, pem_files: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from ovn_underlay.config import from_external_ids
    from ovn_underlay.nb_ssl import NbSsl, nb_ssl

    key, cert, ca = pem_files
    code, out, err = run(["node-init", *SSL_NB, "--nb-private-key", key,
                          "--nb-certificate", cert, "--nb-ca-cert", ca], capsys)
    assert (code, err) == (0, ""), err
    assert "record NB SSL settings in Open_vSwitch external_ids" in out
    absolute = NbSsl(str(tmp_path / key), str(tmp_path / cert), str(tmp_path / ca))
    assert {k: v for k, v in node_init_fakes.config.items() if "nb-" in k} == {
        "ovn-underlay:nb-private-key": absolute.private_key,
        "ovn-underlay:nb-certificate": absolute.certificate,
        "ovn-underlay:nb-ca-cert": absolute.ca_cert}
    cfg = from_external_ids(node_init_fakes.config)  # the fake data plane records no nb
    assert nb_ssl(SSL_NB[1], cfg.nb_private_key, cfg.nb_certificate,
                  cfg.nb_ca_cert) == absolute
    code, out, _ = run(["node-init", *SSL_NB], capsys)
    assert code == 0 and "NB SSL" not in out, "recorded files are kept"


@pytest.mark.parametrize(("argv", "said"), [
    (SSL_NB, "is ssl:, which needs the client's private key, certificate and CA "
     "certificate: give node-init --nb-private-key, node-init --nb-certificate, node-init "
     "--nb-ca-cert"),
    ([*BACKEND_ARGS["ovn"], "--nb-ca-cert", "cert.pem"], "node-init --nb-ca-cert given, but "
     "the OVN NB connection 'tcp:192.0.2.1:6641' has no ssl: server"),
    ([*SSL_NB, "--nb-private-key", "key.pem", "--nb-certificate", "cert.pem",
      "--nb-ca-cert", "missing.pem"], "node-init --nb-ca-cert '{tmp}/missing.pem': cannot "
     "read it (No such file or directory)"),
])
def test_node_init_refuses_nb_ssl_files_that_do_not_fit_and_records_nothing(
        node_init_fakes: FakeOvs, pem_files: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], argv: list[str], said: str) -> None:
    del pem_files
    code, _, err = run(["node-init", *argv], capsys)
    assert code == 1
    assert said.format(tmp=tmp_path) in err
    assert node_init_fakes.config == {}


def test_node_init_clears_recorded_nb_ssl_files_with_empty_values(
        node_init_fakes: FakeOvs, pem_files: list[str], capsys: pytest.CaptureFixture[str]
        ) -> None:
    key, cert, ca = pem_files
    run(["node-init", *SSL_NB, "--nb-private-key", key, "--nb-certificate", cert,
         "--nb-ca-cert", ca], capsys)
    code, _, err = run(["node-init", *BACKEND_ARGS["ovn"], "--cluster-subnet",
                        "198.19.0.0/16", "--nb-private-key", "", "--nb-certificate", "",
                        "--nb-ca-cert", ""], capsys)
    assert (code, err) == (0, ""), err
    from ovn_underlay.config import from_external_ids

    cfg = from_external_ids(node_init_fakes.config)
    assert (cfg.nb_private_key, cfg.nb_certificate, cfg.nb_ca_cert) == ("", "", "")


def test_every_nb_option_comes_with_the_ssl_files_in_help(
        capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["node-init"], ["router-gateway"], ["controller"]):
        with pytest.raises(SystemExit):
            cli_main.main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for option, what in (("--nb-private-key FILE", "the client's private key"),
                             ("--nb-certificate FILE", "the client's certificate"),
                             ("--nb-ca-cert FILE", "the CA certificate (PEM) that signed "
                              "the NB server's certificate")):
            assert f"{option} with an ssl: --nb: {what}" in text, (command, option)


def network(router: str = "cluster") -> NodeNetwork:
    mgmt = ChildPort("node1-mgmt", "0a:58:c6:13:01:02", "198.19.1.2", 24, "198.19.1.1", 4094)
    return NodeNetwork(switch="node1", subnet="198.19.1.0/24", gateway_ip="198.19.1.1",
                       gateway_mac="0a:58:c6:13:01:01", router=router, parent="vm1",
                       mgmt=mgmt, ports=())


@pytest.fixture
def setup_fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOvs]:
    """lswitch-setup of an OVN node whose control plane and node side are stood in for."""
    from ovn_underlay.control import factory
    from ovn_underlay.pods import network as pods_network

    ovs = FakeOvs(to_external_ids(NodeConfig(nb="tcp:192.0.2.1:6641", parent="vm1")))
    use_ovs(monkeypatch, lswitch_cli, ovs)
    monkeypatch.setattr(factory, "connect", lambda _cfg: FakeControl())
    monkeypatch.setattr(pods_network, "setup", lambda *_args, **_kw: network())
    yield ovs


def test_lswitch_setup_without_a_cluster_subnet_warns_and_says_how_to_fix_it(
        setup_fakes: FakeOvs, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["lswitch-setup", "node1", "198.19.1.0/24", "cluster",
                          "--pool-size", "0"], capsys)
    assert code == 0
    assert out.startswith("switch node1 (198.19.1.0/24) on router cluster via 198.19.1.1:")
    assert CLUSTER_WARNING in err and FIX in err and "other nodes" in err


def test_lswitch_setup_with_a_cluster_subnet_does_not_warn(
        setup_fakes: FakeOvs, capsys: pytest.CaptureFixture[str]) -> None:
    setup_fakes.config[key_of("cluster_subnet")] = "198.19.0.0/16"
    code, _, err = run(["lswitch-setup", "node1", "198.19.1.0/24", "cluster",
                        "--pool-size", "0"], capsys)
    assert code == 0 and CLUSTER_WARNING not in err


# --- pool show ---------------------------------------------------------------------------

def port(name: str, tag: int) -> ChildPort:
    return ChildPort(name, f"0a:58:c6:13:01:{tag:02x}", f"198.19.1.{tag}", 24, "198.19.1.1",
                     tag)


@pytest.fixture
def shown_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pool:
    """A node whose pool (a real one, in tmp_path) ``pool show`` prints."""
    cfg = NodeConfig(state_dir=str(tmp_path))
    monkeypatch.setattr(pool_cli, "node_settings", lambda _args: cfg)
    return Pool(cfg.pool_path)


def port_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  tag ")]


def test_pool_show_sizes_its_columns_from_the_ports(shown_pool: Pool,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    long_name = "3f2b8c1e-7d4a-4e55-9b0c-6a1d2e3f4a5b"  # a Neutron port id
    with shown_pool as pool:
        pool.add_ports([port("n1-p3", 3), port(long_name, 100), port("n1-p10", 10)])
    code, out, _ = run(["pool", "show"], capsys)
    lines = port_lines(out)
    assert code == 0 and len(lines) == 3
    for column in (r"198\.19\.1\.\d+", "0a:58:", "free"):
        starts = {re.search(column, line).start() for line in lines}  # type: ignore[union-attr]
        assert len(starts) == 1, (column, out)
    assert all(long_name + " " in line or "n1-p" in line for line in lines)


def test_pool_show_names_pods_without_a_namespace_by_their_name(
        shown_pool: Pool, capsys: pytest.CaptureFixture[str]) -> None:
    with shown_pool as pool:
        pool.add_ports([port("n1-p1", 1), port("n1-p2", 2), port("n1-p3", 3)])
        pool.acquire(PodInterface("a" * 64, "eth0", "/run/netns/a", "default", "web"))
        pool.acquire(PodInterface("b" * 64, "eth0", "/run/netns/b", "", "busy_hopper"))
        pool.acquire(PodInterface("c" * 64, "eth0", "/run/netns/c", "", ""))
    code, out, _ = run(["pool", "show"], capsys)
    holders = [line.split("attaching ", 1)[1] for line in port_lines(out)]
    assert code == 0
    assert holders == [f"default/web {'a' * 12}/eth0", f"busy_hopper {'b' * 12}/eth0",
                       f"- {'c' * 12}/eth0"]
    code, out, _ = run(["pool", "show", "--json"], capsys)
    assert '"pod_namespace": ""' in out and '"pod_name": "busy_hopper"' in out
