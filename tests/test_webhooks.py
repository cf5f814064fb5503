"""Release webhooks without a server: config, signatures, the queue and one worker.

The worker (repo_server/webhooks.py) runs here in the test's thread (``run_once``)
against a receiver on loopback that checks every signature with its own code.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import repo_server.webhooks
from publisher.config import Config, parse_config
from publisher.errors import ConfigError, NotFound, StorageError, UsageError
from publisher.repo import Repository
from publisher.storage.base import Storage
from publisher.storage.local import LocalStorage
from publisher.webhooks import (
    ENABLED_KEY,
    PENDING_PREFIX,
    WebhookQueue,
    record_fleet_state,
    signature,
    verify_signature,
)
from repo_server.webhooks import DeliveryWorker, send
from tests.clirun import Cli
from tests.conftest import config_dict
from tests.procs import free_port
from tests.tomlfile import write_toml
from tests.webhook_receiver import WAIT, Receiver, receiver

pytestmark = pytest.mark.e2e  # real HTTP receivers on loopback, and a real S3 API

SECRET = b"s3cret-for-tests"


def hooks_config(
    tmp_path: Path,
    gpg_key: tuple[Path, str],
    endpoints: dict[str, dict[str, Any]],
    storage: dict[str, Any] | None = None,
    **settings: Any,
) -> Config:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(SECRET.decode() + "\n")
    data = config_dict(
        storage or {"type": "local", "path": str(tmp_path / "repo")}, gpg_key[0], [gpg_key[1]]
    )
    tables = {name: {"secret_file": str(secret_file)} | body for name, body in endpoints.items()}
    data["webhooks"] = {
        "poll_interval": 0.1,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "timeout": 2,
        "lease_seconds": 30,
        **settings,
        "endpoints": tables,
    }
    return parse_config(data, tmp_path / "aptship.toml")


def enabled_repo(cfg: Config, storage: Storage | None = None) -> Repository:
    repo = Repository(cfg, storage)
    WebhookQueue(repo.storage).enable()  # what a server with endpoints does at start
    return repo


def drain(worker: DeliveryWorker, rounds: int = 50) -> None:
    """Scan until nothing is pending (the backoff in these configs is milliseconds)."""
    for _ in range(rounds):
        worker.run_once()
        if not list(worker.storage.list(PENDING_PREFIX)):
            return
        time.sleep(0.06)  # polling interval: a retry falls due after its backoff
    raise AssertionError("deliveries still pending")


# -- config -----------------------------------------------------------------------------
BAD_ENDPOINTS = [
    ({"url": "ftp://example.com/x"}, "http:// or https://"),
    ({"url": "file:///etc/passwd"}, "http:// or https://"),
    ({"url": "gopher://127.0.0.1:70/_x"}, "http:// or https://"),
    ({"url": "http:///nohost"}, "with a host"),
    ({"url": "https://user:pw@example.com/"}, "credentials"),
    ({"url": "https://example.com/", "secret": "inline"}, "not allowed"),
    ({"url": "https://example.com/", "events": ["deploy"]}, "subset"),
    ({"url": "https://example.com/", "channels": ["nope"]}, "unknown channel"),
]


@pytest.mark.parametrize(("body", "message"), BAD_ENDPOINTS)
def test_config_refuses_bad_endpoints(
    tmp_path: Path, gpg_key: tuple[Path, str], body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        hooks_config(tmp_path, gpg_key, {"bad": body})


def test_config_needs_exactly_one_secret_source(tmp_path: Path, gpg_key: tuple[Path, str]) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path)}, gpg_key[0], [gpg_key[1]])
    data["webhooks"] = {"endpoints": {"a": {"url": "https://example.com/"}}}
    with pytest.raises(ConfigError, match="secret_env or secret_file"):
        parse_config(data, tmp_path / "aptship.toml")
    data["webhooks"] = {"timeout": 30, "lease_seconds": 30}
    with pytest.raises(ConfigError, match="lease_seconds"):
        parse_config(data, tmp_path / "aptship.toml")


def test_secret_env_is_read_at_use_time(
    tmp_path: Path, gpg_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path)}, gpg_key[0], [gpg_key[1]])
    data["webhooks"] = {"endpoints": {"a": {"url": "https://e.x/", "secret_env": "HOOK_SECRET"}}}
    endpoint = parse_config(data, tmp_path / "aptship.toml").webhooks.endpoints["a"]
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="HOOK_SECRET"):
        endpoint.secret()
    monkeypatch.setenv("HOOK_SECRET", "abc")
    assert endpoint.secret() == b"abc"


# -- signatures -------------------------------------------------------------------------
def test_signature_verifies_and_refuses_tampering() -> None:
    body = b'{"type":"publish"}'
    header = signature(SECRET, 1_700_000_000, body)
    assert verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify_signature(b"other", header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body, now=1_700_000_000 + 301)  # replay
    replayed = header.replace("t=1700000000", "t=1700000200")  # a fresh time, old HMAC
    assert not verify_signature(SECRET, replayed, body, now=1_700_000_200)
    for bad in ("", "t=,v1=", "v1=" + "0" * 64, "t=1700000000", "t=x,v1=y", "t=1,t=2,v1=a"):
        assert not verify_signature(SECRET, bad, body, now=1_700_000_000)


# -- queuing ----------------------------------------------------------------------------
def test_nothing_is_queued_until_a_server_enabled_webhooks(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: Callable[..., Path]
) -> None:
    cfg = hooks_config(tmp_path, gpg_key, {"a": {"url": "http://127.0.0.1:9/"}})
    repo = Repository(cfg)
    repo.publish("dev", [debs("svc", "1.0-1")])
    assert not list(repo.storage.list(".aptship/webhooks/"))
    WebhookQueue(repo.storage).enable()
    repo.publish("dev", [debs("svc", "1.1-1")])
    rows = WebhookQueue(repo.storage).deliveries()
    assert [(r["type"], r["package"], r["old_pin"], r["new_pin"], r["status"]) for r in rows] == [
        ("publish", "svc", "1.0-1", "1.1-1", "queued")
    ]


class FailingWebhooks(LocalStorage):
    """Local storage whose webhook objects cannot be written (the queue is down)."""

    def write_bytes(self, key: str, data: bytes, **kw: Any) -> str:
        if key.startswith(".aptship/webhooks/") and key != ENABLED_KEY:
            raise StorageError("webhook queue unavailable")
        return super().write_bytes(key, data, **kw)


def test_a_failing_queue_never_fails_the_operation(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: Callable[..., Path]
) -> None:
    cfg = hooks_config(tmp_path, gpg_key, {"a": {"url": "http://127.0.0.1:9/"}})
    repo = enabled_repo(cfg, FailingWebhooks(tmp_path / "repo"))
    result = repo.publish("dev", [debs("svc", "1.0-1")])
    assert result[0]["status"] == "added"
    assert repo.pin_map("dev") == {"svc": "1.0-1"}
    assert WebhookQueue(repo.storage).deliveries() == []


# -- delivery ---------------------------------------------------------------------------
def test_each_operation_is_delivered_signed(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: Callable[..., Path]
) -> None:
    with receiver(SECRET) as rcv:
        cfg = hooks_config(tmp_path, gpg_key, {"ops": {"url": rcv.url}})
        repo = enabled_repo(cfg)
        repo.publish("dev", [debs("svc", "1.0-1")])
        repo.publish("dev", [debs("svc", "1.1-1")])
        repo.promote("svc", "1.1-1", "dev", "staging")
        repo.rollback("svc", "dev")
        repo.remove("svc", "1.1-1", "dev")
        drain(DeliveryWorker(repo.storage, cfg.webhooks))
        got = rcv.wait_for(5)
    assert all(d.signed for d in got)
    assert rcv.types() == ["publish", "publish", "promote", "rollback", "remove"]
    second, promote, rollback = got[1].payload, got[2].payload, got[3].payload
    assert (second["channel"], second["package"], second["old_pin"], second["new_pin"]) == (
        "dev",
        "svc",
        "1.0-1",
        "1.1-1",
    )
    moved = (promote["channel"], promote["old_pin"], promote["new_pin"])
    assert moved == ("staging", None, "1.1-1")
    assert (rollback["old_pin"], rollback["new_pin"]) == ("1.1-1", "1.0-1")
    for d in got:
        assert d.headers["X-Aptship-Event"] == d.payload["type"]
        assert d.headers["X-Aptship-Event-Id"] == d.payload["id"]
        assert d.payload["actor"] and d.payload["time"] and d.payload["changes"]
    rows = WebhookQueue(repo.storage).deliveries()
    assert {r["status"] for r in rows} == {"delivered"}
    assert {r["event_id"] for r in rows} == {d.payload["id"] for d in got}


def test_endpoint_filters(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: Callable[..., Path]
) -> None:
    with receiver(SECRET) as rcv:
        cfg = hooks_config(
            tmp_path,
            gpg_key,
            {"prod": {"url": rcv.url, "channels": ["staging"], "events": ["promote"]}},
        )
        repo = enabled_repo(cfg)
        repo.publish("dev", [debs("svc", "1.0-1")])
        repo.promote("svc", "1.0-1", "dev", "staging")
        drain(DeliveryWorker(repo.storage, cfg.webhooks))
        got = rcv.wait_for(1)
    assert [(d.payload["type"], d.payload["channel"]) for d in got] == [("promote", "staging")]
    statuses = sorted(r["status"] for r in WebhookQueue(repo.storage).deliveries())
    assert statuses == ["delivered", "no endpoint"]


def test_retries_after_500s_then_delivers(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: Callable[..., Path]
) -> None:
    with receiver(SECRET, statuses=[500, 502, 500]) as rcv:
        cfg = hooks_config(tmp_path, gpg_key, {"ops": {"url": rcv.url}})
        repo = enabled_repo(cfg)
        repo.publish("dev", [debs("svc", "1.0-1")])
        drain(DeliveryWorker(repo.storage, cfg.webhooks))
        got = rcv.wait_for(4)
    assert len({d.payload["id"] for d in got}) == 1
    assert all(d.signed for d in got)
    [row] = WebhookQueue(repo.storage).deliveries()
    assert (row["status"], row["attempts"], row["last"]["http_status"]) == ("delivered", 4, 200)


def test_gives_up_after_max_attempts_and_redelivers_by_id(
    tmp_path: Path, gpg_key: tuple[Path, str], debs: Callable[..., Path]
) -> None:
    with receiver(SECRET, statuses=[500, 500, 500]) as rcv:
        cfg = hooks_config(tmp_path, gpg_key, {"ops": {"url": rcv.url}}, max_attempts=3)
        repo = enabled_repo(cfg)
        repo.publish("dev", [debs("svc", "1.0-1")])
        worker = DeliveryWorker(repo.storage, cfg.webhooks)
        drain(worker)
        queue = WebhookQueue(repo.storage)
        [row] = queue.deliveries(failed=True)
        assert (row["status"], row["attempts"], row["last"]["error"]) == ("failed", 3, "HTTP 500")
        queue.redeliver(row["event_id"])
        assert queue.deliveries()[0]["status"] == "pending"
        drain(worker)
        got = rcv.wait_for(4)
    assert got[-1].payload["id"] == row["event_id"]
    assert queue.deliveries(failed=True) == []
    assert queue.deliveries()[0]["status"] == "delivered"


def test_redeliver_refuses_bad_and_unknown_ids(tmp_path: Path) -> None:
    queue = WebhookQueue(LocalStorage(tmp_path))
    for bad in ("../../etc", "x" * 500, "", "20261130T221000.123456Z-1a2b3c4d/.."):
        with pytest.raises(UsageError):
            queue.redeliver(bad)
    with pytest.raises(NotFound):
        queue.redeliver("20261130T221000.123456Z-1a2b3c4d")


def test_unreachable_hanging_and_huge_receivers_are_bounded(
    tmp_path: Path, gpg_key: tuple[Path, str]
) -> None:
    hold = threading.Event()
    payload = {"id": "20261130T221000.123456Z-1a2b3c4d", "type": "publish"}
    with receiver(SECRET, hold=hold) as hanging, receiver(SECRET, huge=True) as huge:
        ends = hooks_config(
            tmp_path,
            gpg_key,
            {
                "closed": {"url": f"http://127.0.0.1:{free_port()}/"},
                "hanging": {"url": hanging.url},
                "huge": {"url": huge.url},
            },
            timeout=1,
            max_response_bytes=1024,
        ).webhooks
        refused = send(ends.endpoints["closed"], payload, ends)
        assert not refused.ok and "ConnectionRefused" in str(refused.error)
        timed_out = send(ends.endpoints["hanging"], payload, ends)
        assert not timed_out.ok and "timed out" in str(timed_out.error)
        hold.set()
        big = send(ends.endpoints["huge"], payload, ends)
    assert big.ok and big.status == 200
    assert len(big.response) <= 1024


def test_a_lease_keeps_a_second_replica_off_until_it_expires(tmp_path: Path) -> None:
    now = [1000.0]
    storage = LocalStorage(tmp_path)
    queue_a = WebhookQueue(storage, clock=lambda: now[0])
    queue_b = WebhookQueue(storage, clock=lambda: now[0])
    event_id = "20261130T221000.123456Z-1a2b3c4d"
    queue_a.enqueue({"id": event_id, "type": "publish", "channel": "dev"})
    queue_a.update(event_id, lambda r: bool(r["deliveries"].update(ops=_pending())) or True)
    lease = queue_a.claim(event_id, "ops", "a", lease_seconds=60)
    assert lease is not None
    assert queue_b.claim(event_id, "ops", "b", lease_seconds=60) is None
    now[0] += 61  # replica a died mid-attempt
    assert queue_b.claim(event_id, "ops", "b", lease_seconds=60) is not None


def _pending() -> dict[str, Any]:
    return {"status": "pending", "attempts": 0, "next_at": 0.0, "lease": None, "log": []}


def test_fleet_transitions_queue_once_each(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    WebhookQueue(storage).enable()
    assert record_fleet_state(storage, "prod", False, {}, "token:h") is None  # first: diverged
    first = record_fleet_state(storage, "prod", True, {}, "token:h")
    assert first is not None
    assert record_fleet_state(storage, "prod", True, {}, "token:h") is None
    second = record_fleet_state(storage, "prod", False, {}, "token:h")
    assert second is not None
    types = [r["type"] for r in WebhookQueue(storage).deliveries()]
    assert types == ["fleet.diverged", "fleet.converged"]


@pytest.mark.e2e
def test_queue_and_delivery_on_s3(
    tmp_path: Path,
    gpg_key: tuple[Path, str],
    debs: Callable[..., Path],
    s3_bucket: tuple[str, str],
) -> None:
    from tests.s3server import REGION

    endpoint, bucket = s3_bucket
    storage = {
        "type": "s3",
        "bucket": bucket,
        "prefix": f"hooks-{uuid.uuid4().hex[:8]}",
        "region": REGION,
        "endpoint_url": endpoint,
        "path_style": True,
    }
    with receiver(SECRET, statuses=[500]) as rcv:
        cfg = hooks_config(tmp_path, gpg_key, {"ops": {"url": rcv.url}}, storage=storage)
        repo = enabled_repo(cfg)
        repo.publish("dev", [debs("svc", "1.0-1")])
        worker_a = DeliveryWorker(repo.storage, cfg.webhooks, owner="a")
        worker_b = DeliveryWorker(Repository(cfg).storage, cfg.webhooks, owner="b")
        for _ in range(50):
            worker_a.run_once()
            worker_b.run_once()
            if not list(repo.storage.list(PENDING_PREFIX)):
                break
            time.sleep(0.06)  # polling interval: a retry falls due after its backoff
        got = rcv.wait_for(2)
    assert all(d.signed for d in got) and len(got) == 2  # one failed attempt, one retry
    [row] = WebhookQueue(repo.storage).deliveries()
    assert (row["status"], row["attempts"]) == ("delivered", 2)


def test_receiver_helper_counts(tmp_path: Path) -> None:
    """The helper itself: an unsigned request is recorded as unsigned."""
    import requests

    with receiver(SECRET) as rcv:
        requests.post(rcv.url, data=b"{}", timeout=10)
        [d] = rcv.wait_for(1)
    assert not d.signed
    assert isinstance(rcv, Receiver)


def test_cli_deliveries_and_redeliver(
    tmp_path: Path,
    gpg_key: tuple[Path, str],
    debs: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:

    secret = tmp_path / "hook.secret"
    secret.write_text("x")
    data = config_dict({"type": "local", "path": str(tmp_path / "repo")}, gpg_key[0], [gpg_key[1]])
    data["webhooks"] = {
        "endpoints": {"ops": {"url": "http://127.0.0.1:9/", "secret_file": str(secret)}}
    }
    path = tmp_path / "aptship.toml"
    write_toml(path, data)

    run = Cli(capsys, path)

    assert run("webhooks", "deliveries") == ""
    repo = enabled_repo(parse_config(data, path))
    repo.publish("dev", [debs("svc", "1.0-1")])
    shown = run("webhooks", "deliveries")
    assert "queued" in shown and "svc - -> 1.0-1" in shown
    assert run("webhooks", "deliveries", "--failed") == ""
    event_id = shown.split()[0]
    assert '"status": "queued"' in run("webhooks", "redeliver", event_id, "--json")
    assert "not a webhook event id" in run("webhooks", "redeliver", "../../x", code=2)
    assert "no webhook event" in run(
        "webhooks", "redeliver", "20261130T221000.123456Z-1a2b3c4d", code=4
    )
    assert "local config only" in run(
        "--server", "http://127.0.0.1:9", "webhooks", "deliveries", code=2
    )


class RawServer:
    """A loopback TCP server that reads the request head and then runs ``answer(conn)``."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                self.answer(conn)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(WAIT)


