"""Publish a channel's committed state as ``dists/<channel>/``, apt-safely.

The published record ``.aptship/state/<channel>/published.json`` says which state
generation ``dists/`` shows, how each index file splits into bucket segments, and
holds the signed Release texts.  Rendering (docs/s3.md, "Concurrency model"):

1. read the record; if it already shows this generation (or newer), only make sure
   the plain files match it;
2. re-render only the buckets whose shard changed and splice their segments into
   the previous index files (read back from ``by-hash``, which is immutable);
3. write new ``by-hash`` files (create-only), sign Release and verify it;
4. compare-and-swap the record (a newer renderer wins; we start over);
5. write the plain index paths, then Release, Release.gpg, and InRelease last;
6. re-read the record: if a newer one landed while we wrote, write its files too,
   so the last writer always leaves the newest record on disk.

Nothing is ever deleted here; old ``by-hash`` files go away only through ``gc``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from publisher import codecs
from publisher.config import ChannelConfig, Config
from publisher.errors import NotFound, PreconditionFailed, StorageError, SweepBusy
from publisher.index import (
    PARALLEL_HASH_MIN,
    IndexFile,
    PlainText,
    index_path,
    release_date,
    render_release,
    segment_text,
    splice,
)
from publisher.pins import PINS_PATH, pins_segment
from publisher.signing import Signer
from publisher.state import STATE_PREFIX, ChannelState, Head, StateStore
from publisher.storage.base import Storage
from publisher.sweep import Restore, Sweep, guard, read_sweep

log = logging.getLogger("aptship.dists")
Texts = dict[str, bytes | memoryview]  # {bucket: its Packages text}
Payload = bytes | codecs.Joined | codecs.Unpacked  # a file's bytes, or how to read them
Payloads = dict[str, Payload]  # {path below dists/<channel>/: the file}
MAX_ROUNDS = 20
KEYRING_KEY = "archive-keyring.asc"
FULL_RENDER_AHEAD = 8  # buckets a full render's compression may be behind its rendering
# A full render's index file larger than this is written from its parts, never held
# whole: a compressed one from its parts as they are (codecs.Joined), the
# uncompressed Packages from the gz parts, decompressed one at a time
# (codecs.Unpacked; 37 MB at 50,000 entries)
UNPACK_MIN = 1 << 20


@contextlib.contextmanager
def _beside(parallel: bool) -> Iterator[Callable[..., Future[Any]]]:
    """Submit calls to one side thread (``parallel``), or run them at once; futures
    either way."""
    if parallel:
        with ThreadPoolExecutor(max_workers=1) as pool:
            yield pool.submit
        return

    def now(fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # re-raised by result(), as from a thread
            future.set_exception(exc)
        return future

    yield now


def rendered_formats(config: Config) -> tuple[str, ...]:
    """Formats rendered and stored (by-hash copies) for every index: the configured ones.

    apt looks an index up in Release by its uncompressed name and checks the
    decompressed file against that entry's hashes, so Release always lists the
    uncompressed ``Packages`` (as Debian's archive does).  Without ``plain`` in
    ``index_formats`` that entry is only listed: its digests are taken over the
    segments' text, and neither the file nor a by-hash copy is written (apt fetches
    a compressed file; ``tests/test_publish_apt.py``).
    """
    return tuple(config.index_formats)


def served(config: Config, path: str) -> bool:
    """Whether the index at ``path`` (below dists/<channel>/) is written at its plain path."""
    return not path.endswith("/Packages") or "plain" in config.index_formats


def record_key(channel: str) -> str:
    return f"{STATE_PREFIX}/{channel}/published.json"


def dists_key(channel: str, path: str) -> str:
    return f"dists/{channel}/{path}"


@dataclass
class Record:
    generation: int = -1
    shards: dict[str, str] = field(default_factory=dict)
    files: dict[str, IndexFile] = field(default_factory=dict)
    release: str = ""
    release_gpg: str = ""
    inrelease: str = ""
    keyring: str = ""  # sha256 of the public keyring published with this record
    # Signer.keyring_stamp() when ``keyring`` was exported: while it is unchanged the
    # next render reuses ``keyring`` instead of starting gpg to export the key again
    keyring_stamp: str = ""
    etag: str | None = None
    fence: str = ""  # set by gc when it rewrites the record unchanged (publisher.gc)

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "generation": self.generation,
            "shards": self.shards,
            "files": {p: f.to_json() for p, f in sorted(self.files.items())},
            "release": self.release,
            "release_gpg": self.release_gpg,
            "inrelease": self.inrelease,
            "keyring": self.keyring,
        }
        if self.fence:
            body["fence"] = self.fence
        if self.keyring_stamp:
            body["keyring_stamp"] = self.keyring_stamp
        return json.dumps(body, sort_keys=True).encode()

    def by_hash_keys(self, channel: str) -> set[str]:
        """Every by-hash file this record references (each ``files`` entry's copies)."""
        return {dists_key(channel, p) for info in self.files.values() for p in info.by_hash()}

    @classmethod
    def decode(cls, data: bytes, etag: str) -> Record:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            generation=int(raw["generation"]),
            shards=dict(raw["shards"]),
            files={p: IndexFile.from_json(p, f) for p, f in raw["files"].items()},
            release=raw["release"],
            release_gpg=raw["release_gpg"],
            inrelease=raw["inrelease"],
            keyring=str(raw.get("keyring", "")),
            etag=etag,
            fence=str(raw.get("fence", "")),
            keyring_stamp=str(raw.get("keyring_stamp", "")),
        )


