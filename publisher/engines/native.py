"""The native engine: aptship's own pool, spliced indexes and signing on its storage."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from publisher.audit import current_actor
from publisher.debfile import DebInfo, hash_file, hash_stream
from publisher.errors import ImmutableConflict, PreconditionFailed
from publisher.state import Entry, Head, now_iso
from publisher.storage.base import BatchWrites

if TYPE_CHECKING:
    from publisher.dists import DistWriter
    from publisher.engines import Progress
    from publisher.storage.base import Storage
    from publisher.sweep import Restore, Sweep


Stored = tuple[str, str, str, int]  # a pool file's md5, sha1, sha256 and size
WRITE_SLICE = 4096  # files per LocalStorage.write_files call: its results are per file


def _stored(hashes: dict[str, str], size: int) -> Stored:
    return hashes["md5"], hashes["sha1"], hashes["sha256"], size


def _pool_conflict(info: DebInfo) -> ImmutableConflict:
    return ImmutableConflict(
        f"{info.path.name}: {info.package} {info.version} ({info.architecture}) is "
        f"already published as {info.pool_key} with different content; publish a new "
        "version instead (published packages are immutable)"
    )


class _Restore:
    """Store one pool file again (a :data:`Restore`): smaller than a functools.partial,
    and the guard of a 50,000-file publish asks for one per file."""

    __slots__ = ("engine", "key", "name")

    def __init__(self, engine: NativeEngine, key: str, name: str) -> None:
        self.engine, self.key, self.name = engine, key, name

    def __call__(self) -> None:
        self.engine._restore_file(self.key, self.name)


class _Restorers(Mapping[str, "Restore"]):
    """{pool key: how to store its file again}, each callable made when asked for."""

    def __init__(self, engine: NativeEngine, files: dict[str, str]) -> None:
        self._engine = engine
        self._files = files  # {pool key: the .deb's file name}

    def __getitem__(self, key: str) -> Restore:
        return _Restore(self._engine, key, self._files[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


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
        """Store the batch's pool files (create-only) and return their entries.

        Nothing is written before the whole batch is checked against the pool.  On a
        backend with batch writes (a local directory) the new files are stored as
        durable batches of WRITE_SLICE files (:meth:`LocalStorage.write_files`), all
        before the commit; S3 keeps one create-only PUT per file.  Each entry is made
        as its file is stored (a 50,000-file batch keeps no other record per file)
        and stamped with one publication time once all are stored."""
        keys = [info.pool_key for info in infos]  # one string each, shared by the entries
        known, todo = self._check_against_pool(infos, keys)
        who = current_actor()
        same: dict[str, str] = {}  # a package name or architecture repeated in the batch
        made: dict[str, Entry] = {}  # by pool key

        def make(key: str, info: DebInfo, stored: Stored) -> None:
            made[key] = self._entry(info, key, stored, who, same)

        for key, (info, stored) in known.items():
            make(key, info, stored)
        del known
        batch = self.storage if isinstance(self.storage, BatchWrites) else None
        if batch is not None and len(todo) > 1:
            # in slices, each durable before the next: only one slice's write results
            # (hash dicts, ETags) are alive at a time, not 50,000 of them
            for start in range(0, len(todo), WRITE_SLICE):
                part = todo[start : start + WRITE_SLICE]
                puts = batch.write_files([(key, info.file) for key, info in part])
                for (key, info), put in zip(part, puts, strict=True):
                    if put is None:  # stored meanwhile by another publish: same bytes?
                        make(key, info, self._compare_stored(info))
                    else:
                        make(key, info, _stored(put.hashes, put.size))
                    if progress:
                        progress(1)
                del puts
        else:
            for key, info in todo:
                make(key, info, self._store(info))
                if progress:
                    progress(1)
        if progress and len(infos) > len(todo):
            progress(len(infos) - len(todo))
        when = now_iso()  # one string for the whole batch, once every file is stored
        for entry in made.values():
            entry.published_at = when
        return [made[key] for key in keys]

    def restore(self, info: DebInfo) -> None:
        """Store ``info``'s file again (gc deleted it while a publish of it was in flight)."""
        self._restore_file(info.pool_key, info.file)

    def restorers(
        self, infos: Sequence[DebInfo], entries: Sequence[Entry]
    ) -> Mapping[str, Restore]:
        # each entry's key and its file's name only: neither the batch's control texts
        # nor its Path objects are kept alive, nor a callable per file
        files = {e.filename: i.file for i, e in zip(infos, entries, strict=True)}
        return _Restorers(self, files)

    def _restore_file(self, key: str, name: str) -> None:
        path = Path(name)
        try:
            with path.open("rb") as fh:
                self.storage.write_stream(
                    key, fh, create_only=True, content_type="application/vnd.debian.binary-package"
                )
        except PreconditionFailed:  # stored again meanwhile: the same bytes?
            if self._stored_sha256(key) != hash_file(path)["sha256"]:
                raise ImmutableConflict(
                    f"{path.name}: {key} is already published with different content; "
                    "publish a new version instead (published packages are immutable)"
                ) from None

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

    def _check_against_pool(
        self, infos: Sequence[DebInfo], keys: Sequence[str]
    ) -> tuple[dict[str, tuple[DebInfo, Stored]], list[tuple[str, DebInfo]]]:
        """Refuse a batch that would change an existing pool file, or that holds two
        different files for one pool key.  Returns the files already stored with their
        hashes, by pool key, and the files to store, one per new key."""
        known: dict[str, tuple[DebInfo, Stored]] = {}
        first: dict[str, DebInfo] = {}
        todo: list[tuple[str, DebInfo]] = []
        # A single file needs no look-up: its create-only write refuses to replace an
        # existing pool file, and _store then compares the content.  A batch looks
        # its keys up at once (Storage.sizes: an lstat each, or listings on S3).
        present = self.storage.sizes(sorted(set(keys))) if len(infos) > 1 else {}
        for info, key in zip(infos, keys, strict=True):
            earlier = first.get(key)
            if earlier is not None:  # the same key twice in the batch: the same bytes?
                if hash_file(info.path)["sha256"] != hash_file(earlier.path)["sha256"]:
                    raise _pool_conflict(info)
                continue
            first[key] = info
            if key in present:
                known[key] = (info, self._compare_stored(info))
            else:
                todo.append((key, info))
        return known, todo

    def _compare_stored(self, info: DebInfo) -> Stored:
        """The hashes of ``info``'s file, which must equal those of its stored pool file."""
        hashes = hash_file(info.path)
        if self._stored_sha256(info.pool_key) != hashes["sha256"]:
            raise _pool_conflict(info)
        return _stored(hashes, info.size)

    def _store(self, info: DebInfo) -> Stored:
        """Store one file create-only; its hashes (those of the stored file, if it was
        there already with the same bytes)."""
        try:
            with info.path.open("rb") as fh:
                put = self.storage.write_stream(
                    info.pool_key,
                    fh,
                    create_only=True,
                    content_type="application/vnd.debian.binary-package",
                )
        except PreconditionFailed:
            return self._compare_stored(info)
        return _stored(put.hashes, put.size)

    @staticmethod
    def _entry(info: DebInfo, key: str, stored: Stored, who: str, same: dict[str, str]) -> Entry:
        md5, sha1, sha256, size = stored
        return Entry(
            package=same.setdefault(info.package, info.package),
            version=info.version,
            architecture=same.setdefault(info.architecture, info.architecture),
            filename=key,
            size=size,
            md5=md5,
            sha1=sha1,
            sha256=sha256,
            control=info.control,
            published_by=who,
        )
