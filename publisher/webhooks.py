"""Release webhooks: events, signed payloads and the durable queue (docs/webhooks.md).

Every publish, promote, rollback and remove records one audit event
(:func:`publisher.audit.record_event`), which hands it to :func:`enqueue_audit_event`;
a channel's fleet reaching or losing convergence is queued by
:func:`record_fleet_state`.  Queuing writes to the storage backend only, never to the
network, and never fails the operation that queued: the server's delivery worker
(``repo_server/webhooks.py``) sends the events later.  Keys::

    .aptship/webhooks/enabled.json            written by a server with endpoints: queue from now on
    .aptship/webhooks/events/<event_id>.json  {"event": payload, "deliveries": {endpoint: state}}
    .aptship/webhooks/pending/<event_id>      present while a delivery may still be due
    .aptship/webhooks/fleet/<channel>.json    the channel's last converged/not-converged state

The event id is the audit object's name (``<UTC time>-<random>``), so ids sort by time.
Delivery states change only by compare-and-swap on the event's object: a replica
claims one attempt by writing a lease (an id and an expiry) into the delivery's
state, so two replicas never send the same attempt at once, and a lease left by a
crashed process expires after ``webhooks.lease_seconds``.

No Flask and no HTTP here: the CLI (``aptship webhooks``) reads and re-queues through
this module, the server's worker delivers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from publisher.config import WebhooksConfig
from publisher.errors import NotFound, PreconditionFailed, StorageError, UsageError
from publisher.storage.base import ObjectInfo, Storage
from publisher.storage.keys import join_key

PREFIX = ".aptship/webhooks/"
ENABLED_KEY = PREFIX + "enabled.json"
EVENTS_PREFIX = PREFIX + "events/"
PENDING_PREFIX = PREFIX + "pending/"
FLEET_PREFIX = PREFIX + "fleet/"
SCHEMA = 1
SIGNATURE_HEADER = "X-Aptship-Signature"
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept a signature's timestamp
LOG_ATTEMPTS = 10  # attempts kept in a delivery's log (the newest)
CAS_ATTEMPTS = 8
EVENT_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}$")
AUDIT_TYPES = ("publish", "promote", "rollback", "remove")
log = logging.getLogger("aptship.webhooks")


def new_event_id(now: float | None = None) -> str:
    """``20261130T221000.123456Z-1a2b3c4d``: the same form as the audit objects' names."""
    at = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
    return f"{stamp}-{secrets.token_hex(4)}"


def check_event_id(event_id: str) -> str:
    if not EVENT_ID_RE.match(event_id):
        raise UsageError(
            f"{event_id[:80]!r} is not a webhook event id (like 20261130T221000.123456Z-1a2b3c4d; "
            "see `aptship webhooks deliveries`)"
        )
    return event_id


def event_key(event_id: str) -> str:
    return join_key(EVENTS_PREFIX, f"{check_event_id(event_id)}.json")


def pending_key(event_id: str) -> str:
    return join_key(PENDING_PREFIX, check_event_id(event_id))


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


# -- payloads ---------------------------------------------------------------------------
def audit_payload(event_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The webhook payload of an audit event, or None for actions that send none."""
    action = event.get("action")
    if action not in AUDIT_TYPES:
        return None
    changes = [c for c in event.get("changes", []) if isinstance(c, dict)]
    names = {c.get("package") for c in changes}
    package = next(iter(names)) if len(names) == 1 else None
    moves = [c for c in changes if "note" not in c] or changes
    first = moves[0] if package is not None and moves else {}
    return {
        "schema": SCHEMA,
        "id": event_id,
        "type": action,
        "channel": event.get("channel"),
        "package": package,
        "old_pin": first.get("old"),
        "new_pin": first.get("new"),
        "actor": event.get("actor"),
        "time": event.get("at"),
        "changes": changes,
    }


def fleet_payload(
    event_id: str, channel: str, converged: bool, fleet: dict[str, Any], actor: str, at: float
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "id": event_id,
        "type": "fleet.converged" if converged else "fleet.diverged",
        "channel": channel,
        "package": None,
        "old_pin": None,
        "new_pin": None,
        "actor": actor,
        "time": iso(at),
        "changes": [],
        "fleet": fleet,
    }


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON with sorted keys."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


# -- signatures -------------------------------------------------------------------------
def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256 of "<unix>." + body>``: the header's value."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> bool:
    """What a receiver does (docs/webhooks.md): a fresh timestamp and a matching v1 HMAC."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit() or len(stamps[0]) > 12:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected.encode(), v.encode()) for v in fields.get("v1", []))


# -- the queue --------------------------------------------------------------------------
@dataclass
class Attempt:
    """The outcome of one delivery attempt (``status`` is the HTTP status, if any)."""

    ok: bool
    status: int | None
    error: str | None
    response: str
    started: float
    duration: float


def _parse(event_id: str, raw: bytes) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"webhook event {event_id!r} is not valid JSON") from exc
    if not isinstance(record, dict) or not isinstance(record.get("deliveries"), dict):
        raise StorageError(f"webhook event {event_id!r} is not an event record")
    return record


