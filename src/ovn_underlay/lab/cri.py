"""A minimal CRI client (gRPC ``runtime.v1``) for the lab's containerd.

No CRI client can be installed here and cri-api's proto is not copied into the
repository: the messages below are our own subset of the CRI API, written down
with only the fields this project uses, under their published names and field
numbers (https://github.com/kubernetes/cri-api, ``pkg/apis/runtime/v1/api.proto``)
so that the wire format is the one containerd reads.  Unknown fields in
containerd's answers are kept and ignored by protobuf, as proto3 specifies.

The message classes are built at import time from a ``FileDescriptorProto``
made in code (no generated files, no protoc); the calls go through grpcio's
generic ``unary_unary`` stubs on containerd's unix socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# No stubs are required: the messages are built at run time, typed Any here.
import grpc  # type: ignore[import-untyped, import-not-found, unused-ignore]
from google.protobuf import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)

PACKAGE = "runtime.v1"
API_VERSION = "v1"
CALL_TIMEOUT = 120.0

_F = descriptor_pb2.FieldDescriptorProto
STRING, BOOL, INT32, UINT32, INT64, MESSAGE, ENUM = (
    _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_INT32, _F.TYPE_UINT32, _F.TYPE_INT64,
    _F.TYPE_MESSAGE, _F.TYPE_ENUM)
REPEATED = "repeated"
MAP = "map"

# message -> [(field, number, type, type name for messages/enums, label)]
_Field = tuple[str, int, int, str, str]
MESSAGES: dict[str, list[_Field]] = {
    "VersionRequest": [("version", 1, STRING, "", "")],
    "VersionResponse": [("version", 1, STRING, "", ""), ("runtime_name", 2, STRING, "", ""),
                        ("runtime_version", 3, STRING, "", ""),
                        ("runtime_api_version", 4, STRING, "", "")],
    "PodSandboxMetadata": [("name", 1, STRING, "", ""), ("uid", 2, STRING, "", ""),
                           ("namespace", 3, STRING, "", ""), ("attempt", 4, UINT32, "", "")],
    "PodSandboxConfig": [("metadata", 1, MESSAGE, "PodSandboxMetadata", ""),
                         ("hostname", 2, STRING, "", ""),
                         ("log_directory", 3, STRING, "", ""),
                         ("labels", 6, MESSAGE, "", MAP),
                         ("annotations", 7, MESSAGE, "", MAP)],
    "RunPodSandboxRequest": [("config", 1, MESSAGE, "PodSandboxConfig", ""),
                             ("runtime_handler", 2, STRING, "", "")],
    "RunPodSandboxResponse": [("pod_sandbox_id", 1, STRING, "", "")],
    "StopPodSandboxRequest": [("pod_sandbox_id", 1, STRING, "", "")],
    "StopPodSandboxResponse": [],
    "RemovePodSandboxRequest": [("pod_sandbox_id", 1, STRING, "", "")],
    "RemovePodSandboxResponse": [],
    "PodSandboxStatusRequest": [("pod_sandbox_id", 1, STRING, "", ""),
                                ("verbose", 2, BOOL, "", "")],
    "PodSandboxNetworkStatus": [("ip", 1, STRING, "", "")],
    "PodSandboxStatus": [("id", 1, STRING, "", ""),
                         ("metadata", 2, MESSAGE, "PodSandboxMetadata", ""),
                         ("state", 3, ENUM, "PodSandboxState", ""),
                         ("created_at", 4, INT64, "", ""),
                         ("network", 5, MESSAGE, "PodSandboxNetworkStatus", "")],
    "PodSandboxStatusResponse": [("status", 1, MESSAGE, "PodSandboxStatus", ""),
                                 ("info", 2, MESSAGE, "", MAP)],
    "PodSandboxFilter": [("id", 1, STRING, "", "")],
    "ListPodSandboxRequest": [("filter", 1, MESSAGE, "PodSandboxFilter", "")],
    "PodSandbox": [("id", 1, STRING, "", ""),
                   ("metadata", 2, MESSAGE, "PodSandboxMetadata", ""),
                   ("state", 3, ENUM, "PodSandboxState", ""),
                   ("created_at", 4, INT64, "", "")],
    "ListPodSandboxResponse": [("items", 1, MESSAGE, "PodSandbox", REPEATED)],
    "ContainerMetadata": [("name", 1, STRING, "", ""), ("attempt", 2, UINT32, "", "")],
    "ImageSpec": [("image", 1, STRING, "", "")],
    "KeyValue": [("key", 1, STRING, "", ""), ("value", 2, STRING, "", "")],
    "ContainerConfig": [("metadata", 1, MESSAGE, "ContainerMetadata", ""),
                        ("image", 2, MESSAGE, "ImageSpec", ""),
                        ("command", 3, STRING, "", REPEATED),
                        ("args", 4, STRING, "", REPEATED),
                        ("working_dir", 5, STRING, "", ""),
                        ("envs", 6, MESSAGE, "KeyValue", REPEATED),
                        ("log_path", 11, STRING, "", "")],
    "CreateContainerRequest": [("pod_sandbox_id", 1, STRING, "", ""),
                               ("config", 2, MESSAGE, "ContainerConfig", ""),
                               ("sandbox_config", 3, MESSAGE, "PodSandboxConfig", "")],
    "CreateContainerResponse": [("container_id", 1, STRING, "", "")],
    "StartContainerRequest": [("container_id", 1, STRING, "", "")],
    "StartContainerResponse": [],
}
ENUMS = {"PodSandboxState": ["SANDBOX_READY", "SANDBOX_NOTREADY"]}
SANDBOX_READY = 0

RUNTIME_CALLS = {
    "Version": ("VersionRequest", "VersionResponse"),
    "RunPodSandbox": ("RunPodSandboxRequest", "RunPodSandboxResponse"),
    "StopPodSandbox": ("StopPodSandboxRequest", "StopPodSandboxResponse"),
    "RemovePodSandbox": ("RemovePodSandboxRequest", "RemovePodSandboxResponse"),
    "PodSandboxStatus": ("PodSandboxStatusRequest", "PodSandboxStatusResponse"),
    "ListPodSandbox": ("ListPodSandboxRequest", "ListPodSandboxResponse"),
    "CreateContainer": ("CreateContainerRequest", "CreateContainerResponse"),
    "StartContainer": ("StartContainerRequest", "StartContainerResponse"),
}


def _entry_name(field: str) -> str:
    return "".join(part.capitalize() for part in field.split("_")) + "Entry"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="ovn_underlay_lab_cri.proto",
                                             package=PACKAGE, syntax="proto3")
    for enum_name, values in ENUMS.items():
        enum = fdp.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for name, fields in MESSAGES.items():
        message = fdp.message_type.add(name=name)
        for field, number, ftype, type_name, label in fields:
            proto = message.field.add(name=field, number=number, type=ftype,
                                      label=_F.LABEL_REPEATED if label else _F.LABEL_OPTIONAL)
            if label == MAP:
                entry = message.nested_type.add(name=_entry_name(field))
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=STRING, label=_F.LABEL_OPTIONAL)
                proto.type_name = f".{PACKAGE}.{name}.{_entry_name(field)}"
            elif type_name:
                proto.type_name = f".{PACKAGE}.{type_name}"
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
TYPES: dict[str, Any] = {
    name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
    for name in MESSAGES}


def message(type_name: str, /, **fields: Any) -> Any:
    """A CRI message ``type_name`` (e.g. ``"PodSandboxConfig"``) with ``fields`` set."""
    return TYPES[type_name](**fields)


class CriError(RuntimeError):
    """A CRI call failed."""


@dataclass(frozen=True)
class SandboxStatus:
    """What PodSandboxStatus tells of one sandbox."""

    id: str
    ready: bool
    ip: str
    netns: str
    """The path of the sandbox's network namespace ("" when containerd gives none)."""
    pid: int


