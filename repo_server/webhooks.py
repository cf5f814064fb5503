"""Release webhook delivery inside the server (docs/webhooks.md).

Each server process with ``[webhooks]`` endpoints runs one daemon thread
(:class:`DeliveryWorker`, started by gunicorn's ``post_worker_init`` hook in
``repo_server/gunicorn_conf.py``) that scans the queue in the storage backend every
``webhooks.poll_interval`` seconds.  For each due delivery it claims the attempt
with a lease (compare-and-swap in :mod:`publisher.webhooks`), sends it, and records
the outcome.  Nothing here runs inside a request: a publish only queues.

One attempt (:func:`send`) is bounded in every way a receiver controls: it has
``webhooks.timeout`` seconds in all, enforced by the process's socket watchdog
(:data:`repo_server.deadlines.WATCHDOG`) on top of per-read socket timeouts, at most
``webhooks.max_response_bytes`` of the answer are read (the rest is never read:
the connection is closed), redirects are not followed, and a 2xx is success.
Endpoint URLs never reach the logs (they may carry a secret in their path): log
records name the endpoint.

:func:`fleet_report` is called by ``repo_server/fleet.py`` after a host report is
stored: it works out whether the channel's fleet is converged and queues an event
when that changes.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from publisher.config import WebhookEndpoint, WebhooksConfig
from publisher.errors import AptshipError, NotFound
from publisher.fleet import HostRecord, state_counts
from publisher.fleet_store import FleetStore, record_pins
from publisher.storage.base import ObjectInfo, Storage
from publisher.webhooks import (
    SIGNATURE_HEADER,
    Attempt,
    WebhookQueue,
    body_of,
    next_due,
    pending_key,
    record_fleet_state,
    signature,
)
from repo_server.deadlines import WATCHDOG
from repo_server.state import EXTENSION, ServerState

WEBHOOKS_EXTENSION = "aptship_webhooks"
BATCH = 100  # pending events looked at per scan
USER_AGENT = "aptship-webhooks/1"
log = logging.getLogger("aptship.webhooks")


# -- one attempt ------------------------------------------------------------------------
def _excerpt(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def send(endpoint: WebhookEndpoint, payload: dict[str, Any], cfg: WebhooksConfig) -> Attempt:
    """POST the signed payload to ``endpoint`` once; never raises for the receiver's faults."""
    started, clock = time.time(), time.monotonic()
    deadline = clock + cfg.timeout
    body = body_of(payload)

    def outcome(ok: bool, status: int | None, error: str | None, response: bytes) -> Attempt:
        return Attempt(ok, status, error, _excerpt(response), started, time.monotonic() - clock)

    try:
        secret = endpoint.secret()
    except AptshipError as err:
        return outcome(False, None, err.message, b"")
    parts = urlsplit(endpoint.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Aptship-Event": str(payload["type"]),
        "X-Aptship-Event-Id": str(payload["id"]),
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
        "Connection": "close",
    }
    raw: socket.socket | None = None
    sock: socket.socket | None = None
    watch: int | None = None
    try:
        raw = socket.create_connection((host, port), timeout=cfg.timeout)
        sock = raw
        if parts.scheme == "https":  # the TLS socket takes over the descriptor: watch it
            context = ssl.create_default_context()
            sock = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
        watch = WATCHDOG.watch(sock, deadline, socket.SHUT_RDWR)
        if isinstance(sock, ssl.SSLSocket):
            sock.do_handshake()
        conn = (
            http.client.HTTPSConnection(host, port, timeout=cfg.timeout)
            if parts.scheme == "https"
            else http.client.HTTPConnection(host, port, timeout=cfg.timeout)
        )
        conn.sock = sock  # connected (and wrapped) above, under the watchdog
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        try:  # the status decides; the body is only an excerpt for the log
            data = response.read(cfg.max_response_bytes)
        except (OSError, http.client.HTTPException):
            data = b""  # cut short by the deadline, or a broken body
        ok = 200 <= response.status < 300
        error = None if ok else f"HTTP {response.status}"
        return outcome(ok, response.status, error, data)
    except TimeoutError:
        return outcome(False, None, f"timed out after {cfg.timeout:g}s", b"")
    except (OSError, http.client.HTTPException) as err:
        late = time.monotonic() >= deadline
        what = f"timed out after {cfg.timeout:g}s" if late else f"{type(err).__name__}: {err}"
        return outcome(False, None, what[:300], b"")
    finally:
        WATCHDOG.forget(watch)
        for opened in (sock, raw):
            if opened is not None:
                with contextlib.suppress(OSError):
                    opened.close()


