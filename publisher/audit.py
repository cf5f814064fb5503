"""The append-only audit log: one immutable object per operation.

``.aptship/audit/<UTC timestamp>-<random>.json``; keys sort by time, objects are
written create-only and never changed, so the log works the same on S3.  An event
holds the operation (who, when, what, which channel) and the list of its changes
(package, version, pin before -> after); a bulk publish is one object.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import time
from contextvars import ContextVar
from typing import Any

from publisher.errors import NotFound, PreconditionFailed
from publisher.storage.base import Storage
from publisher.webhooks import enqueue_audit_event

AUDIT_PREFIX = ".aptship/audit/"


# Set by the server for the duration of a request (the token's name), so the audit
# log names who asked, not the server process.  Threads and requests each get their own.
request_actor: ContextVar[str | None] = ContextVar("aptship_request_actor", default=None)


def current_actor() -> str:
    actor = request_actor.get() or os.environ.get("APTSHIP_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{os.uname().nodename}"  # gethostname(2), without importing socket


def record_event(
    storage: Storage, *, action: str, channel: str, changes: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {"action": action, "channel": channel, "changes": changes, **extra}
    event.setdefault("actor", current_actor())
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    event.setdefault("at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    key = f"{AUDIT_PREFIX}{stamp}-{secrets.token_hex(4)}.json"
    # The key is this event's alone: if it exists, it is our own write whose response
    # was lost and that the S3 client retried.
    with contextlib.suppress(PreconditionFailed):
        storage.write_bytes(
            key,
            json.dumps(event, sort_keys=True).encode(),
            create_only=True,
            content_type="application/json",
        )
    # The release webhook of this operation (docs/webhooks.md): queued, never sent here.
    enqueue_audit_event(storage, key.removeprefix(AUDIT_PREFIX).removesuffix(".json"), event)
    return event


def read_events(
    storage: Storage, *, channel: str | None = None, package: str | None = None
) -> list[dict[str, Any]]:
    events = []
    for info in storage.list(AUDIT_PREFIX):
        try:
            event = json.loads(storage.read_bytes(info.key))
        except (NotFound, ValueError):
            continue
        if channel and event.get("channel") != channel:
            continue
        for change in event.get("changes", []):
            if package and change.get("package") != package:
                continue
            row = {k: v for k, v in event.items() if k != "changes"}
            row.update(change)
            events.append(row)
    return events


def read_events_page(
    storage: Storage,
    *,
    channels: set[str],
    package: str | None = None,
    limit: int = 100,
    before: str | None = None,
    scan_max: int = 2000,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of audit rows, newest first, and the cursor of the next (older) page.

    Only the object names are listed; objects are read newest first and only until
    ``limit`` rows (in ``channels``, for ``package`` if given) are found or
    ``scan_max`` objects were read (a sparse filter then returns a short page and a
    cursor), so a page never reads the whole log.  The
    cursor is the key of the last object read (``before=`` the next page starts
    below it); None when the log is exhausted.
    """
    keys = sorted((info.key for info in storage.list(AUDIT_PREFIX)), reverse=True)
    if before is not None:
        keys = [k for k in keys if k < AUDIT_PREFIX + before]
    rows: list[dict[str, Any]] = []
    scanned = 0
    for key in keys:
        scanned += 1
        try:
            event = json.loads(storage.read_bytes(key))
        except (NotFound, ValueError):
            continue
        if isinstance(event, dict) and event.get("channel") in channels:
            for change in reversed(event.get("changes", [])):
                if package and change.get("package") != package:
                    continue
                row = {k: v for k, v in event.items() if k != "changes"}
                row.update(change)
                rows.append(row)
        if len(rows) >= limit or scanned >= scan_max:
            more = scanned < len(keys)
            return rows, key.removeprefix(AUDIT_PREFIX) if more else None
    return rows, None
