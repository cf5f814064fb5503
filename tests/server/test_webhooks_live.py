"""Release webhooks through a real gunicorn (2 workers, so two delivery threads race
for every attempt), the CLI, local storage and S3 (moto over HTTP).

The receivers run on loopback in the test and check every signature with their own
HMAC code (tests/webhook_receiver.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from publisher.webhooks import WebhookQueue
from tests.cliconfig import storage_table
from tests.clirun import aptship
from tests.fleetdata import report
from tests.procs import free_port
from tests.server.config_tables import SECRET, with_fleet
from tests.server.config_tables import with_webhooks as with_webhooks  # kept importable here
from tests.server.conftest import EnvFactory, ServerEnv
from tests.server.live import LiveServer, start_server
from tests.webhook_receiver import WAIT, Receiver, receiver

pytestmark = pytest.mark.e2e
DEB_TYPE = "application/vnd.debian.binary-package"


def rows(env: ServerEnv) -> list[dict[str, Any]]:
    return WebhookQueue(env.repo().storage).deliveries()


def wait_rows(
    env: ServerEnv, done: Callable[[list[dict[str, Any]]], bool], what: str
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = rows(env)
        if done(found):
            return found
        time.sleep(0.2)  # polling interval: the deliveries are made by the server's worker
    raise AssertionError(f"{what}: {rows(env)}")


def upload(server: LiveServer, env: ServerEnv, deb: Path, channel: str = "dev") -> Any:
    with deb.open("rb") as fh:
        return requests.post(
            f"{server.url}/api/v1/channels/{channel}/packages",
            data=fh,
            headers={
                **env.headers("publish"),
                "Content-Type": DEB_TYPE,
                "Content-Disposition": f'attachment; filename="{deb.name}"',
            },
            timeout=WAIT,
        )


def api(server: LiveServer, env: ServerEnv, who: str, method: str, path: str, **kw: Any) -> Any:
    resp = requests.request(
        method, f"{server.url}/api/v1{path}", headers=env.headers(who), timeout=WAIT, **kw
    )
    assert resp.status_code < 300, resp.text
    return resp.json()


def no_secret_in_logs(server: LiveServer, env: ServerEnv, urls: list[str]) -> None:
    logs = server.logs()
    assert SECRET.decode() not in logs
    for secret in env.secrets.values():
        assert secret not in logs
    for url in urls:
        assert url not in logs, "an endpoint URL reached the server log"


def test_every_event_type_is_delivered_once_and_redelivered_by_id(
    make_env: EnvFactory, tmp_path: Path, debs: Callable[..., Path]
) -> None:
    with receiver(SECRET) as rcv:
        env = with_webhooks(with_fleet(make_env(), report_interval=0), {"ops": rcv.url})
        with start_server(env.config_path, tmp_path / "server") as server:
            assert upload(server, env, debs("svc", "1.0-1")).status_code == 201
            assert upload(server, env, debs("svc", "1.1-1")).status_code == 201
            promote = {"from": "dev", "package": "svc", "version": "1.1-1"}
            api(server, env, "promote", "POST", "/channels/staging/promote", json=promote)
            api(server, env, "promote", "POST", "/channels/dev/rollback", json={"package": "svc"})
            api(server, env, "admin", "DELETE", "/channels/dev/packages/svc/1.1-1")
            host = "/channels/staging/hosts/0123456789abcdef"
            on_pin = report(packages={"svc": "1.1-1"})
            api(server, env, "read", "PUT", host, json=on_pin)  # converged
            api(server, env, "read", "PUT", host, json=report(packages={"svc": "1.0-1"}))
            got = rcv.wait_for(7)
            wait_rows(env, lambda r: {x["status"] for x in r} == {"delivered"}, "all delivered")
            # the CLI's log and a redelivery by id, sent by the server
            listed = aptship("--config", str(env.config_path), "webhooks", "deliveries", "--json")
            assert listed.returncode == 0, listed.stderr
            log = json.loads(listed.stdout)
            rollback_id = next(r["event_id"] for r in log if r["type"] == "rollback")
            again = aptship("--config", str(env.config_path), "webhooks", "redeliver", rollback_id)
            assert again.returncode == 0, again.stderr
            assert rcv.wait_for(8)[-1].payload["id"] == rollback_id
            no_secret_in_logs(server, env, [rcv.url])
    assert all(d.signed for d in got)
    types = [d.payload["type"] for d in got]
    assert sorted(types) == sorted(
        ["publish", "publish", "promote", "rollback", "remove", "fleet.converged", "fleet.diverged"]
    )
    assert len({d.payload["id"] for d in got}) == 7, "an attempt was sent twice"
    by_type = {d.payload["type"]: d.payload for d in got}
    assert by_type["promote"]["actor"] == "token:promote"
    assert (by_type["rollback"]["old_pin"], by_type["rollback"]["new_pin"]) == ("1.1-1", "1.0-1")
    assert by_type["remove"]["changes"][0]["version"] == "1.1-1"
    assert by_type["fleet.diverged"]["channel"] == "staging"
    assert by_type["fleet.diverged"]["fleet"]["states"]["behind"] == 1
    assert len(log) == 7 and {r["endpoint"] for r in log} == {"ops"}


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return storage_table(request.param, tmp_path, request)


def test_retries_after_500s_and_a_restart_mid_queue(
    make_env: EnvFactory, storage: dict[str, Any], tmp_path: Path, debs: Callable[..., Path]
) -> None:
    with receiver(SECRET, statuses=[500, 500, 500, 500]) as rcv:
        env = with_webhooks(make_env(storage), {"ops": rcv.url}, backoff_initial=2)
        with start_server(env.config_path, tmp_path / "first") as server:
            assert upload(server, env, debs("svc", "1.0-1")).status_code == 201
            rcv.wait_requests(1)  # answered 500: the delivery is retrying
            # the worker records the failed attempt after the answer: wait for it before
            # stopping the server, or the stop can come first and leave it leased
            wait_rows(
                env,
                lambda r: any(x["status"] == "retrying" for x in r),
                "the first delivery recorded as retrying",
            )
        # the server is down: an operation from the CLI only queues
        done = aptship(
            "--config", str(env.config_path), "publish", "-c", "dev", str(debs("svc", "1.1-1"))
        )
        assert done.returncode == 0, done.stderr
        queued = rows(env)
        assert {r["status"] for r in queued} <= {"queued", "retrying", "pending"}
        failing = aptship("--config", str(env.config_path), "webhooks", "deliveries", "--failed")
        assert failing.returncode == 0 and "retrying" in failing.stdout, failing.stdout
        with start_server(env.config_path, tmp_path / "second"):
            found = wait_rows(
                env,
                lambda r: len(r) == 2 and {x["status"] for x in r} == {"delivered"},
                "both events delivered after the restart",
            )
    # 4 answers of 500 (shared by the two events, in whatever order), then one 200 each
    assert sum(r["attempts"] for r in found) == 6
    assert all(r["last"]["http_status"] == 200 for r in found)
    assert len(rcv.deliveries) == 6 and all(d.signed for d in rcv.deliveries)


def test_a_publish_never_waits_for_receivers(
    make_env: EnvFactory, tmp_path: Path, debs: Callable[..., Path]
) -> None:
    """A hanging receiver and a closed port: the publish returns while the receiver is
    still blocked, the server answers meanwhile, and the hanging delivery completes
    once the receiver is let go."""
    hold = threading.Event()
    with ExitStack() as stack:
        hanging: Receiver = stack.enter_context(receiver(SECRET, hold=hold))
        closed = f"http://127.0.0.1:{free_port()}/hook"
        env = with_webhooks(
            make_env(), {"hanging": hanging.url, "closed": closed}, timeout=30, lease_seconds=60
        )
        server = stack.enter_context(start_server(env.config_path, tmp_path / "server"))
        first = upload(server, env, debs("svc", "1.0-1"))
        assert first.status_code == 201  # returned although the receiver blocks
        hanging.wait_requests(1)  # a delivery thread is now stuck in the receiver
        assert upload(server, env, debs("svc", "1.1-1")).status_code == 201
        assert requests.get(f"{server.url}/healthz", timeout=WAIT).status_code == 200
        hold.set()
        found = wait_rows(
            env,
            lambda r: (
                sum(x["endpoint"] == "hanging" and x["status"] == "delivered" for x in r) == 2
            ),
            "the hanging receiver's deliveries completed",
        )
        closed_rows = [r for r in found if r["endpoint"] == "closed"]
        assert closed_rows and all(r["status"] in ("retrying", "failed") for r in closed_rows)
        assert "ConnectionRefused" in closed_rows[0]["last"]["error"]
        no_secret_in_logs(server, env, [hanging.url, closed])


def test_a_huge_answer_is_cut_short(
    make_env: EnvFactory, tmp_path: Path, debs: Callable[..., Path]
) -> None:
    with receiver(SECRET, huge=True) as rcv:
        env = with_webhooks(make_env(), {"big": rcv.url}, max_response_bytes=2048)
        with start_server(env.config_path, tmp_path / "server") as server:
            assert upload(server, env, debs("svc", "1.0-1")).status_code == 201
            [row] = wait_rows(
                env, lambda r: r and r[0]["status"] == "delivered", "delivered despite 2 GB"
            )
            assert requests.get(f"{server.url}/healthz", timeout=WAIT).status_code == 200
    assert len(row["last"]["response"]) <= 2048
    assert rcv.deliveries[0].signed
