"""The fast path for index files (repo_server.apt.FastIndexes) answers exactly as the
Flask route does, and only when the route would answer 200 with the whole file."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.server.conftest import ServerEnv

DebFactory = Callable[..., Path]
NO_OP = {"If-None-Match": '"matches-nothing"'}  # sends the request through Flask


@pytest.fixture
def route_calls(app: Flask) -> list[str]:
    """Every call of the Flask view ``apt.dists``: empty means the fast path answered."""
    calls: list[str] = []
    view = app.view_functions["apt.dists"]

    def counted(**kw: Any) -> Any:
        calls.append(kw["rest"])
        return view(**kw)

    app.view_functions["apt.dists"] = counted
    return calls


@pytest.fixture
def indexes(env: ServerEnv, debs: DebFactory) -> list[str]:
    repo = env.repo()
    repo.publish("dev", [debs("hello", "1.0-1")])
    root = env.config_path.parent / "repo"
    past = time.time() - 60  # settled: old enough to carry Last-Modified
    for path in (root / "dists" / "dev").rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))
    by_hash = next((root / "dists/dev/main/binary-amd64/by-hash/SHA256").iterdir())
    return [
        "/dists/dev/InRelease",
        "/dists/dev/Release",
        "/dists/dev/Release.gpg",
        "/dists/dev/main/binary-amd64/Packages.gz",
        "/dists/dev/main/pins",
        "/" + str(by_hash.relative_to(root)),
    ]


def without_date(headers: Any) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers.items() if k != "Date")


def test_same_answer_as_the_route(
    client: FlaskClient, env: ServerEnv, indexes: list[str], route_calls: list[str]
) -> None:
    for scheme in ("basic", "bearer"):
        h = env.headers("read", scheme)
        for path in indexes:
            for method in ("GET", "HEAD"):
                fast = client.open(path, method=method, headers=h)
                assert route_calls == [], (path, method)
                slow = client.open(path, method=method, headers={**h, **NO_OP})
                assert route_calls == [path.split("/", 3)[3]], (path, method)
                route_calls.clear()
                assert fast.status_code == slow.status_code == 200, path
                assert without_date(fast.headers) == without_date(slow.headers), path
                assert "Last-Modified" in fast.headers and "Date" in fast.headers
                assert fast.data == slow.data, path


def test_a_fresh_index_has_no_last_modified(
    client: FlaskClient, env: ServerEnv, debs: DebFactory, route_calls: list[str]
) -> None:
    env.repo().publish("dev", [debs("hello", "1.0-1")])
    resp = client.get("/dists/dev/InRelease", headers=env.headers("read", "basic"))
    assert resp.status_code == 200 and route_calls == []
    assert "Last-Modified" not in resp.headers  # changed within SETTLED_SECONDS


def test_everything_else_goes_to_the_route(
    client: FlaskClient, env: ServerEnv, indexes: list[str], route_calls: list[str]
) -> None:
    read = env.headers("read", "basic")
    cases: list[tuple[str, dict[str, str], int]] = [
        ("/dists/dev/InRelease", {}, 401),
        ("/dists/dev/InRelease", env.headers("bad"), 401),
        ("/dists/dev/InRelease", {"Authorization": "Basic eDo="}, 401),  # "x:" no password
        ("/dists/dev/InRelease", {"Authorization": "Digest abc"}, 401),
        ("/dists/prod/InRelease", read, 403),
        ("/dists/dev/InRelease", env.headers("other", "basic"), 403),
        ("/dists/nope/InRelease", env.headers("admin"), 404),
        ("/dists/dev/NoSuchFile", read, 404),
        ("/dists/dev/main", read, 404),
        ("/dists/dev/%2e%2e/prod/InRelease", read, 400),
        ("/dists/dev/%C3%A9", read, 404),
        ("/dists/dev/%FF", read, 404),
        ("/dists/dev/InRelease", {**read, "Range": "bytes=0-3"}, 206),
        (
            "/dists/dev/InRelease",
            {**read, "If-Modified-Since": "Sun, 01 Jan 2040 00:00:00 GMT"},
            304,
        ),
    ]
    for path, headers, status in cases:
        resp = client.get(path, headers=headers)
        assert resp.status_code == status, (path, headers, resp.status_code)
        if status == 401:
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="aptship"'
    # a token revoked by this process is refused at once (the fast path reads the same
    # token store; another process's revocation takes server.token_cache_seconds)
    assert client.get("/dists/dev/InRelease", headers=read).status_code == 200
    client.application.extensions["aptship"].tokens.revoke("read")
    assert client.get("/dists/dev/InRelease", headers=read).status_code == 401


def test_fast_answers_are_counted(
    client: FlaskClient, env: ServerEnv, indexes: list[str], route_calls: list[str]
) -> None:
    for _ in range(3):
        client.get("/dists/dev/InRelease", headers=env.headers("read", "basic"))
    client.head("/dists/dev/InRelease", headers=env.headers("read", "basic"))
    size = len(client.get("/dists/dev/InRelease", headers={**env.headers("read"), **NO_OP}).data)
    assert route_calls == ["InRelease"]
    text = client.get("/metrics", headers=env.headers("admin")).get_data(as_text=True)
    assert 'aptship_http_requests_total{endpoint="apt.dists",method="GET",status="200"} 4.0' in text
    assert (
        'aptship_http_requests_total{endpoint="apt.dists",method="HEAD",status="200"} 1.0' in text
    )
    assert f'aptship_bytes_served_total{{endpoint="apt.dists"}} {4.0 * size}' in text
    assert 'aptship_http_request_duration_seconds_count{endpoint="apt.dists"} 5.0' in text


def test_non_ascii_names_are_decoded_as_flask_does(
    client: FlaskClient, env: ServerEnv, indexes: list[str], route_calls: list[str]
) -> None:
    path = env.config_path.parent / "repo" / "dists" / "dev" / "é"
    path.write_bytes(b"utf-8 name")
    h = env.headers("read", "basic")
    fast = client.get("/dists/dev/%C3%A9", headers=h)
    assert fast.status_code == 200 and fast.data == b"utf-8 name" and route_calls == []
    slow = client.get("/dists/dev/%C3%A9", headers={**h, **NO_OP})
    assert slow.status_code == 200 and slow.data == b"utf-8 name" and route_calls == ["é"]
