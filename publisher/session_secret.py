"""The dashboard's session-signing secret, shared by every server through storage.

``.aptship/server/session-secret`` holds a random secret, written create-only the
first time a server starts without ``server.secret_key_env``/``secret_key_file``.
Every server on the same bucket (or directory) then reads the same secret, so a
dashboard sign-in made on one replica is valid on all of them (docs/server.md,
"Several servers on one bucket").  Two servers starting at once race on the
create-only write; the loser reads the winner's secret.
"""

from __future__ import annotations

import contextlib
import secrets

from publisher.errors import ConfigError, NotFound, PreconditionFailed
from publisher.storage.base import Storage

SESSION_SECRET_KEY = ".aptship/server/session-secret"  # noqa: S105 - a storage key
MIN_LENGTH = 32


def _check(data: bytes, storage: Storage) -> str:
    text = data.decode("utf-8", "replace").strip()
    if len(text) < MIN_LENGTH:
        raise ConfigError(
            f"{SESSION_SECRET_KEY} in {storage.describe()} holds fewer than {MIN_LENGTH} "
            "characters; delete it and restart to make a new one"
        )
    return text


def shared_session_secret(storage: Storage) -> str:
    """The stored session secret, created (once, create-only) when missing."""
    try:
        return _check(storage.read_bytes(SESSION_SECRET_KEY), storage)
    except NotFound:
        pass
    # Create-only: when another server made it first, use theirs.
    with contextlib.suppress(PreconditionFailed):
        storage.write_bytes(
            SESSION_SECRET_KEY,
            (secrets.token_urlsafe(48) + "\n").encode(),
            create_only=True,
            content_type="text/plain",
        )
    return _check(storage.read_bytes(SESSION_SECRET_KEY), storage)