# -- the worker -------------------------------------------------------------------------
@dataclass
class DeliveryWorker:
    """Scans the queue and delivers due attempts, one at a time, in a daemon thread."""

    storage: Storage
    config: WebhooksConfig
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    _later: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (ETag, due)
    enabled: bool = False  # the storage carries the "queue events" marker

    @property
    def queue(self) -> WebhookQueue:
        return WebhookQueue(self.storage)

    def start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._run, name="aptship-webhooks", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_once()
            except AptshipError as err:  # storage down: try again at the next scan
                log.warning(
                    "webhook queue scan failed: %s",
                    err.message,
                    extra={"event": "webhook_scan_failed", "code": err.code},
                )
            except Exception:  # a bug must not end deliveries for the process's lifetime
                log.exception("webhook queue scan failed", extra={"event": "webhook_scan_failed"})
            self.stop.wait(self.config.poll_interval)

    def run_once(self) -> int:
        """One scan: every due delivery of the pending events.  Returns the attempts sent.

        Events whose deliveries are all waiting (backoff, or another replica's lease)
        are remembered with their next due time and the ETag of their pending marker,
        and not read again before then unless the marker changes (a redelivery), so
        a backlog for a dead receiver costs a listing per scan, not a read per event.
        """
        queue = self.queue
        if not self.enabled:
            queue.enable()  # init_app could not: storage was down then
            self.enabled = True
        markers = queue.pending()
        now = time.time()
        live = {event_id for event_id, _marker in markers}
        self._later = {k: v for k, v in self._later.items() if k in live}
        sent = looked = 0
        for event_id, marker in markers:
            if self.stop.is_set() or looked >= BATCH:
                break
            later = self._later.get(event_id)
            if later is not None and later[0] == marker.etag and later[1] > now:
                continue
            looked += 1
            try:
                count, due = self._event(queue, event_id, marker)
            except NotFound:
                continue
            except Exception as err:  # one broken record must not stop the others
                log.warning(
                    "webhook event %s skipped: %s",
                    event_id,
                    getattr(err, "message", type(err).__name__),
                    extra={"event": "webhook_event_failed", "event_id": event_id},
                )
                self._later[event_id] = (marker.etag, now + self.config.lease_seconds)
                continue
            sent += count
            if due is None:
                self._later.pop(event_id, None)
            else:
                self._later[event_id] = (marker.etag, due)
        return sent

    def _event(
        self, queue: WebhookQueue, event_id: str, marker: ObjectInfo
    ) -> tuple[int, float | None]:
        """Send the due deliveries of one event: (attempts sent, when the next is due)."""
        try:
            record = queue.read(event_id)
        except NotFound:
            # A marker without its event: the enqueuer died between the two writes.
            if time.time() - marker.mtime > self.config.lease_seconds:
                self.storage.delete(pending_key(event_id))
            return 0, None
        if not record.get("fanned_out"):
            record = queue.fan_out(event_id, self.config)
        sent = 0
        for name, state in sorted(record["deliveries"].items()):
            if state.get("status") != "pending" or state.get("next_at", 0) > time.time():
                continue
            endpoint = self.config.endpoints.get(name)
            if endpoint is None:
                record = self._orphan(queue, event_id, name)
                continue
            lease = queue.claim(event_id, name, self.owner, self.config.lease_seconds)
            if lease is None:
                continue
            attempt = send(endpoint, record["event"], self.config)
            sent += 1
            record = queue.finish(event_id, name, lease, attempt, self.config)
            self._log(event_id, name, attempt, record["deliveries"].get(name, {}))
        due = next_due(record)
        if due is None:
            queue.settle(event_id)
        return sent, due

    def _orphan(self, queue: WebhookQueue, event_id: str, name: str) -> dict[str, Any]:
        """A delivery to an endpoint this server's config no longer has: failed."""

        def change(record: dict[str, Any]) -> bool:
            state = record["deliveries"].get(name)
            if state is None or state.get("status") != "pending":
                return False
            state["status"] = "failed"
            state["log"] = [*state.get("log", []), {"error": "endpoint no longer configured"}]
            return True

        return queue.update(event_id, change)

    def _log(self, event_id: str, name: str, attempt: Attempt, state: dict[str, Any]) -> None:
        extra = {
            "event": "webhook_attempt",
            "event_id": event_id,
            "endpoint": name,
            "http_status": attempt.status,
            "delivery": state.get("status"),
            "attempts": state.get("attempts"),
        }
        if attempt.ok:
            log.info("webhook %s delivered to %s", event_id, name, extra=extra)
        else:
            log.warning("webhook %s to %s failed: %s", event_id, name, attempt.error, extra=extra)


