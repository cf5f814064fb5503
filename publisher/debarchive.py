"""The ar and control.tar layers of a .deb: find the ``control`` file, and say whether
the archive is *canonical*, that is shaped the way ``dpkg-deb --build`` shapes it.

A canonical archive is read exactly as ``dpkg-deb`` reads it, by construction, so its
identity needs no ``dpkg-deb --field`` cross-check (``limits.dpkg_check = "auto"``,
docs/security.md).  Canonical means, after dpkg-deb's ``src/deb/extract.c`` (which
pipes control.tar into GNU tar, extracts it and reads ``control`` from disk):

* ar: the magic, then exactly three members, ``debian-binary`` holding ``2.0\\n``,
  ``control.tar[.gz|.xz|.zst]``, ``data.tar[.gz|.xz|.zst|.bz2|.lzma]``; names as
  ``name`` or ``name/`` padded with spaces, sizes as plain decimal digits; nothing
  after the last member (no ``_`` members, no duplicates, no trailing data);
* the control member: one gzip or xz stream with nothing after it (zstd and a plain
  tar as they are);
* the tar: plain ustar or GNU headers (no pax, GNU long-name or long-link headers,
  no ``prefix`` field, no base-256 sizes) of regular files and directories only; names
  that are ``.`` or a simple name with an optional leading ``./``; a real end of
  archive (GNU tar goes on past a damaged header where Python's tarfile stops);
  exactly one member that names ``control``, a regular file (GNU tar extracts every
  member, so with two the last one wins; a first-match reader would take the first).

Anything else is read as before (the first ``control``) and reported non-canonical
with the reason, so that ``inspect_deb`` lets ``dpkg-deb`` arbitrate.  The control
member is decompressed into memory up to ``limits.max_control_bytes`` and no further;
the data member is never read.
"""

from __future__ import annotations

import contextlib
import io
import lzma
import re
import shutil
import subprocess
import tarfile
import threading
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from publisher.config import LimitsConfig
from publisher.errors import ControlTooLarge, InvalidPackage

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
MAX_AR_MEMBERS = 64  # a .deb has three; dpkg-deb reads at most up to the control member
CONTROL_MEMBERS = ("control.tar", "control.tar.gz", "control.tar.xz", "control.tar.zst")
DATA_MEMBERS = (
    "data.tar",
    "data.tar.gz",
    "data.tar.xz",
    "data.tar.zst",
    "data.tar.bz2",
    "data.tar.lzma",
)
READ_CHUNK = 64 * 1024
ZSTD_TIMEOUT = 60  # seconds zstd may take to finish once its output has ended
BLOCK = tarfile.BLOCKSIZE
_AR_NAME = re.compile(rb"^([!-.0-~]{1,15})/? *$")  # a name, an optional "/", spaces
_AR_SIZE = re.compile(rb"^[0-9]+ *$")
_USTAR = (b"ustar\x0000", b"ustar  \x00")  # POSIX ustar, GNU
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


@dataclass(frozen=True)
class ArMember:
    name: str  # as dpkg normalizes it: trailing spaces and one "/" removed
    offset: int  # of the data
    size: int
    canonical_header: bool


@dataclass(frozen=True)
class ControlRead:
    control: bytes  # the control file's bytes
    noncanonical: str | None  # why dpkg-deb must arbitrate, or None: read exactly


def ar_members(fh: BinaryIO, size: int, label: str) -> tuple[list[ArMember], bool]:
    """The members of the ar archive ``fh`` (``size`` bytes) and whether the archive
    ends exactly after the last one.  Truncated members are refused."""
    if fh.read(len(AR_MAGIC)) != AR_MAGIC:
        raise InvalidPackage(f"{label}: not a Debian package (no ar archive magic)")
    members: list[ArMember] = []
    pos = len(AR_MAGIC)
    while pos < size:
        if len(members) == MAX_AR_MEMBERS:
            raise InvalidPackage(f"{label}: more than {MAX_AR_MEMBERS} ar members")
        fh.seek(pos)
        header = fh.read(AR_HEADER)
        if len(header) < AR_HEADER:
            if not header.strip(b"\n"):  # padding at the very end
                return members, False
            raise InvalidPackage(f"{label}: truncated (a partial ar member header)")
        if header[58:60] != b"`\n":
            raise InvalidPackage(
                f"{label}: not a valid Debian binary package (bad ar member header)"
            )
        raw_name, raw_size = header[:16], header[48:58]
        name = raw_name.rstrip(b" ")
        name = name[:-1] if name.endswith(b"/") else name
        # dpkg: leading spaces, then digits up to a space (dpkg_ar_member_parse_size)
        digits = raw_size.lstrip(b" ").split(b" ", 1)[0]
        if not digits.isdigit():
            raise InvalidPackage(
                f"{label}: not a valid Debian binary package (ar member size {raw_size!r})"
            )
        length = int(digits)
        pos += AR_HEADER
        if pos + length > size:
            text = name.decode("latin-1")
            raise InvalidPackage(f"{label}: truncated (member {text} is cut short)")
        canonical = bool(_AR_NAME.match(raw_name) and _AR_SIZE.match(raw_size))
        members.append(ArMember(name.decode("latin-1"), pos, length, canonical))
        pos += length + (length & 1)
    return members, pos == size


