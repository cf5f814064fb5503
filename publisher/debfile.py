"""Inspect an incoming .deb the way dpkg does, with bounded memory, and hash it.

Only the ar headers, ``debian-binary`` and the ``control`` file inside
``control.tar[.gz|.xz|.zst]`` are read (:mod:`publisher.debarchive`), decompressing at
most ``limits.max_control_bytes`` bytes (a control-member bomb costs at most that
much); the data member is never read.  The control text must be one paragraph
that dpkg reads exactly as aptship does (:func:`parse_control`): UTF-8, lines split
on ``\n`` only, no other control characters (a bare ``\r``, NUL, form feed, NEL or
U+2028 would split lines for some parsers and not for others), no duplicate fields,
no field longer than ``limits.max_control_field_bytes``.  When ``dpkg-deb`` is
installed, ``Package``, ``Version`` and ``Architecture`` are cross-checked with
``dpkg-deb --field`` (``limits.dpkg_check``): by default ("auto") only for an archive
that is not canonical (not shaped as ``dpkg-deb --build`` shapes it, see
:mod:`publisher.debarchive`) or a version dpkg would print differently; a canonical
archive is read exactly as dpkg-deb reads it.  Every failure is an
:class:`InvalidPackage` naming the file (docs/security.md lists the codes).
"""

from __future__ import annotations

import functools
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from publisher.config import LimitsConfig
from publisher.debarchive import read_control
from publisher.errors import ControlRejected, ControlTooLarge, InvalidPackage
from publisher.versions import check_architecture, check_package_name, check_version, strip_epoch

CHUNK = 1024 * 1024
HASHES = ("md5", "sha1", "sha256")
# Fields that the repository computes; a control file must not smuggle them in.
REPO_FIELDS = ("Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description-md5")
_REPO_FIELDS_LOWER = {name.lower() for name in REPO_FIELDS}
IDENTITY = ("Package", "Version", "Architecture")
DPKG_TIMEOUT = 60
# Characters that some line splitter (Python's str.splitlines, a C string, a terminal)
# treats differently from dpkg: every C0 control but tab and newline, DEL, the C1
# controls (NEL U+0085 among them), U+2028/U+2029 and a byte order mark.
_BAD_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_FIELD_LINE = re.compile(r"^([!-9;-~]+):(.*)$")


@dataclass(frozen=True, slots=True)
class DebInfo:
    """What the index needs from one .deb, before hashing."""

    file: str  # the .deb's path: a str costs a fifth of a Path (50,000 held in a batch)
    package: str
    version: str
    architecture: str
    source: str
    control: str  # the control paragraph, without repository fields, ending in "\n"
    size: int
    distribution: str | None = None  # with distributions: pool/<codename>/main/...

    @property
    def path(self) -> Path:
        return Path(self.file)

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
    seen: set[str] = set()
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
        if name.lower() in seen:
            raise ControlRejected(f"{label}: the control file repeats the field {name}")
        seen.add(name.lower())
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


# dpkg prints an epoch only when it is not 0, as a plain number (parsehelp.c, dump.c)
_DPKG_EPOCH = re.compile(r"^(?:[1-9][0-9]{0,8}:)?[^:]*$")
# Fast-path counters (tests read them): how many identities were read in process
# alone, and how many were cross-checked with dpkg-deb.
STATS = {"fast": 0, "dpkg": 0}


# Fields dpkg parses and may refuse (lib/dpkg/parse.c fieldinfos; f_boolean,
# f_multiarch, f_dependency...).  A value outside the plain forms below is left to
# dpkg-deb to judge: a relationship dpkg refuses would also stop apt from reading the
# whole index ("Problem parsing dependency"), for every host of the channel.
_BOOLEAN_FIELDS = ("essential", "protected")
_MULTI_ARCH = ("no", "same", "foreign", "allowed")
_ALTERNATIVES_FIELDS = ("depends", "pre-depends", "recommends", "suggests")
_RELATION_FIELDS = (
    *_ALTERNATIVES_FIELDS,
    "breaks",
    "conflicts",
    "enhances",
    "replaces",
    "provides",
)
_JUDGED_BY_DPKG = (
    "status",
    "config-version",
    "conffiles",
    "triggers-pending",
    "triggers-awaited",
    "recommended",
    "optional",
    "class",
    "revision",
    "package-revision",
    "package_revision",
)
_RELATION = re.compile(
    r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9][a-z0-9-]*)?"
    r"(?:\s*\(\s*(?P<op><<|<=|=|>=|>>)\s*(?P<version>[^\s()]+)\s*\))?"
)
_MAX_EPOCH = 2**31 - 1  # dpkg: "epoch in version is too big"


