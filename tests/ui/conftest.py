"""Fixtures for the dashboard tests: a per-test copy of the release repository and the
Flask app (test client) serving it with a fixed session key."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from repo_server import create_app
from tests.server.conftest import BufferedClient
from tests.ui import SESSION_VAR, ReleaseEnv, build_release

SESSION_KEY = "a-test-session-key-of-enough-length"


@pytest.fixture(scope="module")
def release_template(
    tmp_path_factory: pytest.TempPathFactory, gpg_key: tuple[Path, str]
) -> ReleaseEnv:
    return build_release(tmp_path_factory.mktemp("ui") / "release", gpg_key)


@pytest.fixture
def release(release_template: ReleaseEnv, tmp_path: Path) -> ReleaseEnv:
    """A private copy of the release repository for one test."""
    return release_template.copy(tmp_path / "release")


@pytest.fixture
def app(release: ReleaseEnv, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv(SESSION_VAR, SESSION_KEY)
    app = create_app(release.config_path)
    app.testing = True
    app.test_client_class = BufferedClient
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
