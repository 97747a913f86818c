"""Neutron credentials: the seed's openrc file, a clouds.yaml cloud, or OS_* variables.

The node's settings name where the credentials are, first match wins:

1. ``external_ids:neutron-config``: the path of an openrc file, the seed's way
   (``OS_AUTH_URL``, ``OS_USERNAME``, ``OS_PASSWORD``, ``OS_TENANT_ID`` or
   ``OS_PROJECT_ID``, ``OS_TENANT_NAME`` or ``OS_PROJECT_NAME``, ``OS_VIF_ID``;
   ``export`` prefixes, quotes and comments allowed, no shell expansion);
2. ``ovn-underlay:neutron-cloud``: a cloud of a clouds.yaml file, found where
   openstacksdk looks for it;
3. ``OS_*`` variables in the environment (``OS_CLOUD`` naming a cloud, or the
   same variables as an openrc file).

Secrets (password, token, application credential secret) are kept out of
``repr`` and :meth:`Credentials.mask` blanks them out of any text, so that no
log line, error message or ``config show`` output carries one.  An openrc
that other users can read is reported with a warning.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ovn_underlay.config import ConfigError, NodeConfig, key_of

LOG = logging.getLogger(__name__)
MASK = "***"
AUTH_NONE = "none"
AUTH_PASSWORD = "password"

_AUTH_KEYS = {
    "OS_AUTH_URL": "auth_url",
    "OS_USERNAME": "username",
    "OS_USER_ID": "user_id",
    "OS_PASSWORD": "password",
    "OS_TENANT_ID": "project_id",
    "OS_PROJECT_ID": "project_id",
    "OS_TENANT_NAME": "project_name",
    "OS_PROJECT_NAME": "project_name",
    "OS_USER_DOMAIN_NAME": "user_domain_name",
    "OS_USER_DOMAIN_ID": "user_domain_id",
    "OS_PROJECT_DOMAIN_NAME": "project_domain_name",
    "OS_PROJECT_DOMAIN_ID": "project_domain_id",
    "OS_TOKEN": "token",
    "OS_APPLICATION_CREDENTIAL_ID": "application_credential_id",
    "OS_APPLICATION_CREDENTIAL_NAME": "application_credential_name",
    "OS_APPLICATION_CREDENTIAL_SECRET": "application_credential_secret",
}
"""openrc variable -> keystoneauth option.  Later spellings (OS_PROJECT_*) win."""

_OPTION_KEYS = {
    "OS_REGION_NAME": "region_name",
    "OS_INTERFACE": "interface",
    "OS_CACERT": "cacert",
    "OS_NETWORK_ENDPOINT_OVERRIDE": "network_endpoint_override",
    "OS_LOAD_BALANCER_ENDPOINT_OVERRIDE": "load_balancer_endpoint_override",
}
SECRET_OPTIONS = ("password", "token", "application_credential_secret")
VIF_ID = "OS_VIF_ID"
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Credentials:
    """How to reach and authenticate to Neutron, and this VM's own port."""

    source: str
    """Where they came from, for messages: "openrc /root/openrc", "clouds.yaml cloud x"."""
    auth_type: str = AUTH_PASSWORD
    auth: Mapping[str, str] = field(default_factory=dict, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    cloud: str = ""
    vif_id: str = ""

    @property
    def auth_url(self) -> str:
        """The identity service's URL ('' for a cloud or without authentication)."""
        return self.auth.get("auth_url", "")

    @property
    def endpoint(self) -> str:
        """Where requests go: the network endpoint override, else the auth URL."""
        return str(self.options.get("network_endpoint_override") or self.auth_url)

    def secrets(self) -> tuple[str, ...]:
        """The secret values, longest first (so that masking never leaves a tail)."""
        values = {self.auth[k] for k in SECRET_OPTIONS if self.auth.get(k)}
        return tuple(sorted(values, key=len, reverse=True))

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``openstack.connect`` (a cloud name, or the settings)."""
        if self.cloud:
            return {"cloud": self.cloud, **self.options}
        kwargs: dict[str, Any] = {"auth_type": self.auth_type, **self.options}
        if self.auth:
            kwargs["auth"] = dict(self.auth)
        return kwargs

    def describe(self) -> str:
        """A one-line summary without secrets."""
        if self.cloud:
            return f"{self.source}"
        who = self.auth.get("username") or self.auth.get("user_id") or "-"
        project = self.auth.get("project_name") or self.auth.get("project_id") or "-"
        if self.auth_type == AUTH_NONE:
            return f"{self.source}: no authentication, Neutron at {self.endpoint}"
        return f"{self.source}: user {who}, project {project} at {self.auth_url}"


def parse_openrc(text: str, where: str = "openrc") -> dict[str, str]:
    """The ``NAME=value`` assignments of an openrc file (``export`` and quotes allowed).

    Lines that are not assignments (``unset``, ``echo``, prompts) are skipped:
    nothing is executed and ``$VAR`` is not expanded.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{where} line {number}: {exc} (unbalanced quotes?)") from exc
        if words[:1] == ["export"]:
            words = words[1:]
        if len(words) != 1 or "=" not in words[0]:
            continue
        name, value = words[0].split("=", 1)
        if name.isidentifier():
            values[name] = value
    return values


def from_variables(variables: Mapping[str, str], source: str) -> Credentials:
    """Credentials from OS_* variables (an openrc file's or the environment's)."""
    auth: dict[str, str] = {}
    for name, option in _AUTH_KEYS.items():
        if variables.get(name):
            auth[option] = variables[name]
    options: dict[str, Any] = {option: variables[name] for name, option in _OPTION_KEYS.items()
                               if variables.get(name)}
    if variables.get("OS_INSECURE", "").lower() in _TRUE:
        options["verify"] = False
    auth_type = variables.get("OS_AUTH_TYPE") or _guess_auth_type(auth)
    creds = Credentials(source=source, auth_type=auth_type, auth=auth, options=options,
                        vif_id=variables.get(VIF_ID, ""))
    _check_complete(creds)
    if auth_type != AUTH_NONE and "auth_url" in auth:
        creds = _with_default_domains(creds)
    return creds


def _guess_auth_type(auth: Mapping[str, str]) -> str:
    if "application_credential_secret" in auth:
        return "v3applicationcredential"
    if "token" in auth and "password" not in auth:
        return "token"
    return AUTH_PASSWORD


def _with_default_domains(creds: Credentials) -> Credentials:
    """Domains default to "Default" when none is given (the seed's openrc names none)."""
    auth = dict(creds.auth)
    if creds.auth_type == AUTH_PASSWORD and "user_domain_id" not in auth:
        auth.setdefault("user_domain_name", "Default")
    if "project_name" in auth and "project_domain_id" not in auth:
        auth.setdefault("project_domain_name", "Default")
    return Credentials(creds.source, creds.auth_type, auth, creds.options, creds.cloud,
                       creds.vif_id)


def _check_complete(creds: Credentials) -> None:
    """Raise ConfigError naming the variables the chosen authentication lacks."""
    auth = creds.auth
    missing: list[str] = []
    if creds.auth_type == AUTH_NONE:
        if not creds.options.get("network_endpoint_override"):
            missing.append("OS_NETWORK_ENDPOINT_OVERRIDE (Neutron's URL, needed without "
                           "authentication)")
    else:
        if "auth_url" not in auth:
            missing.append("OS_AUTH_URL")
        if creds.auth_type == AUTH_PASSWORD:
            if not ({"username", "user_id"} & auth.keys()):
                missing.append("OS_USERNAME")
            if "password" not in auth:
                missing.append("OS_PASSWORD")
            if not ({"project_id", "project_name"} & auth.keys()):
                missing.append("OS_PROJECT_NAME or OS_PROJECT_ID (or OS_TENANT_NAME/_ID)")
    if missing:
        raise ConfigError(f"Neutron credentials from {creds.source} lack "
                          f"{', '.join(missing)}")


def load_openrc(path: str) -> Credentials:
    """Credentials from the openrc file at ``path``; warns when others can read it."""
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the openrc file {path} ({key_of('neutron_config')}): "
                          f"{exc.strerror}") from exc
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        LOG.warning("openrc %s is readable by other users (mode %o) and holds Neutron "
                    "credentials: chmod 600 it", path, stat.S_IMODE(mode))
    return from_variables(parse_openrc(text, path), f"openrc {path}")