# -- app setup --------------------------------------------------------------------------
def init_app(app: Flask) -> None:
    """With endpoints configured: mark the storage so operations queue, and make the worker.

    The worker thread is started by :func:`start_delivery` (gunicorn's
    ``post_worker_init``), not here, so the tests' Flask apps and ``aptship`` commands
    that build an app never deliver behind a test's back.
    """
    state: ServerState = app.extensions[EXTENSION]
    cfg = state.config.webhooks
    if not cfg.endpoints:
        return
    storage = state.repo.storage
    worker = DeliveryWorker(storage, cfg)
    try:
        WebhookQueue(storage).enable()
        worker.enabled = True
    except AptshipError as err:  # the worker marks the storage at its first scan instead
        log.warning(
            "webhook queue not marked yet: %s",
            err.message,
            extra={"event": "webhook_enable_failed", "code": err.code},
        )
    app.extensions[WEBHOOKS_EXTENSION] = worker


def start_delivery(app: Any) -> DeliveryWorker | None:
    """Start the app's delivery thread, if it has endpoints (``post_worker_init``)."""
    extensions = getattr(app, "extensions", {})
    worker: DeliveryWorker | None = extensions.get(WEBHOOKS_EXTENSION)
    if worker is not None:
        worker.start()
    return worker


def stop_delivery(app: Any) -> None:
    worker: DeliveryWorker | None = getattr(app, "extensions", {}).get(WEBHOOKS_EXTENSION)
    if worker is not None:
        worker.stop.set()


# -- fleet convergence ------------------------------------------------------------------
def fleet_report(state: ServerState, store: FleetStore, channel: str, record: HostRecord) -> None:
    """After a stored host report: queue ``fleet.converged``/``fleet.diverged`` on a change.

    The channel counts as converged when it has live hosts and none is behind.  It is
    judged from the fleet snapshot (``fleet.cache_seconds`` old at most) with the
    report just stored in it, so a report costs no listing of the whole fleet.  Never
    fails the report.
    """
    cfg = state.config.webhooks
    kinds = ("fleet.converged", "fleet.diverged")
    if not any(e.wants(k, channel) for e in cfg.endpoints.values() for k in kinds):
        return
    try:
        records = {r.host_id: r for r in store.snapshot(channel)}
        records[record.host_id] = record
        pins = record_pins(state.repo.states, channel, records.values())
        counts = state_counts(records.values(), pins, time.time(), store.limits.stale_after)
        converged = counts["behind"] == 0 and counts["converged"] > 0
        fleet = {"states": counts, "pins": pins, "reported_by": record.host_id}
        record_fleet_state(state.repo.storage, channel, converged, fleet, f"token:{record.token}")
    except AptshipError as err:
        log.warning(
            "fleet webhook for %s not checked: %s",
            channel,
            err.message,
            extra={"event": "webhook_fleet_failed", "code": err.code},
        )