class CriClient:
    """``runtime.v1.RuntimeService`` on a unix socket: the calls a kubelet makes."""

    def __init__(self, socket_path: str, timeout: float = CALL_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._calls: dict[str, Any] = {}
        for method, (_request, response) in RUNTIME_CALLS.items():
            self._calls[method] = self.channel.unary_unary(
                f"/{PACKAGE}.RuntimeService/{method}",
                request_serializer=lambda msg: msg.SerializeToString(),
                response_deserializer=TYPES[response].FromString)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **fields: Any) -> Any:
        """One RuntimeService call; raise CriError with containerd's message on failure."""
        request = message(RUNTIME_CALLS[method][0], **fields)
        try:
            return self._calls[method](request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise CriError(f"{method}: {exc.code().name}: {exc.details()}") from exc

    # -- the calls -------------------------------------------------------------
    def version(self) -> dict[str, str]:
        reply = self.call("Version", version=API_VERSION)
        return {"runtime_name": reply.runtime_name, "runtime_version": reply.runtime_version,
                "runtime_api_version": reply.runtime_api_version}

    def run_pod_sandbox(self, config: Any) -> str:
        return str(self.call("RunPodSandbox", config=config).pod_sandbox_id)

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", pod_sandbox_id=sandbox_id)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("RemovePodSandbox", pod_sandbox_id=sandbox_id)

    def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        reply = self.call("PodSandboxStatus", pod_sandbox_id=sandbox_id, verbose=True)
        info: dict[str, Any] = {}
        if "info" in reply.info:
            info = json.loads(reply.info["info"])
        pid = int(info.get("pid") or 0)
        netns = ""
        spec = info.get("runtimeSpec") or {}
        for namespace in (spec.get("linux") or {}).get("namespaces") or []:
            if namespace.get("type") == "network" and namespace.get("path"):
                netns = str(namespace["path"])
        if not netns and pid:
            netns = f"/proc/{pid}/ns/net"
        status = reply.status
        return SandboxStatus(status.id, status.state == SANDBOX_READY, status.network.ip,
                             netns, pid)

    def list_pod_sandbox(self) -> list[Any]:
        return list(self.call("ListPodSandbox").items)

    def create_container(self, sandbox_id: str, config: Any, sandbox_config: Any) -> str:
        return str(self.call("CreateContainer", pod_sandbox_id=sandbox_id, config=config,
                             sandbox_config=sandbox_config).container_id)

    def start_container(self, container_id: str) -> None:
        self.call("StartContainer", container_id=container_id)