class _PlainIndex(PlainText):
    """A full render's uncompressed ``Packages``, bucket by bucket.  Its texts are
    kept for writing it only when it is stored, and only while it is small or no
    compressed format is rendered to unpack it from."""

    def __init__(self, *, stored: bool, packed: bool, md5: bool) -> None:
        super().__init__(md5=md5)
        self.texts: list[bytes] | None = [] if stored else None
        self.packed = packed

    def add(self, bucket: str, text: bytes | memoryview) -> None:
        super().add(bucket, text)
        if self.texts is not None:
            self.texts.append(bytes(text))
            if self.packed and self.size >= UNPACK_MIN:
                self.texts = None  # written from the compressed parts (payload())

    def payload(self, fmt: str, data: Payload | None, info: IndexFile | None) -> Payload:
        """The file's bytes, or (when too large to keep) ``data``, the same index
        compressed in ``fmt`` (``info``), to unpack while it is written."""
        if self.texts is not None:
            return b"".join(self.texts)
        if isinstance(data, codecs.Joined):
            return codecs.Unpacked(fmt, data.parts)
        if isinstance(data, bytes) and info is not None:
            return codecs.Unpacked(fmt, codecs.split(fmt, data, info.layout))
        raise ValueError(f"no {fmt} index to write the uncompressed one from")


def read_record(storage: Storage, channel: str) -> Record:
    try:
        data, etag = storage.read_with_etag(record_key(channel))
    except NotFound:
        return Record()
    try:
        return Record.decode(data, etag)
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"{record_key(channel)} is corrupt ({exc}); run `aptship reindex`"
        ) from exc


