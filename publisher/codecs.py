"""Index file formats built from per-bucket parts, so one bucket can be replaced cheaply.

* ``plain``: the parts' text, concatenated.
* ``gz``: an empty gzip member followed by one gzip member per part; gzip readers
  (apt's included) read concatenated members as one file.
* ``xz``: ONE xz stream with one block per part.  apt stops after the first stream
  of a concatenated .xz, so the parts are blocks and the stream's index and footer
  are rebuilt around them (xz file format 1.0.4, sections 2 and 4).

A part is ``(bucket, data, meta)``; ``meta`` is what the container needs besides the
bytes (for xz blocks: unpadded and uncompressed size) and, for compressed parts, the
SHA256 of the text they were compressed from.  It is kept in the published record's
layout, so a later publish can split the file again without parsing it, and a full
render can reuse a part whose text it renders again (:func:`text_digest`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from isal import igzip, isal_zlib

# A part's data is a view into the file it was split from (no copy) or new bytes.
Part = tuple[str, bytes | memoryview, tuple[int | str, ...]]
Layout = list[list[object]]  # [[bucket, length, *meta], ...] as stored in JSON

_EMPTY_GZ = gzip.compress(b"", compresslevel=6, mtime=0)
_XZ_MAGIC = b"\xfd7zXZ\x00"
_XZ_FLAGS = b"\x00\x04"  # no flags, CRC64 check
_XZ_HEADER = _XZ_MAGIC + _XZ_FLAGS + struct.pack("<I", zlib.crc32(_XZ_FLAGS))
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
XZ_PRESET = 6
XZ_NICE_LEN = 32  # with the hash-chain match finder: see _xz_filters
COMPRESS_THREADS = 2
PARALLEL_BYTES = 1 << 20  # below this, starting threads costs more than it saves


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _xz_filters(size: int) -> list[dict[str, int]]:
    """xz -6 with the hash-chain match finder and 32-byte nice matches, and a
    dictionary no larger than the text needs (4 KiB .. 8 MiB).

    On index parts the faster match finder costs almost nothing in size and saves a
    third to a half of the CPU: on 256 parts cut from Debian bookworm's Packages
    (8 MB) 1.3 s instead of 1.9 s for 0.8 % more bytes, on the benchmark's 10,000
    entries 0.37 s instead of 0.69 s for 0.07 %.  A bigger dictionary than the input
    changes nothing in the output but costs its allocation on every part (a full
    render makes 256 of them)."""
    dict_size = 4096
    while dict_size < size and dict_size < 8 << 20:
        dict_size *= 2
    return [
        {
            "id": lzma.FILTER_LZMA2,
            "preset": XZ_PRESET,
            "dict_size": dict_size,
            "mf": lzma.MF_HC4,
            "nice_len": XZ_NICE_LEN,
        }
    ]


def make_part(fmt: str, bucket: str, text: bytes | memoryview) -> Part:
    if fmt == "plain":
        return bucket, text, ()
    digest = hashlib.sha256(text).hexdigest()
    if fmt == "gz":
        return bucket, gzip.compress(text, compresslevel=6, mtime=0), (digest,)
    if fmt == "xz":
        stream = lzma.compress(
            text, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=_xz_filters(len(text))
        )
        backward = struct.unpack("<I", stream[-8:-4])[0]
        index_size = (backward + 1) * 4
        index = stream[-12 - index_size : -12]
        count, pos = _read_varint(index, 1)
        if count != 1:
            raise ValueError("expected a single-block xz stream")
        unpadded, pos = _read_varint(index, pos)
        uncompressed, _ = _read_varint(index, pos)
        return bucket, stream[12 : -12 - index_size], (unpadded, uncompressed, digest)
    raise ValueError(f"unknown index format {fmt!r}")


def make_parts(fmt: str, texts: dict[str, bytes | memoryview]) -> dict[str, Part]:
    """:func:`make_part` of each (bucket, text), on two threads when there is enough
    to compress (zlib and lzma release the GIL while they work)."""
    if fmt == "plain" or len(texts) < 2 or sum(map(len, texts.values())) < PARALLEL_BYTES:
        return {b: make_part(fmt, b, t) for b, t in texts.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=COMPRESS_THREADS) as pool:
        made = pool.map(lambda item: make_part(fmt, *item), texts.items())
        return {part[0]: part for part in made}


def text_digest(fmt: str, part: Part) -> str | None:
    """The SHA256 of the text ``part`` holds, when it is known without decompressing:
    a plain part is its text; a compressed one records it in its meta (parts of
    records written before the digest was kept have none)."""
    if fmt == "plain":
        return hashlib.sha256(part[1]).hexdigest()
    meta = part[2]
    want = {"gz": 1, "xz": 3}.get(fmt)
    if want is None or len(meta) != want or not isinstance(meta[-1], str):
        return None
    return meta[-1]


def join(fmt: str, parts: Sequence[Part]) -> bytes:
    """The file made of ``parts``: one allocation, the size of the file."""
    head, tail = _frame(fmt, parts)
    return b"".join([head, *(p[1] for p in parts), tail])


def _frame(fmt: str, parts: Sequence[Part]) -> tuple[bytes, bytes]:
    """What :func:`join` puts before and after the parts' bytes."""
    if fmt == "plain":
        return b"", b""
    if fmt == "gz":
        return _EMPTY_GZ, b""
    if fmt == "xz":
        index = bytearray(b"\x00" + _varint(len(parts)))
        for _, _, meta in parts:
            index += _varint(int(meta[0])) + _varint(int(meta[1]))
        index += b"\x00" * (-len(index) % 4)
        index += struct.pack("<I", zlib.crc32(index))
        tail = struct.pack("<I", len(index) // 4 - 1) + _XZ_FLAGS
        footer = struct.pack("<I", zlib.crc32(tail)) + tail + b"YZ"
        return _XZ_HEADER, bytes(index) + footer
    raise ValueError(f"unknown index format {fmt!r}")


# isal's stubs declare its error class as an instance
_ISAL_ERROR: type[Exception] = cast("type[Exception]", isal_zlib.error)
# What reading damaged gzip data raises (a truncated file, a bad header, a bad block).
GZIP_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, _ISAL_ERROR)


