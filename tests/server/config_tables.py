"""Add a table to a server test's config file: ``[fleet]``, ``[webhooks]``.

The file is read back with tomllib, changed, and written again by the one TOML writer
(``tests/tomlfile.py``), so every config stays valid TOML.
"""

from __future__ import annotations

import tomllib
from typing import Any

from tests.server.conftest import ServerEnv
from tests.tomlfile import write_toml

SECRET = b"live-hook-secret"  # what with_webhooks signs with


def with_tables(env: ServerEnv, **tables: dict[str, Any]) -> ServerEnv:
    """Set top-level ``tables`` in the env's config file (replacing same-named ones)."""
    data = tomllib.loads(env.config_path.read_text())
    write_toml(env.config_path, data | tables)
    return env


def with_fleet(env: ServerEnv, **fleet: Any) -> ServerEnv:
    """Add a [fleet] table to the env's config."""
    return with_tables(env, fleet=fleet)


def with_webhooks(env: ServerEnv, endpoints: dict[str, str], **settings: Any) -> ServerEnv:
    """Add [webhooks] with one endpoint per (name, url), signed with SECRET."""
    secret = env.config_path.parent / "hook.secret"
    secret.write_bytes(SECRET)
    values = {"poll_interval": 0.2, "backoff_initial": 0.3, "backoff_max": 1} | settings
    hooks = {name: {"url": url, "secret_file": str(secret)} for name, url in endpoints.items()}
    return with_tables(env, webhooks={**values, "endpoints": hooks})
