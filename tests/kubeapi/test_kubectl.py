"""kubectl against the server: discovery, get, create, label, watch-free commands."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ovn_underlay.lab.kubeapi import KubeApiServer

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None,
                                reason="kubectl not installed (Debian: apt-get install kubectl)")


def kubectl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run([KUBECTL, "--kubeconfig", str(config), "--request-timeout=10s",
                           *args], capture_output=True, text=True, timeout=60, check=False)


def test_kubectl_smoke(server: KubeApiServer, tmp_path: Path) -> None:
    """kubectl resolves short names through discovery, creates (from a manifest), labels,
    lists with a selector and deletes; errors come back as the real server's (NotFound).
    kubectl's generator commands (``create configmap ...``) send protobuf, which this
    server does not decode: 415."""
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server.url}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]}))
    done = kubectl(config, "get", "ns", "-o", "name")
    assert done.returncode == 0, done.stderr
    assert "namespace/kube-system" in done.stdout.split()
    manifest = tmp_path / "cm.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "cm1", "namespace": "default"},
                                    "data": {"a": "b"}}))
    done = kubectl(config, "create", "--validate=false", "-f", str(manifest))  # no OpenAPI
    assert done.returncode == 0, done.stderr
    done = kubectl(config, "create", "configmap", "cm2", "--from-literal=a=b")
    assert done.returncode != 0 and "unknown format" in done.stderr  # protobuf: not served
    done = kubectl(config, "label", "cm", "cm1", "tier=x")
    assert done.returncode == 0, done.stderr
    done = kubectl(config, "get", "cm", "-l", "tier=x", "-o", "jsonpath={.items[*].data.a}")
    assert (done.returncode, done.stdout) == (0, "b"), done.stderr
    done = kubectl(config, "get", "svc", "kubernetes", "-n", "default", "-o", "wide")
    assert done.returncode == 0 and "kubernetes" in done.stdout, done.stderr
    done = kubectl(config, "delete", "cm", "cm1")
    assert done.returncode == 0, done.stderr
    done = kubectl(config, "get", "cm", "cm1")
    assert done.returncode != 0 and "NotFound" in done.stderr
