"""Index file formats built from per-bucket parts, so one bucket can be replaced cheaply.

* ``plain``: the parts' text, concatenated.
* ``gz``: an empty gzip member followed by one gzip member per part; gzip readers
  (apt's included) read concatenated members as one file.
* ``xz``: ONE xz stream with one block per part.  apt stops after the first stream
  of a concatenated .xz, so the parts are blocks and the stream's index and footer
  are rebuilt around them (xz file format 1.0.4, sections 2 and 4).

A part is ``(bucket, data, meta)``; ``meta`` is what the container needs besides the
bytes (for xz blocks: unpadded and uncompressed size) and is kept in the published
record's layout, so a later publish can split the file again without parsing it.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import zlib
from collections.abc import Sequence

Part = tuple[str, bytes, tuple[int, ...]]
Layout = list[list[object]]  # [[bucket, length, *meta], ...] as stored in JSON

_EMPTY_GZ = gzip.compress(b"", compresslevel=6, mtime=0)
XZ_MIN_DICT, XZ_MAX_DICT = 64 * 1024, 8 * 1024 * 1024  # preset 6 uses 8 MiB
_XZ_MAGIC = b"\xfd7zXZ\x00"
_XZ_FLAGS = b"\x00\x04"  # no flags, CRC64 check
_XZ_HEADER = _XZ_MAGIC + _XZ_FLAGS + struct.pack("<I", zlib.crc32(_XZ_FLAGS))


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
    """xz preset 6 with a dictionary no larger than the part needs: a part's matches
    never reach back further than its own start, so the output is as small, but
    preset 6's 8 MiB dictionary costs milliseconds and tens of MB to set up per part."""
    dict_size = min(XZ_MAX_DICT, max(XZ_MIN_DICT, 1 << max(size - 1, 1).bit_length()))
    return [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": dict_size}]


def make_part(fmt: str, bucket: str, text: bytes) -> Part:
    if fmt == "plain":
        return bucket, text, ()
    if fmt == "gz":
        return bucket, gzip.compress(text, compresslevel=6, mtime=0), ()
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
        return bucket, stream[12 : -12 - index_size], (unpadded, uncompressed)
    raise ValueError(f"unknown index format {fmt!r}")


def join(fmt: str, parts: Sequence[Part]) -> bytes:
    body = b"".join(p[1] for p in parts)
    if fmt == "plain":
        return body
    if fmt == "gz":
        return _EMPTY_GZ + body
    if fmt == "xz":
        index = bytearray(b"\x00" + _varint(len(parts)))
        for _, _, (unpadded, uncompressed) in parts:
            index += _varint(unpadded) + _varint(uncompressed)
        index += b"\x00" * (-len(index) % 4)
        index += struct.pack("<I", zlib.crc32(index))
        tail = struct.pack("<I", len(index) // 4 - 1) + _XZ_FLAGS
        footer = struct.pack("<I", zlib.crc32(tail)) + tail + b"YZ"
        return _XZ_HEADER + body + bytes(index) + footer
    raise ValueError(f"unknown index format {fmt!r}")


def part_text(fmt: str, part: Part) -> bytes:
    """The uncompressed text of one part made by :func:`make_part`."""
    if fmt == "plain":
        return part[1]
    if fmt == "gz":
        return gzip.decompress(part[1])
    if fmt == "xz":
        return lzma.decompress(join("xz", [part]), format=lzma.FORMAT_XZ)
    raise ValueError(f"unknown index format {fmt!r}")


def layout(parts: Sequence[Part]) -> Layout:
    return [[b, len(data), *meta] for b, data, meta in parts]


def split(fmt: str, data: bytes, lay: Layout) -> list[Part]:
    """Cut a file made by :func:`join` back into its parts, checking the layout fits.

    The parts are consecutive slices, so the file matches its layout exactly when its
    header and trailer are what :func:`join` makes around them (the xz index is built
    from the parts' recorded sizes): those few bytes are compared, not the whole file.
    """
    head = {"plain": 0, "gz": len(_EMPTY_GZ), "xz": len(_XZ_HEADER)}[fmt]
    pos = head
    parts: list[Part] = []
    for bucket, length, *meta in lay:
        n = int(str(length))
        if n < 0:
            raise ValueError("index file does not match its recorded layout")
        parts.append((str(bucket), data[pos : pos + n], tuple(int(str(m)) for m in meta)))
        pos += n
    frame = join(fmt, [(b, b"", meta) for b, _, meta in parts])
    if pos > len(data) or data[:head] + data[pos:] != frame:
        raise ValueError("index file does not match its recorded layout")
    return parts
