"""Inspect an incoming .deb with python-debian and hash it while streaming.

Only the ar headers, ``debian-binary`` and ``control.tar`` are read; the data
member is never loaded into memory.  Every parser failure becomes
:class:`InvalidPackage` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from publisher.errors import InvalidPackage
from publisher.versions import check_architecture, check_package_name, check_version, strip_epoch

CHUNK = 1024 * 1024
HASHES = ("md5", "sha1", "sha256")
# Fields that the repository computes; a control file must not smuggle them in.
REPO_FIELDS = ("Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512", "Description-md5")


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

    @property
    def pool_key(self) -> str:
        prefix = (
            self.source[:4]
            if self.source.startswith("lib") and len(self.source) > 3
            else self.source[0]
        )
        name = f"{self.package}_{strip_epoch(self.version)}_{self.architecture}.deb"
        return f"pool/main/{prefix}/{self.source}/{name}"


def inspect_deb(path: str | os.PathLike[str]) -> DebInfo:
    """Validate ``path`` as a Debian binary package and return its metadata."""
    from debian import arfile, debfile

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
            deb = debfile.DebFile(fileobj=fh)
            if not bytes(deb.version).startswith(b"2."):
                raise InvalidPackage(f"{label}: unsupported .deb format {bytes(deb.version)!r}")
            control = deb.debcontrol()
            for member in deb.getmembers():
                # A truncated file still has headers that promise the full size.
                if member.size:
                    member.seek(member.size - 1)
                    if len(member.read(1)) != 1:
                        raise InvalidPackage(
                            f"{label}: truncated (member {member.name} is cut short)"
                        )
    except InvalidPackage:
        raise
    except FileNotFoundError:
        raise InvalidPackage(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InvalidPackage(f"{label}: is a directory") from None
    except (
        debfile.DebError,
        arfile.ArError,
        tarfile.TarError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        UnicodeDecodeError,
        LookupError,
    ) as exc:
        raise InvalidPackage(f"{label}: not a valid Debian binary package ({exc})") from None
    if not control:
        raise InvalidPackage(f"{label}: empty control file")
    fields = {}
    for key in ("Package", "Version", "Architecture"):
        value = control.get(key)
        if not value or not value.strip():
            raise InvalidPackage(f"{label}: control file has no {key} field")
        fields[key] = value.strip()
    package = check_package_name(fields["Package"])
    version = check_version(fields["Version"])
    arch = check_architecture(fields["Architecture"])
    source = control.get("Source", package).split("(")[0].strip() or package
    check_package_name(source)
    for key in REPO_FIELDS:
        if key in control:
            del control[key]
    text = control.dump()
    if not text.endswith("\n"):
        text += "\n"
    return DebInfo(
        path=p,
        package=package,
        version=version,
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