def gunzip_member(data: bytes | memoryview) -> bytes:
    """One gzip member's text, with ISA-L's inflate (the same bytes as zlib, in about
    half the time).  Damaged data raises ValueError."""
    try:
        return isal_zlib.decompress(data, wbits=31)
    except _ISAL_ERROR as exc:
        raise ValueError(f"damaged gzip data ({exc})") from exc


def open_gzip(raw: BinaryIO) -> BinaryIO:
    """A reader of the text of a gzip file (all its members) over ``raw``; damaged data
    raises one of :data:`GZIP_ERRORS`."""
    return cast(BinaryIO, igzip.GzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]


def part_text(fmt: str, part: Part) -> bytes | memoryview:
    """The uncompressed text of one part made by :func:`make_part` (ValueError when
    it is damaged)."""
    if fmt == "plain":
        return part[1]
    if fmt == "gz":
        return gunzip_member(part[1])  # one gzip member (make_part)
    if fmt == "xz":
        try:
            return lzma.decompress(join("xz", [part]), format=lzma.FORMAT_XZ)
        except lzma.LZMAError as exc:
            raise ValueError(f"damaged xz data ({exc})") from exc
    raise ValueError(f"unknown index format {fmt!r}")


def layout(parts: Sequence[Part]) -> Layout:
    return [[b, len(data), *meta] for b, data, meta in parts]


def _meta(value: object) -> int | str:
    """One layout meta value as stored in JSON: a size, or a text digest."""
    if isinstance(value, str) and _DIGEST.match(value):
        return value
    return int(str(value))


def split(fmt: str, data: bytes, lay: Layout) -> list[Part]:
    """Cut a file made by :func:`join` back into its parts, checking the layout fits.

    The parts are consecutive slices, so the file matches its layout exactly when its
    header and trailer are what :func:`join` makes around them (the xz index is built
    from the parts' recorded sizes): those few bytes are compared, not the whole file.
    """
    head = {"plain": 0, "gz": len(_EMPTY_GZ), "xz": len(_XZ_HEADER)}[fmt]
    pos = head
    view = memoryview(data)
    parts: list[Part] = []
    for bucket, length, *meta in lay:
        n = int(str(length))
        if n < 0:
            raise ValueError("index file does not match its recorded layout")
        parts.append((str(bucket), view[pos : pos + n], tuple(_meta(m) for m in meta)))
        pos += n
    frame = b"".join(_frame(fmt, parts))
    if pos > len(data) or data[:head] + data[pos:] != frame:
        raise ValueError("index file does not match its recorded layout")
    return parts


class _ChunkReader(io.RawIOBase):
    """A read-only, unseekable stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        super().__init__()
        self._chunks = chunks
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk).cast("B")
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


@dataclass(frozen=True)
class Joined:
    """The file :func:`join` makes of ``parts``, read part by part: written without
    the copy that joining them makes."""

    fmt: str
    parts: list[Part]

    def chunks(self) -> list[bytes | memoryview]:
        head, tail = _frame(self.fmt, self.parts)
        return [head, *(p[1] for p in self.parts), tail]

    def open(self) -> BinaryIO:
        return cast(BinaryIO, _ChunkReader(iter(self.chunks())))


@dataclass(frozen=True)
class Unpacked:
    """The text of a compressed index file, decompressed part by part while it is
    read: the uncompressed file written without ever holding it whole."""

    fmt: str
    parts: list[Part]

    def open(self) -> BinaryIO:
        return cast(BinaryIO, _ChunkReader(part_text(self.fmt, p) for p in self.parts))
