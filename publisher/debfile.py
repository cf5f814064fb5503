"""Inspect an incoming .deb the way dpkg does, with bounded memory, and hash it.

Only the ar headers, ``debian-binary`` and the ``control`` file inside
``control.tar[.gz|.xz|.zst]`` are read, through a stream that stops at
``limits.max_control_bytes`` decompressed bytes (a control-member bomb costs at most
that much); the data member is never read.  The control text must be one paragraph
that dpkg reads exactly as aptship does (:func:`parse_control`): UTF-8, lines split
on ``\n`` only, no other control characters (a bare ``\r``, NUL, form feed, NEL or
U+2028 would split lines for some parsers and not for others), no duplicate fields,
no field longer than ``limits.max_control_field_bytes``.  When ``dpkg-deb`` is
installed, ``Package``, ``Version`` and ``Architecture`` are cross-checked with
``dpkg-deb --field`` (``limits.dpkg_check``).  Every failure is an
:class:`InvalidPackage` naming the file (docs/security.md lists the codes).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from publisher.config import LimitsConfig
from publisher.errors import ControlRejected, ControlTooLarge, InvalidPackage
from publisher.versions import check_architecture, check_package_name, check_version, strip_epoch

CHUNK = 1024 * 1024
HASHES = ("md5", "sha1", "sha256")
# Fields that the repository computes; a control file must not smuggle them in.
REPO_FIELDS = ("Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description-md5")
_REPO_FIELDS_LOWER = {name.lower() for name in REPO_FIELDS}
IDENTITY = ("Package", "Version", "Architecture")
CONTROL_MEMBERS = ("control.tar", "control.tar.gz", "control.tar.xz", "control.tar.zst")
DPKG_TIMEOUT = 60
# Characters that some line splitter (Python's str.splitlines, a C string, a terminal)
# treats differently from dpkg: every C0 control but tab and newline, DEL, the C1
# controls (NEL U+0085 among them), U+2028/U+2029 and a byte order mark.
_BAD_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_FIELD_LINE = re.compile(r"^([!-9;-~]+):(.*)$")


@dataclass(frozen=True)
class DebInfo:
    """What the index needs from one .deb, before hashing."""

    path: Path
    package: str
    version: str
    architecture: str
    source: str
    control: str  # the control paragraph, without repository fields, ending in "\n"
    size: int
    distribution: str | None = None  # with distributions: pool/<codename>/main/...

    @property
    def pool_key(self) -> str:
        prefix = (
            self.source[:4]
            if self.source.startswith("lib") and len(self.source) > 3
            else self.source[0]
        )
        name = f"{self.package}_{strip_epoch(self.version)}_{self.architecture}.deb"
        area = f"{self.distribution}/main" if self.distribution else "main"
        return f"pool/{area}/{prefix}/{self.source}/{name}"


class _Capped:
    """A read-only stream that raises ControlTooLarge past ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int, label: str) -> None:
        self.raw, self.limit, self.label, self.count = raw, limit, label, 0

    def read(self, n: int = -1) -> bytes:
        want = self.limit + 1 - self.count if n is None or n < 0 else n
        data = self.raw.read(min(want, self.limit + 1 - self.count))
        self.count += len(data)
        if self.count > self.limit:
            raise ControlTooLarge(
                f"{self.label}: the control member expands past {self.limit} bytes "
                "(limits.max_control_bytes)"
            )
        return data

    def readable(self) -> bool:
        return True


@contextlib.contextmanager
def _zstd(member: IO[bytes]) -> Iterator[IO[bytes]]:
    """``zstd -dc`` of ``member`` as a stream (tarfile has no zstd support)."""
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

    def feed() -> None:  # stops on a broken pipe once the reader has had enough
        with contextlib.suppress(OSError):
            while chunk := member.read(64 * 1024):
                stdin.write(chunk)
        with contextlib.suppress(OSError):
            stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield stdout
    finally:
        proc.kill()
        proc.wait()
        stdout.close()
        feeder.join(timeout=10)


