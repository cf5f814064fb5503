"""The JSON API of a repository with distributions: publish into a channel routes by
distribution (``?dist=`` for unstamped .debs), promote and roll back releases
(``allow_partial``), history of a channel covers its suites."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from publisher.errors import NotFound
from repo_server import create_app
from tests.conftest import config_dict, tokens_of
from tests.server.conftest import BufferedClient, toml_dumps

DebFactory = Callable[..., Path]


def test_release_operations_through_the_api(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: DebFactory
) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path / "repo")}, gpg_key[0], [gpg_key[1]])
    data["repository"]["distributions"] = ["bookworm", "trixie"]
    config = tmp_path / "aptship.toml"
    config.write_text(toml_dumps(data))
    store = tokens_of(config)
    every = ["dev", "staging", "bookworm-dev", "trixie-dev", "bookworm-staging", "trixie-staging"]
    admin = {"Authorization": f"Bearer {store.create('admin', 'admin', every)}"}
    app = create_app(config)
    app.testing = True
    app.test_client_class = BufferedClient
    client: FlaskClient = app.test_client()

    def upload(path: Path, query: str = "") -> tuple[int, dict[str, str]]:
        got = client.post(
            f"/api/v1/channels/dev/packages{query}",
            data=path.read_bytes(),
            headers={**admin, "Content-Type": "application/vnd.debian.binary-package"},
        )
        return got.status_code, got.json or {}

    status, body = upload(debs("svc", "1.0-1", "all"), "?dist=bookworm")
    assert status == 201, body
    assert body["channel"] == "bookworm-dev"
    assert body["filename"].startswith("pool/bookworm/main/")
    status, body = upload(debs("svc", "2.0-1", "all"))  # no stamp, no ?dist=
    assert status == 400, body
    assert body["error"]["code"] == "wrong_distribution"
    promote = {"package": "svc", "version": "1.0", "from": "dev"}
    refused = client.post("/api/v1/channels/staging/promote", json=promote, headers=admin)
    assert refused.status_code == 422
    assert (refused.json or {})["error"]["code"] == "release_incomplete"
    done = client.post(
        "/api/v1/channels/staging/promote", json={**promote, "allow_partial": True}, headers=admin
    )
    assert done.status_code == 200, done.text
    assert (done.json or {})["missing"] == ["trixie-staging"]
    rows = client.get("/api/v1/history?channel=staging", headers=admin).json or []
    assert {r["channel"] for r in rows} == {"bookworm-staging"}
    summary = client.get("/api/v1/channels/staging", headers=admin).json or {}
    assert summary["packages"]["svc"]["builds"] == {
        "bookworm-staging": "1.0-1",
        "trixie-staging": None,
    }


def test_token_for_a_channel_covers_its_suites(tmp_path: Path, gpg_key: tuple[Path, str]) -> None:
    import json

    from click.testing import CliRunner

    from publisher.cli import cli

    data = config_dict({"type": "local", "path": str(tmp_path / "repo")}, gpg_key[0], [gpg_key[1]])
    data["repository"]["distributions"] = ["bookworm", "trixie"]
    config = tmp_path / "aptship.toml"
    config.write_text(toml_dumps(data))

    def create(name: str, channel: str) -> Any:
        args = ["--config", str(config), "token", "create", "--name", name, "--role", "read"]
        return CliRunner().invoke(cli, [*args, "--channel", channel, "--json"])

    made = create("web", "prod")
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["channels"] == ["prod", "bookworm-prod", "trixie-prod"]
    suite = create("w2", "trixie-prod")
    assert suite.exit_code == 0, suite.output
    assert json.loads(suite.output)["channels"] == ["trixie-prod"]
    refused = create("w3", "forky-prod").exception
    assert isinstance(refused, NotFound) and "unknown channel 'forky-prod'" in refused.message
