"""Token administration over the API: ``/api/v1/tokens`` (docs/server.md, "Tokens").

* ``POST /tokens`` ``{"name", "role", "channels", "packages"?}``: 201 with the token's
  description and its secret (``"token"``), shown this once and never stored.
* ``GET /tokens``: every token's description (never a secret or a digest).
* ``DELETE /tokens/<name>``: revoke; every server refuses it within
  ``server.token_cache_seconds``, this one at once.

Only an ``admin`` token on every channel (``*``) and without package patterns may
manage tokens: a token limited to some channels or packages could otherwise mint a
wider one.  Creations and revocations are written to the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify

from publisher.audit import record_event
from publisher.errors import Forbidden, UsageError
from publisher.tokens import ALL_CHANNELS, Token, check_name
from repo_server.api import field, json_body, required
from repo_server.auth import refuse, require
from repo_server.state import server_state

bp = Blueprint("tokens_api", __name__)
log = logging.getLogger("aptship.server")


def require_token_admin() -> Token:
    """An unscoped ``admin`` token on every channel; 403 otherwise."""
    token = require("admin", ALL_CHANNELS)
    if ALL_CHANNELS not in token.channels or token.packages:
        raise refuse(
            "channel",
            Forbidden(
                f"token {token.name!r} is limited to some channels or packages; managing "
                "tokens needs an admin token on '*' without --package"
            ),
        )
    return token


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = field(body, name, list, [])
    if value is None or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"field {name!r} must be a list of non-empty strings")
    return value


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    require_token_admin()
    body = json_body()
    name, role = check_name(required(body, "name")), required(body, "role")
    channels, packages = _strings(body, "channels"), _strings(body, "packages")
    config = server_state().config
    for channel in channels:
        if channel != ALL_CHANNELS:
            config.channel(channel)
    store = server_state().tokens
    secret = store.create(name, role, channels, packages)
    made = store.get(name)
    description = made.to_json() if made else {"name": name}
    record_event(
        server_state().repo.storage,
        action="token_create",
        channel=ALL_CHANNELS,
        changes=[],
        token=description,
    )
    log.info("token created", extra={"event": "token_create", "token_name": name})
    return jsonify(description | {"token": secret}), 201


@bp.get("/tokens")
def list_tokens() -> Response:
    require_token_admin()
    return jsonify([t.to_json() for t in server_state().tokens.list()])


@bp.delete("/tokens/<name>")
def revoke_token(name: str) -> Response:
    require_token_admin()
    gone = server_state().tokens.revoke(check_name(name))
    record_event(
        server_state().repo.storage,
        action="token_revoke",
        channel=ALL_CHANNELS,
        changes=[],
        token=gone.to_json(),
    )
    log.info("token revoked", extra={"event": "token_revoke", "token_name": name})
    return jsonify({"revoked": name})
