"""The dashboard's webhook delivery log (``/ui/webhooks``) through Flask's test client."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask

from publisher.config import load_config
from publisher.webhooks import Attempt, WebhookQueue
from repo_server import create_app
from tests.server.config_tables import with_webhooks
from tests.server.conftest import BufferedClient, EnvFactory
from tests.ui import sign_in

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_log_is_escaped_and_limited_to_readable_channels(
    make_env: EnvFactory, tmp_path: Path
) -> None:
    env = with_webhooks(make_env(), {"ops": "http://127.0.0.1:9/hook"})
    cfg = load_config(env.config_path)
    app: Flask = create_app(env.config_path)
    app.testing = True
    app.test_client_class = BufferedClient
    queue = WebhookQueue(env.repo().storage)
    for event_id, channel in (
        ("20261130T221000.000001Z-0000000a", "dev"),
        ("20261130T221000.000002Z-0000000b", "prod"),
    ):
        queue.enqueue(
            {"id": event_id, "type": "publish", "channel": channel, "package": "svc",
             "old_pin": None, "new_pin": "1.0-1", "time": "2026-11-30T22:10:00Z"}
        )  # fmt: skip
        queue.fan_out(event_id, cfg.webhooks)
        lease = queue.claim(event_id, "ops", "test", 60)
        assert lease is not None
        answer = Attempt(False, 500, "HTTP 500", HOSTILE, time.time(), 0.01)
        queue.finish(event_id, "ops", lease, answer, cfg.webhooks)

    client = app.test_client()
    sign_in(client, env.secrets["read"])  # dev and staging
    page = client.get("/ui/webhooks")
    assert page.status_code == 200
    assert "20261130T221000.000001Z-0000000a" in page.text
    assert "20261130T221000.000002Z-0000000b" not in page.text, "a prod event leaked"
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "http://127.0.0.1:9/hook" not in page.text, "an endpoint URL is shown"
    assert 'data-status="retrying"' in page.text
    assert "retrying" in client.get("/ui/webhooks?failed=1").text

    other = app.test_client()
    sign_in(other, env.secrets["other"])  # admin of prod only
    seen = other.get("/ui/webhooks").text
    assert "20261130T221000.000002Z-0000000b" in seen
    assert "20261130T221000.000001Z-0000000a" not in seen
    assert app.test_client().get("/ui/webhooks").status_code == 303  # no session: sign in
