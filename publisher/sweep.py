"""The gc sweep record, and the guard every commit runs against it.

``.aptship/gc/sweep.json`` says which keys a running ``aptship gc`` may delete.  It
is written with compare-and-swap only (never deleted), so it works on S3 like on a
local directory.  Every commit that makes a head or a published record reference
a key it did not reference before (a new shard, an added entry's pool file, a new
by-hash file) calls :func:`guard` after reading the head or record it will swap and
before swapping it:

* a key that the sweep may delete blocks the commit (:class:`SweepBusy`; the
  commit loop waits and tries again);
* a key that is missing is written again from the bytes the committer holds, or
  the commit fails with :class:`NotFound` when it holds none (a promote).

docs/operations.md ("Garbage collection") proves why this and gc's fence
(:mod:`publisher.gc`) never let a committed head reference a deleted key.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from publisher.errors import NotFound, SweepBusy
from publisher.storage.base import Storage

SWEEP_KEY = ".aptship/gc/sweep.json"
IDLE = "idle"
SWEEPING = "sweeping"
CORRUPT = "corrupt"  # unreadable record: blocks every commit that guards a key until gc resets it

Restore = Callable[[], None]  # writes a missing key again from bytes the committer holds


@dataclass
class Sweep:
    state: str = IDLE
    keys: list[str] = field(default_factory=list)
    started_at: float = 0.0
    owner: str = ""
    etag: str | None = None  # storage ETag as read; None if the object does not exist

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": 1,
                "state": self.state,
                "keys": sorted(self.keys),
                "started_at": self.started_at,
                "owner": self.owner,
            },
            sort_keys=True,
        ).encode()

    @property
    def active(self) -> bool:
        return self.state != IDLE


def read_sweep(storage: Storage) -> Sweep:
    try:
        data, etag = storage.read_with_etag(SWEEP_KEY)
    except NotFound:
        return Sweep()
    try:
        raw = json.loads(data)
        return Sweep(
            state=str(raw["state"]),
            keys=[str(k) for k in raw["keys"]],
            started_at=float(raw["started_at"]),
            owner=str(raw.get("owner", "")),
            etag=etag,
        )
    except (ValueError, KeyError, TypeError):
        return Sweep(state=CORRUPT, etag=etag)


def write_sweep(storage: Storage, sweep: Sweep, *, expected: Sweep) -> Sweep:
    """Compare-and-swap the sweep record from ``expected``; PreconditionFailed if it moved."""
    sweep.etag = storage.write_bytes(
        SWEEP_KEY,
        sweep.encode(),
        create_only=expected.etag is None,
        if_match=expected.etag,
        content_type="application/json",
    )
    return sweep


def new_sweep(keys: list[str]) -> Sweep:
    return Sweep(state=SWEEPING, keys=keys, started_at=time.time(), owner=secrets.token_hex(8))


def guard(
    storage: Storage,
    keys: Mapping[str, Restore | None],
    *,
    what: str,
    since: Sweep | None = None,
) -> None:
    """Make sure every key in ``keys`` exists and no gc sweep may delete it.

    Call it after reading the head/record the commit will swap, and before the swap.
    ``since``: the sweep record as read before the committer wrote (or found) the
    keys it can restore.  If no sweep has started or ended since, none has deleted
    anything since, so those keys need no existence check (a request each on S3).
    """
    if not keys:
        return
    sweep = read_sweep(storage)
    if sweep.state == CORRUPT:
        raise SweepBusy(f"{SWEEP_KEY} is corrupt; run `aptship gc` to reset it")
    if sweep.active:
        doomed = sorted(set(keys) & set(sweep.keys))
        if doomed:
            raise SweepBusy(
                f"{what}: {doomed[0]} is being garbage-collected by `aptship gc`; try again "
                "when it has finished"
            )
    quiet = since is not None and not since.active and since.etag == sweep.etag
    for key, restore in sorted(keys.items()):
        if (quiet and restore is not None) or storage.exists(key):
            continue
        if restore is None:
            raise NotFound(
                f"{what}: {key} no longer exists (its last reference was removed and "
                "`aptship gc` deleted it); publish the package again"
            )
        restore()
