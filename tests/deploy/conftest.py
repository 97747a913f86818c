"""The Kubernetes fixtures of tests/kube (a test API server per test, a relay, an admin)."""

from tests.kube.conftest import admin, kubeconfig, relay, server

__all__ = ["admin", "kubeconfig", "relay", "server"]
