"""Host records in the storage backend: ``.aptship/hosts/<channel>/<host_id>.json``.

:class:`FleetStore` writes a host's record only for the token that created it (a
new record create-only, an update with compare-and-swap on its ETag), caps the hosts
one token may create per channel, and reads a channel's records (in parallel, for
S3 latency) either fresh or from a snapshot reused for ``fleet.cache_seconds``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from publisher.config import FleetConfig
from publisher.errors import HostLimit, HostOwned, NotFound, PreconditionFailed, StorageError
from publisher.fleet import HostRecord, fleet_view, host_key, host_prefix
from publisher.host_report import Report, now_iso
from publisher.state import StateStore
from publisher.storage.base import Storage

LOAD_THREADS = 8  # parallel record reads when listing a channel's fleet (S3 latency)
WRITE_ATTEMPTS = 3


@dataclass
class _Snapshot:
    taken: float
    records: list[HostRecord]
    created: dict[str, int] = field(default_factory=dict)  # token -> hosts created since


class FleetStore:
    """Host records in a storage backend, with a short-lived per-channel snapshot."""

    def __init__(
        self, storage: Storage, limits: FleetConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.storage = storage
        self.limits = limits
        self.clock = clock
        self._snapshots: dict[str, _Snapshot] = {}
        self._lock = threading.Lock()

    def _load(self, key: str) -> HostRecord | None:
        try:
            return HostRecord.from_json(json.loads(self.storage.read_bytes(key)))
        except NotFound:
            return None  # deleted between the listing and the read
        except ValueError:
            return None  # not a record (written by hand?): the fleet view skips it

    def records(self, channel: str) -> list[HostRecord]:
        """Every host record of ``channel``, read now."""
        keys = [i.key for i in self.storage.list(host_prefix(channel)) if i.key.endswith(".json")]
        if len(keys) <= 1:
            found = [self._load(k) for k in keys]
        else:
            with ThreadPoolExecutor(max_workers=min(LOAD_THREADS, len(keys))) as pool:
                found = list(pool.map(self._load, keys))
        return sorted((r for r in found if r is not None), key=lambda r: r.host_id)

    def snapshot(self, channel: str) -> list[HostRecord]:
        """``records(channel)``, reused for ``fleet.cache_seconds``."""
        return self._snapshot(channel).records

    def _snapshot(self, channel: str) -> _Snapshot:
        now = self.clock()
        with self._lock:
            snap = self._snapshots.get(channel)
        if snap is not None and now - snap.taken < self.limits.cache_seconds:
            return snap
        fresh = _Snapshot(now, self.records(channel))
        with self._lock:
            self._snapshots[channel] = fresh
        return fresh

    def hosts_of(self, channel: str, token: str) -> int:
        """Hosts ``token`` created in ``channel`` (snapshot + this process's creations since)."""
        snap = self._snapshot(channel)
        with self._lock:
            return sum(r.token == token for r in snap.records) + snap.created.get(token, 0)

    def report(self, channel: str, host_id: str, token: str, report: Report) -> HostRecord:
        """Store ``report`` as the record of ``host_id``, written only by its creator.

        A new record is written create-only and an existing one with compare-and-swap on
        its ETag, so two tokens racing for one host id never overwrite each other.
        """
        key = host_key(channel, host_id)
        for _attempt in range(WRITE_ATTEMPTS):
            try:
                raw, etag = self.storage.read_with_etag(key)
            except NotFound:
                raw, etag = b"", None
            if etag is not None:
                try:
                    owner: str | None = HostRecord.from_json(json.loads(raw)).token
                except ValueError:
                    owner = None  # unreadable record: whoever reports next takes it over
                if owner is not None and owner != token:
                    raise HostOwned(
                        f"host {host_id!r} in channel {channel!r} was registered by another "
                        "token; a token can only write its own host records"
                    )
            elif self.hosts_of(channel, token) >= self.limits.max_hosts_per_token:
                raise HostLimit(
                    f"token {token!r} already registered {self.limits.max_hosts_per_token} hosts "
                    f"in channel {channel!r} (fleet.max_hosts_per_token)"
                )
            record = HostRecord(
                host_id=host_id,
                hostname=report.hostname,
                token=token,
                packages=report.packages,
                apt_update=report.apt_update,
                last_seen=now_iso(self.clock()),
            )
            data = json.dumps(record.to_json(), sort_keys=True).encode()
            try:
                self.storage.write_bytes(
                    key,
                    data,
                    create_only=etag is None,
                    if_match=etag,
                    content_type="application/json",
                )
            except PreconditionFailed:
                continue
            if etag is None:
                self._count_created(channel, token)
            return record
        raise StorageError(
            f"host record {host_id!r} kept changing while being written; report again"
        )

    def _count_created(self, channel: str, token: str) -> None:
        with self._lock:
            snap = self._snapshots.get(channel)
            if snap is not None:
                snap.created[token] = snap.created.get(token, 0) + 1


def pins_of(states: StateStore, channel: str, names: Iterable[str]) -> dict[str, str]:
    """The channel's pins of ``names`` only: reads their state shards, not the channel's."""
    view = states.view(channel)
    out = {}
    for name in sorted(set(names)):
        ps = view.get(name)
        if ps is not None and ps.pin:
            out[name] = ps.pin
    return out


def record_pins(states: StateStore, channel: str, records: Iterable[HostRecord]) -> dict[str, str]:
    """The pins of every package the ``records`` name."""
    return pins_of(states, channel, {name for r in records for name in r.packages})


def channel_view(
    store: FleetStore, states: StateStore, channel: str, *, package: str | None = None
) -> dict[str, Any]:
    """Fresh records of ``channel`` as a :func:`fleet_view`."""
    records = store.records(channel)
    pins = record_pins(states, channel, records)
    if package:
        pins |= pins_of(states, channel, [package])
    return fleet_view(channel, records, pins, store.limits.stale_after, package=package)
