"""``aptship token ...`` and ``aptship serve``: server commands for the main CLI group.

:mod:`publisher.cli` registers :data:`COMMANDS` on its group.  They find the
invocation's :class:`~publisher.cli_common.Context` through
:func:`publisher.cli_common.current` and raise :mod:`publisher.errors` exceptions,
which ``publisher.cli.main`` turns into messages and exit codes (docs/cli.md,
docs/server.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from publisher.cli_common import channel_option, current, emit_json, json_option
from publisher.errors import ConfigError, UsageError
from publisher.tokens import ALL_CHANNELS, ROLES, Token, TokenStore, open_tokens

if TYPE_CHECKING:
    from publisher.config import Config
    from publisher.remote import RemoteRepository

APP = "repo_server:create_app()"
GUNICORN_CONF_NAME = "gunicorn_conf.py"


def packaged_gunicorn_config() -> Path:
    """``repo_server/gunicorn_conf.py``, found without importing ``repo_server``."""
    spec = importlib.util.find_spec("repo_server")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the repo_server package is not installed; reinstall aptship")
    return Path(next(iter(spec.submodule_search_locations))) / GUNICORN_CONF_NAME


def current_config() -> Config:
    """The config of the running ``aptship`` invocation (``--config``/$APTSHIP_CONFIG)."""
    return current().config


def token_store() -> TokenStore:
    """The shared token store in the config's storage backend."""
    return open_tokens(current_config())


def remote_admin() -> RemoteRepository | None:
    """With ``--server``: the server's API (admin token in $APTSHIP_TOKEN); else None."""
    from publisher.remote import RemoteRepository

    ops = current().ops if current().server else None
    return ops if isinstance(ops, RemoteRepository) else None


def audit_token(store: TokenStore, action: str, token: Token) -> None:
    """Local mode: write the token change to the audit log, as the server does."""
    from publisher.audit import record_event

    record_event(
        store.storage, action=action, channel=ALL_CHANNELS, changes=[], token=token.to_json()
    )


@click.group()
def token() -> None:
    """Create, list and revoke access tokens (digests in the storage backend, shared by
    every server; with --server, through the server's API and an admin token)."""


@token.command(name="create")
@click.option("--name", required=True, help="A unique name (shown in logs and audit).")
@click.option(
    "--role", required=True, type=click.Choice(ROLES), help="read < publish < promote < admin."
)
@channel_option("Channel the token may use (repeatable; '*' = every channel).", multiple=True)
@click.option(
    "--package",
    "packages",
    multiple=True,
    help="Only change packages matching this pattern, e.g. 'svc-*' (repeatable; "
    "default: every package). See docs/security.md.",
)
@json_option
def token_create(
    name: str, role: str, channels: tuple[str, ...], packages: tuple[str, ...], as_json: bool
) -> None:
    """Create a token and print its secret (only on stdout, only this once)."""
    api = remote_admin()
    if api is not None:
        made = api.create_token(name, role, channels, packages)
        secret = str(made["token"])
    else:
        config = current_config()
        for channel in channels:
            if channel != ALL_CHANNELS:
                config.suites(channel)
        # a channel with distributions covers its suites too (docs/cli.md, "Releases ...")
        channels = tuple(
            dict.fromkeys(n for ch in channels for n in (ch, *config.groups.get(ch, ())))
        )
        store = token_store()
        secret = store.create(name, role, channels, packages)
        created = store.get(name)
        if created is not None:
            audit_token(store, "token_create", created)
    if as_json:
        emit_json(
            {
                "name": name,
                "role": role,
                "channels": list(dict.fromkeys(channels)),
                "packages": list(dict.fromkeys(packages)),
                "token": secret,
            }
        )
        return
    click.echo(secret)


@token.command(name="list")
@json_option
def token_list(as_json: bool) -> None:
    """List tokens (names, roles, channels; never secrets)."""
    api = remote_admin()
    tokens = api.list_tokens() if api is not None else [t.to_json() for t in token_store().list()]
    if as_json:
        emit_json(tokens)
        return
    for t in tokens:
        click.echo(
            f"{t['name']:<24} {t['role']:<8} {','.join(t['channels']):<24} {t['created_at']}"
        )


@token.command(name="revoke")
@click.argument("name")
@json_option
def token_revoke(name: str, as_json: bool) -> None:
    """Delete the token NAME; every server refuses it within server.token_cache_seconds."""
    api = remote_admin()
    if api is not None:
        api.revoke_token(name)
    else:
        store = token_store()
        audit_token(store, "token_revoke", store.revoke(name))
    if as_json:
        emit_json({"revoked": name})
        return
    click.echo(f"revoked token {name}")


@token.command(name="migrate")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens file to import (default: server.tokens_file).",
)
@json_option
def token_migrate(path: Path | None, as_json: bool) -> None:
    """Import a tokens file (digests) into storage; safe to run again."""
    if current().server:
        raise UsageError("`aptship token migrate` works on a local config only, not with --server")
    config = current_config()
    source = path or config.server.tokens_file
    if source is None:
        raise UsageError("no tokens file: pass --file PATH or set server.tokens_file")
    imported = token_store().import_file(source)
    if as_json:
        emit_json({"file": str(source), "imported": imported})
        return
    click.echo(f"imported {len(imported)} token(s) from {source}: {', '.join(imported) or '-'}")


@token.command(name="prune")
@json_option
def token_prune(as_json: bool) -> None:
    """Delete expired exchanged tokens and spent OIDC replay markers (run it daily)."""
    if current().server:
        raise UsageError("`aptship token prune` works on a local config only, not with --server")
    from publisher.oidc import prune_jtis

    store = token_store()
    tokens = store.prune()
    markers = prune_jtis(store.storage, current_config().oidc.leeway)
    if as_json:
        emit_json({"tokens": tokens, "jti_markers": markers})
        return
    click.echo(f"deleted {tokens} expired token(s) and {markers} spent jti marker(s)")


@click.command()
@click.option(
    "--bind", help="HOST:PORT to listen on (default: $APTSHIP_BIND, else 127.0.0.1:8080)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (default: $APTSHIP_WORKERS, else 2).",
)
@click.option(
    "--gunicorn-config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="APTSHIP_GUNICORN_CONFIG",
    help="gunicorn config file (default: $APTSHIP_GUNICORN_CONFIG, else the "
    "repo_server/gunicorn_conf.py installed with aptship).",
)
def serve(bind: str | None, workers: int | None, gunicorn_config: Path | None) -> None:
    """Run the server (gunicorn, threaded workers) for this config."""
    config = current_config()
    conf = (gunicorn_config or packaged_gunicorn_config()).absolute()
    if not conf.is_file():
        raise ConfigError(f"gunicorn config {conf} not found; pass --gunicorn-config PATH")
    argv = [sys.executable, "-m", "gunicorn", "--config", str(conf)]
    if bind:
        argv += ["--bind", bind]
    if workers:
        argv += ["--workers", str(workers)]
    argv.append(APP)
    env = dict(os.environ, APTSHIP_CONFIG=str(config.path))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - replace this process with gunicorn


COMMANDS = (token, serve)