@contextlib.contextmanager
def _decompressed(name: str, member: IO[bytes]) -> Iterator[IO[bytes]]:
    if name.endswith(".gz"):
        with gzip.GzipFile(fileobj=member, mode="rb") as gz:
            yield cast(IO[bytes], gz)
    elif name.endswith(".xz"):
        with lzma.LZMAFile(member, "rb") as xz:
            yield xz
    elif name.endswith(".zst"):
        with _zstd(member) as zst:
            yield zst
    else:
        yield member


def _read_control(label: str, name: str, member: IO[bytes], limits: LimitsConfig) -> bytes:
    """The ``control`` file of a control.tar member, reading at most the limit."""
    with _decompressed(name, member) as raw:
        capped = _Capped(raw, limits.max_control_bytes, label)
        with tarfile.open(fileobj=cast(IO[bytes], capped), mode="r|") as tar:
            for info in tar:
                if info.name.removeprefix("./") != "control":
                    continue
                if not info.isfile():
                    raise InvalidPackage(f"{label}: the control member's control is not a file")
                fh = tar.extractfile(info)
                if fh is None:
                    break
                return fh.read()
    raise InvalidPackage(f"{label}: no control file in {name}")


def parse_control(data: bytes, label: str, limits: LimitsConfig) -> list[tuple[str, str]]:
    """The fields of one control paragraph, read as dpkg reads it; refuse the ambiguous.

    Returns ``(name, value)`` pairs in file order; a value keeps its continuation
    lines (``"first\n second"``), without trailing whitespace.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ControlRejected(f"{label}: the control file is not UTF-8 ({exc.reason})") from None
    bad = _BAD_CHARS.search(text)
    if bad:
        raise ControlRejected(
            f"{label}: the control file holds the character U+{ord(bad.group()):04X} at offset "
            f"{bad.start()}; dpkg and other parsers would read it differently, so it is refused"
        )
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    fields: list[tuple[str, list[str]]] = []
    for number, line in enumerate(lines, 1):
        if line[:1] in (" ", "\t"):
            if not fields:
                raise ControlRejected(f"{label}: control line {number} continues no field")
            if not line.strip():
                raise ControlRejected(
                    f"{label}: control line {number} is blank: the control file must be "
                    "one paragraph"
                )
            fields[-1][1].append(line.rstrip(" \t"))
            continue
        match = _FIELD_LINE.match(line)
        if not match or match.group(1)[0] in "#-":
            what = "blank (a second paragraph)" if not line.strip() else "not 'Field: value'"
            raise ControlRejected(f"{label}: control line {number} is {what}")
        name = match.group(1)
        if any(existing.lower() == name.lower() for existing, _ in fields):
            raise ControlRejected(f"{label}: the control file repeats the field {name}")
        fields.append((name, [match.group(2).strip(" \t")]))
    out = []
    for name, parts in fields:
        value = "\n".join(parts)
        if len(name.encode()) + len(value.encode()) > limits.max_control_field_bytes:
            raise ControlTooLarge(
                f"{label}: control field {name} is longer than "
                f"{limits.max_control_field_bytes} bytes (limits.max_control_field_bytes)"
            )
        out.append((name, value))
    return out


def dpkg_identity(path: Path, label: str) -> dict[str, str]:
    """``Package``, ``Version``, ``Architecture`` as ``dpkg-deb --field`` reads them."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        return {}
    try:
        proc = subprocess.run(
            [dpkg_deb, "--field", str(path), *IDENTITY],
            capture_output=True,
            timeout=DPKG_TIMEOUT,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ControlRejected(f"{label}: dpkg-deb --field did not finish") from None
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ControlRejected(f"{label}: dpkg-deb refuses this package ({why[-1] if why else ''})")
    found = {}
    for line in proc.stdout.decode("utf-8", "replace").split("\n"):
        name, sep, value = line.partition(":")
        if sep and name in IDENTITY:
            found[name] = value.strip()
    return found


def _members(label: str, fh: BinaryIO) -> tuple[bytes, str, IO[bytes]]:
    """(debian-binary, control member name, control member) after checking the ar layout."""
    from debian import arfile

    archive = arfile.ArFile(fileobj=fh)
    members = archive.getmembers()
    for member in members:
        # A truncated file still has headers that promise the full size.
        if member.size:
            member.seek(member.size - 1)
            if len(member.read(1)) != 1:
                raise InvalidPackage(f"{label}: truncated (member {member.name} is cut short)")
            member.seek(0)
    if len(members) < 3 or members[0].name != "debian-binary":
        raise InvalidPackage(f"{label}: not a Debian binary package (no debian-binary first)")
    if members[1].name not in CONTROL_MEMBERS:
        raise InvalidPackage(f"{label}: the second member must be control.tar[.gz|.xz|.zst]")
    control: IO[bytes] = cast(IO[bytes], members[1])
    return members[0].read(64), str(members[1].name), control


def inspect_deb(path: str | os.PathLike[str], limits: LimitsConfig | None = None) -> DebInfo:
    """Validate ``path`` as a Debian binary package and return its metadata."""
    from debian import arfile

    limits = limits or LimitsConfig()
    p = Path(path)
    label = p.name
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise InvalidPackage(f"{label}: not a regular file")
        with p.open("rb") as fh:
            if fh.read(8) != b"!<arch>\n":
                raise InvalidPackage(f"{label}: not a Debian package (no ar archive magic)")
            fh.seek(0)
            version, name, member = _members(label, fh)
            if not version.startswith(b"2."):
                raise InvalidPackage(f"{label}: unsupported .deb format {version!r}")
            data = _read_control(label, name, member, limits)
    except InvalidPackage:
        raise
    except FileNotFoundError:
        raise InvalidPackage(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InvalidPackage(f"{label}: is a directory") from None
    except (
        arfile.ArError,
        tarfile.TarError,
        lzma.LZMAError,
        gzip.BadGzipFile,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        LookupError,
    ) as exc:
        raise InvalidPackage(f"{label}: not a valid Debian binary package ({exc})") from None
    fields = parse_control(data, label, limits)
    if not fields:
        raise InvalidPackage(f"{label}: empty control file")
    control = {name.lower(): value for name, value in fields}  # names are case-insensitive
    ident = {}
    for key in IDENTITY:
        value = control.get(key.lower(), "")
        if not value:
            raise InvalidPackage(f"{label}: control file has no {key} field")
        if "\n" in value:
            raise ControlRejected(f"{label}: the {key} field spans several lines")
        ident[key] = value
    package = check_package_name(ident["Package"])
    version_text = check_version(ident["Version"])
    arch = check_architecture(ident["Architecture"])
    if limits.dpkg_check:
        seen = dpkg_identity(p, label)
        if seen and seen != ident:
            raise ControlRejected(
                f"{label}: dpkg reads this package as {seen} but its control text reads "
                f"{ident}; refused"
            )
    source = control.get("source", package).split("(")[0].strip() or package
    check_package_name(source)
    text = "".join(
        f"{name}:{' ' if value[:1] != chr(10) else ''}{value}\n"
        for name, value in fields
        if name.lower() not in _REPO_FIELDS_LOWER
    )
    return DebInfo(
        path=p,
        package=package,
        version=version_text,
        architecture=arch,
        source=source,
        control=text,
        size=size,
    )


def hash_file(path: Path, names: tuple[str, ...] = HASHES) -> dict[str, str]:
    """Hex digests of a file, read in chunks."""
    hashers = {n: hashlib.new(n) for n in names}
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {n: h.hexdigest() for n, h in hashers.items()}


def hash_stream(stream: BinaryIO, names: tuple[str, ...] = HASHES) -> dict[str, str]:
    hashers = {n: hashlib.new(n) for n in names}
    while chunk := stream.read(CHUNK):
        for h in hashers.values():
            h.update(chunk)
    return {n: h.hexdigest() for n, h in hashers.items()}
