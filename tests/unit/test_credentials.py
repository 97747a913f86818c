"""Neutron credentials: openrc parsing, sources and their order, secrets kept out of text."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from ovn_underlay.config import ConfigError, NodeConfig
from ovn_underlay.control import credentials
from ovn_underlay.control.base import ControlPlaneUnavailable
from ovn_underlay.control.neutron import NeutronControlPlane

SEED_OPENRC = """\
OS_AUTH_URL=http://10.33.74.255:5000/v2.0
OS_TENANT_ID=015058d74d1c444b871fc39dbd4442b8
OS_TENANT_NAME="demo"
OS_USERNAME="demo"
OS_PASSWORD="password"
OS_VIF_ID=2233c32a-4092-4d8b-b44d-1c54f666c507
"""
SECRET = "pa ss'w\"ord"


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "openrc") -> str:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_seeds_openrc_gives_password_auth_with_default_domains(tmp_path: Path) -> None:
    creds = credentials.load_openrc(write(tmp_path, SEED_OPENRC))
    assert creds.auth_type == "password"
    assert dict(creds.auth) == {
        "auth_url": "http://10.33.74.255:5000/v2.0", "username": "demo",
        "password": "password", "project_id": "015058d74d1c444b871fc39dbd4442b8",
        "project_name": "demo", "user_domain_name": "Default", "project_domain_name": "Default"}
    assert creds.vif_id == "2233c32a-4092-4d8b-b44d-1c54f666c507"
    assert creds.source == f"openrc {tmp_path / 'openrc'}"


def test_parse_openrc_takes_exports_quotes_and_comments_and_skips_the_rest() -> None:
    text = """#!/usr/bin/env bash
