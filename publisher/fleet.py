"""The fleet view: which host runs which version of a channel's packages (docs/hosts.md).

Hosts report, with their ``read`` token, the versions dpkg has installed of the
packages their pins name.  The server keeps one small JSON record per (channel,
host) in the storage backend, so every server replica and the CLI see the same
fleet, on a local directory as on S3::

    .aptship/hosts/<channel>/<host_id>.json
    {"host_id", "hostname", "token", "packages", "apt_update", "last_seen"}

``token`` is the *name* of the token that created the record (never a secret): only
that token may write the record again.  ``last_seen`` is the server's clock at
receipt; ``apt_update`` is the host's own (untrusted) clock and only shown.

States of a host in a channel, for the packages it reports installed that the
channel pins: ``converged`` (all on their pin), ``behind`` (at least one is not),
``stale`` (no report for ``fleet.stale_after`` seconds; stale wins).  A package's
rollout counts the live (not stale) hosts that have it installed and how many run
the pin; stale hosts are counted apart, so a dead machine never holds a rollout back.

No Flask here: the server, the CLI, ``/metrics`` and the dashboard share this module.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from debian.debian_support import Version

from publisher.config import FleetConfig
from publisher.errors import (
    HostLimit,
    HostOwned,
    InvalidPackage,
    InvalidReport,
    NotFound,
    PreconditionFailed,
    ReportTooLarge,
    StorageError,
)
from publisher.state import StateStore
from publisher.storage.base import Storage
from publisher.storage.keys import join_key
from publisher.versions import check_package_name, check_version

HOSTS_PREFIX = ".aptship/hosts/"
HOST_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
STATES = ("converged", "behind", "stale")
REPORT_FIELDS = frozenset({"hostname", "packages", "apt_update"})
MAX_HOSTNAME = 253
MAX_FIELD = 256  # package names and versions
MAX_TIMESTAMP = 64
LOAD_THREADS = 8  # parallel record reads when listing a channel's fleet (S3 latency)
WRITE_ATTEMPTS = 3


def now_iso(now: float | None = None) -> str:
    stamp = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def parse_iso(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time with a zone (``Z`` or ``+hh:mm``)."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("no time zone")
    return when.timestamp()


def check_host_id(host_id: str) -> str:
    if not HOST_ID_RE.match(host_id):
        raise InvalidReport(
            f"invalid host id {host_id[:80]!r}: use 1-64 characters [a-z0-9._-], starting "
            "with a letter or digit (normally the 32-hex /etc/machine-id)"
        )
    return host_id


def host_prefix(channel: str) -> str:
    return join_key(HOSTS_PREFIX, channel) + "/"


def host_key(channel: str, host_id: str) -> str:
    return join_key(HOSTS_PREFIX, channel, f"{check_host_id(host_id)}.json")


# -- reports --------------------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    """A validated host report."""

    hostname: str
    packages: dict[str, str | None]
    apt_update: str | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidReport(f"duplicate key {key[:80]!r} in the report")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidReport(f"{name} is not a JSON value")


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in text)


def _hostname(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidReport("'hostname' must be a non-empty string")
    if len(value) > MAX_HOSTNAME:
        raise InvalidReport(f"'hostname' is longer than {MAX_HOSTNAME} characters")
    if not _printable(value):
        raise InvalidReport("'hostname' contains control or format characters")
    return value


def _packages(value: Any, limit: int) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise InvalidReport("'packages' must be an object: package name -> version or null")
    if len(value) > limit:
        raise InvalidReport(
            f"'packages' names {len(value)} packages; at most {limit} (fleet.max_packages)"
        )
    out: dict[str, str | None] = {}
    for name, version in value.items():
        try:
            if len(name) > MAX_FIELD:
                raise InvalidPackage(f"package name longer than {MAX_FIELD} characters")
            check_package_name(name)
            if version is not None:
                if not isinstance(version, str):
                    raise InvalidPackage(f"the version of {name!r} must be a string or null")
                if len(version) > MAX_FIELD:
                    raise InvalidPackage(f"the version of {name!r} is too long")
                check_version(version)
        except InvalidPackage as err:
            raise InvalidReport(f"'packages': {err.message}") from None
        out[name] = version
    return out


def _apt_update(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP:
        raise InvalidReport("'apt_update' must be an ISO 8601 time such as 2026-11-30T21:00:00Z")
    try:
        return now_iso(parse_iso(value))
    except (ValueError, OverflowError, OSError):
        raise InvalidReport(
            "'apt_update' must be an ISO 8601 time with a zone, e.g. 2026-11-30T21:00:00Z"
        ) from None


def parse_report(body: bytes, limits: FleetConfig) -> Report:
    """Validate a report body; InvalidReport (or ReportTooLarge) says what is wrong."""
    if len(body) > limits.max_report_bytes:
        raise ReportTooLarge(
            f"report is larger than {limits.max_report_bytes} bytes (fleet.max_report_bytes)"
        )
    try:
        data = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise InvalidReport("the report is not UTF-8 text") from None
    except RecursionError:
        raise InvalidReport("the report is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and over-long integers
        raise InvalidReport(f"the report is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidReport(
            'send a JSON object: {"hostname": ..., "packages": {...}, "apt_update": ...}'
        )
    unknown = sorted(set(data) - REPORT_FIELDS)
    if unknown:
        raise InvalidReport(f"unknown field {unknown[0][:80]!r} in the report")
    if "packages" not in data:
        raise InvalidReport("'packages' is required (an object; may be empty)")
    return Report(
        hostname=_hostname(data.get("hostname")),
        packages=_packages(data["packages"], limits.max_packages),
        apt_update=_apt_update(data.get("apt_update")),
    )


# -- records ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HostRecord:
    host_id: str
    hostname: str
    token: str
    packages: dict[str, str | None]
    apt_update: str | None
    last_seen: str

    def to_json(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "token": self.token,
            "packages": dict(sorted(self.packages.items())),
            "apt_update": self.apt_update,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_json(cls, data: Any) -> HostRecord:
        """A stored record; ValueError when it is not one (the listing skips it)."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        packages = data.get("packages")
        if not isinstance(packages, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in packages.items()
        ):
            raise ValueError("bad packages")
        texts = [data.get(k) for k in ("host_id", "hostname", "token", "last_seen")]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("missing fields")
        apt_update = data.get("apt_update")
        parse_iso(str(data["last_seen"]))
        return cls(
            host_id=str(data["host_id"]),
            hostname=str(data["hostname"]),
            token=str(data["token"]),
            packages=dict(packages),
            apt_update=apt_update if isinstance(apt_update, str) else None,
            last_seen=str(data["last_seen"]),
        )