def from_cloud(name: str, vif_id: str = "") -> Credentials:
    """Credentials of the clouds.yaml cloud ``name`` (resolved by openstacksdk)."""
    from openstack import config as os_config
    from openstack import exceptions as os_exceptions

    try:
        region = os_config.OpenStackConfig().get_one(cloud=name)
    except (os_exceptions.ConfigException, KeyError) as exc:
        raise ConfigError(f"clouds.yaml cloud {name!r} ({key_of('neutron_cloud')}): "
                          f"{exc}") from exc
    auth = {k: str(v) for k, v in (region.config.get("auth") or {}).items() if v}
    return Credentials(source=f"clouds.yaml cloud {name!r}", auth_type=str(
        region.config.get("auth_type") or AUTH_PASSWORD), auth=auth, cloud=name,
        vif_id=vif_id)


def load(cfg: NodeConfig, environ: Mapping[str, str] | None = None) -> Credentials:
    """The node's Neutron credentials: openrc, else clouds.yaml cloud, else environment."""
    env = os.environ if environ is None else environ
    if cfg.neutron_config:
        return load_openrc(cfg.neutron_config)
    if cfg.neutron_cloud:
        return from_cloud(cfg.neutron_cloud, env.get(VIF_ID, ""))
    if env.get("OS_CLOUD"):
        return from_cloud(env["OS_CLOUD"], env.get(VIF_ID, ""))
    if any(name.startswith("OS_") for name in env):
        return from_variables(env, "the OS_* environment variables")
    raise ConfigError(f"no Neutron credentials: set {key_of('neutron_config')} to an openrc "
                      f"file (node-init --neutron-config), {key_of('neutron_cloud')} to a "
                      "clouds.yaml cloud (--neutron-cloud), or OS_* environment variables")


def parent_port(creds: Credentials, recorded: str = "") -> str:
    """This VM's Neutron port: the credentials' OS_VIF_ID, else the ``recorded`` one."""
    parent = creds.vif_id or recorded
    if not parent:
        raise ConfigError(f"{VIF_ID} is not set in {creds.source}: it names this VM's own "
                          "Neutron port, the parent of the pods' ports; add "
                          f"{VIF_ID}=<port id> or pass node-init --parent")
    return parent
