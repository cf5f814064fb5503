"""The native engine: aptship's own pool, spliced indexes and signing on its storage."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from publisher.audit import current_actor
from publisher.debfile import DebInfo, hash_file, hash_stream
from publisher.errors import ImmutableConflict, PreconditionFailed
from publisher.state import Entry, Head, now_iso

if TYPE_CHECKING:
    from publisher.dists import DistWriter
    from publisher.engines import Progress
    from publisher.storage.base import Storage
    from publisher.sweep import Restore, Sweep


def _pool_conflict(info: DebInfo) -> ImmutableConflict:
    return ImmutableConflict(
        f"{info.path.name}: {info.package} {info.version} ({info.architecture}) is "
        f"already published as {info.pool_key} with different content; publish a new "
        "version instead (published packages are immutable)"
    )


class NativeEngine:
    name = "native"
    mirrors_state = False
    publishes_keyring = True

    def __init__(self, storage: Storage, dists: DistWriter) -> None:
        self.storage = storage
        self.dists = dists

    @property
    def serving(self) -> Storage:
        return self.storage

    def prepare(self, infos: Sequence[DebInfo], progress: Progress | None) -> list[Entry]:
        known = self._check_against_pool(infos)
        entries = []
        for info in infos:
            entries.append(self._store(info, known.get(str(info.path))))
            if progress:
                progress(1)
        return entries

    def restore(self, info: DebInfo) -> None:
        """Store ``info``'s file again (gc deleted it while a publish of it was in flight)."""
        self._store(info, None)

    def restorer(self, info: DebInfo) -> Restore:
        return functools.partial(self.restore, info)

    def apply(self, channel: str, added: Sequence[Entry], removed: Sequence[Entry]) -> None:
        """Nothing to mirror: the state is the package set."""

    def render(
        self,
        channel: str,
        *,
        force: bool = False,
        head: Head | None = None,
        since: Sweep | None = None,
    ) -> int:
        return self.dists.publish(channel, force=force, head=head, since=since)

    def _stored_sha256(self, key: str) -> str:
        with self.storage.open_read(key) as fh:
            return hash_stream(fh, ("sha256",))["sha256"]

    def _check_against_pool(self, infos: Sequence[DebInfo]) -> dict[str, dict[str, str]]:
        """Refuse a batch that would change an existing pool file.  Returns known hashes."""
        known: dict[str, dict[str, str]] = {}
        by_key: dict[str, DebInfo] = {}
        for info in infos:
            key = info.pool_key
            # A single file needs no look-up: its create-only write refuses to replace
            # an existing pool file, and _store then compares the content.
            if key in by_key or (len(infos) > 1 and self.storage.exists(key)):
                hashes = known.get(str(info.path)) or hash_file(info.path)
                known[str(info.path)] = hashes
                first = by_key.get(key)
                if first is not None:
                    other = known.get(str(first.path)) or hash_file(first.path)
                    known[str(first.path)] = other
                    theirs = other["sha256"]
                else:
                    theirs = self._stored_sha256(key)
                if theirs != hashes["sha256"]:
                    raise _pool_conflict(info)
            by_key.setdefault(key, info)
        return known

    def _store(self, info: DebInfo, known: dict[str, str] | None) -> Entry:
        key = info.pool_key
        if known is None:
            try:
                with info.path.open("rb") as fh:
                    put = self.storage.write_stream(
                        key,
                        fh,
                        create_only=True,
                        content_type="application/vnd.debian.binary-package",
                    )
                hashes, size = put.hashes, put.size
            except PreconditionFailed:
                hashes, size = hash_file(info.path), info.size
                if self._stored_sha256(key) != hashes["sha256"]:
                    raise _pool_conflict(info) from None
        else:
            hashes, size = known, info.size
        return Entry(
            package=info.package,
            version=info.version,
            architecture=info.architecture,
            filename=key,
            size=size,
            md5=hashes["md5"],
            sha1=hashes["sha1"],
            sha256=hashes["sha256"],
            control=info.control,
            published_at=now_iso(),
            published_by=current_actor(),
        )
