"""Token store and ``aptship token`` commands: digests only, 0600, reload on change."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from publisher.cli import cli
from publisher.errors import ConfigError, NotFound, UsageError
from publisher.tokens import TokenStore, digest, open_tokens
from tests.clirun import invoke
from tests.server.conftest import ServerEnv
from tests.tomlfile import write_toml


def test_create_stores_only_a_digest_with_mode_0600(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    secret = store.create("ci", "publish", ["dev"])
    raw = (tmp_path / "tokens.json").read_text()
    assert secret not in raw
    assert digest(secret) in raw
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    (entry,) = json.loads(raw)["tokens"]
    assert entry["name"] == "ci" and entry["role"] == "publish" and entry["channels"] == ["dev"]
    assert entry["created_at"].endswith("Z")
    assert len(secret) >= 43  # token_urlsafe(32)
    assert list(tmp_path.iterdir()) == [tmp_path / "tokens.json"]  # no temp files left


def test_authenticate_roles_and_channels(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    dev_reader = store.create("reader", "read", ["dev"])
    promoter = store.create("rm", "promote", ["staging", "prod"])
    everything = store.create("root", "admin", ["*"])
    assert store.authenticate("nope") is None
    assert store.authenticate(dev_reader[:-1]) is None
    reader = store.authenticate(dev_reader)
    assert reader is not None and reader.name == "reader"
    assert reader.allows("read", "dev") and not reader.allows("read", "prod")
    assert not reader.allows("publish", "dev")
    rm = store.authenticate(promoter)
    assert rm is not None
    assert rm.allows("publish", "prod") and rm.allows("promote", "staging")
    assert not rm.allows("admin", "prod") and not rm.allows("read", "dev")
    root = store.authenticate(everything)
    assert root is not None and root.allows("admin", "anything")


def test_reload_when_the_file_changes(tmp_path: Path) -> None:
    server_view = TokenStore(tmp_path / "tokens.json")
    cli_view = TokenStore(tmp_path / "tokens.json")
    assert server_view.authenticate("x") is None
    secret = cli_view.create("late", "read", ["dev"])
    assert server_view.authenticate(secret) is not None
    cli_view.revoke("late")
    assert server_view.authenticate(secret) is None


def test_bad_input_is_refused(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.create("ci", "read", ["dev"])
    with pytest.raises(UsageError, match="already exists"):
        store.create("ci", "read", ["dev"])
    with pytest.raises(UsageError, match="unknown role"):
        store.create("x", "root", ["dev"])
    with pytest.raises(UsageError, match="invalid token name"):
        store.create("bad name", "read", ["dev"])
    with pytest.raises(UsageError, match="at least one channel"):
        store.create("x", "read", [])
    with pytest.raises(NotFound, match="no token named"):
        store.revoke("ghost")
    assert [t.name for t in store.list()] == ["ci"]


def test_corrupt_file_and_missing_setting(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        TokenStore(tmp_path / "tokens.json").authenticate("x")
    with pytest.raises(ConfigError, match="tokens_file"):
        open_tokens(None)


# -- CLI ------------------------------------------------------------------------------
def run(env: ServerEnv, *args: str) -> tuple[int, str]:
    result = invoke(cli, "--config", env.config_path, *args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_token_commands(env: ServerEnv) -> None:
    code, out = run(env, "token", "create", "--name", "ops", "--role", "admin", "--channel", "*")
    assert code == 0
    secret = out.strip()
    assert "\n" not in secret and len(secret) >= 43
    store = TokenStore(env.config_path.parent / "tokens.json")
    found = store.authenticate(secret)
    assert found is not None and found.role == "admin" and found.channels == ("*",)

    code, out = run(env, "token", "list", "--json")
    rows = json.loads(out)
    assert {r["name"] for r in rows} == {"read", "publish", "promote", "admin", "other", "ops"}
    assert all(set(r) == {"name", "role", "channels", "created_at", "packages"} for r in rows)
    assert secret not in out

    code, out = run(env, "token", "list")
    assert code == 0 and "ops" in out and secret not in out

    assert run(env, "token", "revoke", "ops")[0] == 0
    assert store.authenticate(secret) is None


def test_token_create_for_an_unknown_channel_fails(env: ServerEnv) -> None:
    with pytest.raises(NotFound, match="unknown channel 'nope'"):
        run(env, "token", "create", "--name", "x", "--role", "read", "--channel", "nope")


def test_serve_checks_its_inputs_before_starting(env: ServerEnv, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf.py")
    with pytest.raises(ConfigError, match=r"gunicorn config .* not found"):
        run(env, "serve", "--gunicorn-config", missing)
    bare = tmp_path / "bare.toml"
    data = tomllib.loads(env.config_path.read_text())
    del data["server"]["tokens_file"]
    write_toml(bare, data)
    result = invoke(cli, "--config", bare, "serve")
    assert isinstance(result.exception, ConfigError)
    assert "server.tokens_file is not set" in str(result.exception)
