"""The CRI subset of :mod:`ovn_underlay.lab.cri` encodes with cri-api's field numbers.

The expected bytes are written out by hand from the published ``runtime.v1``
definitions (tag = field number << 3 | wire type), so a wrong number in the
table shows here without containerd.
"""

from __future__ import annotations

from typing import Any

import pytest

from ovn_underlay.lab.containerd import missing_python_packages

if missing_python_packages():
    pytest.skip(f"PyPI packages missing: {', '.join(missing_python_packages())}",
                allow_module_level=True)


def cri() -> Any:
    from ovn_underlay.lab import cri as module
    return module


def test_sandbox_config_metadata_and_labels() -> None:
    m = cri().message
    config = m("PodSandboxConfig", metadata=m("PodSandboxMetadata", name="a", uid="u",
                                              namespace="n", attempt=1),
               hostname="h", log_directory="l", labels={"k": "v"}, annotations={"x": "y"})
    metadata = b"\x0a\x01a\x12\x01u\x1a\x01n\x20\x01"
    assert config.SerializeToString() == (
        b"\x0a" + bytes([len(metadata)]) + metadata + b"\x12\x01h\x1a\x01l"
        + b"\x32\x06\x0a\x01k\x12\x01v" + b"\x3a\x06\x0a\x01x\x12\x01y")
    request = m("RunPodSandboxRequest", config=m("PodSandboxConfig"), runtime_handler="r")
    assert request.SerializeToString() == b"\x0a\x00\x12\x01r"


def test_container_config_and_requests() -> None:
    m = cri().message
    config = m("ContainerConfig", metadata=m("ContainerMetadata", name="c", attempt=2),
               image=m("ImageSpec", image="i"), command=["a"], args=["b"], working_dir="/",
               envs=[m("KeyValue", key="K", value="V")], log_path="p")
    assert config.SerializeToString() == (
        b"\x0a\x05\x0a\x01c\x10\x02" b"\x12\x03\x0a\x01i" b"\x1a\x01a" b"\x22\x01b"
        b"\x2a\x01/" b"\x32\x06\x0a\x01K\x12\x01V" b"\x5a\x01p")
    create = m("CreateContainerRequest", pod_sandbox_id="s", config=m("ContainerConfig"),
               sandbox_config=m("PodSandboxConfig"))
    assert create.SerializeToString() == b"\x0a\x01s\x12\x00\x1a\x00"
    assert m("PodSandboxStatusRequest", pod_sandbox_id="s", verbose=True
             ).SerializeToString() == b"\x0a\x01s\x10\x01"
    assert m("VersionRequest", version="v1").SerializeToString() == b"\x0a\x02v1"


def test_sandbox_status_and_list_decode() -> None:
    types = cri().TYPES
    status = types["PodSandboxStatusResponse"].FromString(
        b"\x0a\x10" b"\x0a\x01s" b"\x12\x03\x0a\x01a" b"\x18\x01" b"\x2a\x04\x0a\x02ip"
        b"\x12\x08\x0a\x01k\x12\x03{\"}")
    assert (status.status.id, status.status.metadata.name, status.status.state,
            status.status.network.ip, dict(status.info)) == ("s", "a", 1, "ip", {"k": '{"}'})
    listing = types["ListPodSandboxResponse"].FromString(b"\x0a\x03\x0a\x01s\x0a\x03\x0a\x01t")
    assert [item.id for item in listing.items] == ["s", "t"]
