"""Who is asking, and may they?  (docs/server.md, "Tokens")

Every endpoint but ``/healthz`` needs a token.  apt sends it as the HTTP Basic
password (any user name, from ``/etc/apt/auth.conf.d``); API clients may send Basic
or ``Authorization: Bearer <token>``.  No or unknown token: :class:`Unauthorized`
(401 with ``WWW-Authenticate``); a token without the role or the channel:
:class:`Forbidden` (403).  Both are counted in the ``aptship_auth_failures``
metric and logged without the token.

Pool files are shared by channels, so a pool download is allowed only when the file
is referenced by a channel the token may read.  :class:`PoolAccess` caches which
channels reference a pool file, keyed on the pool key *and* every channel's state
generation: a cache entry can never outlive the state it was computed from, so
several server instances on one S3 repository never disagree.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from flask import g, request

from publisher.audit import request_actor
from publisher.errors import Forbidden, NotFound, PackageScope, Unauthorized
from publisher.oidc import grant_actor
from publisher.repo import Repository
from publisher.tokens import Token
from repo_server.state import server_state

log = logging.getLogger("aptship.server")


def refuse(reason: str, error: Unauthorized | Forbidden) -> Unauthorized | Forbidden:
    """Count and log a refusal (never the credentials) and return the error to raise.

    A refused use of an exchanged (OIDC) token is also written to the audit log.
    """
    server_state().metrics.auth_failures.labels(reason).inc()
    token: Token | None = g.get("aptship_token")
    if token is not None and token.grant is not None:
        from repo_server.oidc_api import audit_refusal

        audit_refusal(reason, error.message, grant=token.grant, path=request.path)
    log.warning(
        "access refused",
        extra={
            "event": "auth_failure",
            "reason": reason,
            "path": request.path,
            "remote": request.remote_addr,
        },
    )
    return error


def _presented_secret() -> str | None:
    auth = request.authorization
    if auth is None:
        return None
    if auth.type == "basic":
        return auth.password or None
    if auth.type == "bearer":
        return auth.token or None
    return None


def current_token() -> Token:
    """The request's token; Unauthorized when there is none or it matches nothing."""
    token: Token | None = g.get("aptship_token")
    if token is not None:
        return token
    secret = _presented_secret()
    if secret is None:
        raise refuse(
            "missing",
            Unauthorized(
                "authentication required: send an aptship token as the HTTP Basic "
                "password or as 'Authorization: Bearer <token>'"
            ),
        )
    token = server_state().tokens.authenticate(secret)
    if token is None:
        raise refuse("invalid", Unauthorized("invalid or revoked token"))
    g.aptship_token = token
    g.aptship_secret = secret
    actor = grant_actor(token.grant) if token.grant is not None else f"token:{token.name}"
    g.aptship_actor = request_actor.set(actor)
    return token


def reset_actor(_exc: BaseException | None = None) -> None:
    """After each request: forget the request's actor (threads serve many requests)."""
    reset = g.pop("aptship_actor", None)
    if reset is not None:
        request_actor.reset(reset)


def request_secret() -> str:
    """The secret the current (authenticated) request presented."""
    current_token()
    secret: str = g.aptship_secret
    return secret


def require_role(role: str) -> Token:
    """A valid token with at least ``role`` (on any channel)."""
    token = current_token()
    if not token.has_role(role):
        raise refuse(
            "role", Forbidden(f"token {token.name!r} has role {token.role!r}; this needs {role!r}")
        )
    return token


def require(role: str, channel: str) -> Token:
    """A valid token with at least ``role`` on ``channel``."""
    token = require_role(role)
    if not token.covers(channel):
        raise refuse(
            "channel", Forbidden(f"token {token.name!r} is not allowed on channel {channel!r}")
        )
    return token


def require_package(token: Token, package: str) -> None:
    """Refuse (403 ``package_scope``) a change to a package outside the token's patterns."""
    if not token.covers_package(package):
        raise refuse(
            "package",
            PackageScope(
                f"token {token.name!r} may only change packages matching "
                f"{', '.join(token.packages)}; not {package!r}"
            ),
        )


def readable_channels(token: Token) -> list[str]:
    """The configured channels ``token`` may read, in config order."""
    return [ch for ch in server_state().config.channels if token.covers(ch)]


def check_pool_access(key: str) -> None:
    """Allow a pool download only via a channel the token can read.

    A file held only by channels the token cannot read gets the same 404 as a file
    that exists nowhere, so a reader cannot probe other channels' versions.
    """
    token = current_token()
    referencing = server_state().pools.channels_for(key)
    if not any(token.covers(ch) for ch in referencing):
        if referencing:
            refuse("channel", Forbidden(""))  # counted and logged, answered as 404
        raise NotFound(f"{key} is not published in any channel you can read")


class PoolAccess:
    """Pool key -> referencing channels, cached per channel state generation."""

    def __init__(self, repo: Repository, size: int = 4096) -> None:
        self.repo = repo
        self.size = size
        self._cache: OrderedDict[tuple[str, tuple[tuple[str, int], ...]], frozenset[str]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def channels_for(self, key: str) -> frozenset[str]:
        generations = tuple((ch, self.repo.generation(ch)) for ch in self.repo.config.channels)
        cache_key = (key, generations)
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None:
                self._cache.move_to_end(cache_key)
                return hit
        found = frozenset(self.repo.referencing_channels(key))
        with self._lock:
            self._cache[cache_key] = found
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return found
