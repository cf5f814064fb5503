"""``aptship gc``: delete what nothing references any more, once it has been
unreferenced for the grace period.  docs/operations.md holds the safety argument.

A run:

1. lists the candidates (pool files, by-hash files, state shards), then reads every
   channel's head and published record and finds the unreferenced ones;
2. marks each newly unreferenced key with the time of this run
   (``.aptship/gc/marks.json``); the grace counts from that mark, never from an
   object's mtime (a reused object keeps its old mtime);
3. sweeps the keys marked at least the grace ago: it records them in the sweep
   record (:mod:`publisher.sweep`), which stops any commit from starting to
   reference them, then *fences* every channel: it rewrites each head and each
   published record unchanged but with a new ``fence`` (compare-and-swap), so a
   commit that read them earlier cannot land any more.  Only then does it read
   the references (from exactly the versions it fenced) and delete the swept keys
   that none of them references.  Last it sets the sweep record back to idle.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from publisher.dists import read_record, record_key
from publisher.errors import NotFound, PreconditionFailed, StorageError, UsageError
from publisher.state import STATE_PREFIX, Head, head_key
from publisher.sweep import (
    CORRUPT,
    IDLE,
    SWEEP_KEY,
    Sweep,
    new_sweep,
    read_sweep,
    write_sweep,
)

if TYPE_CHECKING:
    from publisher.repo import Repository

log = logging.getLogger("aptship.gc")
MARKS_KEY = ".aptship/gc/marks.json"
# The smallest grace gc accepts.  Safety does not depend on it (see
# docs/operations.md); it is the least time an apt host that read the previous
# InRelease has to fetch the by-hash indexes it names.
MIN_GRACE = 10.0
SWEEP_DEADLINE = 600.0  # a sweep deletes nothing once it is this old (monotonic, own clock)
SWEEP_STALE = 3600.0  # another gc resets a sweep this old (its owner stopped long ago)
FENCE_ATTEMPTS = 20
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise UsageError(f"invalid duration {text!r}: use e.g. 90s, 30m, 12h, 1d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


@dataclass
class Marks:
    marks: dict[str, float]
    etag: str | None = None


def _read_marks(repo: Repository) -> Marks:
    try:
        data, etag = repo.storage.read_with_etag(MARKS_KEY)
    except NotFound:
        return Marks({})
    try:
        raw = json.loads(data)
        return Marks({str(k): float(v) for k, v in raw["marks"].items()}, etag)
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("warning: %s is corrupt; marking from scratch", MARKS_KEY)
        return Marks({}, etag)


def _write_marks(repo: Repository, old: Marks, marks: dict[str, float]) -> None:
    body = json.dumps({"format": 1, "marks": dict(sorted(marks.items()))}).encode()
    try:
        repo.storage.write_bytes(
            MARKS_KEY,
            body,
            create_only=old.etag is None,
            if_match=old.etag,
            content_type="application/json",
        )
    except PreconditionFailed:
        # Another gc wrote its marks meanwhile: keep those.  A lost mark only delays a
        # deletion (the key is marked again by a later run).
        log.info("another gc updated %s; this run's marks are dropped", MARKS_KEY)


def _candidates(repo: Repository) -> set[str]:
    """Keys gc may delete: pool files, by-hash files and state shards."""
    # With the aptly engine, pool/ and dists/ are aptly's (`aptly db cleanup`).
    prefixes = ("pool/", "dists/") if repo.config.engine == "native" else ()
    keys: set[str] = set()
    for prefix in (*prefixes, f"{STATE_PREFIX}/"):
        for obj in repo.storage.list(prefix):
            if prefix == "dists/" and "/by-hash/" not in obj.key:
                continue
            if prefix.startswith(STATE_PREFIX) and "/shards/" not in obj.key:
                continue
            keys.add(obj.key)
    return keys


def _head_refs(repo: Repository, head: Head) -> set[str]:
    refs = head.shard_keys()
    view = repo.states.view_of(head)
    for _pkg, ps in view.packages():
        refs.update(e.filename for e in ps.entries)
    return refs


def state_names(repo: Repository) -> list[str]:
    """The channels whose state gc keeps: the configured ones (the suites, with
    distributions) and the single-distribution channels a migration left behind as
    the way back (docs/operations.md, "Adding distributions")."""
    legacy = [g for g in repo.config.groups if repo.storage.exists(head_key(g))]
    return [*repo.config.channels, *legacy]


def references(repo: Repository) -> set[str]:
    """Every candidate key the channels' current heads and records reference."""
    refs: set[str] = set()
    for name in state_names(repo):
        refs |= _head_refs(repo, repo.states.read_head(name))
        refs |= read_record(repo.storage, name).by_hash_keys(name)
    return refs


