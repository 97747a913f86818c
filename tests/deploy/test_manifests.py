"""deploy/: every manifest valid against the Kubernetes API schema, offline, and consistent.

kubernetes-validate bundles the API's JSON schemas per Kubernetes version; the strict
ones refuse unknown fields, so a misspelt field fails here instead of being dropped by
the API server.  Objects of a custom resource are checked against their CRD's
``openAPIV3Schema``, closed the way the API server prunes (an unknown field fails).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ovn_underlay.cli import agent as agent_cmds
from ovn_underlay.cli import controller as controller_cmds
from ovn_underlay.cli.main import build_parser
from ovn_underlay.kube import underlay_node as un
from tests.deploy.rbac import DEPLOY, load_manifests

VERSIONS = ("1.30", kubernetes_validate.latest_version().rsplit(".", 1)[0])
"""The oldest Kubernetes the manifests support (ValidatingAdmissionPolicy v1, node names
in service account tokens) and the newest whose schemas the package has."""
MANIFESTS = load_manifests()


def _name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema, for every CRD version in deploy/."""
    out = {}
    for crd in (o for o in MANIFESTS if o["kind"] == "CustomResourceDefinition"):
        spec = crd["spec"]
        for version in spec["versions"]:
            out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = \
                version["schema"]["openAPIV3Schema"]
    return out


CRDS = _crds()


