"""Render apt indexes: Packages parts per bucket, index file records, and Release.

How parts become files (and why) is in :mod:`publisher.codecs`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from publisher import codecs
from publisher.state import Entry
from publisher.versions import version_key

SUFFIX = {"plain": "", "gz": ".gz", "xz": ".xz"}
# Hash fields Release can list (repository.release_hashes, docs/config.md) and the
# IndexFile attribute of each.  apt checks and fetches by-hash with the strongest hash
# listed, so by-hash holds SHA256 copies only (docs/s3.md, "Request budget").  Records
# of older versions may name SHA512 digests; they are ignored, and their SHA512 copies
# left to gc.
RELEASE_HASHES = {"MD5Sum": "md5", "SHA256": "sha256"}


PARALLEL_HASH_MIN = 1 << 20  # below this, starting a thread costs more than it saves


def digests(chunks: Iterable[bytes | memoryview], *, md5: bool) -> tuple[str, str]:
    """(md5, sha256) hex digests of the concatenation of ``chunks``, each byte read
    once per digest; md5 is "" unless asked for.  SHA256 alone consumes ``chunks`` as
    they come (they may still be produced by other threads).  Large inputs are hashed
    by both digests at once (hashlib releases the GIL), so the pair costs about the
    slower one."""
    sha256 = hashlib.sha256()
    if not md5:
        for chunk in chunks:
            sha256.update(chunk)
        return "", sha256.hexdigest()
    chunks = list(chunks)

    def feed(h: Any) -> None:
        for chunk in chunks:
            h.update(chunk)

    md5sum = hashlib.md5(usedforsecurity=False)
    if sum(len(c) for c in chunks) < PARALLEL_HASH_MIN:
        feed(md5sum)
        feed(sha256)
    else:
        worker = threading.Thread(target=feed, args=(sha256,), name="aptship-sha256")
        worker.start()
        try:
            feed(md5sum)
        finally:
            worker.join()
    return md5sum.hexdigest(), sha256.hexdigest()


def decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".gz"):
        import gzip

        return gzip.decompress(data)
    if name.endswith(".xz"):
        import lzma

        return lzma.decompress(data)
    return data


def sort_entries(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.package, version_key(e.version), e.architecture))


def segment_text(entries: Iterable[Entry], arch: str) -> bytes:
    """The stanzas of ``entries`` that belong in ``binary-<arch>``, blank-line separated."""
    chosen = [e for e in entries if e.architecture in (arch, "all")]
    return "".join(e.stanza() + "\n" for e in sort_entries(chosen)).encode("utf-8")


def index_path(arch: str, fmt: str) -> str:
    """Path of an index below ``dists/<channel>/``."""
    return f"main/binary-{arch}/Packages{SUFFIX[fmt]}"


def by_hash_path(index: str, digest: str, kind: str = "SHA256") -> str:
    return f"{index.rsplit('/', 1)[0]}/by-hash/{kind}/{digest}"


@dataclass
class IndexFile:
    """One rendered index file, its digests, and its layout of bucket parts."""

    path: str  # relative to dists/<channel>/
    size: int
    md5: str  # "" when Release does not list MD5Sum
    sha256: str
    layout: codecs.Layout
    # False: listed in Release only (the uncompressed Packages when ``plain`` is not
    # in index_formats): no by-hash copy, no file at its path (docs/s3.md)
    stored: bool = True

    @classmethod
    def build(
        cls, path: str, fmt: str, parts: list[codecs.Part], *, md5: bool
    ) -> tuple[IndexFile, bytes]:
        data = codecs.join(fmt, parts)
        md5sum, sha256 = digests([data], md5=md5)
        return cls(path, len(data), md5sum, sha256, codecs.layout(parts)), data

    @classmethod
    def joined(
        cls, path: str, fmt: str, parts: list[codecs.Part], *, md5: bool
    ) -> tuple[IndexFile, codecs.Joined]:
        """:meth:`build` without joining the parts: the file's digests over its chunks."""
        joined = codecs.Joined(fmt, parts)
        chunks = joined.chunks()
        md5sum, sha256 = digests(chunks, md5=md5)
        size = sum(len(c) for c in chunks)
        return cls(path, size, md5sum, sha256, codecs.layout(parts)), joined

    @classmethod
    def listed(
        cls, path: str, texts: Iterable[tuple[str, bytes | memoryview]], *, md5: bool
    ) -> IndexFile:
        """A file that is only listed in Release: its digests over ``texts`` (bucket,
        text) in order, each byte hashed once, the whole never joined, and each text
        hashed as soon as it comes."""
        plain = PlainText(md5=md5)
        for bucket, text in texts:
            plain.add(bucket, text)
        return plain.file(path, stored=False)

    def by_hash(self) -> list[str]:
        """Paths (below dists/<channel>/) of this file's by-hash copies."""
        return [by_hash_path(self.path, self.sha256)] if self.stored else []

    def to_json(self) -> dict[str, object]:
        return {
            "size": self.size,
            **({"md5": self.md5} if self.md5 else {}),
            "sha256": self.sha256,
            "layout": self.layout,
            **({} if self.stored else {"stored": False}),
        }

    @classmethod
    def from_json(cls, path: str, data: Mapping[str, object]) -> IndexFile:
        lay = data["layout"]
        if not isinstance(lay, list):
            raise ValueError(f"{path}: layout must be a list")
        return cls(
            path=path,
            size=int(str(data["size"])),
            md5=str(data.get("md5", "")),
            sha256=str(data["sha256"]),
            layout=lay,
            stored=data.get("stored", True) is not False,
        )


