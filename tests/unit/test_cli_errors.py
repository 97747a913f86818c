"""What the command line says when it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovn_underlay.cli.main import main


def test_an_unreachable_ovs_database_says_how_to_name_the_right_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"unix:{tmp_path}/db.sock"
    assert main(["--ovsdb", missing, "config", "show"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the OVS database at {missing}" in err
    assert "--ovsdb or OVN_UNDERLAY_OVSDB" in err and "lab exec" in err


def test_other_errors_get_no_database_hint(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--rundir", str(tmp_path), "--name", "bad name!", "status"]) == 1
    assert "OVN_UNDERLAY_OVSDB" not in capsys.readouterr().err


def test_the_cni_version_help_says_why_the_default_and_what_1_1_0_costs(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside the version range
    with pytest.raises(SystemExit):
        main(["node-init", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0.3.0-1.1.0" in text and "containerd 1.6" in text and "STATUS and GC need 1.1.0" in text


def test_node_init_records_the_kubernetes_node_name() -> None:
    from ovn_underlay.cli.main import build_parser
    from ovn_underlay.cli.node_init import _overrides
    from ovn_underlay.dataplane.node_init import _NODE_FIELDS

    args = build_parser().parse_args(["node-init", "--node-name", "worker-1"])
    assert _overrides(args)["node_name"] == "worker-1"
    assert "node_name" in _NODE_FIELDS, "node-init writes it into the node's settings"
