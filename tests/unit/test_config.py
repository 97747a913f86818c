"""Node settings as stored in the Open_vSwitch external_ids."""

from __future__ import annotations

import pytest

from ovn_underlay.config import ConfigError, NodeConfig, from_external_ids, key_of, to_external_ids
from ovn_underlay.pods.network import default_pool_size


def test_settings_round_trip_through_external_ids() -> None:
    cfg = NodeConfig(nb="tcp:nb:6641", parent="vm-port", mtu=1450, mgmt_tag=100,
                     neutron_config="/root/openrc")
    ext = to_external_ids(cfg)
    assert ext["ovn-underlay:nb"] == "tcp:nb:6641"
    assert ext["neutron-config"] == "/root/openrc", "the seed's key keeps its name"
    assert ext["ovn-underlay:mtu"] == "1450"
    assert from_external_ids({**ext, "system-id": "other software's key"}) == cfg


def test_a_malformed_number_names_its_key() -> None:
    with pytest.raises(ConfigError, match="ovn-underlay:mtu"):
        from_external_ids({"ovn-underlay:mtu": "lots"})


def test_require_names_every_missing_setting_and_what_to_run() -> None:
    with pytest.raises(ConfigError) as err:
        NodeConfig(nb="unix:/x").require("nb", "parent", "switch")
    assert "ovn-underlay:parent" in str(err.value) and "ovn-underlay:switch" in str(err.value)
    assert "ovn-underlay:nb" not in str(err.value)
    assert "node-init" in str(err.value)


def test_pool_path_and_keys() -> None:
    assert NodeConfig(state_dir="/var/lib/x/").pool_path == "/var/lib/x/pool.db"
    assert key_of("cluster_subnet") == "ovn-underlay:cluster-subnet"


@pytest.mark.parametrize(("subnet", "size"), [("198.19.0.0/24", 252), ("198.19.0.0/30", 0),
                                              ("198.19.0.0/20", 4092)])
def test_default_pool_is_the_whole_subnet(subnet: str, size: int) -> None:
    assert default_pool_size(subnet) == size


def test_a_subnet_beyond_the_vlan_space_is_refused_with_a_way_out() -> None:
    with pytest.raises(ConfigError, match=r"/20 or smaller.*--pool-size"):
        default_pool_size("198.19.0.0/19")