class DistWriter:
    def __init__(
        self, config: Config, storage: Storage, signer: Signer, states: StateStore | None = None
    ) -> None:
        self.config = config
        self.storage = storage
        self.signer = signer
        self.states = states if states is not None else StateStore(storage)
        self._recompress = False  # see recompressing()
        self._intact: set[str] = set()  # by-hash keys a full render found intact
        self._md5 = "MD5Sum" in config.release_hashes  # Release lists MD5Sum too

    # -- public ------------------------------------------------------------------
    def publish(
        self,
        channel: str,
        *,
        force: bool = False,
        head: Head | None = None,
        since: Sweep | None = None,
    ) -> int:
        """Make ``dists/<channel>`` show the newest state (at least ``head``); return the
        generation it shows.

        ``head``: the head the caller has just committed (saves reading it again).
        ``since``: the gc sweep record as read before (see :func:`publisher.sweep.guard`).

        A generation that another writer commits while we render is that writer's to
        render: every commit is followed by its committer's own render, and published
        records only move forward (compare-and-swap), so once ``dists/`` shows our
        generation or a newer one we are done.  Chasing every newer commit instead made
        each of N concurrent publishers render about N times, and under a steady stream
        of commits fail after MAX_ROUNDS although its own change was published.  A
        committer that dies before rendering leaves its generation to the next publish
        or to ``aptship reindex`` (``aptship verify`` reports it).
        """
        since = read_sweep(self.storage) if since is None else since
        known = head
        target = head.generation if head is not None else None
        for _round in range(MAX_ROUNDS):
            head = known if known is not None else self.states.read_head(channel)
            known = None
            target = head.generation if target is None else target
            record = read_record(self.storage, channel)
            if record.generation >= target and not force and record.files:
                self._ensure_written(channel, record)
                return record.generation
            try:
                # a record made without MD5 digests, now that Release lists MD5Sum
                full = force or not record.files or self._lacks_md5(record)
                new, payloads = self._render(channel, head, record, full=full, since=since)
            except PreconditionFailed:
                continue  # another renderer (or gc's fence) swapped the record first
            except SweepBusy:
                time.sleep(0.05 + 0.25 * random.random())  # noqa: S311 - jitter, not crypto
                continue  # a by-hash file it needs is in a gc sweep: wait for the sweep
            self._write_plain(channel, new, record, payloads, full=full)
            self._settle(channel, new)
            return head.generation
        raise StorageError(f"channel {channel!r} kept changing while rendering; try again")

    # -- rendering ---------------------------------------------------------------
    def _render(
        self, channel: str, head: Head, old: Record, *, full: bool, since: Sweep
    ) -> tuple[Record, Payloads]:
        chan = self.config.channel(channel)
        view = ChannelState(self.states, head)  # render exactly the generation that was read
        built = None
        if not full:
            try:
                built = self._build(chan, view, old, full=False)
            except (KeyError, NotFound, ValueError):
                log.info("channel %s: previous indexes unusable, rendering in full", channel)
        self._intact.clear()
        new, payloads = built or self._build(chan, view, old, full=True)
        create = self._create if built is not None else self._create_or_repair
        written: dict[str, Restore | None] = {
            dists_key(channel, by_hash): functools.partial(
                create, dists_key(channel, by_hash), data
            )
            for path, data in payloads.items()
            for by_hash in new.files[path].by_hash()
        }
        self._together([w for w in written.values() if w is not None])
        self._keyring(new, old, reuse=not full and built is not None)
        self._sign(chan, new)
        # The record will reference these by-hash files: none may be in a gc sweep, and
        # one that existed already (same bytes) may have been deleted since (gc).
        guard(self.storage, written, what=f"dists/{channel}", since=since)
        new.etag = self.storage.write_bytes(
            record_key(channel),
            new.encode(),
            create_only=old.etag is None,
            if_match=old.etag,
            content_type="application/json",
        )
        return new, payloads

    def _lacks_md5(self, record: Record) -> bool:
        return self._md5 and any(not f.md5 for f in record.files.values())

    def _keyring(self, new: Record, old: Record, *, reuse: bool) -> None:
        """Set ``new.keyring``, publishing the public key first when it changed.

        The key is exported (a gpg process) only when the signer's keyring stamp
        differs from the one ``old`` was rendered with (a key rotation or any change
        to the GnuPG home's keyrings changes it), on a full render (``reuse``
        False) that finds the published key missing or other than recorded, and
        always in ``recompressing()`` (``aptship reindex --full``)."""
        stamp = self.signer.keyring_stamp()
        unchanged = bool(stamp and old.keyring and stamp == old.keyring_stamp)
        if unchanged and not self._recompress and (reuse or self._keyring_published(old.keyring)):
            new.keyring, new.keyring_stamp = old.keyring, stamp
            return
        public = self.signer.export_public()
        new.keyring, new.keyring_stamp = hashlib.sha256(public).hexdigest(), stamp
        if not reuse or new.keyring != old.keyring:
            self._ensure_keyring(public)

    def _keyring_published(self, digest: str) -> bool:
        try:
            return hashlib.sha256(self.storage.read_bytes(KEYRING_KEY)).hexdigest() == digest
        except NotFound:
            return False

    def _together(self, writes: list[Restore]) -> None:
        """Run independent writes; all are done (durable) when this returns.

        On a local directory they run in threads, so their fsyncs overlap instead of
        waiting for each other.  Elsewhere (S3) they run in order: one request at a
        time, as the request budget and the fault-injection suites count them."""
        if len(writes) < 2 or self.storage.name != "local":
            for write in writes:
                write()
            return
        with ThreadPoolExecutor(max_workers=len(writes)) as pool:
            for future in [pool.submit(write) for write in writes]:
                future.result()

    def _create(self, key: str, data: Payload) -> None:
        # content-addressed: an existing object already has these exact bytes
        with contextlib.suppress(PreconditionFailed):
            self._write(key, data, create_only=True)

    def _write(self, key: str, data: Payload, *, create_only: bool = False) -> None:
        if isinstance(data, bytes):
            self.storage.write_bytes(key, data, create_only=create_only)
            return
        with data.open() as stream:
            self.storage.write_stream(key, stream, create_only=create_only, hash_names=())

    def _ensure_keyring(self, public: bytes) -> None:
        """Publish the public key apt checks the signatures with (before the Release)."""
        try:
            if self.storage.read_bytes(KEYRING_KEY) == public:
                return
        except NotFound:
            pass
        self.storage.write_bytes(KEYRING_KEY, public, content_type="application/pgp-keys")

    def ensure_keyring(self) -> None:
        self._ensure_keyring(self.signer.export_public())

    def _build(
        self, chan: ChannelConfig, view: ChannelState, old: Record, *, full: bool
    ) -> tuple[Record, Payloads]:
        """The new record's index files and the bytes of those that changed.

        Incremental (not ``full``): only the buckets whose shard changed are
        rendered, and a previous index file is read back only when one of them has
        (or had) entries in it.  Raises KeyError/NotFound/ValueError when the
        previous files cannot be reused.
        """
        if full:
            return self._build_full(chan, view, old)
        head = view.head
        changed = {
            b for b in set(head.shards) | set(old.shards) if head.shards.get(b) != old.shards.get(b)
        }
        by_arch, pins = self._bucket_texts(chan, view, changed)
        new = Record(generation=head.generation, shards=dict(head.shards))
        payloads: Payloads = {}
        # gz first: the listed Packages' text comes from its parts (the cheapest to
        # decompress), and on a local directory the other formats are spliced in a
        # side thread meanwhile (zlib, lzma and hashlib release the GIL).  Elsewhere
        # (S3) requests go one at a time, as the fault-injection suites count them.
        first, *others = sorted(rendered_formats(self.config), key=lambda fmt: fmt != "gz")
        listed = "plain" not in (first, *others)
        for arch in chan.architectures:
            texts = by_arch[arch]
            splice = functools.partial(self._splice_file, view, old, new, payloads)
            parts = splice(index_path(arch, first), first, texts, False)
            with _beside(listed and self.storage.name == "local") as run:
                rest = [run(splice, index_path(arch, fmt), fmt, texts, False) for fmt in others]
                if listed:
                    self._list_plain(view.channel, old, new, arch, texts, first, parts)
                for future in rest:
                    future.result()
        # The channel's pins travel in the signed suite as one more index (docs/hosts.md).
        self._splice_file(view, old, new, payloads, PINS_PATH, "plain", pins, False)
        return new, payloads

    def _build_full(
        self, chan: ChannelConfig, view: ChannelState, old: Record
    ) -> tuple[Record, Payloads]:
        """:meth:`_build` of every bucket, one shard at a time: a bucket's text is
        hashed into the uncompressed file's digests and compressed (two threads, a
        few buckets ahead), then dropped, so only the compressed parts stay alive.
        A large uncompressed file is written from its compressed parts (decompressed
        part by part, :class:`codecs.Unpacked`), never held whole."""
        head = view.head
        formats = rendered_formats(self.config)
        packed = [fmt for fmt in formats if fmt != "plain"]
        reusable = {
            (arch, fmt): {}
            if self._recompress
            else self._stored_parts(view.channel, old, index_path(arch, fmt), fmt)
            for arch in chan.architectures
            for fmt in packed
        }
        stored = "plain" in formats
        plain = {
            arch: _PlainIndex(stored=stored, packed=bool(packed), md5=self._md5)
            for arch in chan.architectures
        }
        parts: dict[tuple[str, str], dict[str, codecs.Part]] = {k: {} for k in reusable}
        pins: Texts = {}
        pending: deque[tuple[str, str, Future[codecs.Part]]] = deque()

        def collect(limit: int) -> None:
            while len(pending) > limit:
                arch, fmt, future = pending.popleft()
                part = future.result()
                parts[arch, fmt][part[0]] = part

        with ThreadPoolExecutor(max_workers=codecs.COMPRESS_THREADS) as pool:
            for bucket in sorted(head.shards):
                shard = view.store.load_shard(view.channel, bucket, head.shards[bucket])
                entries = [e for name in sorted(shard) for e in shard[name].entries]
                pins[bucket] = pins_segment(chan.name, shard)
                del shard
                for arch in chan.architectures:
                    text = segment_text(entries, arch)
                    if not text:
                        continue
                    plain[arch].add(bucket, text)
                    digest = ""
                    for fmt in packed:
                        part = reusable[arch, fmt].get(bucket)
                        if part is not None:
                            digest = digest or hashlib.sha256(text).hexdigest()
                            if codecs.text_digest(fmt, part) == digest:
                                parts[arch, fmt][bucket] = part
                                continue
                        pending.append(
                            (arch, fmt, pool.submit(codecs.make_part, fmt, bucket, text))
                        )
                del entries
                collect(FULL_RENDER_AHEAD)
            collect(0)
        del reusable
        new = Record(generation=head.generation, shards=dict(head.shards))
        payloads: Payloads = {}
        for arch in chan.architectures:
            for fmt in packed:
                path = index_path(arch, fmt)
                merged = parts.pop((arch, fmt))
                ordered = [merged[b] for b in sorted(merged)]
                del merged
                if sum(len(p[1]) for p in ordered) < UNPACK_MIN:
                    new.files[path], payloads[path] = IndexFile.build(
                        path, fmt, ordered, md5=self._md5
                    )
                else:
                    new.files[path], payloads[path] = IndexFile.joined(
                        path, fmt, ordered, md5=self._md5
                    )
            path = index_path(arch, "plain")
            new.files[path] = plain[arch].file(path, stored=stored)
            if stored:  # unpacked from gz when rendered: the cheapest to decompress
                fmt = ("gz" if "gz" in packed else packed[0]) if packed else "plain"
                src = index_path(arch, fmt)
                payloads[path] = plain[arch].payload(fmt, payloads.get(src), new.files.get(src))
        self._splice_file(view, old, new, payloads, PINS_PATH, "plain", pins, True)
        return new, payloads

    def _bucket_texts(
        self, chan: ChannelConfig, view: ChannelState, buckets: set[str]
    ) -> tuple[dict[str, Texts], Texts]:
        """({arch: {bucket: Packages text}}, {bucket: pins text}) of ``buckets``, one
        shard at a time: a full render holds the texts, never every decoded shard."""
        by_arch: dict[str, Texts] = {arch: {} for arch in chan.architectures}
        pins: Texts = {}
        for bucket in sorted(buckets):
            sha = view.head.shards.get(bucket)
            shard = view.store.load_shard(view.channel, bucket, sha) if sha else {}
            entries = [e for name in sorted(shard) for e in shard[name].entries]
            for arch, texts in by_arch.items():
                texts[bucket] = segment_text(entries, arch)
            pins[bucket] = pins_segment(chan.name, shard) if sha else b""
        return by_arch, pins

    def _splice_file(
        self,
        view: ChannelState,
        old: Record,
        new: Record,
        payloads: Payloads,
        path: str,
        fmt: str,
        texts: Texts,
        full: bool,
    ) -> list[codecs.Part] | None:
        """Put ``path`` into ``new``: the previous file with the changed buckets'
        ``texts`` spliced in, or (``full``) built from ``texts`` alone.  Returns the
        new file's parts, or None when the previous file is kept as it was."""
        if full:
            return self._render_full(view.channel, old, new, payloads, path, fmt, texts)
        prev = old.files[path]
        if not self._touched(prev, texts):
            new.files[path] = prev  # no changed bucket has entries in this file
            return None
        parts = self._base_parts(view.channel, fmt, prev)
        merged = splice(
            parts, {b: codecs.make_part(fmt, b, t) if t else None for b, t in texts.items()}
        )
        if merged == parts:
            new.files[path] = old.files[path]
            return None
        info, data = IndexFile.build(path, fmt, merged, md5=self._md5)
        new.files[path] = info
        payloads[path] = data
        return merged

    # -- full render (aptship reindex) -----------------------------------------------
    @contextlib.contextmanager
    def recompressing(self) -> Iterator[None]:
        """Full renders inside compress every part again (``aptship reindex --full``)."""
        self._recompress = True
        try:
            yield
        finally:
            self._recompress = False

    def _render_full(
        self,
        channel: str,
        old: Record,
        new: Record,
        payloads: Payloads,
        path: str,
        fmt: str,
        texts: Texts,
    ) -> list[codecs.Part]:
        """``path`` built from ``texts`` alone.  A compressed part of the previous file
        is reused when its recorded text digest is the SHA256 of the text rendered now,
        and the stored file matches the record's SHA256 (so its bytes are the ones
        compressed from that text); every other part is compressed again."""
        reusable = {} if self._recompress else self._stored_parts(channel, old, path, fmt)
        kept: dict[str, codecs.Part] = {}
        todo: Texts = {}
        for bucket, text in texts.items():
            part = reusable.get(bucket)
            if (
                part is not None
                and text
                and codecs.text_digest(fmt, part) == hashlib.sha256(text).hexdigest()
            ):
                kept[bucket] = part
            elif text:
                todo[bucket] = text
        kept.update(codecs.make_parts(fmt, todo))
        merged = [kept[b] for b in sorted(kept)]
        info, data = IndexFile.build(path, fmt, merged, md5=self._md5)
        new.files[path] = info
        payloads[path] = data
        return merged

    def _create_or_repair(self, key: str, data: Payload) -> None:
        """A full render's by-hash write: an existing file with other bytes than its
        name says (damaged) is replaced, so ``reindex`` repairs it.  Content-addressed,
        so every writer of this key writes these same bytes."""
        try:
            self._write(key, data, create_only=True)
            return
        except PreconditionFailed:
            if key in self._intact:
                return  # read and hashed by this render already (_stored_parts)
        try:
            with self.storage.open_read(key) as fh:
                h = hashlib.sha256()
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() == key.rsplit("/", 1)[1]:  # by-hash/SHA256/<digest of data>
                return
        except NotFound:
            pass
        log.warning("warning: %s was damaged; written again", key)
        self._write(key, data)

    def _stored_parts(
        self, channel: str, old: Record, path: str, fmt: str
    ) -> dict[str, codecs.Part]:
        """The compressed parts of the previous ``path`` that carry a text digest, if its
        stored by-hash copy is intact ({} when it is missing, damaged or plain)."""
        info = old.files.get(path)
        if fmt == "plain" or info is None or not info.stored:
            return {}
        try:
            data = self.storage.read_bytes(dists_key(channel, info.by_hash()[0]))
            if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
                raise ValueError("differs from the published record")
            parts = codecs.split(fmt, data, info.layout)
        except (NotFound, StorageError, ValueError) as exc:
            log.info("dists/%s/%s: compressing every part again (%s)", channel, path, exc)
            return {}
        self._intact.add(dists_key(channel, info.by_hash()[0]))
        return {p[0]: p for p in parts if codecs.text_digest(fmt, p) is not None}

    @staticmethod
    def _touched(prev: IndexFile, texts: Texts) -> bool:
        present = {str(row[0]) for row in prev.layout}
        return any(text or b in present for b, text in texts.items())

    def _list_plain(
        self,
        channel: str,
        old: Record,
        new: Record,
        arch: str,
        texts: Texts,
        fmt: str,
        parts: list[codecs.Part] | None,
    ) -> None:
        """The uncompressed ``Packages`` that Release lists but nobody stores: its
        digests over the changed buckets' ``texts`` and the other buckets' text,
        decompressed from the new ``parts`` of stored format ``fmt`` (None: that file
        did not change), two threads at a time."""
        path = index_path(arch, "plain")
        prev = old.files.get(path)
        if parts is None:
            if prev is not None and not self._touched(prev, texts):
                new.files[path] = prev
                return
            # the stored file did not change: take its parts as they are
            parts = self._base_parts(channel, fmt, new.files[index_path(arch, fmt)])

        def text(part: codecs.Part) -> bytes | memoryview:
            return texts[part[0]] if part[0] in texts else codecs.part_text(fmt, part)

        if sum(len(p[1]) for p in parts) < PARALLEL_HASH_MIN:
            new.files[path] = IndexFile.listed(
                path, [(p[0], text(p)) for p in parts], md5=self._md5
            )
            return
        # zlib releases the GIL: two threads decompress while the texts are hashed
        # in order as they come (the hash runs beside them)
        with ThreadPoolExecutor(max_workers=2) as pool:
            plain = pool.map(text, parts)
            listed = ((p[0], t) for p, t in zip(parts, plain, strict=True))
            new.files[path] = IndexFile.listed(path, listed, md5=self._md5)

    def _base_parts(self, channel: str, fmt: str, info: IndexFile) -> list[codecs.Part]:
        """The previous index file split into its bucket parts."""
        data = self.storage.read_bytes(dists_key(channel, info.by_hash()[0]))
        return codecs.split(fmt, data, info.layout)

    def _sign(self, chan: ChannelConfig, rec: Record) -> None:
        release = render_release(
            origin=self.config.origin,
            label=self.config.label,
            suite=chan.name,
            description=chan.description,
            architectures=chan.architectures,
            date=release_date(),
            files=rec.files.values(),
            hashes=self.config.release_hashes,
        )
        sigs = self.signer.sign_release(release)
        rec.release = release.decode()
        rec.release_gpg = sigs.release_gpg.decode("ascii")
        rec.inrelease = sigs.inrelease.decode("utf-8")

    # -- writing plain paths -----------------------------------------------------
    def _write_plain(
        self, channel: str, new: Record, old: Record, payloads: Payloads, *, full: bool
    ) -> None:
        """The changed index files at their paths: copies of their by-hash files made
        by the storage (no bytes are sent twice), then the Release files.  Last, an
        index that is now only listed loses the file a previous configuration wrote
        at its path (``plain`` dropped from index_formats): its content is stale."""
        stale = []
        for path, info in sorted(new.files.items()):
            if not served(self.config, path):
                was = old.files.get(path)
                if (full and old.files) or (was is not None and was.stored):
                    stale.append(dists_key(channel, path))
                continue
            if (
                path in payloads
                or old.files.get(path) is None
                or old.files[path].sha256 != info.sha256
            ):
                self._copy_from_by_hash(channel, path, info)
        self._write_release(channel, new)
        for key in stale:
            self.storage.delete(key)

    def _copy_from_by_hash(self, channel: str, path: str, info: IndexFile) -> None:
        self.storage.copy(dists_key(channel, info.by_hash()[0]), dists_key(channel, path))

    def _write_release(self, channel: str, rec: Record) -> None:
        """Release and Release.gpg (together), then InRelease last."""
        self._together(
            [
                functools.partial(self._put, dists_key(channel, "Release"), rec.release),
                functools.partial(self._put, dists_key(channel, "Release.gpg"), rec.release_gpg),
            ]
        )
        self._put(dists_key(channel, "InRelease"), rec.inrelease)

    def _put(self, key: str, text: str) -> None:
        self.storage.write_bytes(key, text.encode())

    def _ensure_written(self, channel: str, rec: Record) -> None:
        """Rewrite the plain files of ``rec`` if dists/ does not show it (crash repair)."""
        try:
            current = self.storage.read_bytes(dists_key(channel, "InRelease"))
        except NotFound:
            current = b""
        if current == rec.inrelease.encode():
            return
        for path, info in sorted(rec.files.items()):
            if served(self.config, path):
                self._copy_from_by_hash(channel, path, info)
        self._write_release(channel, rec)

    def _settle(self, channel: str, written: Record) -> None:
        for _ in range(MAX_ROUNDS):
            latest = read_record(self.storage, channel)
            if latest.etag == written.etag:
                return
            for path, info in sorted(latest.files.items()):
                if not served(self.config, path):
                    continue
                self._copy_from_by_hash(channel, path, info)
            self._write_release(channel, latest)
            written = latest