def _delivery() -> dict[str, Any]:
    return {"status": "pending", "attempts": 0, "next_at": 0.0, "lease": None, "log": []}


def backoff(cfg: WebhooksConfig, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed: exponential, capped, jittered.

    The wait is drawn from the upper half of the exponential step, so replicas and
    receivers that failed together do not retry in lockstep.
    """
    step = min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** min(attempts - 1, 62))
    return step * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


class WebhookQueue:
    """The webhook objects of one storage backend (the event records and their states)."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.clock = clock

    # -- queuing --------------------------------------------------------------------
    def enabled(self) -> bool:
        return self.storage.exists(ENABLED_KEY)

    def enable(self) -> None:
        """From now on, operations on this storage queue events (written by the server)."""
        if not self.storage.exists(ENABLED_KEY):
            with contextlib.suppress(PreconditionFailed):
                self.storage.write_bytes(
                    ENABLED_KEY,
                    json.dumps({"since": iso(self.clock())}).encode(),
                    create_only=True,
                    content_type="application/json",
                )

    def enqueue(self, payload: dict[str, Any]) -> None:
        """Store the event; the pending marker first, so a crash never loses one silently."""
        event_id = str(payload["id"])
        with contextlib.suppress(PreconditionFailed):
            self.storage.write_bytes(pending_key(event_id), b"", create_only=True)
        data = json.dumps({"event": payload, "deliveries": {}}, sort_keys=True).encode()
        with contextlib.suppress(PreconditionFailed):  # our own retried write
            self.storage.write_bytes(
                event_key(event_id), data, create_only=True, content_type="application/json"
            )

    # -- records --------------------------------------------------------------------
    def read(self, event_id: str) -> dict[str, Any]:
        try:
            raw = self.storage.read_bytes(event_key(event_id))
        except NotFound:
            raise NotFound(
                f"no webhook event {event_id!r} (see `aptship webhooks deliveries`)"
            ) from None
        return _parse(event_id, raw)

    def update(self, event_id: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Apply ``change`` (True: write) to the record with compare-and-swap, retried."""
        key = event_key(event_id)
        for _attempt in range(CAS_ATTEMPTS):
            try:
                raw, etag = self.storage.read_with_etag(key)
            except NotFound:
                raise NotFound(f"no webhook event {event_id!r}") from None
            record = _parse(event_id, raw)
            if not change(record):
                return record
            try:
                self.storage.write_bytes(
                    key,
                    json.dumps(record, sort_keys=True).encode(),
                    if_match=etag,
                    content_type="application/json",
                )
            except PreconditionFailed:
                time.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - jitter
                continue
            return record
        raise StorageError(f"webhook event {event_id!r} kept changing while being updated")

    def pending(self) -> list[tuple[str, ObjectInfo]]:
        """(event id, marker) of every event with a delivery possibly due, oldest first."""
        found = []
        for info in self.storage.list(PENDING_PREFIX):
            name = info.key.removeprefix(PENDING_PREFIX)
            if EVENT_ID_RE.match(name):
                found.append((name, info))
        return sorted(found, key=lambda pair: pair[0])

    def settle(self, event_id: str) -> None:
        """Drop the pending marker of an event whose deliveries are all final.

        Re-checks after the delete: a redelivery that raced it puts the marker back.
        """
        self.storage.delete(pending_key(event_id))
        try:
            record = self.read(event_id)
        except NotFound:
            return
        if any(d.get("status") == "pending" for d in record["deliveries"].values()):
            with contextlib.suppress(PreconditionFailed):
                self.storage.write_bytes(pending_key(event_id), b"", create_only=True)

    # -- delivery protocol (used by the server's worker) ----------------------------
    def fan_out(self, event_id: str, cfg: WebhooksConfig) -> dict[str, Any]:
        """Give the event a delivery state for every configured endpoint that wants it."""

        def change(record: dict[str, Any]) -> bool:
            if record.get("fanned_out"):
                return False
            event = record.get("event") or {}
            kind, channel = str(event.get("type")), str(event.get("channel"))
            for name, endpoint in cfg.endpoints.items():
                if endpoint.wants(kind, channel):
                    record["deliveries"].setdefault(name, _delivery())
            record["fanned_out"] = True
            return True

        return self.update(event_id, change)

    def claim(self, event_id: str, endpoint: str, owner: str, lease_seconds: float) -> str | None:
        """Lease the next attempt of ``endpoint`` if it is due and not leased: its lease id."""
        lease_id = f"{owner}-{secrets.token_hex(6)}"
        claimed = False

        def change(record: dict[str, Any]) -> bool:
            nonlocal claimed
            claimed = False
            state = record["deliveries"].get(endpoint)
            now = self.clock()
            if state is None or state.get("status") != "pending" or state["next_at"] > now:
                return False
            lease = state.get("lease")
            if lease and lease.get("until", 0) > now:
                return False
            state["lease"] = {"id": lease_id, "until": now + lease_seconds}
            claimed = True
            return True

        self.update(event_id, change)
        return lease_id if claimed else None

    def finish(
        self, event_id: str, endpoint: str, lease_id: str, attempt: Attempt, cfg: WebhooksConfig
    ) -> dict[str, Any]:
        """Record an attempt: delivered, retry later (with backoff), or failed for good."""

        def change(record: dict[str, Any]) -> bool:
            state = record["deliveries"].get(endpoint)
            if state is None:
                return False
            lease = state.get("lease") or {}
            if lease.get("id") != lease_id and not attempt.ok:
                return False  # our lease expired and another replica owns the delivery now
            state["lease"] = None
            state["attempts"] += 1
            state["log"] = [
                *state["log"],
                {
                    "attempt": state["attempts"],
                    "at": iso(attempt.started),
                    "http_status": attempt.status,
                    "error": attempt.error,
                    "response": attempt.response,
                    "ms": round(attempt.duration * 1000),
                },
            ][-LOG_ATTEMPTS:]
            if attempt.ok:
                state["status"] = "delivered"
                state["delivered_at"] = iso(self.clock())
            elif state["attempts"] >= cfg.max_attempts:
                state["status"] = "failed"
            else:
                state["next_at"] = self.clock() + backoff(cfg, state["attempts"])
            return True

        return self.update(event_id, change)

    def redeliver(self, event_id: str) -> dict[str, Any]:
        """Queue every delivery of the event again, from its first attempt."""
        self.read(event_id)  # NotFound before anything is written

        def change(record: dict[str, Any]) -> bool:
            for state in record["deliveries"].values():
                state.update(status="pending", attempts=0, next_at=0.0)
                state.pop("delivered_at", None)
            record["redelivered_at"] = iso(self.clock())
            if not record["deliveries"]:
                record["fanned_out"] = False  # to the endpoints configured now
            return True

        record = self.update(event_id, change)
        # Rewritten, not only created: a new ETag tells every worker to look again now.
        self.storage.write_bytes(pending_key(event_id), secrets.token_hex(8).encode())
        return record

    # -- the delivery log -----------------------------------------------------------
    def deliveries(
        self, *, failed: bool = False, limit: int = 100, scan_max: int = 2000
    ) -> list[dict[str, Any]]:
        """Rows (one per event and endpoint), newest event first, at most ``limit``."""
        keys = sorted((i.key for i in self.storage.list(EVENTS_PREFIX)), reverse=True)
        rows: list[dict[str, Any]] = []
        for key in keys[:scan_max]:
            event_id = key.removeprefix(EVENTS_PREFIX).removesuffix(".json")
            if not EVENT_ID_RE.match(event_id):
                continue
            try:
                record = self.read(event_id)
            except (NotFound, StorageError):
                continue
            for row in delivery_rows(event_id, record):
                if failed and row["status"] not in ("failed", "retrying"):
                    continue
                rows.append(row)
            if len(rows) >= limit:
                break
        return rows[:limit]


def next_due(record: dict[str, Any]) -> float | None:
    """When a pending delivery of the record may next be attempted (None: none pending)."""
    times = []
    for state in record["deliveries"].values():
        if state.get("status") != "pending":
            continue
        lease = state.get("lease") or {}
        times.append(max(float(state.get("next_at") or 0), float(lease.get("until") or 0)))
    if not record.get("fanned_out"):
        times.append(0.0)
    return min(times) if times else None


def delivery_rows(event_id: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The delivery log's rows of one event record (``queued``: not yet sent anywhere)."""
    found = record.get("event")
    event: dict[str, Any] = found if isinstance(found, dict) else {}
    base = {
        "event_id": event_id,
        "type": event.get("type"),
        "channel": event.get("channel"),
        "package": event.get("package"),
        "old_pin": event.get("old_pin"),
        "new_pin": event.get("new_pin"),
        "time": event.get("time"),
    }
    if not record["deliveries"]:
        status = "no endpoint" if record.get("fanned_out") else "queued"
        return [{**base, "endpoint": None, "status": status, "attempts": 0, "last": None}]
    rows = []
    for name, state in sorted(record["deliveries"].items()):
        status = str(state.get("status"))
        if status == "pending" and state.get("attempts", 0) > 0:
            status = "retrying"
        attempts = state.get("log") or []
        next_at = state.get("next_at") or 0
        rows.append(
            {
                **base,
                "endpoint": name,
                "status": status,
                "attempts": state.get("attempts", 0),
                "next_attempt": iso(next_at) if status == "retrying" else None,
                "delivered_at": state.get("delivered_at"),
                "last": attempts[-1] if attempts else None,
            }
        )
    return rows


# -- hooks for the operations -----------------------------------------------------------
def enqueue_audit_event(storage: Storage, event_id: str, event: dict[str, Any]) -> None:
    """Queue the webhook of an audit event, if a server with endpoints runs on ``storage``.

    Never raises: the operation is committed already, and a webhook must not fail it.
    """
    payload = audit_payload(event_id, event)
    if payload is None:
        return
    try:
        queue = WebhookQueue(storage)
        if queue.enabled():
            queue.enqueue(payload)
    except Exception as err:  # the operation succeeded: say so and go on
        log.warning(
            "webhook event %s not queued: %s",
            event_id,
            getattr(err, "message", type(err).__name__),
            extra={"event": "webhook_enqueue_failed", "event_id": event_id},
        )


def record_fleet_state(
    storage: Storage,
    channel: str,
    converged: bool,
    fleet: dict[str, Any],
    actor: str,
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Store the channel's converged state; on a change, queue one event: its id.

    The state object changes by compare-and-swap, so of several replicas seeing the
    same transition exactly one queues it.  The first state ever seen queues an event
    only when it is "converged".
    """
    key = join_key(FLEET_PREFIX, f"{channel}.json")
    for _attempt in range(CAS_ATTEMPTS):
        try:
            raw, etag = storage.read_with_etag(key)
            try:
                before = bool(json.loads(raw).get("converged"))
            except (ValueError, AttributeError):
                before = not converged  # unreadable: write it again
        except NotFound:
            etag, before = None, False
            if not converged:
                with contextlib.suppress(PreconditionFailed):
                    storage.write_bytes(key, b'{"converged": false}', create_only=True)
                return None
        if before == converged:
            return None
        now = clock()
        data = json.dumps({"converged": converged, "since": iso(now)}).encode()
        try:
            storage.write_bytes(
                key, data, create_only=etag is None, if_match=etag, content_type="application/json"
            )
        except PreconditionFailed:
            continue
        event_id = new_event_id(now)
        WebhookQueue(storage, clock).enqueue(
            fleet_payload(event_id, channel, converged, fleet, actor, now)
        )
        return event_id
    return None