def _read_member(fh: BinaryIO, member: ArMember, limit: int) -> bytes:
    """The first ``limit`` bytes of ``member`` at most."""
    fh.seek(member.offset)
    return fh.read(min(member.size, limit))


def _too_large(label: str, limits: LimitsConfig) -> ControlTooLarge:
    return ControlTooLarge(
        f"{label}: the control member expands past {limits.max_control_bytes} bytes "
        "(limits.max_control_bytes)"
    )


def _inflate(
    fh: BinaryIO, member: ArMember, label: str, limits: LimitsConfig, kind: str
) -> tuple[bytes, bool]:
    """(the decompressed control.tar, whether it was exactly one stream with nothing
    after it), reading at most ``limits.max_control_bytes`` decompressed bytes."""
    limit = limits.max_control_bytes
    if kind == "gz":
        dec: zlib._Decompress | lzma.LZMADecompressor = zlib.decompressobj(wbits=31)
    else:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    out = bytearray()
    fh.seek(member.offset)
    left = member.size
    trailing = False
    pending = b""
    while True:
        if not pending:
            if not left:
                break
            pending = fh.read(min(READ_CHUNK, left))
            if not pending:
                raise InvalidPackage(f"{label}: truncated control member")
            left -= len(pending)
        room = limit + 1 - len(out)
        if isinstance(dec, lzma.LZMADecompressor):
            out += dec.decompress(pending, max_length=room)
            pending = b""
            eof, unused = dec.eof, dec.unused_data
        else:
            out += dec.decompress(pending, room)
            pending = dec.unconsumed_tail
            eof, unused = dec.eof, dec.unused_data
        if len(out) > limit:
            raise _too_large(label, limits)
        if eof:
            trailing = bool(unused) or left > 0
            break
    if isinstance(dec, lzma.LZMADecompressor):
        while not dec.eof and not dec.needs_input:  # drain what is buffered
            out += dec.decompress(b"", max_length=limit + 1 - len(out))
            if len(out) > limit:
                raise _too_large(label, limits)
    if not dec.eof:
        raise InvalidPackage(f"{label}: the control member is truncated ({kind} stream)")
    return bytes(out), not trailing