def trickle(conn: socket.socket) -> None:
    """Answer one byte at a time, each well within the socket timeout, for ever."""
    conn.recv(65536)
    with contextlib.suppress(OSError):
        for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10_000:
            conn.sendall(bytes([byte]))
            time.sleep(0.2)  # the trickle is the point: a slow receiver, not a wait


def silent(conn: socket.socket) -> None:
    """Accept and never answer (not even a TLS handshake); return when the client leaves."""
    conn.settimeout(WAIT)
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


@pytest.mark.parametrize(("scheme", "answer"), [("http", trickle), ("https", silent)])
def test_an_attempt_has_a_total_deadline(
    tmp_path: Path, gpg_key: tuple[Path, str], scheme: str, answer: Callable[..., None]
) -> None:
    server = RawServer(answer)
    try:
        cfg = hooks_config(
            tmp_path, gpg_key, {"slow": {"url": f"{scheme}://127.0.0.1:{server.port}/"}}, timeout=1
        ).webhooks
        payload = {"id": "20261130T221000.123456Z-1a2b3c4d", "type": "publish"}
        attempt = send(cfg.endpoints["slow"], payload, cfg)
    finally:
        server.close()
    assert not attempt.ok
    assert attempt.error == "timed out after 1s"


def test_a_backlog_for_a_dead_receiver_does_not_starve_new_events(
    tmp_path: Path, gpg_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo_server.webhooks, "BATCH", 3)
    with receiver(SECRET) as rcv:
        cfg = hooks_config(
            tmp_path,
            gpg_key,
            {
                "dead": {"url": f"http://127.0.0.1:{free_port()}/", "channels": ["dev"]},
                "live": {"url": rcv.url, "channels": ["staging"]},
            },
            backoff_initial=3600,
            backoff_max=3600,
        )
        storage = LocalStorage(tmp_path / "repo")
        queue = WebhookQueue(storage)
        old = [f"20261130T2210{i:02d}.000000Z-0000000{i}" for i in range(5)]
        for event_id in old:
            queue.enqueue({"id": event_id, "type": "publish", "channel": "dev"})
        worker = DeliveryWorker(storage, cfg.webhooks)
        assert worker.run_once() + worker.run_once() == 5  # 3, then the 2 left
        assert worker.run_once() == 0  # all wait an hour (and are not read again until then)
        queue.enqueue(
            {"id": "20261130T221100.000000Z-000000ff", "type": "promote", "channel": "staging"}
        )
        assert worker.run_once() == 1
        [got] = rcv.wait_for(1)
        assert got.payload["id"] == "20261130T221100.000000Z-000000ff"
        queue.redeliver(old[0])  # rewrites the marker: looked at again at once
        assert worker.run_once() == 1
    rows = {r["event_id"]: r for r in queue.deliveries()}
    assert rows[old[0]]["attempts"] == 1 and rows[old[1]]["attempts"] == 1
    assert rows["20261130T221100.000000Z-000000ff"]["status"] == "delivered"


