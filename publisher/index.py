"""Render apt indexes: Packages parts per bucket, index file records, and Release.

How parts become files (and why) is in :mod:`publisher.codecs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from publisher import codecs
from publisher.state import Entry
from publisher.versions import version_key

SUFFIX = {"plain": "", "gz": ".gz", "xz": ".xz"}
# What Release lists, as Debian's archive does: MD5Sum and SHA256.  apt checks and
# fetches by-hash with the strongest hash listed, so by-hash holds SHA256 copies only
# (docs/s3.md, "Request budget").  Records of older versions may name SHA512
# digests; they are ignored, and their SHA512 copies left to gc.
RELEASE_HASHES = (("MD5Sum", "md5"), ("SHA256", "sha256"))


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
    md5: str
    sha256: str
    layout: codecs.Layout
    # False: listed in Release only (the uncompressed Packages when ``plain`` is not
    # in index_formats): no by-hash copy, no file at its path (docs/s3.md)
    stored: bool = True

    @classmethod
    def build(cls, path: str, fmt: str, parts: list[codecs.Part]) -> tuple[IndexFile, bytes]:
        data = codecs.join(fmt, parts)
        info = cls(
            path=path,
            size=len(data),
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            layout=codecs.layout(parts),
        )
        return info, data

    @classmethod
    def listed(cls, path: str, texts: Iterable[tuple[str, bytes]]) -> IndexFile:
        """A file that is only listed in Release: its digests over ``texts`` (bucket,
        text) in order, each byte hashed once and the whole never joined."""
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        size = 0
        lay: codecs.Layout = []
        for bucket, text in texts:
            md5.update(text)
            sha256.update(text)
            size += len(text)
            lay.append([bucket, len(text)])
        return cls(path, size, md5.hexdigest(), sha256.hexdigest(), lay, stored=False)

    def by_hash(self) -> list[str]:
        """Paths (below dists/<channel>/) of this file's by-hash copies."""
        return [by_hash_path(self.path, self.sha256)] if self.stored else []

    def to_json(self) -> dict[str, object]:
        return {
            "size": self.size,
            "md5": self.md5,
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
            md5=str(data["md5"]),
            sha256=str(data["sha256"]),
            layout=lay,
            stored=data.get("stored", True) is not False,
        )


def splice(old: list[codecs.Part], new: Mapping[str, codecs.Part | None]) -> list[codecs.Part]:
    """Replace, insert or drop (None) bucket parts, keeping bucket order."""
    merged = {p[0]: p for p in old}
    for bucket, part in new.items():
        if part is None:
            merged.pop(bucket, None)
        else:
            merged[bucket] = part
    return [merged[b] for b in sorted(merged)]


def render_release(
    *,
    origin: str,
    label: str,
    suite: str,
    description: str,
    architectures: Iterable[str],
    date: str,
    files: Iterable[IndexFile],
) -> bytes:
    from debian.deb822 import Release

    rel: Any = Release()
    rel["Origin"] = origin
    rel["Label"] = label
    rel["Suite"] = suite
    rel["Codename"] = suite
    rel["Date"] = date
    rel["Architectures"] = " ".join(architectures)
    rel["Components"] = "main"
    if description:
        rel["Description"] = description
    rel["Acquire-By-Hash"] = "yes"
    ordered = sorted(files, key=lambda f: f.path)
    for field_name, attr in RELEASE_HASHES:
        rel[field_name] = [
            {
                attr if attr != "md5" else "md5sum": getattr(f, attr),
                "size": str(f.size),
                "name": f.path,
            }
            for f in ordered
        ]
    return str(rel.dump()).encode("utf-8")