@functools.lru_cache(maxsize=4096)  # relationships repeat a few versions (libc6 (>= 2.36))
def _plain_version(version: str) -> bool:
    try:
        check_version(version)
    except InvalidPackage:
        return False
    epoch, colon, _ = version.partition(":")
    return not colon or int(epoch) <= _MAX_EPOCH


def _plain_relations(field: str, value: str) -> bool:
    """Whether ``value`` is a relationship list in the plain form dpkg accepts: items
    split by commas, alternatives (where allowed) by ``|``, each a package name, an
    optional architecture qualifier and an optional ``(op version)``."""
    for item in value.split(","):
        alternatives = item.split("|")
        if len(alternatives) > 1 and field not in _ALTERNATIVES_FIELDS:
            return False
        for alternative in alternatives:
            match = _RELATION.fullmatch(alternative.strip())
            if match is None:
                return False
            if field == "provides" and match.group("op") not in (None, "="):
                return False
            if match.group("version") is not None and not _plain_version(match.group("version")):
                return False
    return True


def _plain_fields(control: dict[str, str]) -> bool:
    """Whether every field dpkg validates holds a value in a form it certainly accepts
    (names lowercased, as in ``control``)."""
    for name, value in control.items():
        if name in _JUDGED_BY_DPKG:
            return False
        if name in _BOOLEAN_FIELDS and value not in ("yes", "no"):
            return False
        if name == "multi-arch" and value not in _MULTI_ARCH:
            return False
        if name in _RELATION_FIELDS and not _plain_relations(name, value):
            return False
    return True


def _dpkg_prints_as_read(ident: dict[str, str]) -> bool:
    """Whether ``dpkg-deb --field`` prints these (checked) values unchanged: names
    and architectures are lowercase ASCII already; a version keeps its form unless
    its epoch is 0 or has leading zeros."""
    return bool(_DPKG_EPOCH.match(ident["Version"]))


def inspect_deb(path: str | os.PathLike[str], limits: LimitsConfig | None = None) -> DebInfo:
    """Validate ``path`` as a Debian binary package and return its metadata."""
    limits = limits or LimitsConfig()
    p = Path(path)
    label = p.name
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):  # before open: a FIFO would block it
            raise InvalidPackage(f"{label}: not a regular file")
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            read = read_control(fh, size, label, limits)
    except InvalidPackage:
        raise
    except FileNotFoundError:
        raise InvalidPackage(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InvalidPackage(f"{label}: is a directory") from None
    except (
        tarfile.TarError,
        lzma.LZMAError,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        LookupError,
    ) as exc:
        raise InvalidPackage(f"{label}: not a valid Debian binary package ({exc})") from None
    fields = parse_control(read.control, label, limits)
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
    mode = limits.dpkg_mode
    if mode == "always" or (
        mode == "auto"
        and (read.noncanonical or not _dpkg_prints_as_read(ident) or not _plain_fields(control))
    ):
        STATS["dpkg"] += 1
        seen = dpkg_identity(p, label)
        if seen and seen != ident:
            raise ControlRejected(
                f"{label}: dpkg reads this package as {seen} but its control text reads "
                f"{ident}; refused"
            )
    else:
        STATS["fast"] += 1
    source = control.get("source", package).split("(")[0].strip() or package
    check_package_name(source)
    text = "".join(
        f"{name}:{' ' if value[:1] != chr(10) else ''}{value}\n"
        for name, value in fields
        if name.lower() not in _REPO_FIELDS_LOWER
    )
    return DebInfo(
        file=os.fspath(p),
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
