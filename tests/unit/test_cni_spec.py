"""CNI types, request validation and result conversion (ovn_underlay.cni.spec)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ovn_underlay.cni import spec
from ovn_underlay.cni.spec import (
    DNS,
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_INVALID_NETNS,
    SUPPORTED_VERSIONS,
    CniError,
    Interface,
    IPConfig,
    Request,
    Result,
    Route,
    merge_result,
    parse_cni_args,
    parse_request,
    read_config,
    request_from_config,
    result_from_dict,
    result_to_dict,
)
from tests.unit.cni_requests import CONTAINER_ID, make_config, make_env

OWN_NETNS = "/proc/self/ns/net"

SAMPLE = Result(
    interfaces=(Interface("eth0", "0a:58:0a:00:00:05", "/var/run/netns/pod", mtu=1400),),
    ips=(IPConfig("10.0.0.5/24", "10.0.0.1", 0), IPConfig("fd00::5/64", "fd00::1", 0)),
    routes=(Route("0.0.0.0/0", "10.0.0.1"), Route("10.96.0.0/12", mtu=1300, priority=10)),
    dns=DNS(nameservers=("10.96.0.10",), search=("default.svc.cluster.local",),
            options=("ndots:5",)),
)
SAMPLE_DNS_JSON = {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"],
                   "options": ["ndots:5"]}

# The chained ADD example of the 0.4.0 spec: bridge's result as prevResult of the next plugin.
PREV_RESULT_040: dict[str, Any] = {
    "cniVersion": "0.4.0",
    "ips": [{"version": "4", "address": "10.0.0.5/32", "interface": 2}],
    "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "veth3243", "mac": "55:44:33:22:11:11"},
        {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"},
    ],
    "dns": {"nameservers": ["10.1.0.1"]},
}

# A 1.0.0 result as the 1.0 spec shows it: no "version" in ips.
PREV_RESULT_100: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "veth3243", "mac": "55:44:33:22:11:11"},
        {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"},
    ],
    "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.1.0.1"]},
}


def error_of(environ: dict[str, str], stdin: bytes) -> CniError:
    with pytest.raises(CniError) as info:
        parse_request(environ, stdin)
    return info.value


# --- result_to_dict -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_shape_0_3_and_0_4_carries_ip_version_and_no_1_1_fields(version: str) -> None:
    assert result_to_dict(SAMPLE, version) == {
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05",
                        "sandbox": "/var/run/netns/pod"}],
        "ips": [
            {"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
            {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "10.96.0.0/12"}],
        "dns": SAMPLE_DNS_JSON,
    }


def test_result_shape_1_0_0_has_no_ip_version() -> None:
    assert result_to_dict(SAMPLE, "1.0.0") == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05",
                        "sandbox": "/var/run/netns/pod"}],
        "ips": [
            {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
            {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "10.96.0.0/12"}],
        "dns": SAMPLE_DNS_JSON,
    }


def test_result_shape_1_1_0_adds_interface_mtu_and_route_attributes() -> None:
    assert result_to_dict(SAMPLE, "1.1.0") == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05",
                        "sandbox": "/var/run/netns/pod", "mtu": 1400}],
        "ips": [
            {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0},
            {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
                   {"dst": "10.96.0.0/12", "mtu": 1300, "priority": 10}],
        "dns": SAMPLE_DNS_JSON,
    }


def test_result_1_1_0_interface_socket_path_and_pci_id() -> None:
    iface = Interface("net1", "", socket_path="/run/vhost.sock", pci_id="0000:00:1f.0")
    assert result_to_dict(Result(interfaces=(iface,)), "1.1.0")["interfaces"] == [
        {"name": "net1", "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.0"}]
    assert result_to_dict(Result(interfaces=(iface,)), "1.0.0")["interfaces"] == [
        {"name": "net1"}]


def test_result_omits_empty_parts_and_optional_fields() -> None:
    minimal = Result(interfaces=(Interface("eth0", ""),), ips=(IPConfig("10.0.0.5/24"),),
                     dns=DNS())
    assert result_to_dict(minimal, "1.0.0") == {
        "cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
        "ips": [{"address": "10.0.0.5/24"}]}
    assert result_to_dict(Result(), "0.4.0") == {"cniVersion": "0.4.0"}


def test_result_in_unsupported_version_is_refused() -> None:
    with pytest.raises(CniError) as info:
        result_to_dict(SAMPLE, "0.2.0")
    assert info.value.code == ERR_INCOMPATIBLE_VERSION


def test_result_is_json_serialisable() -> None:
    for version in SUPPORTED_VERSIONS:
        assert json.loads(json.dumps(result_to_dict(SAMPLE, version)))["cniVersion"] == version


# --- result_from_dict -----------------------------------------------------------------------


def test_result_from_0_4_0_dict() -> None:
    result = result_from_dict(PREV_RESULT_040)
    assert result == Result(
        interfaces=(Interface("cni0", "00:11:22:33:44:55"),
                    Interface("veth3243", "55:44:33:22:11:11"),
                    Interface("eth0", "99:88:77:66:55:44", "/var/run/netns/blue")),
        ips=(IPConfig("10.0.0.5/32", None, 2),),
        dns=DNS(nameservers=("10.1.0.1",)),
    )


def test_result_from_1_0_0_dict() -> None:
    result = result_from_dict(PREV_RESULT_100)
    assert result.ips == (IPConfig("10.1.0.5/16", "10.1.0.1", 2),)
    assert result.routes == (Route("0.0.0.0/0"),)
    assert [iface.name for iface in result.interfaces] == ["cni0", "veth3243", "eth0"]


def test_result_from_dict_without_cni_version_or_interfaces() -> None:
    """An IPAM-style result: no interfaces, no indexes, no cniVersion."""
    result = result_from_dict({"ips": [{"address": "192.0.2.7/24", "gateway": "192.0.2.1"}]})
    assert result == Result(ips=(IPConfig("192.0.2.7/24", "192.0.2.1", None),))


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_round_trips_through_every_version(version: str) -> None:
    parsed = result_from_dict(result_to_dict(SAMPLE, version))
    if version == "1.1.0":
        assert parsed == SAMPLE
    else:  # the 1.1.0-only attributes are not part of older shapes
        assert parsed.ips == SAMPLE.ips
        assert parsed.interfaces == (Interface("eth0", "0a:58:0a:00:00:05",
                                               "/var/run/netns/pod"),)
        assert parsed.routes == (Route("0.0.0.0/0", "10.0.0.1"), Route("10.96.0.0/12"))
        assert parsed.dns == SAMPLE.dns


def test_result_from_dict_drops_empty_dns() -> None:
    assert result_from_dict({"cniVersion": "1.0.0", "dns": {}}).dns is None


@pytest.mark.parametrize(("data", "where"), [
    ([], "result"),
    ({"interfaces": {}}, "result.interfaces"),
    ({"interfaces": ["eth0"]}, "interfaces[0]"),
    ({"interfaces": [{"mac": "00:11:22:33:44:55"}]}, "interfaces[0].name"),
    ({"interfaces": [{"name": "eth0", "mtu": "1500"}]}, "interfaces[0].mtu"),
    ({"ips": [{"gateway": "10.0.0.1"}]}, "ips[0].address"),
    ({"ips": [{"address": "10.0.0.5"}]}, "ips[0].address"),
    ({"ips": [{"address": "10.0.0.500/24"}]}, "ips[0].address"),
    ({"ips": [{"address": "10.0.0.5/24", "version": "6"}]}, "ips[0].version"),
    ({"ips": [{"address": "10.0.0.5/24", "gateway": "gw"}]}, "ips[0].gateway"),
    ({"ips": [{"address": "10.0.0.5/24", "interface": 0}]}, "ips[0].interface"),
    ({"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.5/24", "interface": -1}]},
     "ips[0].interface"),
    ({"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.5/24", "interface": True}]},
     "ips[0].interface"),
    ({"routes": [{"gw": "10.0.0.1"}]}, "routes[0].dst"),
    ({"routes": [{"dst": "default"}]}, "routes[0].dst"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.256"}]}, "routes[0].gw"),
    ({"dns": ["10.0.0.1"]}, "dns"),
    ({"dns": {"nameservers": [10]}}, "dns.nameservers"),
])
def test_malformed_result_is_a_decode_error(data: Any, where: str) -> None:
    with pytest.raises(CniError) as info:
        result_from_dict(data)
    assert info.value.code == ERR_DECODE
    assert info.value.details.startswith(f"{where}:")


def test_result_of_unsupported_version_is_an_invalid_config() -> None:
    with pytest.raises(CniError) as info:
        result_from_dict({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.5/24"}})
    assert info.value.code == ERR_INVALID_CONFIG


# --- merge_result ---------------------------------------------------------------------------


OURS = Result(
    interfaces=(Interface("ovn1a2b3c4d5e6", "0a:58:0a:00:00:09"),
                Interface("net1", "0a:58:0a:00:00:09", "/var/run/netns/blue")),
    ips=(IPConfig("192.0.2.9/24", "192.0.2.1", 1), IPConfig("198.51.100.9/24")),
    routes=(Route("192.0.2.0/24", "192.0.2.1"),),
)


def test_merge_without_prev_result_is_ours() -> None:
    assert merge_result(None, OURS) is OURS


@pytest.mark.parametrize("prev_json", [PREV_RESULT_040, PREV_RESULT_100], ids=["0.4.0", "1.0.0"])
def test_merge_appends_and_reindexes_our_interfaces(prev_json: dict[str, Any]) -> None:
    prev = result_from_dict(prev_json)
    merged = merge_result(prev, OURS)
    assert merged.interfaces == prev.interfaces + OURS.interfaces
    assert merged.ips[:len(prev.ips)] == prev.ips
    assert merged.ips[len(prev.ips):] == (IPConfig("192.0.2.9/24", "192.0.2.1", 4),
                                          IPConfig("198.51.100.9/24"))
    assert merged.routes == prev.routes + OURS.routes
    assert merged.dns == DNS(nameservers=("10.1.0.1",))
    for ip in merged.ips:  # every index still names the interface it named before
        assert ip.interface is None or ip.interface < len(merged.interfaces)
    assert merged.interfaces[merged.ips[-2].interface or 0].name == "net1"


def test_merge_prefers_our_dns_when_set() -> None:
    ours = Result(dns=DNS(nameservers=("10.96.0.10",)))
    assert merge_result(result_from_dict(PREV_RESULT_040), ours).dns == ours.dns
    assert merge_result(result_from_dict(PREV_RESULT_040), Result(dns=DNS())).dns == DNS(
        nameservers=("10.1.0.1",))


# --- parse_request: the happy paths ---------------------------------------------------------


def test_parse_add(netns: str) -> None:
    request = parse_request(make_env("ADD", netns), make_config(cniVersion="1.0.0", mtu=1400))
    assert request == Request(
        command="ADD", container_id=CONTAINER_ID, netns=netns, ifname="eth0",
        args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"},
        path="/opt/cni/bin",
        config={"cniVersion": "1.0.0", "name": "underlay", "type": "ovn-underlay", "mtu": 1400},
        cni_version="1.0.0", prev_result=None, valid_attachments=None)
    assert (request.pod_namespace, request.pod_name) == ("default", "web-0")
    assert request.network_name == "underlay"


def test_pod_identity_is_empty_without_k8s_args(netns: str) -> None:
    request = parse_request(make_env("ADD", netns, CNI_ARGS=""), make_config())
    assert (request.args, request.pod_namespace, request.pod_name) == ({}, "", "")


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_supported_version_is_accepted(netns: str, version: str) -> None:
    assert parse_request(make_env("ADD", netns), make_config(cniVersion=version)).cni_version \
        == version


@pytest.mark.parametrize("prev_json", [PREV_RESULT_040, PREV_RESULT_100], ids=["0.4.0", "1.0.0"])
def test_prev_result_is_parsed(netns: str, prev_json: dict[str, Any]) -> None:
    config = make_config(cniVersion=prev_json["cniVersion"], prevResult=prev_json)
    request = parse_request(make_env("ADD", netns), config)
    assert request.prev_result == result_from_dict(prev_json)


@pytest.mark.parametrize("netns_value", ["", "/var/run/netns/gone"])
def test_del_tolerates_missing_or_vanished_netns(netns_value: str) -> None:
    request = parse_request(make_env("DEL", netns_value), make_config())
    assert (request.command, request.netns, request.ifname) == ("DEL", netns_value, "eth0")


@pytest.mark.parametrize("command", ["STATUS", "GC"])
def test_status_and_gc_need_no_attachment_environment(command: str) -> None:
    environ = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    request = parse_request(environ, make_config(**{"cni.dev/valid-attachments": []}))
    assert (request.container_id, request.netns, request.ifname) == ("", "", "")
    assert request.command == command


@pytest.mark.parametrize("stdin", [b"", b"not json", b'{"cniVersion": "9.9.9"}'])
def test_version_tolerates_any_stdin(stdin: bytes) -> None:
    request = parse_request({"CNI_COMMAND": "VERSION"}, stdin)
    assert (request.command, request.cni_version) == ("VERSION", "1.1.0")


def test_version_answers_in_the_requested_version() -> None:
    request = parse_request({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert request.cni_version == "0.4.0"


# --- request_from_config: stdin decoded once -------------------------------------------------


@pytest.mark.parametrize("stdin", [b"", b"{", b"\xff", b"[]", b'"x"'])
def test_read_config_returns_why_stdin_holds_no_configuration(stdin: bytes) -> None:
    problem = read_config(stdin)
    assert isinstance(problem, CniError)
    assert problem.code == ERR_DECODE


def test_read_config_returns_the_configuration() -> None:
    assert read_config(make_config(mtu=1400)) == json.loads(make_config(mtu=1400))


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])
def test_a_request_from_the_decoded_config_is_the_parsed_request(netns: str,
                                                                 command: str) -> None:
    environ = make_env(command, netns)
    stdin = make_config(prevResult={"cniVersion": "1.1.0", "ips": []},
                        **{"cni.dev/valid-attachments": []})
    config = json.loads(stdin)
    request = request_from_config(environ, config)
    assert request == parse_request(environ, stdin)
    assert request.config is config, "the decoded configuration is not decoded again"


def test_an_undecodable_config_is_refused_after_the_command_and_not_for_version(
        netns: str) -> None:
    problem = read_config(b"{")
    assert isinstance(problem, CniError)
    with pytest.raises(CniError) as unknown:
        request_from_config({"CNI_COMMAND": "FROB"}, problem)
    assert unknown.value.code == ERR_INVALID_ENV
    with pytest.raises(CniError) as undecodable:
        request_from_config(make_env("ADD", netns), problem)
    assert undecodable.value is problem
    version = request_from_config({"CNI_COMMAND": "VERSION"}, problem)
    assert (version.config, version.cni_version) == ({}, "1.1.0")


# --- parse_request: versions ----------------------------------------------------------------


@pytest.mark.parametrize(("offered", "chosen"), [
    (["0.4.0", "1.0.0", "1.1.0"], "1.1.0"),
    (["1.0.0", "0.3.1", "2.0.0"], "1.0.0"),
    (["0.1.0", "0.3.0"], "0.3.0"),
])
def test_cni_versions_selects_the_highest_supported(netns: str, offered: list[str],
                                                    chosen: str) -> None:
    config = make_config(cniVersion=None, cniVersions=offered)
    assert parse_request(make_env("ADD", netns), config).cni_version == chosen


def test_cni_version_wins_over_cni_versions(netns: str) -> None:
    config = make_config(cniVersion="0.4.0", cniVersions=["1.0.0", "1.1.0"])
    assert parse_request(make_env("ADD", netns), config).cni_version == "0.4.0"


@pytest.mark.parametrize("fields", [
    {"cniVersion": None},
    {"cniVersion": ""},
    {"cniVersion": None, "cniVersions": []},
    {"cniVersion": None, "cniVersions": "1.0.0"},
    {"cniVersion": None, "cniVersions": [1, 0]},
    {"cniVersion": 1.0},
])
def test_missing_or_malformed_version_is_an_invalid_config(netns: str,
                                                          fields: dict[str, Any]) -> None:
    assert error_of(make_env("ADD", netns), make_config(**fields)).code == ERR_INVALID_CONFIG


@pytest.mark.parametrize("fields", [
    {"cniVersion": "0.2.0"},
    {"cniVersion": "1.2.0"},
    {"cniVersion": "banana"},
    {"cniVersion": None, "cniVersions": ["0.1.0", "2.0.0"]},
])
def test_unsupported_version_is_incompatible(netns: str, fields: dict[str, Any]) -> None:
    err = error_of(make_env("ADD", netns), make_config(**fields))
    assert err.code == ERR_INCOMPATIBLE_VERSION
    assert all(version in err.details for version in SUPPORTED_VERSIONS)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_check_needs_0_4_0(netns: str, version: str) -> None:
    config = make_config(cniVersion=version, prevResult=PREV_RESULT_040)
    err = error_of(make_env("CHECK", netns), config)
    assert err.code == ERR_INCOMPATIBLE_VERSION
    assert "CHECK" in err.msg


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_from_0_4_0_on(netns: str, version: str) -> None:
    config = make_config(cniVersion=version, prevResult=PREV_RESULT_040)
    assert parse_request(make_env("CHECK", netns), config).prev_result is not None


def test_check_needs_a_prev_result(netns: str) -> None:
    assert error_of(make_env("CHECK", netns), make_config()).code == ERR_INVALID_CONFIG


@pytest.mark.parametrize("command", ["GC", "STATUS"])
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_gc_and_status_need_1_1_0(command: str, version: str) -> None:
    config = make_config(cniVersion=version, **{"cni.dev/valid-attachments": []})
    err = error_of({"CNI_COMMAND": command}, config)
    assert err.code == ERR_INCOMPATIBLE_VERSION
    assert command in err.msg


# --- parse_request: configuration -----------------------------------------------------------


@pytest.mark.parametrize("stdin", [b"", b"{", b'{"name": }', b"\xff\xfe\xfa", b"[]", b'"x"'])
def test_undecodable_configuration(netns: str, stdin: bytes) -> None:
    assert error_of(make_env("ADD", netns), stdin).code == ERR_DECODE


@pytest.mark.parametrize("fields", [
    {"name": None}, {"name": ""}, {"name": 7}, {"type": None}, {"type": ""},
    {"name": "-leading-dash"}, {"name": "has space"}, {"name": "a/b"},
])
def test_network_name_and_type_are_required(netns: str, fields: dict[str, Any]) -> None:
    assert error_of(make_env("ADD", netns), make_config(**fields)).code == ERR_INVALID_CONFIG


def test_invalid_prev_result(netns: str) -> None:
    config = make_config(prevResult={"ips": [{"address": "not-an-ip/24"}]})
    err = error_of(make_env("ADD", netns), config)
    assert (err.code, err.msg) == (ERR_DECODE, "invalid prevResult")
    assert "ips[0].address" in err.details


# --- parse_request: environment -------------------------------------------------------------


@pytest.mark.parametrize("command", [None, "", "add", "INIT", "DELETE"])
def test_unknown_or_missing_command(command: str | None) -> None:
    environ = {} if command is None else {"CNI_COMMAND": command}
    err = error_of(environ, make_config())
    assert err.code == ERR_INVALID_ENV
    assert "CNI_COMMAND" in err.msg


@pytest.mark.parametrize(("command", "variable"), [
    ("ADD", "CNI_CONTAINERID"), ("ADD", "CNI_NETNS"), ("ADD", "CNI_IFNAME"),
    ("CHECK", "CNI_CONTAINERID"), ("CHECK", "CNI_NETNS"), ("CHECK", "CNI_IFNAME"),
    ("DEL", "CNI_CONTAINERID"), ("DEL", "CNI_IFNAME"),
])
def test_missing_required_variable_is_named(netns: str, command: str, variable: str) -> None:
    config = make_config(prevResult=PREV_RESULT_100)
    err = error_of(make_env(command, netns, **{variable: ""}), config)
    assert err.code == ERR_INVALID_ENV
    assert variable in err.msg


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_netns_must_exist_for_add_and_check(tmp_path: Path, command: str) -> None:
    missing = str(tmp_path / "no-such-netns")
    err = error_of(make_env(command, missing), make_config(prevResult=PREV_RESULT_100))
    assert err.code == ERR_INVALID_ENV
    assert missing in err.msg


@pytest.mark.skipif(not os.path.exists(OWN_NETNS), reason="no /proc/self/ns/net")
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_plugin_own_netns_is_refused(command: str) -> None:
    err = error_of(make_env(command, OWN_NETNS), make_config())
    assert err.code == ERR_INVALID_NETNS
    assert OWN_NETNS in err.msg


@pytest.mark.parametrize("ifname", [
    "a" * 16, ".", "..", "eth/0", "eth:0", "eth 0", "eth\t0", "eth\n0", "eth\u00a00",
])
def test_invalid_ifname(netns: str, ifname: str) -> None:
    err = error_of(make_env("ADD", netns, CNI_IFNAME=ifname), make_config())
    assert err.code == ERR_INVALID_ENV
    assert "CNI_IFNAME" in err.msg


def test_ifname_limit_counts_utf8_bytes(netns: str) -> None:
    """The kernel's limit is IFNAMSIZ - 1 = 15 bytes: 9 two-byte characters are 18."""
    err = error_of(make_env("ADD", netns, CNI_IFNAME="\u00e9" * 9), make_config())
    assert err.code == ERR_INVALID_ENV
    assert "15 bytes" in err.details
    assert "18" in err.details


