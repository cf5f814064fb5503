"""Host reports against a real gunicorn (2 workers), the CLI in remote mode, and S3."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from publisher.errors import RolloutTimeout
from repo_server import create_app
from tests.clirun import aptship, aptship_popen
from tests.conftest import snapshot
from tests.fleetdata import HOSTILE, report
from tests.s3server import REGION, _client
from tests.server.config_tables import with_fleet
from tests.server.conftest import EnvFactory, ServerEnv
from tests.server.live import LiveServer, start_server

pytestmark = pytest.mark.e2e
HOST = "0123456789abcdef0123456789abcdef"


@contextlib.contextmanager
def serving(
    make_env: EnvFactory, tmp_path: Path, **fleet: Any
) -> Iterator[tuple[ServerEnv, LiveServer]]:
    env = with_fleet(make_env(), **fleet)
    with start_server(env.config_path, tmp_path / "server") as server:
        yield env, server
    logs = server.logs()
    for secret in env.secrets.values():
        assert secret not in logs, "a token leaked into the server log"


def put(server: LiveServer, env: ServerEnv, who: str, host: str = HOST, **kw: Any) -> Any:
    kw.setdefault("json", report())
    return requests.put(
        f"{server.url}/api/v1/channels/staging/hosts/{host}",
        headers=env.headers(who, "basic"),
        timeout=30,
        **kw,
    )


def truncated_report(server: LiveServer, env: ServerEnv) -> bytes:
    """A client that announces 1000 bytes, sends 40 and stops sending: the status line."""
    host, port = server.url.removeprefix("http://").split(":")
    auth = env.headers("read")["Authorization"]
    head = (
        f"PUT /api/v1/channels/staging/hosts/{HOST} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {auth}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode() + b'{"hostname": "web-1", "packages": {"svc"')
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_hostile_reports_and_rate_limit_on_gunicorn(make_env: EnvFactory, tmp_path: Path) -> None:
    limits = {"report_interval": 3600, "max_hosts_per_token": 2, "cache_seconds": 0}
    with serving(make_env, tmp_path, **limits) as (env, server):
        repo_dir = tmp_path / "repo"
        repo_dir.mkdir(exist_ok=True)
        before = snapshot(repo_dir)
        for what, data in HOSTILE:
            resp = put(server, env, "read", json=None, data=data)
            assert resp.status_code == 400, what
            assert resp.json()["error"]["code"] == "invalid_report", what
        big = json.dumps(report(hostname="h" * 70_000))  # past the default 64 KiB
        resp = put(server, env, "read", json=None, data=big)
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "report_too_large"
        chunks = (big[i : i + 4096].encode() for i in range(0, len(big), 4096))
        resp = put(server, env, "read", json=None, data=chunks)  # chunked: no Content-Length
        assert resp.status_code == 413
        assert truncated_report(server, env).startswith(b"HTTP/1.1 400"), "truncated body"
        assert put(server, env, "nobody").status_code == 401
        assert put(server, env, "other").status_code == 403
        assert snapshot(repo_dir) == before, "a refused report changed the repository"
        # a valid report sent chunked in small pieces is read whole
        good = json.dumps(report(hostname="c" * 200)).encode()
        pieces = (good[i : i + 7] for i in range(0, len(good), 7))
        resp = put(server, env, "publish", host="chunked", json=None, data=pieces)
        assert resp.status_code == 200 and resp.json()["hostname"] == "c" * 200
        # a burst of 3 per (token, host), then one an hour, in each of the 2 workers:
        # of 7 reports at least one is refused
        answers = [put(server, env, "read") for _ in range(7)]
        assert answers[0].status_code == 200
        limited = [r for r in answers if r.status_code == 429]
        assert limited and all(r.status_code in (200, 429) for r in answers)
        assert limited[0].json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited[0].headers["Retry-After"]) <= 3600
        # another token cannot take the host over
        resp = put(server, env, "publish", json=report(hostname="evil"))
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "host_owned"
        # a token creates at most max_hosts_per_token hosts per channel, across workers
        assert put(server, env, "read", host="second").status_code == 200
        resp = put(server, env, "read", host="third")
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "host_limit"
        unknown = requests.put(
            f"{server.url}/api/v1/channels/nope/hosts/{HOST}",
            json=report(),
            headers=env.headers("admin"),
            timeout=30,
        )
        assert unknown.status_code == 404


def test_cli_remote_hosts_metrics_and_wait(
    make_env: EnvFactory, tmp_path: Path, debs: Callable[..., Path]
) -> None:
    with serving(make_env, tmp_path, report_interval=0, cache_seconds=0) as (env, server):
        repo = env.repo()
        repo.publish("dev", [debs("svc", "1.0-1")])
        repo.promote("svc", "1.0-1", "dev", "staging")
        repo.publish("dev", [debs("svc", "1.1-1")])
        assert put(server, env, "read", json=report(packages={"svc": "1.0-1"})).status_code == 200

        as_reader = {"APTSHIP_TOKEN": env.secrets["read"]}
        done = aptship(
            "--server", server.url, "hosts", "--channel", "staging", "--json", env=as_reader
        )
        assert done.returncode == 0, done.stderr
        view = json.loads(done.stdout)
        assert [(h["host_id"], h["state"]) for h in view["hosts"]] == [(HOST, "converged")]
        assert view["rollout"][0]["summary"] == "svc: 1/1 hosts on 1.0-1; 0 behind"

        metrics = requests.get(f"{server.url}/metrics", headers=env.headers("admin"), timeout=30)
        assert 'aptship_hosts{channel="staging",state="converged"} 1.0' in metrics.text
        assert 'aptship_hosts{channel="dev",state="stale"} 0.0' in metrics.text

        # promote --wait: blocks until the host reports the new pin
        promote = aptship_popen(
            "--server", server.url, "promote", "svc=1.1-1", "--from", "dev",
            "--to", "staging", "--wait", "--timeout", "300", "--poll", "0.2",
            env={"APTSHIP_TOKEN": env.secrets["promote"]},
        )  # fmt: skip
        try:
            assert promote.stderr is not None
            line = promote.stderr.readline()
            assert line.startswith("waiting: svc: 0/1 hosts on 1.1-1; 1 behind"), line
            assert (
                put(server, env, "read", json=report(packages={"svc": "1.1-1"})).status_code == 200
            )
            out, err = promote.communicate(timeout=300)
        finally:
            if promote.poll() is None:
                promote.kill()
                promote.wait()
        assert promote.returncode == 0, err
        assert out.splitlines()[-1] == "svc: 1/1 hosts on 1.1-1; 0 behind"

        # rollback --wait: the host still runs 1.1-1, so it times out with exit 10
        done = aptship(
            "--server", server.url, "rollback", "svc", "--channel", "staging",
            "--wait", "--timeout", "0",
            env={"APTSHIP_TOKEN": env.secrets["promote"]},
        )  # fmt: skip
        assert done.returncode == RolloutTimeout.exit_code == 10, done.stderr
        assert "svc: 0/1 hosts on 1.0-1; 1 behind" in done.stdout
        assert "error: fewer than 100% of the hosts in staging run the pin" in done.stderr
        assert env.repo().pin_map("staging") == {"svc": "1.0-1"}  # the rollback is committed


def test_reports_land_in_the_s3_bucket(
    make_env: EnvFactory, s3_bucket: tuple[str, str], tmp_path: Path
) -> None:
    endpoint, bucket = s3_bucket
    prefix = f"repo-{uuid.uuid4().hex[:8]}"
    env = make_env(
        {
            "type": "s3",
            "bucket": bucket,
            "prefix": prefix,
            "region": REGION,
            "endpoint_url": endpoint,
            "path_style": True,
        }
    )
    with_fleet(env, report_interval=0)
    app: Flask = create_app(env.config_path)
    client = app.test_client()
    url = f"/api/v1/channels/staging/hosts/{HOST}"
    resp = client.put(url, json=report(), headers=env.headers("read"))
    assert resp.status_code == 200, resp.json
    key = f"{prefix}/.aptship/hosts/staging/{HOST}.json"
    stored = _client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert json.loads(stored)["packages"] == {"other": None, "svc": "1.0-1"}
    # only its creator may write it again, also on S3 (create-only, then If-Match)
    assert client.put(url, json=report(), headers=env.headers("publish")).status_code == 403
    assert client.put(url, json=report(), headers=env.headers("read")).status_code == 200
    view = client.get("/api/v1/channels/staging/hosts", headers=env.headers("read")).json
    assert [h["host_id"] for h in view["hosts"]] == [HOST]
