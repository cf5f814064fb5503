"""Every endpoint x every kind of caller: 401 without a valid token, 403 without the
role or the channel, 2xx otherwise.  apt paths are called with HTTP Basic (as apt
does), API paths with Bearer; ``test_both_schemes_work_everywhere`` crosses them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from publisher.tokens import ROLES
from tests.server.conftest import TOKENS, ServerEnv

CALLERS: list[str | None] = [None, "bad", "read", "publish", "other", "promote", "admin"]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    role: str
    scoped: bool = True  # needs the role on a channel (dev/staging) rather than anywhere
    body: str | None = None  # "deb" (raw upload) or "json"
    data: Any = None
    exact: bool = False  # only this role: the setup script writes its token onto a host


CASES = {
    "keyring": Case("GET", "/archive-keyring.asc", "read", scoped=False),
    "dists": Case("GET", "/dists/dev/InRelease", "read"),
    "dists-by-hash": Case("GET", "/dists/dev/main/binary-amd64/Packages.gz", "read"),
    "pool": Case("GET", "POOL", "read"),
    "channels": Case("GET", "/api/v1/channels", "read", scoped=False),
    "channel": Case("GET", "/api/v1/channels/dev", "read"),
    "entries": Case("GET", "/api/v1/channels/dev/packages", "read"),
    "package": Case("GET", "/api/v1/channels/dev/packages/hello", "read"),
    "preferences": Case("GET", "/api/v1/channels/dev/preferences", "read"),
    "setup": Case("GET", "/api/v1/channels/dev/setup", "read", exact=True),
    "diff": Case("GET", "/api/v1/channels/staging/diff?from=dev", "read"),
    "history": Case("GET", "/api/v1/history", "read", scoped=False),
    "history-channel": Case("GET", "/api/v1/history?channel=dev", "read"),
    "publish": Case("POST", "/api/v1/channels/dev/packages", "publish", body="deb"),
    "promote": Case(
        "POST",
        "/api/v1/channels/staging/promote",
        "promote",
        body="json",
        data={"package": "hello", "from": "dev", "dry_run": True},
    ),
    "rollback": Case(
        "POST", "/api/v1/channels/dev/rollback", "promote", body="json", data={"package": "hello"}
    ),
    "remove": Case("DELETE", "/api/v1/channels/dev/packages/hello/1.0-1", "admin"),
    "metrics": Case("GET", "/metrics", "admin", scoped=False),
}


def expected(case: Case, who: str | None) -> int | None:
    """401/403, or None for 'any 2xx'."""
    if who not in TOKENS:
        return 401
    role, channels = TOKENS[who]
    if ROLES.index(role) < ROLES.index(case.role) or (case.exact and role != case.role):
        return 403
    if case.scoped and not ({"dev", "staging", "*"} & set(channels)):
        # a pool file of channels the token cannot read is answered as if absent
        return 404 if case.path == "POOL" else 403
    return None


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


def call(
    client: FlaskClient,
    env: ServerEnv,
    case: Case,
    who: str | None,
    published: dict[str, Any],
    scheme: str,
) -> Any:
    path = published["pool"] if case.path == "POOL" else case.path
    kw: dict[str, Any] = {"headers": env.headers(who, scheme)}
    if case.body == "deb":
        kw["data"] = published["deb"]
        kw["content_type"] = "application/vnd.debian.binary-package"
    elif case.body == "json":
        kw["json"] = case.data
    return client.open(path, method=case.method, **kw)


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
