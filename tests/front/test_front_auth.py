"""``GET /_front/auth`` (repo_server/front.py) on Flask's test client: the decisions
nginx asks for, and the requests a stranger could shape (the raw target is theirs)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.server.conftest import ServerEnv, app, client  # noqa: F401 - fixtures


def ask(client: FlaskClient, env: ServerEnv, who: str | None, uri: str | None) -> Any:  # noqa: F811
    headers = env.headers(who, "basic")
    if uri is not None:
        headers["X-Original-URI"] = uri
    return client.get("/_front/auth", headers=headers)


def test_decisions(client: FlaskClient, env: ServerEnv, published: dict[str, Any]) -> None:  # noqa: F811
    pool = published["pool"]
    cases = [
        ("read", "/dists/dev/InRelease", 204, None),
        ("read", "/dists/dev/InRelease?x=1", 204, None),
        ("read", "/dists/dev/In%52elease", 204, None),
        ("read", pool, 204, None),
        ("read", "/archive-keyring.asc", 204, None),
        (None, "/dists/dev/InRelease", 401, "401"),
        ("bad", pool, 401, "401"),
        ("read", "/dists/prod/InRelease", 403, "403"),
        ("other", pool, 403, "404"),  # unreadable channels' files: aptship's uniform 404
        ("admin", "/dists/nope/InRelease", 403, "404"),
        ("admin", "/pool/main/n/nope/nope_1_amd64.deb", 403, "404"),
        ("admin", "/aptship.toml", 403, "404"),
        ("admin", "/.aptship/state/dev/head.json", 403, "404"),
        ("admin", "/dists/dev", 403, "404"),
    ]
    for who, uri, status, real in cases:
        resp = ask(client, env, who, uri)
        assert resp.status_code == status, (who, uri, resp.status_code)
        assert resp.headers.get("X-Aptship-Status") == real, (who, uri)
        assert resp.data == b""
        assert "X-Aptship-Location" not in resp.headers  # local storage: nginx reads the file


UNSAFE = [
    "/dists/dev/../prod/InRelease",
    "/dists/dev/%2e%2e/prod/InRelease",
    "/dists/dev/%2E%2E/prod/InRelease",
    "/pool/main/..%2f..%2f.aptship/state/dev/head.json",
    "/dists/dev//InRelease",
    "/dists/dev/./InRelease",
    "/dists/dev/%2e/InRelease",
    "/dists/dev/%5c..%5cInRelease",
    "/dists/dev/InRelease%00",
    "/dists/dev/InRelease%0a",
    "/dists/dev/InRelease%2500",
    "/dists/dev/%ff%fe",
    "/dists/dev/InRelease#x",
    "dists/dev/InRelease",
    "http://evil/dists/dev/InRelease",
    "",
    "/",
    "/dists/dev/" + "a" * 5000,
]


@pytest.mark.parametrize("who", ["read", "admin"])
def test_unsafe_targets_are_refused(
    client: FlaskClient,  # noqa: F811
    env: ServerEnv,
    published: dict[str, Any],
    who: str,
) -> None:
    for uri in UNSAFE:
        resp = ask(client, env, who, uri)
        assert resp.status_code == 403, (uri, resp.status_code)
        assert resp.headers["X-Aptship-Status"] in ("400", "404"), uri


def test_missing_target_is_refused(client: FlaskClient, env: ServerEnv) -> None:  # noqa: F811
    resp = ask(client, env, "admin", None)
    assert resp.status_code == 403 and resp.headers["X-Aptship-Status"] == "400"


def test_raw_utf8_targets_decode_as_nginx_serves_them(app: Any) -> None:  # noqa: F811
    from repo_server.front import original_key

    # nginx forwards the raw bytes; WSGI shows header bytes as latin-1 characters
    raw = "/dists/dev/é".encode().decode("latin-1")
    for uri, key in ((raw, "dists/dev/é"), ("/dists/dev/%C3%A9", "dists/dev/é")):
        with app.test_request_context("/_front/auth", headers={"X-Original-URI": uri}):
            assert original_key() == key