@pytest.mark.parametrize(
    "broken",
    [b"{not json", b"[]", b'{"event": {}, "deliveries": {"live": {"status": "pending"}}}'],
)
def test_a_broken_record_does_not_stop_the_others(
    tmp_path: Path, gpg_key: tuple[Path, str], broken: bytes
) -> None:
    with receiver(SECRET) as rcv:
        cfg = hooks_config(tmp_path, gpg_key, {"live": {"url": rcv.url}})
        storage = LocalStorage(tmp_path / "repo")
        queue = WebhookQueue(storage)
        bad, good = "20261130T221000.000000Z-00000000", "20261130T221001.000000Z-00000001"
        queue.enqueue({"id": bad, "type": "publish", "channel": "dev"})
        storage.write_bytes(f".aptship/webhooks/events/{bad}.json", broken)
        queue.enqueue({"id": good, "type": "publish", "channel": "dev"})
        worker = DeliveryWorker(storage, cfg.webhooks)
        assert worker.run_once() == 1
        assert [d.payload["id"] for d in rcv.wait_for(1)] == [good]
        assert worker.run_once() == 0  # the broken one waits lease_seconds before a retry
    statuses = {r["event_id"]: r["status"] for r in queue.deliveries()}
    assert statuses[good] == "delivered"
