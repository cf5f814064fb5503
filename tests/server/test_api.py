"""The JSON API: uploads (limits, bad input, temp files), promote/rollback/remove,
listings filtered by token, errors, metrics, health."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from repo_server import create_app
from tests.conftest import snapshot, tokens_of
from tests.server.conftest import BufferedClient, EnvFactory, ServerEnv

DebFactory = Callable[..., Path]
DEB_TYPE = "application/vnd.debian.binary-package"


def upload(client: FlaskClient, env: ServerEnv, deb: Path, channel: str = "dev") -> Any:
    return client.post(
        f"/api/v1/channels/{channel}/packages",
        data=deb.read_bytes(),
        content_type=DEB_TYPE,
        headers={
            **env.headers("publish"),
            "Content-Disposition": f'attachment; filename="{deb.name}"',
        },
    )


def small_limit_client(make_env: EnvFactory, limit: int) -> tuple[ServerEnv, FlaskClient]:
    env = make_env(max_upload_bytes=limit)
    app = create_app(env.config_path)
    app.test_client_class = BufferedClient
    return env, app.test_client()


# -- publish -----------------------------------------------------------------------------
def test_publish_raw_then_read_it_back(
    client: FlaskClient, env: ServerEnv, debs: DebFactory
) -> None:
    deb = debs("hello", "1.0-1")
    resp = upload(client, env, deb)
    assert resp.status_code == 201, resp.data
    entry = resp.json
    assert entry is not None
    assert (entry["package"], entry["version"], entry["channel"]) == ("hello", "1.0-1", "dev")
    assert entry["status"] == "added" and entry["pinned"] is True
    assert env.repo().storage.read_bytes(entry["filename"]) == deb.read_bytes()

    again = upload(client, env, deb)
    assert again.status_code == 200 and again.json is not None
    assert again.json == {**entry, "status": "unchanged"}

    got = client.get("/api/v1/channels/dev/packages/hello", headers=env.headers("read"))
    assert got.status_code == 200 and got.json is not None
    assert got.json["pin"] == "1.0-1" and got.json["versions"] == ["1.0-1"]
    assert got.json["entries"] == env.repo().list_entries("dev")
    listing = client.get("/api/v1/channels/dev/packages", headers=env.headers("read"))
    assert listing.json == env.repo().list_entries("dev")
    assert list(env.upload_dir.iterdir()) == []


def test_publish_multipart(client: FlaskClient, env: ServerEnv, debs: DebFactory) -> None:
    deb = debs("hello", "2.0-1")
    resp = client.post(
        "/api/v1/channels/dev/packages",
        data={"file": (io.BytesIO(deb.read_bytes()), deb.name)},
        content_type="multipart/form-data",
        headers=env.headers("publish"),
    )
    assert resp.status_code == 201, resp.data
    assert resp.json is not None and resp.json["version"] == "2.0-1"
    assert list(env.upload_dir.iterdir()) == []
    two = client.post(
        "/api/v1/channels/dev/packages",
        data={"file": [(io.BytesIO(b"a"), "a.deb"), (io.BytesIO(b"b"), "b.deb")]},
        content_type="multipart/form-data",
        headers=env.headers("publish"),
    )
    assert two.status_code == 400 and two.json is not None
    assert two.json["error"]["code"] == "usage"
    assert list(env.upload_dir.iterdir()) == []


def test_invalid_deb_is_400_and_changes_nothing(
    client: FlaskClient, env: ServerEnv, debs: DebFactory, tmp_path: Path
) -> None:
    upload(client, env, debs("hello", "1.0-1"))
    before = snapshot(tmp_path / "repo")
    bad = tmp_path / "broken_1.0_amd64.deb"
    bad.write_bytes(b"!<arch>\nthis is not a debian package at all")
    resp = upload(client, env, bad)
    assert resp.status_code == 400 and resp.json is not None
    assert resp.json["error"]["code"] == "invalid_package"
    assert resp.json["error"]["message"].startswith("broken_1.0_amd64.deb: ")
    assert snapshot(tmp_path / "repo") == before
    assert list(env.upload_dir.iterdir()) == []


def test_immutable_conflict_is_409(
    client: FlaskClient, env: ServerEnv, debs: DebFactory, tmp_path: Path
) -> None:
    upload(client, env, debs("hello", "1.0-1"))
    before = snapshot(tmp_path / "repo")
    other = debs("hello", "1.0-1", payload="different bytes\n")
    resp = upload(client, env, other)
    assert resp.status_code == 409 and resp.json is not None
    assert resp.json["error"]["code"] == "immutable_conflict"
    assert snapshot(tmp_path / "repo") == before


@pytest.mark.parametrize("how", ["raw", "multipart", "chunked"])
def test_upload_over_the_limit_is_413_and_leaves_no_temp_file(
    make_env: EnvFactory, debs: DebFactory, tmp_path: Path, how: str
) -> None:
    deb = debs("hello", "1.0-1")
    data = deb.read_bytes()
    env, client = small_limit_client(make_env, len(data) - 1)
    before = snapshot(tmp_path / "repo")
    url, h = "/api/v1/channels/dev/packages", env.headers("publish")
    if how == "raw":
        resp = client.post(url, data=data, content_type=DEB_TYPE, headers=h)
    elif how == "multipart":
        resp = client.post(
            url,
            data={"file": (io.BytesIO(data), deb.name)},
            content_type="multipart/form-data",
            headers=h,
        )
    else:  # no Content-Length: the limit is enforced while streaming
        resp = client.post(
            url,
            input_stream=io.BytesIO(data),
            content_type=DEB_TYPE,
            headers=h,
            environ_overrides={"wsgi.input_terminated": True},
        )
    assert resp.status_code == 413, resp.data
    assert resp.json is not None and resp.json["error"]["code"] == "too_large"
    assert list(env.upload_dir.iterdir()) == []
    assert snapshot(tmp_path / "repo") == before
    # exactly at the limit is fine
    env2, client2 = small_limit_client(make_env, len(data))
    ok = client2.post(url, data=data, content_type=DEB_TYPE, headers=env2.headers("publish"))
    assert ok.status_code == 201


def test_publish_into_an_unknown_channel(
    client: FlaskClient, env: ServerEnv, debs: DebFactory
) -> None:
    deb = debs("hello", "1.0-1")
    resp = client.post(
        "/api/v1/channels/nope/packages",
        data=deb.read_bytes(),
        content_type=DEB_TYPE,
        headers=env.headers("admin"),
    )
    assert resp.status_code == 404 and list(env.upload_dir.iterdir()) == []


# -- promote / rollback / remove -----------------------------------------------------------
@pytest.fixture
def two_versions(client: FlaskClient, env: ServerEnv, debs: DebFactory) -> None:
    for version in ("1.0-1", "2.0-1"):
        assert upload(client, env, debs("hello", version)).status_code == 201


def post(client: FlaskClient, env: ServerEnv, path: str, body: Any, who: str = "promote") -> Any:
    return client.post(f"/api/v1{path}", json=body, headers=env.headers(who))


def test_promote_and_rollback(client: FlaskClient, env: ServerEnv, two_versions: None) -> None:
    plan = post(
        client,
        env,
        "/channels/staging/promote",
        {"package": "hello", "from": "dev", "dry_run": True},
    )
    assert plan.status_code == 200 and plan.json is not None
    assert plan.json["status"] == "planned" and env.repo().pin_map("staging") == {}

    done = post(
        client,
        env,
        "/channels/staging/promote",
        {"package": "hello", "version": "1.0-1", "from": "dev"},
    )
    assert done.status_code == 200 and done.json is not None
    assert (done.json["status"], done.json["new_pin"], done.json["to"]) == (
        "promoted",
        "1.0-1",
        "staging",
    )
    post(
        client,
        env,
        "/channels/staging/promote",
        {"package": "hello", "version": "2.0-1", "from": "dev"},
    )
    assert env.repo().pin_map("staging") == {"hello": "2.0-1"}

    back = post(client, env, "/channels/staging/rollback", {"package": "hello"})
    assert back.status_code == 200 and back.json is not None
    assert back.json == {
        "package": "hello",
        "channel": "staging",
        "old_pin": "2.0-1",
        "new_pin": "1.0-1",
    }
    assert env.repo().pin_map("staging") == {"hello": "1.0-1"}
    prefs = client.get("/api/v1/channels/staging/preferences", headers=env.headers("read"))
    assert prefs.status_code == 200 and prefs.mimetype == "text/plain"
    assert prefs.get_data(as_text=True) == env.repo().pins("staging")
    assert "Pin: version 1.0-1" in prefs.get_data(as_text=True)

    summary = client.get("/api/v1/channels/staging", headers=env.headers("read"))
    assert summary.json == env.repo().channel_summary("staging")
    text = client.get("/metrics", headers=env.headers("admin")).get_data(as_text=True)
    assert (
        'aptship_promotions_total{action="promote",channel="staging",status="promoted"} 2.0' in text
    )
    assert 'aptship_promotions_total{action="rollback",channel="staging",status="done"} 1.0' in text


def test_promote_all(client: FlaskClient, env: ServerEnv, two_versions: None) -> None:
    diff_url = "/api/v1/channels/staging/diff?from=dev"
    before = client.get(diff_url, headers=env.headers("read"))
    assert before.json == env.repo().diff("dev", "staging")
    assert before.json == [
        {"package": "hello", "dev": "2.0-1", "staging": None, "action": "promote 2.0-1"}
    ]
    assert (
        client.get("/api/v1/channels/staging/diff", headers=env.headers("read")).status_code == 400
    )
    resp = post(client, env, "/channels/staging/promote", {"all": True, "from": "dev"})
    assert resp.status_code == 200 and isinstance(resp.json, list)
    assert [(r["package"], r["new_pin"]) for r in resp.json] == [("hello", "2.0-1")]
    bad = post(
        client, env, "/channels/staging/promote", {"all": True, "package": "x", "from": "dev"}
    )
    assert bad.status_code == 400


def test_promote_errors_map_to_statuses(
    client: FlaskClient, env: ServerEnv, two_versions: None, tmp_path: Path
) -> None:
    before = snapshot(tmp_path / "repo")
    cases: list[tuple[str, Any, int, str]] = [
        (
            "/channels/staging/promote",
            {"package": "hello", "from": "staging"},
            422,
            "policy_violation",
        ),
        ("/channels/staging/promote", {"package": "ghost", "from": "dev"}, 404, "not_found"),
        ("/channels/staging/promote", {"from": "dev"}, 400, "usage"),
        ("/channels/staging/promote", {"package": 7, "from": "dev"}, 400, "usage"),
        ("/channels/staging/promote", ["not", "an", "object"], 400, "usage"),
        ("/channels/dev/rollback", {"package": "hello", "to": "9.9"}, 404, "not_found"),
    ]
    for path, body, status, code in cases:
        resp = post(client, env, path, body)
        assert resp.status_code == status, (path, body, resp.data)
        assert resp.json is not None and resp.json["error"]["code"] == code
    resp = client.post(
        "/api/v1/channels/staging/promote",
        data="{",
        content_type="application/json",
        headers=env.headers("promote"),
    )
    assert resp.status_code == 400
    assert snapshot(tmp_path / "repo") == before


def test_remove(client: FlaskClient, env: ServerEnv, two_versions: None) -> None:
    url = "/api/v1/channels/dev/packages/hello/2.0-1"
    pinned = client.delete(url, headers=env.headers("admin"))
    assert pinned.status_code == 422 and pinned.json is not None
    assert pinned.json["error"]["code"] == "policy_violation"
    forced = client.delete(url + "?force=1", headers=env.headers("admin"))
    assert forced.status_code == 200 and forced.json is not None
    assert forced.json["new_pin"] == "1.0-1"
    assert [e["version"] for e in env.repo().list_entries("dev")] == ["1.0-1"]


# -- listings only show readable channels ------------------------------------------------------
def test_channels_and_history_are_filtered(
    client: FlaskClient, env: ServerEnv, debs: DebFactory
) -> None:
    repo = env.repo()
    repo.publish("dev", [debs("alpha", "1.0")])
    repo.publish("prod", [debs("secret", "1.0")])
    dev_only = tokens_of(env.config_path).create("d", "read", ["dev"])
    h = {"Authorization": f"Bearer {dev_only}"}
    names = [c["name"] for c in client.get("/api/v1/channels", headers=h).json or []]
    assert names == ["dev"]
    everything = client.get("/api/v1/channels", headers=env.headers("admin")).json or []
    assert [c["name"] for c in everything] == ["dev", "staging", "prod"]
    assert everything[0]["generation"] >= 1

    rows = client.get("/api/v1/history", headers=h).json or []
    assert rows and {r["channel"] for r in rows} == {"dev"}
    assert all(r["package"] != "secret" for r in rows)
    admin_rows = client.get("/api/v1/history", headers=env.headers("admin")).json or []
    assert {r["channel"] for r in admin_rows} == {"dev", "prod"}
    assert admin_rows == list(reversed(repo.history()))  # newest first
    assert client.get("/api/v1/history?channel=prod", headers=h).status_code == 403
    one = client.get("/api/v1/history?channel=dev&package=alpha", headers=h).json
    assert one == list(reversed(repo.history("dev", "alpha")))


def test_unknown_package_and_route_are_json_404(client: FlaskClient, env: ServerEnv) -> None:
    for path in ("/api/v1/channels/dev/packages/ghost", "/api/v1/nothing/here"):
        resp = client.get(path, headers=env.headers("read"))
        assert resp.status_code == 404 and resp.json is not None
        assert resp.json["error"]["code"] == "not_found"
        assert set(resp.json["error"]) == {"code", "message"}


# -- metrics and health ---------------------------------------------------------------------
def test_metrics(client: FlaskClient, env: ServerEnv, debs: DebFactory) -> None:
    entry = upload(client, env, debs("hello", "1.0-1")).json
    assert entry is not None
    deb_size = entry["size"]
    client.get("/" + entry["filename"], headers=env.headers("read"))
    client.get("/dists/dev/InRelease")
    resp = client.get("/metrics", headers=env.headers("admin"))
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert 'aptship_publishes_total{channel="dev",status="added"} 1.0' in text
    assert 'aptship_http_requests_total{endpoint="apt.pool",method="GET",status="200"} 1.0' in text
    assert 'aptship_http_requests_total{endpoint="apt.dists",method="GET",status="401"} 1.0' in text
    assert f'aptship_bytes_served_total{{endpoint="apt.pool"}} {float(deb_size)}' in text
    assert 'aptship_http_request_duration_seconds_count{endpoint="api.publish"} 1.0' in text
    assert client.get("/metrics").status_code == 401


def test_server_timing_on_api_answers_only(
    client: FlaskClient, env: ServerEnv, debs: DebFactory
) -> None:
    for resp in (
        upload(client, env, debs("hello", "1.0-1")),
        client.get("/api/v1/channels", headers=env.headers("read")),
        client.get("/api/v1/channels/ghost", headers=env.headers("read")),  # an error answer
    ):
        name, _, dur = resp.headers["Server-Timing"].partition(";dur=")
        assert name == "app" and float(dur) >= 0, resp.headers["Server-Timing"]
    for path in ("/dists/dev/Release", "/healthz", "/metrics"):
        assert "Server-Timing" not in client.get(path, headers=env.headers("admin")).headers


def test_public_metrics(make_env: EnvFactory) -> None:
    env = make_env(metrics_public=True)
    client = create_app(env.config_path).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/v1/channels").status_code == 401


def test_healthz_reports_broken_storage(make_env: EnvFactory) -> None:
    env = make_env(
        {"type": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:9", "path_style": True},
        tokens=False,  # tokens live in that (unreachable) storage
    )
    resp = create_app(env.config_path).test_client().get("/healthz")
    assert resp.status_code == 503 and resp.json is not None
    assert resp.json["status"] == "unavailable" and resp.json["error"]["code"] == "storage"


def test_audit_log_names_the_token_not_the_server(
    client: FlaskClient, env: ServerEnv, debs: DebFactory
) -> None:
    resp = upload(client, env, debs("hello", "3.0-1"))
    assert resp.status_code == 201, resp.data
    rows = env.repo().history("dev", "hello")
    assert rows[-1]["actor"] == "token:publish"
