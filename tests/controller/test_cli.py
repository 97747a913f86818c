"""``ovn-k8s-underlay controller``: settings from a directory and the command line, and the
real process against the test API server and a real NB (SIGTERM releases the Lease)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.coordination_v1 import Lease

from ovn_underlay.cli.controller import DEFAULTS, add_arguments, with_config_dir
from ovn_underlay.config import ConfigError
from ovn_underlay.controller import main, nodes, subnets
from ovn_underlay.lab.kubeapi import KubeApiServer
from tests.controller.support import add_node, wait_ready
from tests.kube.support import write_kubeconfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_defaults_are_the_controllers() -> None:
    assert (DEFAULTS["router"], DEFAULTS["pool_size"], DEFAULTS["max_pool_ports"],
            DEFAULTS["pool_batch"]) == (nodes.DEFAULT_ROUTER, nodes.DEFAULT_POOL_SIZE,
                                        nodes.DEFAULT_MAX_POOL_PORTS, nodes.DEFAULT_POOL_BATCH)
    assert DEFAULTS["node_subnet_size"] == subnets.DEFAULT_NODE_PREFIX
    assert (DEFAULTS["namespace"], DEFAULTS["resync"]) == (main.DEFAULT_NAMESPACE,
                                                           main.DEFAULT_RESYNC)


def test_a_malformed_metrics_address_is_refused_before_anything_starts(
        tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "ovn_underlay.cli", "controller",
                          "--config-dir", str(tmp_path), "--nb", "unix:/nonexistent",
                          "--kubeconfig", str(tmp_path / "none"),
                          "--metrics-address", "9477"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0
    assert "--metrics-address: metrics address '9477' is not HOST:PORT" in run.stderr


def test_files_give_settings_and_the_command_line_wins(tmp_path: Path) -> None:
    (tmp_path / "cluster-subnet").write_text("10.128.0.0/14\n")
    (tmp_path / "router").write_text("from-file")
    (tmp_path / "max-pool-ports").write_text("64")
    (tmp_path / "..data").mkdir()
    args = with_config_dir(parse("--config-dir", str(tmp_path), "--router", "from-cli"))
    assert (args.cluster_subnet, args.router, args.max_pool_ports) == (
        "10.128.0.0/14", "from-cli", 64)
    assert (args.pool_size, args.backend) == (16, "ovn")


def test_a_misnamed_or_malformed_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cluster_subnett").write_text("10.128.0.0/14")
    with pytest.raises(ConfigError, match="no controller setting is called 'cluster_subnett'"):
        with_config_dir(parse("--config-dir", str(tmp_path)))
    (tmp_path / "cluster_subnett").unlink()
    (tmp_path / "pool-size").write_text("many")
    with pytest.raises(ConfigError, match="pool-size"):
        with_config_dir(parse("--config-dir", str(tmp_path)))


def test_the_process_serves_nodes_and_releases_the_lease_on_sigterm(
        cluster: Client, server: KubeApiServer, nb: str, tmp_path: Path) -> None:
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "cluster-subnet").write_text("198.19.0.0/16")
    (settings / "pool-size").write_text("2")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    log = tmp_path / "controller.log"
    proc = subprocess.Popen([sys.executable, "-m", "ovn_underlay.cli", "controller",
                             "--config-dir", str(settings), "--kubeconfig", kubeconfig,
                             "--nb", nb, "--metrics-address", "127.0.0.1:0",
                             "--log-file", str(log)])
    try:
        add_node(cluster, "n1", "10.0.0.11")
        status = wait_ready(cluster, "n1", timeout=20)
        assert (status["subnet"], len(status["ports"])) == ("198.19.0.0/24", 2)
        served = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
        assert served, log.read_text()
        with urllib.request.urlopen(served.group(1), timeout=5) as answer:
            scraped = answer.read().decode()
        assert "ovn_underlay_controller_leading 1.0" in scraped
        assert "ovn_underlay_service_sync_latency_seconds_bucket" in scraped
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    spec = cluster.get(Lease, main.LEASE_NAME, namespace=main.DEFAULT_NAMESPACE).spec
    assert spec is not None and spec.holderIdentity is None
    text = log.read_text()
    assert "epoch 1: leading" in text
    assert "node n1: Ready=True" in text
    assert "stopped writing" in text


@pytest.mark.parametrize(("options", "said"), [
    (["--backend", "neutron", "--service-subnet", "services"],
     "--service-subnet needs --service-cidr"),
    (["--nb", "unix:/nonexistent", "--service-subnet", "services", "--service-cidr",
      "10.96.0.0/12"], "--service-subnet is a Neutron subnet: it needs --backend neutron"),
    (["--nb", "unix:/nonexistent", "--service-cidr", "10.96.0.0/33"], "is not an IPv4 CIDR"),
    (["--nb", "unix:/nonexistent", "--service-cidr", "fd00::/108"],
     "IPv6 Service ranges are not supported yet"),
    (["--nb", "unix:/nonexistent", "--cluster-subnet", "10.0.0.0/8", "--service-cidr",
      "10.96.0.0/12"], "overlaps --cluster-subnet 10.0.0.0/8"),
    (["--nb", "ssl:192.0.2.1:6641"], "the OVN NB connection 'ssl:192.0.2.1:6641' is ssl:, "
     "which needs the client's private key, certificate and CA certificate: give "
     "--nb-private-key, --nb-certificate, --nb-ca-cert (PEM files, as ovn-nbctl's -p, -c "
     "and -C) (on the command line or as files of the settings directory"),
    (["--nb", "tcp:192.0.2.1:6641", "--nb-ca-cert", "/etc/hostname"], "--nb-ca-cert given, "
     "but the OVN NB connection 'tcp:192.0.2.1:6641' has no ssl: server"),
    (["--backend", "neutron", "--nb-private-key", "/k"], "--nb-private-key given (on the "
     "command line or as files of the settings directory {tmp}): they are the OVN NB's, for "
     "--backend ovn only"),
])
def test_settings_are_checked_before_anything_starts(
        tmp_path: Path, options: list[str], said: str) -> None:
    run = subprocess.run([sys.executable, "-m", "ovn_underlay.cli", "controller",
                          "--config-dir", str(tmp_path), "--kubeconfig", str(tmp_path / "none"),
                          "--metrics-address", "off", *options],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1
    assert said.format(tmp=tmp_path) in run.stderr, run.stderr


def test_service_settings_come_from_files_too(tmp_path: Path) -> None:
    (tmp_path / "service-subnet").write_text("k8s-services\n")
    (tmp_path / "service-cidr").write_text("10.96.0.0/12\n")
    args = with_config_dir(parse("--config-dir", str(tmp_path)))
    assert (args.service_subnet, args.service_cidr) == ("k8s-services", "10.96.0.0/12")
    assert (DEFAULTS["service_subnet"], DEFAULTS["service_cidr"]) == (
        main.ControllerConfig().service_subnet, main.ControllerConfig().service_cidr)


def test_help_lists_the_nb_ssl_files() -> None:
    run = subprocess.run([sys.executable, "-m", "ovn_underlay.cli", "controller", "--help"],
                         capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, "COLUMNS": "500"})
    text = " ".join(run.stdout.split())
    for option in ("--nb-private-key FILE", "--nb-certificate FILE", "--nb-ca-cert FILE"):
        assert f"{option} with an ssl: --nb:" in text, option
    assert "the Secret ovn-underlay-nb-ssl, mounted at /etc/ovn-underlay/nb-ssl" in text


def test_nb_ssl_files_come_from_the_settings_directory_and_are_checked(
        tmp_path: Path) -> None:
    from ovn_underlay.cli.controller import check_nb_ssl

    settings = tmp_path / "settings"
    settings.mkdir()
    secret = {name: f"/etc/ovn-underlay/nb-ssl/{name}.pem"
              for name in ("nb-private-key", "nb-certificate", "nb-ca-cert")}
    for name, value in {"nb": "ssl:192.0.2.1:6641", **secret}.items():
        (settings / name).write_text(value + "\n")
    args = with_config_dir(parse("--config-dir", str(settings)))
    assert (args.nb, args.nb_private_key, args.nb_certificate, args.nb_ca_cert) == (
        "ssl:192.0.2.1:6641", *secret.values())
    with pytest.raises(ConfigError, match=re.escape(
            "--nb-private-key '/etc/ovn-underlay/nb-ssl/nb-private-key.pem': cannot read it "
            f"(No such file or directory) (on the command line or as files of the settings "
            f"directory {settings})")):
        check_nb_ssl(args)
    assert (DEFAULTS["nb_private_key"], DEFAULTS["nb_certificate"],
            DEFAULTS["nb_ca_cert"]) == ("", "", "")