def closed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` wherever it lists properties and
    neither allows other ones nor preserves unknown fields: what the API server keeps
    of an object (it prunes the rest)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = closed(value)
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def validate_custom(obj: Mapping[str, Any]) -> None:
    """Validate a custom resource against its CRD's schema (metadata is the server's)."""
    schema = closed(CRDS[(obj["apiVersion"], obj["kind"])])
    schema["properties"] = {**schema["properties"], "apiVersion": {"type": "string"},
                            "kind": {"type": "string"}, "metadata": {"type": "object"}}
    jsonschema.Draft202012Validator(schema).validate(obj)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("obj", MANIFESTS, ids=_name)
def test_manifest_valid(obj: dict[str, Any], version: str) -> None:
    if (obj["apiVersion"], obj["kind"]) in CRDS:
        validate_custom(obj)
        return
    kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_refuses_a_misspelt_field() -> None:
    daemonset = next(o for o in MANIFESTS if o["kind"] == "DaemonSet")
    broken = yaml.safe_load(yaml.safe_dump(daemonset))
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_underlay_node_from_the_schema_module_fits_the_crd() -> None:
    """What the agent and the controller write, built by kube/underlay_node.py, is what
    the CRD keeps: nothing pruned, every type right."""
    port = un.Port(name="p1", mac="0a:00:00:00:00:01", ip="198.19.1.10", tag=1)
    status = un.Status(switch="node-n1", subnet="198.19.1.0/24", router="ovn-underlay",
                       gateway_ip="198.19.1.1", gateway_mac="0a:00:00:00:00:fe",
                       parent="vm1-port", mgmt=port, ports=(port,),
                       host_addresses=("10.0.0.11",),
                       security_groups={"p1": ("sg-a",)}, refused={"p2": "not allowed"},
                       observed_generation=3)
    obj: dict[str, Any] = {
        "apiVersion": un.API_VERSION, "kind": un.KIND, "metadata": {"name": "n1"},
        "spec": {"poolPorts": 4, "pods": {
            "p1": un.PodClaim("default", "web", "c0ffee", ("sg-a",)).to_dict(),
            "p2": un.PodClaim("default", "db", "beef").to_dict()}},
        "status": {**status.to_dict(), "conditions": [
            {"type": un.READY, "status": "True", "reason": "NetworkReady",
             "message": "", "lastTransitionTime": "2026-12-01T12:00:00Z"}]}}
    empty = [k for k, v in status.to_dict().items() if v in ("", 0, [], {}, None)]
    assert not empty, f"give these a value, so that their type is checked: {empty}"
    validate_custom(obj)
    assert un.Status.from_object(obj) == dataclasses.replace(status, ready=True,
                                                             reason="NetworkReady")
    obj["status"]["ports"][0]["vlan"] = 1
    with pytest.raises(jsonschema.ValidationError, match="vlan"):
        validate_custom(obj)


def _pod_templates() -> list[tuple[str, dict[str, Any]]]:
    return [(_name(o), o["spec"]["template"]["spec"]) for o in MANIFESTS
            if o["kind"] in ("DaemonSet", "Deployment")]


@pytest.mark.parametrize(("workload", "pod"), _pod_templates(),
                         ids=[name for name, _ in _pod_templates()])
def test_what_a_pod_template_names_exists(workload: str, pod: dict[str, Any]) -> None:
    """ServiceAccounts and ConfigMaps named by a workload are in deploy/ (or optional, as
    the operator's Secrets and the API endpoint ConfigMap are)."""
    have = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in MANIFESTS}
    namespace = next(o for o in MANIFESTS if _name(o) == workload)["metadata"]["namespace"]
    assert ("ServiceAccount", namespace, pod["serviceAccountName"]) in have
    for volume in pod.get("volumes", []):
        for kind, key, field in (("ConfigMap", "configMap", "name"),
                                 ("Secret", "secret", "secretName")):
            source = volume.get(key)
            if source and not source.get("optional"):
                assert (kind, namespace, source[field]) in have, volume
    for container in pod["containers"]:
        for ref in container.get("envFrom", []):
            source = ref.get("configMapRef") or ref.get("secretRef")
            assert source.get("optional"), ref
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod.get("volumes", [])}


def test_config_maps_are_mounted_where_the_commands_read_them() -> None:
    """The agent's settings at /etc/ovn-underlay/agent, the controller's at
    /etc/ovn-underlay/controller, each a ConfigMap named as its workload."""
    for workload, pod in _pod_templates():
        command = pod["containers"][0]["command"]
        role = command[1]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        volume = volumes[mounts[f"/etc/ovn-underlay/{role}"]]
        assert volume["configMap"]["name"] == f"ovn-underlay-{role}", workload
        assert pod["serviceAccountName"] == f"ovn-underlay-{role}", workload


@pytest.mark.parametrize("role", ["agent", "controller"])
def test_config_map_keys_are_the_commands_options(role: str, tmp_path: Path) -> None:
    """The ConfigMap, as its volume lays it out, read by the command's own settings
    reader: every key is an option (a misnamed one stops the process) and every value
    reaches it."""
    config_map = next(o for o in MANIFESTS if o["kind"] == "ConfigMap"
                      and o["metadata"]["name"] == f"ovn-underlay-{role}")
    for key, value in config_map["data"].items():
        (tmp_path / key).write_text(value)
    (tmp_path / "..data").mkdir()
    workload = next(o for o in MANIFESTS if o["kind"] in ("DaemonSet", "Deployment")
                    and o["spec"]["template"]["spec"]["serviceAccountName"]
                    == f"ovn-underlay-{role}")
    command = workload["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["ovn-k8s-underlay", role]
    args = build_parser().parse_args([*command[1:], "--config-dir", str(tmp_path)])
    reader = agent_cmds.with_config_dir if role == "agent" else controller_cmds.with_config_dir
    settings = vars(reader(args))
    for key, value in config_map["data"].items():
        assert str(settings[key.replace("-", "_")]) == value, key


def test_the_nb_ssl_secret_is_mounted_where_the_config_map_points(tmp_path: Path) -> None:
    """The optional Secret ovn-underlay-nb-ssl, read-only at the controller's NB_SSL_DIR;
    the ConfigMap's commented-out ssl: settings, uncommented, are controller options that
    name the Secret's keys (as deploy/README.md makes them) inside that mount."""
    pod = next(p for name, p in _pod_templates() if name == "Deployment/ovn-underlay-controller")
    mount = next(m for m in pod["containers"][0]["volumeMounts"]
                 if m["mountPath"] == controller_cmds.NB_SSL_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "ovn-underlay-nb-ssl", "optional": True,
                                "defaultMode": 0o440}
    commented = dict(re.findall(r"^  # (nb[a-z-]*): (\S+)$",
                                (DEPLOY / "controller-config.yaml").read_text(), re.M))
    assert set(commented) == {"nb", "nb-private-key", "nb-certificate", "nb-ca-cert"}
    assert commented["nb"].startswith("ssl:")
    secret_keys = re.findall(r"--from-file=(nb-[a-z-]+\.pem)=",
                             (DEPLOY / "README.md").read_text())
    paths = {key: value for key, value in commented.items() if key != "nb"}
    assert sorted(paths.values()) == sorted(f"{controller_cmds.NB_SSL_DIR}/{key}"
                                            for key in secret_keys)
    for key, value in commented.items():
        (tmp_path / key).write_text(value)
    args = build_parser().parse_args(["controller", "--config-dir", str(tmp_path)])
    settings = vars(controller_cmds.with_config_dir(args))
    for key, value in commented.items():
        assert settings[key.replace("-", "_")] == value, key


def test_containerfile_copies_what_exists() -> None:
    """Every path the image build copies from the repository is there."""
    top = DEPLOY.parent
    for line in (DEPLOY / "Containerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            for source in words[1:-1]:
                assert (top / source).exists(), source
    assert (top / "src" / "ovn_underlay" / "cni" / "shim.c").exists()


def test_manifest_files_parse_as_yaml_with_no_empty_documents() -> None:
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), Path(path).name


def test_the_readme_names_every_file_of_deploy() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.iterdir()):
        if path.name != "README.md":
            assert f"`{path.name}`" in readme, path.name
