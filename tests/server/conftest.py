"""Fixtures for the server tests: a config file, tokens of every role, the Flask app.

``server_env`` writes a real ``aptship.toml`` (local storage by default) next to an
upload directory, and creates one token per role in the repository's storage.  ``client`` is
Flask's test client on ``create_app(path)``: the same factory gunicorn calls.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from publisher.config import load_config
from publisher.repo import Repository
from repo_server import create_app
from tests.conftest import config_dict, tokens_of
from tests.tomlfile import toml_dumps

# name -> (role, channels).  "other" is an admin of a channel none of the tests use.
TOKENS: dict[str, tuple[str, list[str]]] = {
    "read": ("read", ["dev", "staging"]),
    "publish": ("publish", ["dev", "staging"]),
    "promote": ("promote", ["dev", "staging"]),
    "admin": ("admin", ["*"]),
    "other": ("admin", ["prod"]),
}


@dataclass
class ServerEnv:
    """A written config and the secrets of its tokens."""

    config_path: Path
    upload_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def repo(self) -> Repository:
        return Repository(load_config(self.config_path))

    def headers(self, who: str | None, scheme: str = "bearer") -> dict[str, str]:
        if who is None:
            return {}
        secret = self.secrets.get(who, "not-a-valid-token")
        if scheme == "basic":
            return {"Authorization": "Basic " + base64.b64encode(f"x:{secret}".encode()).decode()}
        return {"Authorization": f"Bearer {secret}"}


EnvFactory = Callable[..., ServerEnv]


@pytest.fixture
def make_env(tmp_path: Path, gpg_key: tuple[Path, str]) -> EnvFactory:
    """``make_env(storage=None, tokens=True, **server)``: write the config (and tokens)."""
    secrets: dict[str, str] = {}

    def factory(
        storage: dict[str, Any] | None = None, *, tokens: bool = True, **server: Any
    ) -> ServerEnv:
        data = config_dict(
            storage or {"type": "local", "path": str(tmp_path / "repo")},
            gpg_key[0],
            [gpg_key[1]],
        )
        upload_dir = tmp_path / "uploads"
        upload_dir.mkdir(exist_ok=True)
        data["server"].update({"upload_dir": str(upload_dir), **server})
        path = tmp_path / "aptship.toml"
        path.write_text(toml_dumps(data))
        if tokens and not secrets:  # a second call (other settings) keeps the same tokens
            store = tokens_of(path)
            for name, (role, channels) in TOKENS.items():
                secrets[name] = store.create(name, role, channels)
        return ServerEnv(path, upload_dir, dict(secrets))

    return factory


@pytest.fixture
def env(make_env: EnvFactory) -> ServerEnv:
    return make_env()


class BufferedClient(FlaskClient):
    """Reads (and so closes) every response body, as a real WSGI server does."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture
def app(env: ServerEnv) -> Flask:
    app = create_app(env.config_path)
    app.testing = True
    app.test_client_class = BufferedClient
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def published(env: ServerEnv, debs: Callable[..., Path]) -> dict[str, Any]:
    """hello 1.0-1, 2.0-1 and 3.0-1 in dev (pin 3.0-1): room for two rollbacks."""
    repo = env.repo()
    built = [debs("hello", version) for version in ("1.0-1", "2.0-1", "3.0-1")]
    for deb in built:
        repo.publish("dev", [deb])
    pool = next(e["filename"] for e in repo.list_entries("dev") if e["version"] == "1.0-1")
    # the published file itself: a rebuild a second later would differ (tar mtimes)
    return {"pool": "/" + pool, "deb": built[-1].read_bytes()}