def _unzstd(fh: BinaryIO, member: ArMember, label: str, limits: LimitsConfig) -> bytes:
    """``zstd -dc`` of the member, reading at most the limit (no zstd in the stdlib)."""
    zstd = shutil.which("zstd")
    if zstd is None:
        raise InvalidPackage("control.tar.zst needs the zstd tool, which is not installed")
    proc = subprocess.Popen(
        [zstd, "-dc", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:  # cannot happen with PIPE; keeps mypy exact
        raise InvalidPackage("cannot start zstd")
    fh.seek(member.offset)

    def feed() -> None:  # stops on a broken pipe once the reader has had enough
        left = member.size
        with contextlib.suppress(OSError, ValueError):
            while left and (chunk := fh.read(min(READ_CHUNK, left))):
                left -= len(chunk)
                stdin.write(chunk)
        with contextlib.suppress(OSError):
            stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    out = bytearray()
    done = False
    try:
        while chunk := stdout.read(READ_CHUNK):
            out += chunk
            if len(out) > limits.max_control_bytes:
                raise _too_large(label, limits)
        done = True
    finally:
        if not done:
            proc.kill()
        try:
            proc.wait(timeout=ZSTD_TIMEOUT)  # its verdict on the whole stream
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout.close()
        feeder.join(timeout=10)
    if proc.returncode != 0:
        raise InvalidPackage(f"{label}: zstd cannot decompress the control member")
    return bytes(out)


def _header_reason(raw: bytes, info: tarfile.TarInfo) -> str | None:
    """Why the tar header ``raw`` of ``info`` is not one dpkg-deb --build writes."""
    if info.offset_data - info.offset != BLOCK or info.pax_headers:
        return f"tar member {info.name!r} has a pax or GNU long-name header"
    if raw[257:265] not in _USTAR and raw[257:263] != _USTAR[0][:6]:
        return f"tar member {info.name!r} has no ustar header"
    if raw[257:263] == b"ustar\x00" and raw[263:265] != b"00":
        return f"tar member {info.name!r} has an unknown ustar version"
    if raw[156:157] not in (b"0", b"\x00", b"5"):
        return f"tar member {info.name!r} is not a regular file or directory"
    if any(raw[345:500]):
        return f"tar member {info.name!r} uses the ustar prefix field"
    if raw[124] & 0x80:
        return f"tar member {info.name!r} has a base-256 size"
    return None


def _name_reason(info: tarfile.TarInfo) -> str | None:
    name = info.name
    if info.isdir() and name == ".":
        return None
    simple = name.removeprefix("./")
    if not simple or "/" in simple or simple in (".", ".."):
        return f"tar member name {name!r} is not a simple name"
    if info.isfile() and name.endswith("/"):
        return f"tar member {name!r} is a file named like a directory"
    return None


def _scan_tar(data: bytes, label: str) -> ControlRead:
    """The control file of the control.tar ``data``, and whether the tar is canonical."""
    reason: str | None = None
    found: bytes | None = None
    controls = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            raw = data[info.offset : info.offset + BLOCK]
            why = _header_reason(raw, info) or _name_reason(info)
            if info.type not in _PLAIN_TYPES:
                why = why or f"tar member {info.name!r} is not a regular file or directory"
            reason = reason or why
            if info.name.removeprefix("./") != "control":
                continue  # a name that GNU tar resolves to control is not simple: above
            controls += 1
            if controls > 1:
                reason = reason or "the control tar holds more than one control member"
                continue
            if not info.isfile():
                raise InvalidPackage(f"{label}: the control member's control is not a file")
            fh = tar.extractfile(info)
            if fh is None:  # pragma: no cover - a regular file always has a reader
                break
            found = fh.read()
        end = tar.offset
    if found is None:
        raise InvalidPackage(f"{label}: no control file in the control member")
    if data[end : end + BLOCK] != bytes(BLOCK):
        reason = reason or "the control tar has no end-of-archive block where tarfile stops"
    return ControlRead(found, reason)


def read_control(fh: BinaryIO, size: int, label: str, limits: LimitsConfig) -> ControlRead:
    """The ``control`` file of the .deb open as ``fh`` (``size`` bytes)."""
    members, exact_end = ar_members(fh, size, label)
    if len(members) < 3 or members[0].name != "debian-binary":
        raise InvalidPackage(f"{label}: not a Debian binary package (no debian-binary first)")
    control = members[1]
    if control.name not in CONTROL_MEMBERS:
        raise InvalidPackage(f"{label}: the second member must be control.tar[.gz|.xz|.zst]")
    version = _read_member(fh, members[0], 64)
    if not version.startswith(b"2."):
        raise InvalidPackage(f"{label}: unsupported .deb format {version!r}")
    reason = None
    if len(members) != 3 or not exact_end:
        reason = "the ar archive does not hold exactly debian-binary, control and data"
    elif members[2].name not in DATA_MEMBERS:
        reason = f"the third ar member is {members[2].name!r}, not data.tar[.*]"
    elif not all(m.canonical_header for m in members):
        reason = "an ar member header is not in dpkg-deb's form"
    elif version != b"2.0\n":
        reason = f"debian-binary is {version!r}, not '2.0\\n'"
    kind = control.name.rpartition(".")[2]
    if kind in ("gz", "xz"):
        data, single = _inflate(fh, control, label, limits, kind)
        if not single:
            reason = reason or f"the control member is not exactly one {kind} stream"
    elif kind == "zst":
        data = _unzstd(fh, control, label, limits)
    else:
        if control.size > limits.max_control_bytes:
            raise _too_large(label, limits)
        data = _read_member(fh, control, limits.max_control_bytes)
    found = _scan_tar(data, label)
    return ControlRead(found.control, reason or found.noncanonical)
