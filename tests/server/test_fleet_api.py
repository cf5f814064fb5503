"""Host reports and the fleet view through Flask's test client (gunicorn: test_fleet_live.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from publisher.errors import RateLimited, StorageError
from repo_server import create_app
from repo_server.fleet import FLEET_EXTENSION, RateLimiter
from tests.conftest import snapshot, tokens_of
from tests.fleetdata import HOSTILE, report
from tests.server.config_tables import with_fleet
from tests.server.conftest import BufferedClient, EnvFactory, ServerEnv

HOST = "0123456789abcdef0123456789abcdef"
URL = f"/api/v1/channels/staging/hosts/{HOST}"


def make_client(env: ServerEnv) -> FlaskClient:
    app: Flask = create_app(env.config_path)
    app.testing = True
    app.test_client_class = BufferedClient
    return app.test_client()


def add_token(env: ServerEnv, name: str, role: str, channels: list[str]) -> str:
    secret = tokens_of(env.config_path).create(name, role, channels)
    env.secrets[name] = secret
    return secret


@pytest.fixture
def fleet_env(make_env: EnvFactory, debs: Callable[..., Path]) -> ServerEnv:
    env = with_fleet(make_env(), report_interval=0)
    repo = env.repo()
    repo.publish("dev", [debs("svc", "1.0-1")])
    repo.promote("svc", "1.0-1", "dev", "staging")
    add_token(env, "host-b", "read", ["staging"])
    return env


@pytest.fixture
def fclient(fleet_env: ServerEnv) -> FlaskClient:
    return make_client(fleet_env)


def test_report_then_fleet_view(fclient: FlaskClient, fleet_env: ServerEnv, tmp_path: Path) -> None:
    resp = fclient.put(
        URL,
        json=report(apt_update="2026-11-30T21:00:00Z"),
        headers=fleet_env.headers("read", "basic"),
    )
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["host_id"] == HOST and body["token"] == "read"  # noqa: S105 - a token name
    assert body["state"] == "converged" and body["pins"] == {"svc": "1.0-1"}
    assert body["apt_update"] == "2026-11-30T21:00:00Z"
    stored = tmp_path / "repo" / ".aptship" / "hosts" / "staging" / f"{HOST}.json"
    assert json.loads(stored.read_text())["packages"] == {"other": None, "svc": "1.0-1"}
    # a second host of another token runs an older version
    resp = fclient.put(
        "/api/v1/channels/staging/hosts/web-2",
        json=report(hostname="web-2", packages={"svc": "0.9-1"}),
        headers=fleet_env.headers("host-b"),
    )
    assert resp.status_code == 200 and resp.json["state"] == "behind"
    view = fclient.get("/api/v1/channels/staging/hosts", headers=fleet_env.headers("read")).json
    assert [h["host_id"] for h in view["hosts"]] == [HOST, "web-2"]
    assert view["states"] == {"converged": 1, "behind": 1, "stale": 0}
    assert view["rollout"][0]["summary"] == "svc: 1/2 hosts on 1.0-1; 1 behind"
    one = fclient.get(
        "/api/v1/channels/staging/hosts?package=other", headers=fleet_env.headers("read")
    ).json
    assert one["hosts"] == [] and one["package"] == "other"


def test_access_rules(fclient: FlaskClient, fleet_env: ServerEnv, tmp_path: Path) -> None:
    def put(who: str | None, url: str = URL) -> int:
        status: int = fclient.put(url, json=report(), headers=fleet_env.headers(who)).status_code
        return status

    before = snapshot(tmp_path / "repo")
    assert put(None) == 401
    assert put("nobody") == 401
    assert put("other") == 403  # an admin of prod only: not allowed on staging
    assert put("read", "/api/v1/channels/nope/hosts/h1") == 404
    assert put("host-b", "/api/v1/channels/dev/hosts/h1") == 403  # reads staging only
    assert fclient.get("/api/v1/channels/staging/hosts", headers={}).status_code == 401
    assert (
        fclient.get(
            "/api/v1/channels/staging/hosts", headers=fleet_env.headers("other")
        ).status_code
        == 403
    )
    assert snapshot(tmp_path / "repo") == before
    # a token writes only its own hosts
    assert put("read") == 200
    stored = snapshot(tmp_path / "repo")
    resp = fclient.put(URL, json=report(hostname="evil"), headers=fleet_env.headers("host-b"))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "host_owned"
    assert snapshot(tmp_path / "repo") == stored
    assert put("read") == 200


@pytest.mark.parametrize(("what", "data"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_reports_change_nothing(
    fclient: FlaskClient, fleet_env: ServerEnv, tmp_path: Path, what: str, data: bytes
) -> None:
    before = snapshot(tmp_path / "repo")
    resp = fclient.put(
        URL, data=data, content_type="application/json", headers=fleet_env.headers("read")
    )
    assert resp.status_code == 400, what
    assert resp.json["error"]["code"] == "invalid_report"
    assert snapshot(tmp_path / "repo") == before


@pytest.mark.parametrize("host_id", ["UPPER", "-dash", "a" * 65, "a%2Fb", "..", "a b"])
def test_bad_host_ids(fclient: FlaskClient, fleet_env: ServerEnv, host_id: str) -> None:
    resp = fclient.put(
        f"/api/v1/channels/staging/hosts/{host_id}",
        json=report(),
        headers=fleet_env.headers("read"),
    )
    assert resp.status_code in (400, 404), host_id
    assert not list((fleet_env.config_path.parent / "repo").rglob("hosts"))


def test_oversized_reports(make_env: EnvFactory, tmp_path: Path) -> None:
    env = with_fleet(make_env(), max_report_bytes=1024, report_interval=0)
    client = make_client(env)
    big = json.dumps(report(hostname="h" * 200, packages={f"p{i:03d}": "1.0" for i in range(60)}))
    assert len(big) > 1024
    before = snapshot(tmp_path / "repo")
    resp = client.put(URL, data=big, content_type="application/json", headers=env.headers("read"))
    assert resp.status_code == 413 and resp.json["error"]["code"] == "report_too_large"
    # without a Content-Length (chunked), reading stops at the limit
    resp = client.put(
        URL,
        input_stream=io.BytesIO(big.encode()),
        headers={**env.headers("read"), "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.status_code == 413
    assert snapshot(tmp_path / "repo") == before


def test_rate_limit_per_token_and_host(make_env: EnvFactory) -> None:
    env = with_fleet(make_env(), report_interval=3600, report_burst=2)
    client = make_client(env)
    for _burst in range(2):
        assert client.put(URL, json=report(), headers=env.headers("read")).status_code == 200
    resp = client.put(URL, json=report(), headers=env.headers("read"))
    assert resp.status_code == 429 and resp.json["error"]["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 3600
    # another host of the same token is not limited
    other = "/api/v1/channels/staging/hosts/other-host"
    assert client.put(other, json=report(), headers=env.headers("read")).status_code == 200


def test_hosts_per_token_cap(make_env: EnvFactory) -> None:
    env = with_fleet(make_env(), max_hosts_per_token=2, report_interval=0)
    client = make_client(env)
    for host in ("h1", "h2"):
        url = f"/api/v1/channels/staging/hosts/{host}"
        assert client.put(url, json=report(), headers=env.headers("read")).status_code == 200
    resp = client.put(
        "/api/v1/channels/staging/hosts/h3", json=report(), headers=env.headers("read")
    )
    assert resp.status_code == 403 and resp.json["error"]["code"] == "host_limit"
    assert (
        client.put(
            "/api/v1/channels/staging/hosts/h1", json=report(), headers=env.headers("read")
        ).status_code
        == 200
    )


def test_rate_limiter_token_bucket() -> None:
    now = [1000.0]
    limiter = RateLimiter(interval=2.0, burst=3, size=2, clock=lambda: now[0])
    for _ in range(3):
        limiter.hit(("t", "ch", "h"))
    with pytest.raises(RateLimited) as info:
        limiter.hit(("t", "ch", "h"))
    assert info.value.retry_after == 2 and info.value.http_status == 429
    now[0] += 2.0  # one token back
    limiter.hit(("t", "ch", "h"))
    with pytest.raises(RateLimited):
        limiter.hit(("t", "ch", "h"))
    now[0] += 3600  # refills up to the burst only
    for _ in range(3):
        limiter.hit(("t", "ch", "h"))
    with pytest.raises(RateLimited):
        limiter.hit(("t", "ch", "h"))
    # memory is bounded: the oldest keys are forgotten (and start with a full burst)
    limiter.hit(("t", "ch", "a"))
    limiter.hit(("t", "ch", "b"))
    assert len(limiter._buckets) == 2
    RateLimiter(interval=0, clock=lambda: now[0]).hit(("any",))  # 0 turns it off


def test_metrics_survive_a_failing_fleet_read(
    fleet_env: ServerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: Flask = create_app(fleet_env.config_path)
    client = app.test_client()

    def broken(channel: str) -> list[Any]:
        raise StorageError("storage unreachable")

    monkeypatch.setattr(app.extensions[FLEET_EXTENSION].store, "snapshot", broken)
    resp = client.get("/metrics", headers=fleet_env.headers("admin"))
    assert resp.status_code == 200
    assert "aptship_http_requests_total" in resp.text and "aptship_hosts" not in resp.text
    monkeypatch.undo()
    resp = client.get("/metrics", headers=fleet_env.headers("admin"))
    assert 'aptship_hosts{channel="staging",state="converged"} 0.0' in resp.text
