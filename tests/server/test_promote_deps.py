"""The dependency check at promotion through the CLI (exit code, message) and the
API (``with_deps``, and package-scoped tokens may not bring other packages along)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flask.testing import FlaskClient

from repo_server import create_app
from tests.clirun import aptship
from tests.conftest import tokens_of
from tests.server.conftest import EnvFactory

DebFactory = Callable[..., Path]


def test_cli_and_api(make_env: EnvFactory, debs: DebFactory, tmp_path: Path) -> None:
    env = make_env()  # dev -> staging -> prod; tokens of every role on dev and staging
    repo = env.repo()
    repo.publish("dev", [debs("svc-lib", "1.0"), debs("svc-lib", "2.0")])
    repo.publish("dev", [debs("svc-a", "1.0", depends="svc-lib (>= 2.0)")])
    repo.promote("svc-lib", "1.0", "dev", "staging")

    cli = ["--config", str(env.config_path), "promote", "svc-a", "--from", "dev", "--to"]
    refused = aptship(*cli, "staging")
    assert refused.returncode == 5, refused.stderr
    assert "svc-lib (>= 2.0); staging has svc-lib 1.0" in refused.stderr

    # the API: a token scoped to svc-a may not bring svc-lib along
    client: FlaskClient = create_app(env.config_path).test_client()
    tokens = tokens_of(env.config_path)
    scoped = tokens.create("svc-a-ci", "promote", ["staging"], ["svc-a"])
    body = {"package": "svc-a", "from": "dev", "with_deps": True}
    resp = client.post(
        "/api/v1/channels/staging/promote",
        json=body,
        headers={"Authorization": f"Bearer {scoped}"},
    )
    assert resp.status_code == 403, resp.json
    assert resp.json["error"]["code"] == "package_scope"
    assert repo.pin_map("staging") == {"svc-lib": "1.0"}
    resp = client.post(
        "/api/v1/channels/staging/promote", json=body, headers=env.headers("promote")
    )
    assert resp.status_code == 200, resp.json
    assert [d["package"] for d in resp.json["dependencies"]] == ["svc-lib"]

    done = aptship(*cli, "staging", "--with-deps", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "unchanged"
