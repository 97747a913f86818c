"""The program: --help, and a TLS server with a token file started as a subprocess."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest


def test_help_explains_every_option() -> None:
    done = subprocess.run([sys.executable, "-m", "ovn_underlay.lab.kubeapi", "--help"],
                          capture_output=True, text=True, timeout=30, check=True)
    for option in ("--listen", "--tls-cert", "--tls-key", "--tokens",
                   "--service-cluster-ip-range", "--service-node-port-range",
                   "--advertise-address", "--request-log", "--watch-history",
                   "--no-endpointslice-controller"):
        assert option in done.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_program_with_tokens(tmp_path: Path) -> None:
    """``--listen 127.0.0.1:0 --tls-cert --tls-key --tokens``: prints its https URL; a
    client trusting the certificate and sending a token gets through; the request log
    file records it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=kubeapi", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("tok,alice,1,lab\n")
    log = tmp_path / "log.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "ovn_underlay.lab.kubeapi", "--listen", "127.0.0.1:0",
         "--tls-cert", str(cert), "--tls-key", str(key), "--tokens", str(tokens),
         "--request-log", str(log), "--service-cluster-ip-range", "10.55.0.0/24"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(f"{url}/api/v1/namespaces/default/services/kubernetes",
                                         headers={"Authorization": "Bearer tok"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            service = json.loads(response.read())
        assert service["spec"]["clusterIP"] == "10.55.0.1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/version", context=context, timeout=10)
        assert refused.value.code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert json.loads(log.read_text().splitlines()[0])["user"] == "alice"
