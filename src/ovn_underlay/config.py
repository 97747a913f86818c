"""Node settings, kept where the seed kept them: the local Open_vSwitch row's external_ids.

``node-init`` writes the node's own settings and ``lswitch-setup`` adds the node
network's; the CNI plugin, the kubelet verbs and ``config show`` read them back.
Every key is prefixed :data:`~ovn_underlay.names.EXT_PREFIX`, except the seed's ``neutron-config``
(path of an openrc file), kept under its original name for compatibility.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from ipaddress import IPv4Interface, ip_interface

from ovn_underlay.cni import wire
from ovn_underlay.names import EXT_PREFIX

DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_STATE_DIR = "/var/lib/ovn-underlay"
DEFAULT_BRIDGE = "br-int"
DEFAULT_MGMT_TAG = 4094
DEFAULT_DAEMON_SOCKET = wire.DEFAULT_SOCKET
CHILD_PORT_MODES = ("trunk", "binding-profile")
"""Neutron child ports: trunk subports (default) or the seed's binding:profile."""
DEFAULT_CHILD_PORTS = CHILD_PORT_MODES[0]
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9476"
METRICS_OFF = "off"
DEFAULT_POOL_LOW = 8
DEFAULT_POOL_HIGH = 32
DEFAULT_POOL_BATCH = 16
BACKENDS = ("ovn", "neutron", "cluster")
"""Control planes: OVN NB and Neutron (node-local credentials), or ``cluster``: the
node holds none, its requests go to the cluster controller through its UnderlayNode."""
CLUSTER_BACKEND = BACKENDS[2]
SEED_KEYS = {"neutron_config": "neutron-config"}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to set it."""


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node knows about itself and its network."""

    backend: str = "ovn"
    nb: str = ""
    nb_private_key: str = ""
    nb_certificate: str = ""
    nb_ca_cert: str = ""
    """With an ``ssl:`` nb: the client's PEM files (:class:`~ovn_underlay.nb_ssl.NbSsl`)."""
    neutron_config: str = ""
    neutron_cloud: str = ""
    child_ports: str = DEFAULT_CHILD_PORTS
    kubeconfig: str = ""
    node_name: str = ""
    parent: str = ""
    bridge: str = DEFAULT_BRIDGE
    datapath: str = ""
    uplink: str = ""
    uplink_mode: str = "ovs"
    state_dir: str = DEFAULT_STATE_DIR
    mtu: int = 0
    cluster_subnet: str = ""
    mgmt_tag: int = DEFAULT_MGMT_TAG
    switch: str = ""
    subnet: str = ""
    router: str = ""
    gateway_ip: str = ""
    gateway_mac: str = ""
    mgmt_port: str = ""
    mgmt_mac: str = ""
    mgmt_ip: str = ""
    daemon_socket: str = DEFAULT_DAEMON_SOCKET
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    pool_low: int = DEFAULT_POOL_LOW
    pool_high: int = DEFAULT_POOL_HIGH
    pool_batch: int = DEFAULT_POOL_BATCH
    pool_size: int = 0
    cni_conf_dir: str = ""
    """Where node-init --install-cni put the conflist's directory ("": the CNI is not
    installed by us); the conflist itself is written once the node can serve pods."""
    cni_version: str = ""
    cni_log_file: str = ""

    @property
    def pool_path(self) -> str:
        """The pool database of this node."""
        return f"{self.state_dir.rstrip('/')}/pool.db"

    @property
    def userspace_datapath(self) -> bool:
        """Whether br-int runs on OVS's userspace (netdev) datapath, not the kernel module's."""
        return self.datapath == "netdev"

    @property
    def has_network(self) -> bool:
        """Whether lswitch-setup has run on this node."""
        return all(getattr(self, name) for name in NETWORK_REQUIRED)

    def require_network(self) -> None:
        """Raise ConfigError unless lswitch-setup has run (:attr:`has_network`)."""
        self.require(*NETWORK_REQUIRED)

    @property
    def mgmt_interface(self) -> IPv4Interface:
        """The management port's address with the node subnet's prefix."""
        prefix = self.subnet.split("/")[1]
        iface = ip_interface(f"{self.mgmt_ip}/{prefix}")
        assert isinstance(iface, IPv4Interface)
        return iface

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every required setting that is empty."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            keys = ", ".join(key_of(n) for n in missing)
            raise ConfigError(f"node setting(s) {keys} not set: run 'ovn-k8s-underlay "
                              "node-init' (and 'lswitch-setup') on this node first")


def key_of(field_name: str) -> str:
    """The external_ids key that holds a NodeConfig field."""
    return SEED_KEYS.get(field_name, EXT_PREFIX + field_name.replace("_", "-"))


NETWORK_REQUIRED = ("switch", "subnet", "gateway_ip")
"""The settings :attr:`NodeConfig.has_network` looks at."""
NETWORK_FIELDS = ("switch", "subnet", "router", "gateway_ip", "gateway_mac", "mgmt_port",
                  "mgmt_mac", "mgmt_ip", "pool_size")
DAEMON_FIELDS = ("daemon_socket", "metrics_address", "pool_low", "pool_high", "pool_batch")
"""The node daemon's settings: its socket, metrics endpoint and pool watermarks."""
NB_SSL_FIELDS = ("nb_private_key", "nb_certificate", "nb_ca_cert")
"""What node-init --nb-private-key, --nb-certificate and --nb-ca-cert record."""
CNI_FIELDS = ("cni_conf_dir", "cni_version", "cni_log_file")
"""What node-init --install-cni records, to write the conflist once the node is ready."""


def from_external_ids(ext: Mapping[str, str]) -> NodeConfig:
    """Parse the Open_vSwitch row's external_ids (unknown keys are ignored)."""
    values: dict[str, str | int] = {}
    for f in fields(NodeConfig):
        raw = ext.get(key_of(f.name))
        if raw is None or raw == "":
            continue
        if f.type == "int":
            try:
                values[f.name] = int(raw)
            except ValueError as exc:
                raise ConfigError(f"external_ids:{key_of(f.name)}={raw!r} is not a "
                                  "number") from exc
        else:
            values[f.name] = raw
    return NodeConfig(**values)  # type: ignore[arg-type]


def to_external_ids(cfg: NodeConfig, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The given (default: all non-empty) fields as external_ids entries."""
    chosen = names if names is not None else tuple(f.name for f in fields(NodeConfig))
    out = {}
    for name in chosen:
        value = getattr(cfg, name)
        if value not in ("", 0):
            out[key_of(name)] = str(value)
    return out


def describe(cfg: NodeConfig) -> list[tuple[str, str]]:
    """(key, value) pairs for ``config show``; secrets never appear (none are stored)."""
    return [(key_of(f.name), str(getattr(cfg, f.name)) if getattr(cfg, f.name) != "" else "-")
            for f in fields(NodeConfig)]