@pytest.mark.parametrize("ifname", ["a" * 15, "net1", "eth0.100", "e-t_h", "\u00e9" * 7 + "a"])
def test_valid_ifname(netns: str, ifname: str) -> None:
    assert parse_request(make_env("ADD", netns, CNI_IFNAME=ifname), make_config()).ifname \
        == ifname


@pytest.mark.parametrize("container_id", ["-abc", "_abc", ".abc", "ab c", "ab/c", "ab;c", "äb"])
def test_invalid_container_id(netns: str, container_id: str) -> None:
    err = error_of(make_env("ADD", netns, CNI_CONTAINERID=container_id), make_config())
    assert err.code == ERR_INVALID_ENV
    assert "CNI_CONTAINERID" in err.msg


@pytest.mark.parametrize("container_id", ["a", "9", "abc-DEF_1.2", CONTAINER_ID])
def test_valid_container_id(netns: str, container_id: str) -> None:
    request = parse_request(make_env("ADD", netns, CNI_CONTAINERID=container_id), make_config())
    assert request.container_id == container_id


def test_cni_args_parsing() -> None:
    assert parse_cni_args("") == {}
    assert parse_cni_args("A=1;B=;C=x y") == {"A": "1", "B": "", "C": "x y"}
    assert parse_cni_args("A=1;") == {"A": "1"}