class PlainText:
    """The uncompressed ``Packages`` fed bucket by bucket: its size, layout and
    digests (MD5 only when Release lists MD5Sum), without keeping the text."""

    def __init__(self, *, md5: bool) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.layout: codecs.Layout = []

    def add(self, bucket: str, text: bytes | memoryview) -> None:
        if self.md5 is not None:
            self.md5.update(text)
        self.sha256.update(text)
        self.size += len(text)
        self.layout.append([bucket, len(text)])

    def file(self, path: str, *, stored: bool) -> IndexFile:
        md5 = self.md5.hexdigest() if self.md5 is not None else ""
        return IndexFile(path, self.size, md5, self.sha256.hexdigest(), self.layout, stored=stored)


def splice(old: list[codecs.Part], new: Mapping[str, codecs.Part | None]) -> list[codecs.Part]:
    """Replace, insert or drop (None) bucket parts, keeping bucket order."""
    merged = {p[0]: p for p in old}
    for bucket, part in new.items():
        if part is None:
            merged.pop(bucket, None)
        else:
            merged[bucket] = part
    return [merged[b] for b in sorted(merged)]


def release_date(now: float | None = None) -> str:
    """An RFC 2822 date in UTC, as Release's ``Date`` (``email.utils.formatdate(usegmt=True)``
    without importing the email package on every publish)."""
    t = time.gmtime(now)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (  # noqa: UP031 - fixed C-locale form
        _DAYS[t.tm_wday],
        t.tm_mday,
        _MONTHS[t.tm_mon - 1],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def render_release(
    *,
    origin: str,
    label: str,
    suite: str,
    description: str,
    architectures: Iterable[str],
    date: str,
    files: Iterable[IndexFile],
    hashes: Sequence[str] = ("SHA256",),
) -> bytes:
    """The Release text, byte for byte what python-debian's ``deb822.Release`` dumps
    (apt-ftparchive layout: sizes right-aligned in 16 columns).  A value with a line
    break goes through deb822 itself (it folds or refuses it)."""
    fields = [
        ("Origin", origin),
        ("Label", label),
        ("Suite", suite),
        ("Codename", suite),
        ("Date", date),
        ("Architectures", " ".join(architectures)),
        ("Components", "main"),
        *([("Description", description)] if description else []),
        ("Acquire-By-Hash", "yes"),
    ]
    ordered = sorted(files, key=lambda f: f.path)
    if any("\n" in value for _, value in fields) or any("\n" in f.path for f in ordered):
        return _render_release_deb822(fields, ordered, hashes)
    out = [f"{name}: {value}\n" if value else f"{name}:\n" for name, value in fields]
    for field_name in hashes:
        attr = RELEASE_HASHES[field_name]
        out.append(f"{field_name}:\n")
        out += [f" {getattr(f, attr)} {f.size:>16} {f.path}\n" for f in ordered]
    return "".join(out).encode("utf-8")


def _render_release_deb822(
    fields: list[tuple[str, str]], ordered: list[IndexFile], hashes: Sequence[str]
) -> bytes:
    from debian.deb822 import Release

    rel: Any = Release()
    for name, value in fields:
        rel[name] = value
    for field_name in hashes:
        attr = RELEASE_HASHES[field_name]
        rel[field_name] = [
            {
                attr if attr != "md5" else "md5sum": getattr(f, attr),
                "size": str(f.size),
                "name": f.path,
            }
            for f in ordered
        ]
    return str(rel.dump()).encode("utf-8")
