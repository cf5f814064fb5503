"""Rebuild the entries of state shards that are lost, from the published indexes.

A head names each bucket's shard by hash; when that object is gone (a restore that
missed it, a storage fault) the channel cannot be read.  ``aptship reindex`` calls
:func:`rebuild_lost_shards` first: every entry of a lost bucket that the last
published ``Packages`` lists, and whose pool file still exists, goes back into the
state, and each rebuilt package is pinned to its newest version (the pin history
of a lost shard cannot be recovered).  The repair is one commit with one audit
event (action ``repair``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from publisher.audit import current_actor
from publisher.dists import dists_key, read_record
from publisher.errors import NotFound, StorageError
from publisher.index import decompress, index_path
from publisher.pins import set_pin
from publisher.state import STATE_PREFIX, ChannelState, Entry, bucket_of, shard_key
from publisher.versions import newest

if TYPE_CHECKING:
    from publisher.repo import Repository


def lost_buckets(repo: Repository, channel: str, *, hashed: bool = True) -> dict[str, str]:
    """{bucket: shard sha256} of the shards the head names that cannot be read: missing,
    or (``hashed``) whose bytes do not match their hash."""
    head = repo.states.read_head(channel)
    if not hashed:
        present = {o.key for o in repo.storage.list(f"{STATE_PREFIX}/{channel}/shards/")}
        return {
            b: sha for b, sha in head.shards.items() if shard_key(channel, b, sha) not in present
        }
    lost = {}
    for bucket, sha in head.shards.items():
        try:
            repo.states.shard_bytes(channel, bucket, sha)  # read and hashed, not decoded
        except (NotFound, StorageError):
            lost[bucket] = sha
    return lost


def _published_entries(repo: Repository, channel: str) -> list[Entry]:
    from debian.deb822 import Deb822  # only on a repair: 40 ms to import

    record = read_record(repo.storage, channel)
    found: dict[tuple[str, str, str], Entry] = {}
    for arch in repo.config.channel(channel).architectures:
        stored = [
            (fmt, info)
            for fmt in ("plain", "gz", "xz")
            if (info := record.files.get(index_path(arch, fmt))) is not None and info.stored
        ]
        if not stored:
            continue
        info = stored[0][1]
        data = repo.storage.read_bytes(dists_key(channel, info.by_hash()[0]))
        text = decompress(info.path, data).decode("utf-8")
        for block in text.split("\n\n"):
            if not block.strip():
                continue
            fields = Deb822(block)
            at = block.find("\nFilename: ")
            if at < 0 or "Package" not in fields:
                continue
            entry = Entry(
                package=fields["Package"],
                version=fields["Version"],
                architecture=fields["Architecture"],
                filename=fields["Filename"],
                size=int(fields["Size"]),
                md5=fields["MD5sum"],
                sha1=fields["SHA1"],
                sha256=fields["SHA256"],
                control=block[: at + 1],
            )
            found[(entry.package, entry.version, entry.architecture)] = entry
    return list(found.values())


def rebuild_lost_shards(
    repo: Repository, channel: str, *, hashed: bool = True
) -> list[dict[str, Any]]:
    """Rebuild lost buckets of ``channel``; the audit changes (empty: nothing lost).
    ``hashed=False`` looks for missing shards only (one listing, no shard read)."""
    lost = lost_buckets(repo, channel, hashed=hashed)
    if not lost:
        return []
    entries = [
        e
        for e in _published_entries(repo, channel)
        if bucket_of(e.package) in lost and repo.storage.exists(e.filename)
    ]
    actor = current_actor()

    def change(state: ChannelState) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        for bucket, sha in lost.items():
            if state.head.shards.get(bucket) == sha:
                state.replace_lost(bucket)
        changes: list[dict[str, Any]] = []
        touched = set()
        for e in entries:
            if bucket_of(e.package) not in state.lost:
                continue
            ps = state.edit(e.package)
            if not ps.find(e.version, e.architecture):
                ps.entries.append(e)
                touched.add(e.package)
                changes.append(
                    {"package": e.package, "version": e.version, "old": None, "new": None}
                )
        for name in sorted(touched):
            ps = state.edit(name)
            set_pin(ps, newest(ps.versions()), "repair", actor)
            for c in changes:
                if c["package"] == name:
                    c["new"] = ps.pin
        return changes, changes

    return repo.commit_change(channel, "repair", actor, change)
