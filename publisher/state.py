"""Channel state: the source of truth from which every index is rendered.

Layout (per channel)::

    .aptship/state/<channel>/head.json                 generation + {bucket: shard sha256}
    .aptship/state/<channel>/shards/<bb>/<sha256>.json  immutable, content-addressed

Packages are spread over 256 buckets by a hash of their name.  A shard holds every
package of one bucket: its entries (control text + pool file + hashes), its pin, its
pin stack and pin history.  A change rewrites only the shards it touches (create-only,
content-addressed) and then swaps the small head with compare-and-swap.  So a
publish costs the same whether the channel holds 10 entries or 50,000, and two
concurrent writers never lose each other's work: the loser re-reads and re-applies.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from publisher.errors import NotFound, PreconditionFailed, StorageError, SweepBusy
from publisher.storage.base import Storage
from publisher.sweep import Restore, Sweep, guard, read_sweep
from publisher.versions import sort_versions

STATE_PREFIX = ".aptship/state"
FORMAT = 1
MAX_ATTEMPTS = 12
SHARD_CACHE = 64  # immutable shard bodies kept in memory per StateStore ...
SHARD_CACHE_BYTES = 1 << 20  # ... up to this many bytes (a 50,000-entry channel's
# shards are about 180 KiB each: a full import must not keep them all alive)
T = TypeVar("T")


def bucket_of(package: str) -> str:
    return hashlib.sha1(package.encode(), usedforsecurity=False).hexdigest()[:2]


def head_key(channel: str) -> str:
    return f"{STATE_PREFIX}/{channel}/head.json"


def shard_key(channel: str, bucket: str, sha: str) -> str:
    return f"{STATE_PREFIX}/{channel}/shards/{bucket}/{sha}.json"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(slots=True)
class Entry:
    """One package version of one architecture in a channel (slots: a 50,000-file
    publish holds one per file)."""

    package: str
    version: str
    architecture: str
    filename: str
    size: int
    md5: str
    sha1: str
    sha256: str
    control: str
    published_at: str = ""
    published_by: str = ""

    def stanza(self) -> str:
        """The Packages stanza: the control paragraph plus the repository fields."""
        return (
            f"{self.control}Filename: {self.filename}\nSize: {self.size}\n"
            f"MD5sum: {self.md5}\nSHA1: {self.sha1}\nSHA256: {self.sha256}\n"
        )

    def same_artifact(self, other: Entry) -> bool:
        return self.sha256 == other.sha256 and self.size == other.size

    def to_json(self) -> dict[str, Any]:
        # the fields of dataclasses.asdict, without its deep copy of every value
        return {name: getattr(self, name) for name in _ENTRY_FIELDS}


_ENTRY_FIELDS = tuple(Entry.__dataclass_fields__)


@dataclass
class PinEvent:
    at: str
    actor: str
    action: str
    old: str | None
    new: str | None


@dataclass
class PackageState:
    entries: list[Entry] = field(default_factory=list)
    pin: str | None = None
    pin_stack: list[str] = field(default_factory=list)
    pin_history: list[PinEvent] = field(default_factory=list)

    def versions(self) -> list[str]:
        return sort_versions({e.version for e in self.entries})

    def find(self, version: str, arch: str | None = None) -> list[Entry]:
        return [
            e
            for e in self.entries
            if e.version == version and (arch is None or e.architecture == arch)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.to_json() for e in self.entries],
            "pin": self.pin,
            "pin_stack": self.pin_stack,
            "pin_history": [vars(p).copy() for p in self.pin_history],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PackageState:
        return cls(
            entries=[Entry(**e) for e in data.get("entries", [])],
            pin=data.get("pin"),
            pin_stack=list(data.get("pin_stack", [])),
            pin_history=[PinEvent(**p) for p in data.get("pin_history", [])],
        )


Shard = dict[str, PackageState]


def encode_shard(shard: Shard) -> bytes:
    body = {
        name: shard[name].to_json()
        for name in sorted(shard)
        if shard[name].entries or shard[name].pin_history
    }
    return json.dumps(
        {"format": FORMAT, "packages": body}, sort_keys=True, separators=(",", ":")
    ).encode()


def decode_shard(data: bytes) -> Shard:
    raw = json.loads(data)
    return {name: PackageState.from_json(body) for name, body in raw.get("packages", {}).items()}


@dataclass
class Head:
    channel: str
    generation: int = 0
    shards: dict[str, str] = field(default_factory=dict)
    updated_at: str = ""
    etag: str | None = None  # storage ETag of the head as read; None if it did not exist
    fence: str = ""  # set by gc when it rewrites the head unchanged (publisher.gc)

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "format": FORMAT,
            "channel": self.channel,
            "generation": self.generation,
            "updated_at": self.updated_at,
            "shards": dict(sorted(self.shards.items())),
        }
        if self.fence:
            body["fence"] = self.fence
        return json.dumps(body, sort_keys=True, indent=1).encode()

    def shard_keys(self) -> set[str]:
        return {shard_key(self.channel, b, sha) for b, sha in self.shards.items()}


class ChannelState:
    """A consistent view of one channel at one head, with copy-on-write shards."""

    def __init__(self, store: StateStore, head: Head) -> None:
        self.store = store
        self.head = head
        self._shards: dict[str, Shard] = {}
        self.dirty: set[str] = set()
        self.lost: set[str] = set()  # buckets whose shard is gone, replaced by an empty one

    @property
    def channel(self) -> str:
        return self.head.channel

    def shard(self, bucket: str) -> Shard:
        if bucket not in self._shards:
            sha = self.head.shards.get(bucket)
            self._shards[bucket] = self.store.load_shard(self.channel, bucket, sha) if sha else {}
        return self._shards[bucket]

    def replace_lost(self, bucket: str) -> None:
        """Start ``bucket`` over empty: its shard object is gone (publisher.repair)."""
        self._shards[bucket] = {}
        self.dirty.add(bucket)
        self.lost.add(bucket)

    def get(self, package: str) -> PackageState | None:
        return self.shard(bucket_of(package)).get(package)

    def carries(self, package: str) -> bool:
        """Whether the channel has entries of ``package``.  A shard not loaded yet is
        decoded only if its bytes name the package (a checked package name is its
        own JSON string): most lookups are of packages the repository does not
        carry (the OS's, for the dependency check)."""
        bucket = bucket_of(package)
        sha = self.head.shards.get(bucket)
        if sha is None:
            return False
        if bucket not in self._shards and not self._names(bucket, sha, package):
            return False
        state = self.get(package)
        return state is not None and bool(state.entries)

    def _names(self, bucket: str, sha: str, package: str) -> bool:
        quoted = json.dumps(package).encode()
        return quoted in self.store.shard_bytes(self.channel, bucket, sha)

    def require(self, package: str) -> PackageState:
        state = self.get(package)
        if state is None or not state.entries:
            raise NotFound(f"package {package!r} is not in channel {self.channel!r}")
        return state

    def edit(self, package: str) -> PackageState:
        """The package's state for modification (created empty if absent)."""
        bucket = bucket_of(package)
        self.dirty.add(bucket)
        return self.shard(bucket).setdefault(package, PackageState())

    def packages(self) -> Iterator[tuple[str, PackageState]]:
        """Every package, loading every shard (O(N): list/show/reindex/verify only)."""
        for bucket in sorted(self.head.shards):
            shard = self.shard(bucket)
            for name in sorted(shard):
                if shard[name].entries:
                    yield name, shard[name]

    def entry_changes(self) -> tuple[list[Entry], list[Entry]]:
        """Entries added and removed in the touched buckets, against the head as read."""
        added: list[Entry] = []
        removed: list[Entry] = []
        for bucket in sorted(self.dirty):
            sha = self.head.shards.get(bucket)
            lost = bucket in self.lost
            before = self.store.load_shard(self.channel, bucket, sha) if sha and not lost else {}

            def keys(shard: Shard) -> dict[tuple[str, str, str, str], Entry]:
                return {
                    (e.package, e.version, e.architecture, e.sha256): e
                    for ps in shard.values()
                    for e in ps.entries
                }

            old, new = keys(before), keys(self.shard(bucket))
            added += [e for k, e in new.items() if k not in old]
            removed += [e for k, e in old.items() if k not in new]
        return added, removed

    def bucket_entries(self, bucket: str) -> list[Entry]:
        shard = self.shard(bucket)
        return [e for name in sorted(shard) for e in shard[name].entries]


class StateStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Shards are content-addressed and never change, so their bytes can be kept:
        # the render right after a commit then reads no shard it has just written.
        self._shard_bytes: dict[str, bytes] = {}
        self._cached = 0  # bytes in _shard_bytes
        self._cache_lock = threading.Lock()

    def _remember(self, key: str, data: bytes) -> None:
        with self._cache_lock:  # the server shares a repository between threads
            self._cached -= len(self._shard_bytes.pop(key, b""))
            self._shard_bytes[key] = data
            self._cached += len(data)
            while len(self._shard_bytes) > SHARD_CACHE or self._cached > SHARD_CACHE_BYTES:
                oldest = next(iter(self._shard_bytes))
                self._cached -= len(self._shard_bytes.pop(oldest))

    def read_head(self, channel: str) -> Head:
        try:
            data, etag = self.storage.read_with_etag(head_key(channel))
        except NotFound:
            return Head(channel=channel)
        try:
            raw = json.loads(data)
            return Head(
                channel=channel,
                generation=int(raw["generation"]),
                shards=dict(raw["shards"]),
                updated_at=raw.get("updated_at", ""),
                etag=etag,
                fence=str(raw.get("fence", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"channel state {head_key(channel)} is corrupt: {exc}") from exc

    def view(self, channel: str) -> ChannelState:
        return ChannelState(self, self.read_head(channel))

    def view_of(self, head: Head) -> ChannelState:
        return ChannelState(self, head)

    def shard_bytes(self, channel: str, bucket: str, sha: str) -> bytes:
        """A shard's stored bytes, checked against its hash (NotFound, StorageError)."""
        key = shard_key(channel, bucket, sha)
        data = self._shard_bytes.get(key)
        if data is None:
            data = self.storage.read_bytes(key)
            if hashlib.sha256(data).hexdigest() != sha:
                raise StorageError(
                    f"state shard {key} does not match its hash; run `aptship verify`"
                )
        self._remember(key, data)
        return data

    def load_shard(self, channel: str, bucket: str, sha: str) -> Shard:
        # a fresh copy: callers modify what they load
        return decode_shard(self.shard_bytes(channel, bucket, sha))

    def _write_shards(self, state: ChannelState) -> tuple[dict[str, str], dict[str, Restore]]:
        """Write the touched shards; return the new shard map and how to rewrite each
        new shard (for :func:`publisher.sweep.guard`).

        One shard at a time: its bytes are written and dropped before the next is
        encoded, and a rewrite encodes the shard again (the encoding is deterministic)
        rather than keeping every new shard's bytes for the commit's duration."""
        shards = dict(state.head.shards)
        written: dict[str, Restore] = {}
        for bucket in sorted(state.dirty):
            shard = state.shard(bucket)
            if not any(p.entries or p.pin_history for p in shard.values()):
                shards.pop(bucket, None)
                continue
            data = encode_shard(shard)
            sha = hashlib.sha256(data).hexdigest()
            if shards.get(bucket) == sha:
                continue
            key = shard_key(state.channel, bucket, sha)
            self._create(key, data)
            written[key] = functools.partial(self._recreate, key, shard)
            self._remember(key, data)
            del data
            shards[bucket] = sha
        return shards, written

    def _recreate(self, key: str, shard: Shard) -> None:
        self._create(key, encode_shard(shard))

    def _create(self, key: str, data: bytes) -> None:
        # content-addressed: an existing object already has these exact bytes
        with contextlib.suppress(PreconditionFailed):
            self.storage.write_bytes(key, data, create_only=True, content_type="application/json")

    def update(
        self,
        channel: str,
        change: Callable[[ChannelState], T],
        *,
        before_commit: Callable[[ChannelState], None] | None = None,
        references: Callable[[ChannelState], Mapping[str, Restore | None]] | None = None,
        since: Sweep | None = None,
    ) -> tuple[T, Head, bool]:
        """Apply ``change`` to the newest state and commit it with compare-and-swap.

        ``change`` may run several times (once per attempt) and must derive
        everything from the state it is given.  Returns (its result, the committed
        head, whether anything changed).  A change that touches nothing commits
        nothing.  ``references``: other keys the change makes the head reference
        (pool files), guarded like the new shards against a running gc sweep.
        ``since``: the gc sweep record as read before the caller stored those files.
        """
        since = read_sweep(self.storage) if since is None else since
        delay = 0.02
        busy: SweepBusy | None = None
        for _attempt in range(MAX_ATTEMPTS):
            state = self.view(channel)
            result = change(state)
            if before_commit is not None:
                before_commit(state)
            shards, written = self._write_shards(state)
            if shards == state.head.shards:
                return result, state.head, False
            guarded: dict[str, Restore | None] = dict(written)
            if references is not None:
                guarded.update(references(state))
            try:
                guard(self.storage, guarded, what=f"channel {channel!r}", since=since)
            except SweepBusy as exc:
                busy = exc
                time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, 1.0)
                continue
            head = Head(
                channel=channel,
                generation=state.head.generation + 1,
                shards=shards,
                updated_at=now_iso(),
            )
            try:
                head.etag = self.storage.write_bytes(
                    head_key(channel),
                    head.encode(),
                    create_only=state.head.etag is None,
                    if_match=state.head.etag,
                    content_type="application/json",
                )
            except PreconditionFailed:
                # A write whose response was lost is retried by the S3 client and then
                # meets its own result: that is a success, not a conflict (otherwise
                # the change would be re-applied as "unchanged", without audit event).
                current = self.read_head(channel)
                if current.generation == head.generation and current.shards == head.shards:
                    head.etag = current.etag
                    return result, head, True
                time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, 1.0)
                continue
            return result, head, True
        if busy is not None:
            raise busy
        raise StorageError(
            f"channel {channel!r} is changing too fast: gave up after {MAX_ATTEMPTS} attempts "
            "to commit; try again"
        )
