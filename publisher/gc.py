"""``aptship gc``: delete what nothing references any more, after a grace period.

Candidates are pool files that no channel's state references, by-hash files that no
current published record references, and state shards no head references.  Only
objects older than the grace period go, so a host in the middle of ``apt-get
update`` (or a publisher between writing a shard and swapping the head) never
finds a file gone.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from publisher.dists import read_record
from publisher.errors import UsageError
from publisher.state import STATE_PREFIX, shard_key

if TYPE_CHECKING:
    from publisher.repo import Repository

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise UsageError(f"invalid duration {text!r}: use e.g. 0, 90s, 30m, 12h, 1d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def collect(repo: Repository, *, grace: float, dry_run: bool) -> list[str]:
    cutoff = time.time() - grace
    keep: set[str] = set()
    for name in repo.config.channels:
        view = repo.states.view(name)
        keep.update(shard_key(name, b, sha) for b, sha in view.head.shards.items())
        for _pkg, ps in view.packages():
            keep.update(e.filename for e in ps.entries)
        record = read_record(repo.storage, name)
        for info in record.files.values():
            keep.update(f"dists/{name}/{p}" for p in info.by_hash())
    candidates = []
    # With the aptly engine, pool/ and dists/ are aptly's (`aptly db cleanup`).
    prefixes = ("pool/", "dists/") if repo.config.engine == "native" else ()
    for prefix in (*prefixes, f"{STATE_PREFIX}/"):
        for obj in repo.storage.list(prefix):
            if obj.key in keep or obj.mtime > cutoff:
                continue
            if prefix == "dists/" and "/by-hash/" not in obj.key:
                continue
            if prefix.startswith(STATE_PREFIX) and "/shards/" not in obj.key:
                continue
            candidates.append(obj.key)
    if not dry_run:
        for key in candidates:
            repo.storage.delete(key)
    return candidates