@pytest.mark.parametrize("raw", ["FOO", "=bar", "A=1;B", "A=B=C"])
def test_malformed_cni_args(netns: str, raw: str) -> None:
    err = error_of(make_env("ADD", netns, CNI_ARGS=raw), make_config())
    assert err.code == ERR_INVALID_ENV
    assert "CNI_ARGS" in err.msg


# --- GC -------------------------------------------------------------------------------------


def gc_request(**fields: Any) -> Request:
    return parse_request({"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}, make_config(**fields))


def test_gc_valid_attachments() -> None:
    attachments = [{"containerID": CONTAINER_ID, "ifname": "eth0"},
                   {"containerID": CONTAINER_ID, "ifname": "net1"},
                   {"containerID": "other", "ifname": "eth0"}]
    request = gc_request(**{"cni.dev/valid-attachments": attachments})
    assert request.valid_attachments == ((CONTAINER_ID, "eth0"), (CONTAINER_ID, "net1"),
                                         ("other", "eth0"))


def test_gc_with_no_valid_attachments_is_an_empty_tuple() -> None:
    assert gc_request(**{"cni.dev/valid-attachments": []}).valid_attachments == ()


def test_gc_accepts_the_legacy_attachments_key() -> None:
    request = gc_request(**{"cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]})
    assert request.valid_attachments == (("c1", "eth0"),)


@pytest.mark.parametrize("attachments", [
    None, {}, "c1", [["c1", "eth0"]], [{"containerID": "c1"}], [{"ifname": "eth0"}],
    [{"containerID": "", "ifname": "eth0"}], [{"containerID": "c1", "ifname": 0}],
])
def test_gc_refuses_missing_or_malformed_attachments(attachments: Any) -> None:
    with pytest.raises(CniError) as info:
        gc_request(**{"cni.dev/valid-attachments": attachments})
    assert info.value.code == ERR_INVALID_CONFIG


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS"])
def test_valid_attachments_only_for_gc(netns: str, command: str) -> None:
    config = make_config(prevResult=PREV_RESULT_100,
                         **{"cni.dev/valid-attachments": [{"containerID": "c", "ifname": "e"}]})
    assert parse_request(make_env(command, netns), config).valid_attachments is None


# --- CniError -------------------------------------------------------------------------------


def test_error_to_dict() -> None:
    assert CniError(ERR_INVALID_ENV, "bad", "worse").to_dict("1.0.0") == {
        "cniVersion": "1.0.0", "code": 4, "msg": "bad", "details": "worse"}
    assert CniError(spec.ERR_TRY_AGAIN, "later").to_dict("0.4.0") == {
        "cniVersion": "0.4.0", "code": 11, "msg": "later"}
    assert str(CniError(ERR_INVALID_ENV, "bad", "worse")) == "bad: worse"


def test_error_codes() -> None:
    assert (spec.ERR_INCOMPATIBLE_VERSION, spec.ERR_UNSUPPORTED_FIELD, spec.ERR_UNKNOWN_CONTAINER,
            spec.ERR_INVALID_ENV, spec.ERR_IO, spec.ERR_DECODE, spec.ERR_INVALID_CONFIG,
            spec.ERR_TRY_AGAIN, spec.ERR_NOT_AVAILABLE,
            spec.ERR_LIMITED_CONNECTIVITY) == (1, 2, 3, 4, 5, 6, 7, 11, 50, 51)
    assert (spec.ERR_POOL_EXHAUSTED, spec.ERR_NOT_READY, spec.ERR_INTERNAL) == (100, 101, 102)
