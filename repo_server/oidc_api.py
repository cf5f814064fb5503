"""``POST /api/v1/oidc/exchange``: an ID token in, a short-lived aptship token out.

docs/ci.md, "Trusted publishing".  The body is ``{"token": "<ID token>"}`` (bounded
like every JSON body); the answer (201) is the exchanged token's description with
its secret (``"token"``), ``expires_at`` and ``expires_in``.  The checks are in
:mod:`publisher.oidc`.  Every refusal is a 401 (``oidc_rejected``, ``oidc_replay``)
or a 403 (``oidc_claims``) and an ``oidc_refused`` audit entry; so is a refused use
of an exchanged token (outside its channels, role or packages), via
:func:`audit_refusal`.  A stranger can send refusals in bulk, so each process writes
at most :data:`REFUSALS_PER_MINUTE` refusal entries a minute; the next entry written
says how many were left out (the log and the ``aptship_auth_failures`` metric count
them all).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from flask import Blueprint, Flask, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from publisher.audit import record_event
from publisher.errors import Forbidden, OidcRejected, Unauthorized
from publisher.oidc import JwksCache, audit_claims, exchange
from publisher.tokens import ALL_CHANNELS
from repo_server.api import json_body, required
from repo_server.auth import refuse
from repo_server.state import EXTENSION, ServerState, server_state

bp = Blueprint("oidc_api", __name__)
OIDC_EXTENSION = "aptship_oidc"
REFUSALS_PER_MINUTE = 60


@dataclass
class RefusalBudget:
    """At most ``per_minute`` audit entries for refusals per process and minute."""

    per_minute: int = REFUSALS_PER_MINUTE
    window: float = 0.0
    used: int = 0
    suppressed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, now: float) -> int | None:
        """None when over budget, else how many were suppressed since the last entry."""
        with self._lock:
            if now - self.window >= 60:
                self.window, self.used = now, 0
            if self.used >= self.per_minute:
                self.suppressed += 1
                return None
            self.used += 1
            left_out, self.suppressed = self.suppressed, 0
            return left_out


@dataclass
class OidcState:
    jwks: JwksCache
    refusals: RefusalBudget


@bp.record_once
def _setup(setup: BlueprintSetupState) -> None:
    app = setup.app
    if not isinstance(app, Flask):
        raise TypeError("the OIDC endpoint needs a Flask app")
    state: ServerState = app.extensions[EXTENSION]
    app.extensions[OIDC_EXTENSION] = OidcState(JwksCache(state.config.oidc), RefusalBudget())


def oidc_state() -> OidcState:
    state: OidcState = current_app.extensions[OIDC_EXTENSION]
    return state


def audit_refusal(reason: str, message: str, **details: Any) -> None:
    """An ``oidc_refused`` audit entry (within the per-process budget)."""
    left_out = oidc_state().refusals.take(time.monotonic())
    if left_out is None:
        return
    extra = {"suppressed": left_out} if left_out else {}
    record_event(
        server_state().repo.storage,
        action="oidc_refused",
        channel=ALL_CHANNELS,
        changes=[],
        reason=reason,
        message=message,
        **details,
        **extra,
    )


def _unverified(raw: str) -> dict[str, str]:
    """What a refused ID token claims about itself (unverified, bounded), for the audit."""
    try:
        claims = jwt.decode(raw[:16384], options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        return {}
    if not isinstance(claims, dict):
        return {}
    kept = audit_claims(claims)
    if claims.get("iss") is not None:
        kept["iss"] = str(claims["iss"])[:256]
    return kept


@bp.post("/oidc/exchange")
def exchange_token() -> tuple[Response, int]:
    raw = required(json_body(), "token")
    state = server_state()
    try:
        if not state.config.oidc.publishers:
            raise OidcRejected("this server trusts no OIDC publisher ([oidc.publishers])")
        result = exchange(
            raw, state.config.oidc, oidc_state().jwks, state.repo.storage, state.tokens
        )
    except (Unauthorized, Forbidden) as err:
        audit_refusal(err.code, err.message, unverified=_unverified(raw))
        raise refuse("oidc", err) from None
    record_event(
        state.repo.storage,
        action="oidc_exchange",
        channel=ALL_CHANNELS,
        changes=[],
        grant=result.get("grant"),
        expires_at=result.get("expires_at"),
    )
    return jsonify(result), 201