def on_pin(version: str, pin: str) -> bool:
    """dpkg equality (``1.0`` = ``0:1.0`` = ``1.0-0``), not string equality."""
    if version == pin:
        return True
    try:
        return Version(version) == Version(pin)
    except ValueError:
        return False


def host_view(
    record: HostRecord,
    pins: dict[str, str],
    now: float,
    stale_after: float,
    package: str | None = None,
) -> dict[str, Any]:
    """The record plus ``state``, ``behind`` (packages off their pin) and ``pins``."""
    names = [package] if package else sorted(record.packages)
    relevant = {
        n: record.packages[n]
        for n in names
        if record.packages.get(n) is not None and pins.get(n) is not None
    }
    behind = sorted(n for n, v in relevant.items() if v is not None and not on_pin(v, pins[n]))
    if now - parse_iso(record.last_seen) > stale_after:
        state = "stale"
    else:
        state = "behind" if behind else "converged"
    return {
        **record.to_json(),
        "pins": {n: pins[n] for n in sorted(relevant)},
        "state": state,
        "behind": behind,
    }


def needed(hosts: int, percent: float) -> int:
    """How many of ``hosts`` make ``percent`` %: rounded up, so 90% of 5 is 5; 0 of 0."""
    return math.ceil(hosts * percent / 100 - 1e-9)


@dataclass
class Rollout:
    """One pinned package across a channel's fleet."""

    package: str
    pin: str
    hosts: int = 0  # live hosts that have the package installed
    on_pin: int = 0
    stale: int = 0  # stale hosts that have it installed (not in ``hosts``)

    @property
    def behind(self) -> int:
        return self.hosts - self.on_pin

    def reached(self, percent: float) -> bool:
        """At least ``percent`` % of the live hosts run the pin (vacuously true for none)."""
        return self.on_pin >= needed(self.hosts, percent)

    def counts(self) -> str:
        """``37/40 hosts on 1.4.2-1; 3 behind`` (and ``; 2 stale`` when there are any)."""
        text = f"{self.on_pin}/{self.hosts} hosts on {self.pin}; {self.behind} behind"
        return text + (f"; {self.stale} stale" if self.stale else "")

    def line(self) -> str:
        return f"{self.package}: {self.counts()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "pin": self.pin,
            "hosts": self.hosts,
            "on_pin": self.on_pin,
            "behind": self.behind,
            "stale": self.stale,
            "summary": self.line(),
        }


def rollouts(
    records: Iterable[HostRecord],
    pins: dict[str, str],
    now: float,
    stale_after: float,
    packages: Iterable[str] = (),
) -> dict[str, Rollout]:
    """Per pinned package that a host has installed (and each of ``packages`` if pinned)."""
    out = {name: Rollout(name, pins[name]) for name in packages if name in pins}
    for record in records:
        stale = now - parse_iso(record.last_seen) > stale_after
        for name, version in record.packages.items():
            pin = pins.get(name)
            if version is None or pin is None:
                continue
            roll = out.setdefault(name, Rollout(name, pin))
            if stale:
                roll.stale += 1
                continue
            roll.hosts += 1
            roll.on_pin += on_pin(version, pin)
    return dict(sorted(out.items()))


def state_counts(
    records: Iterable[HostRecord], pins: dict[str, str], now: float, stale_after: float
) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for record in records:
        counts[host_view(record, pins, now, stale_after)["state"]] += 1
    return counts


def fleet_view(
    channel: str,
    records: list[HostRecord],
    pins: dict[str, str],
    stale_after: float,
    *,
    package: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON answer of ``GET /api/v1/channels/<ch>/hosts`` and ``aptship hosts --json``."""
    at = time.time() if now is None else now
    chosen = [r for r in records if package is None or r.packages.get(package) is not None]
    hosts = [host_view(r, pins, at, stale_after, package) for r in chosen]
    rolls = rollouts(chosen, pins, at, stale_after, [package] if package else [])
    if package:
        rolls = {k: v for k, v in rolls.items() if k == package}
    counts = dict.fromkeys(STATES, 0)
    for host in hosts:
        counts[host["state"]] += 1
    return {
        "channel": channel,
        "package": package,
        "generated_at": now_iso(at),
        "stale_after": stale_after,
        "pins": {name: roll.pin for name, roll in rolls.items()},
        "states": counts,
        "hosts": sorted(hosts, key=lambda h: str(h["host_id"])),
        "rollout": [roll.to_json() for roll in rolls.values()],
    }


# -- storage ----------------------------------------------------------------------------
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
