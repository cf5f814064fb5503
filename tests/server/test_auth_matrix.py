"""Every endpoint x every kind of caller: 401 without a valid token, 403 without the
role or the channel, 2xx otherwise.  apt paths are called with HTTP Basic (as apt
does), API paths with Bearer; ``test_both_schemes_work_everywhere`` crosses them."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.server.access import CALLERS, CASES, call, expected
from tests.server.conftest import ServerEnv


@pytest.mark.parametrize("name", list(CASES))
def test_auth_matrix(
    client: FlaskClient, env: ServerEnv, published: dict[str, Any], name: str
) -> None:
    case = CASES[name]
    scheme = "basic" if not case.path.startswith(("/api/", "/metrics")) else "bearer"
    for who in CALLERS:
        resp = call(client, env, case, who, published, scheme)
        want = expected(case, who)
        context = (
            f"{case.method} {case.path} as {who}: {resp.status_code} {resp.get_data()[:200]!r}"
        )
        if want is None:
            assert 200 <= resp.status_code < 300, context
        else:
            assert resp.status_code == want, context
            if want == 401:
                assert resp.headers["WWW-Authenticate"] == 'Basic realm="aptship"', context
            if case.path.startswith("/api/"):
                assert resp.json is not None
                assert resp.json["error"]["code"] == (
                    "unauthorized" if want == 401 else "forbidden"
                )
        resp.close()


@pytest.mark.parametrize("name", ["dists", "pool", "channel", "history"])
def test_both_schemes_work_everywhere(
    client: FlaskClient, env: ServerEnv, published: dict[str, Any], name: str
) -> None:
    for scheme in ("basic", "bearer"):
        resp = call(client, env, CASES[name], "read", published, scheme)
        assert resp.status_code == 200, (scheme, resp.status_code)
        resp.close()
        resp = call(client, env, CASES[name], "bad", published, scheme)
        assert resp.status_code == 401
        resp.close()


def test_healthz_needs_no_token(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}


def test_unknown_channel_is_403_without_access_and_404_with_it(
    client: FlaskClient, env: ServerEnv, published: dict[str, Any]
) -> None:
    assert client.get("/dists/prod/InRelease", headers=env.headers("read")).status_code == 403
    assert client.get("/dists/nope/InRelease", headers=env.headers("read")).status_code == 403
    assert client.get("/dists/nope/InRelease", headers=env.headers("admin")).status_code == 404
    resp = client.get("/api/v1/channels/nope", headers=env.headers("admin"))
    assert resp.status_code == 404 and resp.json is not None
    assert resp.json["error"]["code"] == "not_found"


def test_auth_failures_are_counted(
    client: FlaskClient, env: ServerEnv, published: dict[str, Any]
) -> None:
    client.get("/dists/dev/InRelease")
    client.get("/dists/dev/InRelease", headers=env.headers("bad"))
    client.get("/dists/dev/InRelease", headers=env.headers("other"))
    text = client.get("/metrics", headers=env.headers("admin")).get_data(as_text=True)
    assert 'aptship_auth_failures_total{reason="missing"} 1.0' in text
    assert 'aptship_auth_failures_total{reason="invalid"} 1.0' in text
    assert 'aptship_auth_failures_total{reason="channel"} 1.0' in text


def test_revoked_token_is_refused_without_restart(
    client: FlaskClient, env: ServerEnv, published: dict[str, Any]
) -> None:
    assert client.get("/dists/dev/InRelease", headers=env.headers("read")).status_code == 200
    # Revoked through this server: refused at once (other servers: within
    # server.token_cache_seconds, see tests/server/test_tokens.py and test_replicas.py).
    assert client.application.extensions["aptship"].tokens.revoke("read").name == "read"
    assert client.get("/dists/dev/InRelease", headers=env.headers("read")).status_code == 401