class Fenceable(Protocol):
    fence: str
    etag: str | None

    def encode(self) -> bytes: ...


F = TypeVar("F", bound=Fenceable)


def _fence(repo: Repository, key: str, read: Callable[[], F]) -> F:
    """Rewrite ``key`` unchanged but for a new fence (compare-and-swap); return what
    was fenced.  A commit that read the object before cannot swap it any more."""
    for _ in range(FENCE_ATTEMPTS):
        current = read()
        current.fence = secrets.token_hex(8)
        try:
            repo.storage.write_bytes(
                key,
                current.encode(),
                create_only=current.etag is None,
                if_match=current.etag,
                content_type="application/json",
            )
        except PreconditionFailed:
            time.sleep(0.01)
            continue
        return current
    raise StorageError(f"{key} kept changing; gc could not fence it (nothing was deleted)")


def fenced_references(repo: Repository) -> set[str]:
    """Fence every head and published record; the references of the fenced versions."""
    refs: set[str] = set()
    for name in state_names(repo):
        head = _fence(repo, head_key(name), functools.partial(repo.states.read_head, name))
        refs |= _head_refs(repo, head)
        if repo.config.engine == "native":
            read = functools.partial(read_record, repo.storage, name)
            refs |= _fence(repo, record_key(name), read).by_hash_keys(name)
    return refs


def _start_sweep(repo: Repository, keys: list[str]) -> Sweep | None:
    current = read_sweep(repo.storage)
    if current.active:
        age = time.time() - current.started_at
        if current.state != CORRUPT and age < SWEEP_STALE:
            log.info("another gc is sweeping (for %.0f s); this run only marks", age)
            return None
        log.warning("warning: resetting a gc sweep left %.0f s ago by an interrupted gc", age)
    try:
        return write_sweep(repo.storage, new_sweep(keys), expected=current)
    except PreconditionFailed:
        return None  # another gc started a sweep just now


def _reset_corrupt_sweep(repo: Repository) -> None:
    """An unreadable sweep record blocks every commit that guards a key: reset it."""
    current = read_sweep(repo.storage)
    if current.state == CORRUPT:
        log.warning("warning: resetting the unreadable gc sweep record %s", SWEEP_KEY)
        idle = Sweep(state=IDLE, owner=secrets.token_hex(8))
        with contextlib.suppress(PreconditionFailed):
            write_sweep(repo.storage, idle, expected=current)


def _end_sweep(repo: Repository, sweep: Sweep) -> None:
    try:
        # idle, but naming the sweep: every sweep leaves different bytes (and ETag)
        done = Sweep(state=IDLE, started_at=sweep.started_at, owner=sweep.owner)
        write_sweep(repo.storage, done, expected=sweep)
    except PreconditionFailed:
        log.warning("warning: the gc sweep was reset by another gc while it ran")


def sweep(repo: Repository, keys: Iterable[str]) -> list[str]:
    """Delete those of ``keys`` that no fenced head or record references."""
    doomed = sorted(keys)
    started = time.monotonic()
    record = _start_sweep(repo, doomed)
    if record is None:
        return []
    deleted: list[str] = []
    try:
        refs = fenced_references(repo)
        for key in doomed:
            if key in refs:
                continue
            if time.monotonic() - started > SWEEP_DEADLINE:
                log.warning("warning: gc sweep ran out of time; the next run goes on")
                break
            repo.storage.delete(key)
            deleted.append(key)
    finally:
        _end_sweep(repo, record)
    return deleted


def collect(
    repo: Repository,
    *,
    grace: float,
    dry_run: bool,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """One gc run; returns the keys it deleted (``dry_run``: would delete now)."""
    if grace < MIN_GRACE:
        raise UsageError(
            f"a grace of {grace:g}s is too short: gc accepts {MIN_GRACE:g}s at least "
            "(see docs/operations.md)"
        )
    now = clock()
    listed = _candidates(repo)
    unreferenced = listed - references(repo)  # references read after listing
    old = _read_marks(repo)
    due = sorted(k for k in unreferenced if old.marks.get(k, now) <= now - grace)
    if dry_run:
        return due
    if not due:
        _reset_corrupt_sweep(repo)
    deleted = set(sweep(repo, due)) if due else set()
    marks = {k: old.marks.get(k, now) for k in unreferenced if k not in deleted}
    if marks != old.marks:
        _write_marks(repo, old, marks)
    return sorted(deleted)