# comment
export OS_USERNAME='my user'   # trailing comment
OS_PASSWORD="a \\"quoted\\" one"
unset OS_TOKEN
echo "Please enter your password: "
read -sr OS_PASSWORD_INPUT
export OS_PROJECT_NAME=$OS_TENANT_NAME
NOT AN ASSIGNMENT
"""
    assert credentials.parse_openrc(text) == {
        "OS_USERNAME": "my user", "OS_PASSWORD": 'a "quoted" one',
        "OS_PROJECT_NAME": "$OS_TENANT_NAME"}


def test_an_unbalanced_quote_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"rc line 2: .*unbalanced quotes"):
        credentials.parse_openrc("OS_USERNAME=a\nOS_PASSWORD='open\n", "rc")


def test_project_spellings_win_over_tenant_ones() -> None:
    creds = credentials.from_variables({
        "OS_AUTH_URL": "http://k/v3", "OS_USERNAME": "u", "OS_PASSWORD": "p",
        "OS_TENANT_NAME": "old", "OS_PROJECT_NAME": "new", "OS_USER_DOMAIN_ID": "d1",
        "OS_REGION_NAME": "r1", "OS_INSECURE": "true"}, "test")
    assert creds.auth["project_name"] == "new"
    assert creds.auth["user_domain_id"] == "d1" and "user_domain_name" not in creds.auth
    assert creds.auth["project_domain_name"] == "Default"
    assert creds.options == {"region_name": "r1", "verify": False}


def test_missing_variables_are_all_named() -> None:
    with pytest.raises(ConfigError) as err:
        credentials.from_variables({"OS_USERNAME": "u"}, "openrc /x")
    assert str(err.value) == ("Neutron credentials from openrc /x lack OS_AUTH_URL, "
                              "OS_PASSWORD, OS_PROJECT_NAME or OS_PROJECT_ID (or "
                              "OS_TENANT_NAME/_ID)")


def test_without_authentication_neutrons_url_is_required() -> None:
    with pytest.raises(ConfigError, match="OS_NETWORK_ENDPOINT_OVERRIDE"):
        credentials.from_variables({"OS_AUTH_TYPE": "none"}, "test")
    creds = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                        "OS_NETWORK_ENDPOINT_OVERRIDE": "http://n:9696"}, "t")
    assert creds.connect_kwargs() == {"auth_type": "none",
                                      "network_endpoint_override": "http://n:9696"}


def test_secrets_stay_out_of_repr_descriptions_and_masked_text(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_OPENRC.replace('"password"', f"'{SECRET.replace(chr(39), '')}'")
                 + "OS_TOKEN=tok-123\n")
    creds = credentials.load_openrc(path)
    password = creds.auth["password"]
    assert password == SECRET.replace("'", "")
    for text in (repr(creds), creds.describe()):
        assert password not in text and "tok-123" not in text
    assert creds.mask(f"auth {password} and tok-123 failed") == "auth *** and *** failed"
    assert creds.connect_kwargs()["auth"]["password"] == password  # only where it is needed


def test_an_openrc_others_can_read_is_warned_about(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    private = write(tmp_path, SEED_OPENRC, 0o600, "private")
    shared = write(tmp_path, SEED_OPENRC, 0o640, "shared")
    with caplog.at_level(logging.WARNING, "ovn_underlay.control.credentials"):
        credentials.load_openrc(private)
        assert caplog.messages == []
        credentials.load_openrc(shared)
    assert caplog.messages == [f"openrc {shared} is readable by other users (mode 640) and "
                               "holds Neutron credentials: chmod 600 it"]
    assert "password" not in caplog.text


def test_an_unreadable_openrc_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the openrc file .*/absent "
                                          r"\(neutron-config\): No such file"):
        credentials.load_openrc(str(tmp_path / "absent"))


CLOUDS_YAML = """\
clouds:
  lab:
    auth:
      auth_url: http://keystone:5000/v3
      username: demo
      password: cloud-secret
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
"""


def test_sources_are_taken_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    openrc = write(tmp_path, SEED_OPENRC)
    clouds = write(tmp_path, CLOUDS_YAML, name="clouds.yaml")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", clouds)
    env = {"OS_AUTH_URL": "http://env/v3", "OS_USERNAME": "e", "OS_PASSWORD": "env-secret",
           "OS_PROJECT_NAME": "p", "OS_VIF_ID": "vif-from-env"}
    both = NodeConfig(neutron_config=openrc, neutron_cloud="lab")
    assert credentials.load(both, env).source == f"openrc {openrc}"
    cloud = credentials.load(NodeConfig(neutron_cloud="lab"), env)
    assert cloud.source == "clouds.yaml cloud 'lab'" and cloud.vif_id == "vif-from-env"
    assert cloud.connect_kwargs() == {"cloud": "lab"}
    assert cloud.mask("cloud-secret leaked") == "*** leaked"
    from_env = credentials.load(NodeConfig(), env)
    assert from_env.source == "the OS_* environment variables"
    assert from_env.auth["password"] == "env-secret"
    with pytest.raises(ConfigError, match="no Neutron credentials: set neutron-config"):
        credentials.load(NodeConfig(), {"PATH": "/bin"})


def test_an_unknown_cloud_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", write(tmp_path, CLOUDS_YAML, name="c.yaml"))
    with pytest.raises(ConfigError, match=r"clouds\.yaml cloud 'nope'"):
        credentials.load(NodeConfig(neutron_cloud="nope"), {})


def test_the_parent_port_is_os_vif_id_else_the_recorded_one() -> None:
    with_vif = credentials.from_variables({"OS_AUTH_TYPE": "none", "OS_VIF_ID": "vif",
                                           "OS_NETWORK_ENDPOINT_OVERRIDE": "http://n"}, "rc")
    without = credentials.from_variables({"OS_AUTH_TYPE": "none",
                                          "OS_NETWORK_ENDPOINT_OVERRIDE": "http://n"}, "rc")
    assert credentials.parent_port(with_vif, "recorded") == "vif"
    assert credentials.parent_port(without, "recorded") == "recorded"
    with pytest.raises(ConfigError, match="OS_VIF_ID is not set in rc: it names this VM's"):
        credentials.parent_port(without)


def closed_port() -> int:
    """A local TCP port where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_identity_service_is_unavailable_and_the_password_unseen() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v3"
    creds = credentials.from_variables({
        "OS_AUTH_URL": url, "OS_USERNAME": "demo", "OS_PASSWORD": "never-shown",
        "OS_PROJECT_NAME": "demo"}, "openrc /etc/x")
    control = NeutronControlPlane(creds, timeout=5)
    try:
        with pytest.raises(ControlPlaneUnavailable) as err:
            control.check_access("some-port")
    finally:
        control.close()
    message = str(err.value)
    assert message.startswith("look up parent port some-port: cannot reach http://127.0.0.1:")
    assert "(from openrc /etc/x): [Errno 111] Connection refused" in message
    assert "never-shown" not in message
