"""The CLI end to end on the embedded default: `aptship init`, then every command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clirun import Cli
from tests.conftest import cli as cli  # the fixture moved there; still importable here


def test_init_refuses_to_overwrite(cli: Cli, tmp_path: Path) -> None:
    err = cli("init", str(tmp_path / "srv"), code=2)
    assert "already exists" in err


def test_every_command(cli: Cli, debs: Callable[..., Path], tmp_path: Path) -> None:
    first = cli.json("publish", "--channel", "dev", str(debs("app", "1.0-1")))
    assert isinstance(first, list) and first[0]["pinned"] is True
    batch = cli.json(
        "publish", "--channel", "dev", str(debs("app", "1.0-1")), str(debs("app", "1.1-1"))
    )
    assert isinstance(batch, list)
    assert [(r["version"], r["status"], r["pinned"]) for r in batch] == [
        ("1.0-1", "unchanged", False),
        ("1.1-1", "added", True),
    ]
    rows = cli.json("list", "--channel", "dev")
    assert isinstance(rows, list) and len(rows) == 2
    assert {"package", "version", "architecture", "channel", "pinned"} <= set(rows[0])
    shown = cli.json("show", "app")
    assert isinstance(shown, dict) and shown["channels"]["dev"]["pin"] == "1.1-1"
    plan = cli("promote", "app", "--from", "dev", "--to", "staging", "--dry-run")
    assert plan.startswith("planned: app 1.1-1 dev -> staging")
    assert cli.json("list", "--channel", "staging") == []
    assert "promoted" in cli("promote", "app=1.0-1", "--from", "dev", "--to", "staging")
    train = cli.json("promote", "--all", "--from", "staging", "--to", "prod")
    assert isinstance(train, list) and train[0]["new_pin"] == "1.0-1"
    assert "does not promote from 'dev'" in cli(
        "promote", "app", "--from", "dev", "--to", "prod", code=5
    )
    assert "either PACKAGE" in cli("promote", "--from", "dev", "--to", "staging", code=2)
    diff = cli.json("diff", "--from", "dev", "--to", "staging")
    assert diff == [
        {"package": "app", "dev": "1.1-1", "staging": "1.0-1", "action": "promote 1.1-1"}
    ]
    assert "Pin: version 1.0-1" in cli("pins", "--channel", "prod")
    assert "rolled back app in dev: 1.1-1 -> 1.0-1" in cli("rollback", "app", "--channel", "dev")
    assert "nothing to roll back to" in cli("rollback", "app", "--channel", "dev", code=5)
    assert "pinned" in cli("remove", "app=1.0-1", "--channel", "dev", code=5)
    assert "removed app 1.1-1" in cli("remove", "app=1.1-1", "--channel", "dev")
    assert "unknown channel" in cli("list", "--channel", "nope", code=4)
    history = cli.json("history")
    assert isinstance(history, list)
    actions = [h["action"] for h in history]
    assert actions == ["publish", "publish", "promote", "promote", "rollback", "remove"]
    assert "reindexed dev" in cli("reindex", "--channel", "dev")
    assert "repository is healthy" in cli("verify")
    assert "BEGIN PGP PUBLIC KEY BLOCK" in cli("key", "export")
    gc = cli.json("gc", "--dry-run", "--grace", "10s")
    assert gc == {"dry_run": True, "deleted": []}  # nothing marked yet
    assert cli.json("gc", "--grace", "10s") == {"dry_run": False, "deleted": []}
    # 1.1-1 was removed from dev and never promoted: unreferenced, so now marked; a run
    # 10 s later deletes it
    marks = json.loads((cli.config.parent / "repo/.aptship/gc/marks.json").read_text())
    pool = [k for k in marks["marks"] if k.startswith("pool/")]
    assert pool == ["pool/main/a/app/app_1.1-1_amd64.deb"]
    assert all("/by-hash/" in k or "/shards/" in k for k in marks["marks"] if k not in pool)
    assert (cli.config.parent / "repo" / pool[0]).exists()
    assert "invalid duration" in cli("gc", "--grace", "soon", code=2)
    assert "at least" in cli("gc", "--grace", "0", code=2)


def test_local_only_commands_refuse_server_mode(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APTSHIP_SERVER", "http://127.0.0.1:9")
    assert "works on a local config only" in cli("verify", code=2)
    monkeypatch.delenv("APTSHIP_TOKEN", raising=False)
    assert "needs a token" in cli("list", code=2)
    monkeypatch.setenv("APTSHIP_TOKEN", "x")
    assert "127.0.0.1:9" in cli("list", code=7)


def test_one_vocabulary_and_exit_code_per_error(cli: Cli, debs: Callable[..., Path]) -> None:
    cli("publish", "-c", "dev", str(debs("app", "1.0-1")), str(debs("app", "1.1-1")))
    # a version is PACKAGE=VERSION or --version, on every command that takes one
    cli("promote", "app", "--version", "1.0-1", "--from", "dev", "--to", "staging")
    assert cli.json("pins", "-c", "staging") == {
        "channel": "staging",
        "pins": {"app": "1.0-1"},
        "preferences": cli("pins", "-c", "staging"),
    }
    assert "name different versions" in cli(
        "promote", "app=1.0-1", "--version", "1.1-1", "--from", "dev", "--to", "staging", code=2
    )
    assert "not go with --all" in cli(
        "promote", "--all", "--version", "1.1-1", "--from", "dev", "--to", "staging", code=2
    )
    assert "1.0-1 -> 1.1-1" in cli("promote", "app=1.1-1", "--from", "dev", "--to", "staging")
    out = cli("rollback", "app", "--version", "1.0-1", "--channel", "staging")
    assert "1.1-1 -> 1.0-1" in out
    assert "1.0-1 -> 1.1-1" in cli("rollback", "app=1.1-1", "--channel", "staging")
    assert "remove needs app=VERSION" in cli("remove", "app", "-c", "dev", code=2)
    assert "removed app 1.0-1" in cli("remove", "app", "--version", "1.0-1", "-c", "dev")
    # "not in the channel" is NotFound (exit 4) from promote, rollback and remove alike
    assert "not in channel 'dev'" in cli(
        "promote", "ghost", "--from", "dev", "--to", "staging", code=4
    )
    assert "not in channel 'dev'" in cli(
        "promote", "app=9.9-1", "--from", "dev", "--to", "staging", code=4
    )
    assert "not in channel 'dev'" in cli("rollback", "ghost", "-c", "dev", code=4)
    assert "9.9-1" in cli("rollback", "app=9.9-1", "-c", "staging", code=4)
    assert "not in channel 'dev'" in cli("remove", "ghost=1", "-c", "dev", code=4)
    # a policy refusal stays exit 5
    assert "does not promote from" in cli("promote", "app", "--from", "dev", "--to", "prod", code=5)


def test_deprecated_spellings_work_with_a_warning(cli: Cli, debs: Callable[..., Path]) -> None:
    cli("publish", "-c", "dev", str(debs("app", "1.0-1")), str(debs("app", "1.1-1")))
    out, err = cli.run("diff", "dev", "staging")
    assert "promote 1.1-1" in out
    assert err.startswith("warning: `diff SRC DST` is deprecated")
    out, err = cli.run("rollback", "app", "-c", "dev", "--to", "1.0-1")
    assert "1.1-1 -> 1.0-1" in out
    assert "warning: `rollback --to VERSION` is deprecated" in err
    assert "different versions" in cli(
        "rollback", "app", "-c", "dev", "--to", "1.0-1", "--version", "1.1-1", code=2
    )
    assert "--from SRC --to DST" in cli("diff", "dev", code=2)
    assert "--from SRC --to DST" in cli("diff", "--from", "dev", code=2)
    # the new spellings print no warning
    out, err = cli.run("diff", "--from", "dev", "--to", "staging")
    assert err == ""


def test_key_export_and_token_commands_speak_json(cli: Cli, tmp_path: Path) -> None:
    exported = cli.json("key", "export")
    assert isinstance(exported, dict)
    assert "BEGIN PGP PUBLIC KEY BLOCK" in exported["armored"]
    assert exported["output"] is None and len(exported["keys"]) == 1
    target = tmp_path / "key.asc"
    written = cli.json("key", "export", "-o", str(target))
    assert isinstance(written, dict) and written["output"] == str(target)
    assert target.read_text() == exported["armored"]
    created = cli.json("token", "create", "--name", "ci", "--role", "publish", "-c", "dev")
    assert isinstance(created, dict) and created["channels"] == ["dev"]
    assert len(created["token"]) >= 43
    listed = cli.json("token", "list")
    assert isinstance(listed, list) and [t["name"] for t in listed] == ["ci"]
    assert created["token"] not in json.dumps(listed)
    assert cli.json("token", "revoke", "ci") == {"revoked": "ci"}
    assert "unknown channel" in cli(
        "token", "create", "--name", "x", "--role", "read", "-c", "nope", code=4
    )


def test_the_console_command_pauses_the_collector_during_start_up(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the ``aptship`` command (no argv), main runs start-up without the cyclic
    collector and runs the command with it, start-up's objects frozen out of its
    passes; called with argv (in-process, as here elsewhere) it leaves gc alone."""
    import gc

    from publisher import cli_common
    from publisher.cli import main

    seen: list[bool] = []
    real = cli_common.Context.__dict__["repo"].fget

    def opening(ctx: cli_common.Context) -> object:
        seen.append(gc.isenabled())  # before the repository is opened
        repo = real(ctx)
        seen.append(gc.isenabled())  # after
        return repo

    monkeypatch.setattr(cli_common.Context, "repo", property(opening))
    monkeypatch.setattr("sys.argv", ["aptship", "--config", str(cli.config), "pins", "-c", "dev"])
    frozen = gc.get_freeze_count()
    try:
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        assert seen[:2] == [False, True] and gc.isenabled()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
    seen.clear()
    with pytest.raises(SystemExit):
        main(["--config", str(cli.config), "pins", "-c", "dev"])
    assert seen[:2] == [True, True] and gc.get_freeze_count() == 0
