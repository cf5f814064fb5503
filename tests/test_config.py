"""The example config documents every key and parses; unknown keys are refused."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from publisher.config import load_config, parse_config
from publisher.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_parses_with_every_key() -> None:
    cfg = load_config(ROOT / "conf" / "aptship.toml")
    assert set(cfg.channels) == {"dev", "staging", "prod"}
    assert cfg.channel("prod").promote_from == ("staging",)
    assert cfg.channel("prod").keep == 20
    assert cfg.storage.path == ROOT / "conf" / "repo"


def test_example_config_mentions_every_server_and_storage_key() -> None:
    text = (ROOT / "conf" / "aptship.toml").read_text()
    from dataclasses import fields

    from publisher.config import (
        AptlyConfig,
        FleetConfig,
        LimitsConfig,
        ServerConfig,
        SigningConfig,
        StorageConfig,
    )

    for cls in (ServerConfig, StorageConfig, SigningConfig, AptlyConfig, FleetConfig, LimitsConfig):
        for f in fields(cls):
            assert re.search(rf"^#? ?{f.name} = ", text, re.M), (
                f"{cls.__name__}.{f.name} undocumented"
            )
    docs = (ROOT / "docs" / "config.md").read_text()
    for cls in (ServerConfig, StorageConfig, SigningConfig, AptlyConfig, FleetConfig, LimitsConfig):
        for f in fields(cls):
            assert f"`{f.name}`" in docs, f"docs/config.md lacks {f.name}"


def test_unknown_channel_key_is_refused(tmp_path: Path) -> None:
    data = tomllib.loads((ROOT / "conf" / "aptship.toml").read_text())
    data["channels"]["dev"]["kepp"] = 3
    with pytest.raises(ConfigError, match=r"unknown key channels\.dev\.kepp"):
        parse_config(data, tmp_path / "x.toml")


def test_env_selects_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APTSHIP_CONFIG", str(ROOT / "conf" / "aptship.toml"))
    assert load_config().path == ROOT / "conf" / "aptship.toml"
