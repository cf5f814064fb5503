"""The storage interface shared by the local directory and S3 backends.

Keys are relative ``/`` paths (see :mod:`publisher.storage.keys`).  Objects are
whole files; there are no directories, links or partial writes.  Two conditional
writes carry the publishing protocol:

* ``create_only=True``: fail with :class:`PreconditionFailed` if the key exists
  (S3 ``If-None-Match: *``).  Used for pool files, by-hash files and shards.
* ``if_match=etag``: fail with :class:`PreconditionFailed` unless the current object
  has that ETag (S3 ``If-Match``).  Used for the channel heads (compare-and-swap).

Backends translate their own errors into ``NotFound`` / ``StorageError`` at this
boundary; no backend type leaks out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from publisher.errors import NotFound, UsageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float
    etag: str


@dataclass
class PutResult:
    """What a streamed file write saw: size and hex digests computed while writing."""

    size: int
    etag: str
    hashes: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Storage(Protocol):
    """A flat key -> bytes store with create-only and compare-and-swap writes."""

    name: str

    def read_bytes(self, key: str) -> bytes:
        """Whole content of a small object.  NotFound if absent."""
        ...

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        """Content and ETag (for a later ``if_match``).  NotFound if absent."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """A stream over a (possibly large) object.  NotFound if absent."""
        ...

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Write a small object atomically; return its new ETag."""
        ...

    def write_stream(
        self,
        key: str,
        stream: BinaryIO,
        *,
        create_only: bool = False,
        hash_names: tuple[str, ...] = ("md5", "sha1", "sha256"),
        content_type: str | None = None,
    ) -> PutResult:
        """Stream ``stream`` into ``key`` in chunks, hashing on the way."""
        ...

    def copy(self, src: str, dst: str) -> str:
        """Replace ``dst`` atomically with the content of ``src`` without sending the
        bytes again (S3 CopyObject; a hard link locally); return the new ETag.
        NotFound if ``src`` is absent.  Used for content-addressed sources only
        (by-hash files), which are never written in place."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size, mtime and ETag of an object.  NotFound if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def sizes(self, keys: Sequence[str]) -> dict[str, int]:
        """{key: size} of those ``keys`` that exist; an absent key, or one that is not
        a valid key inside the repository, is left out.  Each backend's cheapest way
        (``aptship verify --fast`` sizes every pool file a channel lists)."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; absent objects are not an error."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """All objects whose key starts with ``prefix`` (a folder prefix ending in /)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for sendfile, or None when the backend has none."""
        ...

    def presigned_url(self, key: str, expires: int = 300) -> str | None:
        """A time-limited GET URL for ``key``, or None when the backend has none."""
        ...

    def describe(self) -> str:
        """Where the repository lives, for messages (never credentials)."""
        ...


LIST_FROM = 64  # keys to size: from this many on, one listing per subtree, not a HEAD each


def sizes_by_listing(storage: Storage, keys: Sequence[str]) -> dict[str, int]:
    """:meth:`Storage.sizes` for a backend whose listing is cheaper than a stat per
    key: one listing of each subtree (``pool/<component>/<initial>/``) the keys are
    in, or one stat each when there are fewer than LIST_FROM."""
    found: dict[str, int] = {}
    listed: dict[str, dict[str, int]] = {}  # subtree prefix -> {key: size}
    for key in keys:
        try:
            if len(keys) < LIST_FROM:
                found[key] = storage.stat(key).size
                continue
            parts = key.split("/")
            prefix = "/".join(parts[: min(3, len(parts) - 1)]) + "/"
            if prefix not in listed:
                listed[prefix] = {o.key: o.size for o in storage.list(prefix)}
        except (NotFound, UsageError):
            continue
        if key in listed[prefix]:
            found[key] = listed[prefix][key]
    return found


@runtime_checkable
class BatchWrites(Protocol):
    """A backend that stores many local files in one durable step (the local
    directory: one wait for the disk instead of one per file).  S3 has nothing to
    wait for and keeps one create-only PUT per file."""

    def write_files(
        self,
        items: Sequence[tuple[str, str | os.PathLike[str]]],
        *,
        hash_names: tuple[str, ...] = ("md5", "sha1", "sha256"),
    ) -> list[PutResult | None]:
        """Store each ``(key, file)`` create-only, hashing while copying; ``None`` for
        a key that exists already.  Every stored file is durable when this returns."""
        ...
