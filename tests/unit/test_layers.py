"""The package's layers: no module imports from a layer above it (lazy imports included).

Bottom to top (the README's map): the base (settings, names, the CNI protocol
and the shim's wire format); the node dataplane, the control-plane backends,
the Kubernetes client and the container-engine client, none of which knows
the others; the pod core; the daemon and the lab; the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "ovn_underlay"

LAYER_OF = {
    "": "base", "config": "base", "names": "base", "logfile": "base", "ovsdb": "base",
    "cni": "base", "nb_ssl": "base",
    "dataplane": "dataplane", "control": "control", "kube": "kube",
    "container_engine": "engine",
    "pods": "pods",
    "daemon": "daemon", "controller": "controller", "lab": "lab", "lab.kubeapi": "kubeapi",
    "cli": "cli",
}
BELOW = {
    "base": set(),
    "dataplane": {"base"}, "control": {"base"}, "kube": {"base"}, "engine": {"base"},
    "pods": {"base", "dataplane", "control", "kube"},
    "daemon": {"base", "dataplane", "control", "kube", "pods"},
    "controller": {"base", "dataplane", "control", "kube", "pods"},
    "lab": {"base", "dataplane", "kubeapi"},
    "kubeapi": set(),
    "cli": {"base", "dataplane", "control", "kube", "engine", "pods", "daemon", "controller",
            "lab"},
}
"""What each layer may import besides itself."""


def layer(module: str) -> str:
    """The layer of ``ovn_underlay.X.Y...``: its longest listed prefix."""
    parts = module.split(".")[1:]
    for end in range(len(parts), -1, -1):
        key = ".".join(parts[:end])
        if key in LAYER_OF:
            return LAYER_OF[key]
    raise AssertionError(f"{module} is in no layer: add it to LAYER_OF")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def imports(path: Path, module: str) -> set[str]:
    """Every ovn_underlay module ``path`` imports, at the top or inside a function."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.update(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                         for a in node.names)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_module_imports_from_a_layer_above_it(module: str, path: Path) -> None:
    own = layer(module)
    wrong = sorted(f"{name} ({layer(name)})" for name in imports(path, module)
                   if layer(name) != own and layer(name) not in BELOW[own])
    assert wrong == [], f"{module} ({own}) imports from layers it may not: {wrong}"


def test_the_layer_map_covers_every_module() -> None:
    for module, _ in modules():
        assert layer(module) in BELOW
