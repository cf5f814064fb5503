"""Odd archive layers around a control file, for the intake differential test.

Each builder writes a .deb whose ar or control.tar layer differs from what
``dpkg-deb --build`` writes (duplicate or aliased ``control`` members, pax and GNU
headers, links, extra ar members, trailing data...), so that a reader that takes
the first ``control`` and dpkg-deb, which extracts the whole tar, could disagree.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.security.crafted import HEAD, _ar, _data

Member = tuple[str, bytes]  # (name, content); a name ending in "/" is a directory


def control(package: str = "innocent", version: str = "1.0-1") -> bytes:
    return HEAD.replace(b"innocent", package.encode()).replace(b"1.0-1", version.encode())


def tar_bytes(
    build: Callable[[tarfile.TarFile], None], fmt: int = tarfile.GNU_FORMAT, **kw: object
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tar:  # type: ignore[call-overload]
        build(tar)
    return buf.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def files_tar(*members: Member, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    def build(tar: tarfile.TarFile) -> None:
        for name, data in members:
            if name.endswith("/"):
                add_special(tar, name, tarfile.DIRTYPE)
            else:
                add_file(tar, name, data)

    return tar_bytes(build, fmt)


def deb(
    path: Path,
    control_tar: bytes,
    *,
    compress: Callable[[bytes], bytes] = lambda raw: gzip.compress(raw, mtime=0),
    member: str = "control.tar.gz",
    before: list[Member] | None = None,
    after: list[Member] | None = None,
    debian_binary: bytes = b"2.0\n",
    binary_name: str = "debian-binary",
    trailing: bytes = b"",
) -> Path:
    """An ar archive: debian-binary, ``before``, the control member, data, ``after``."""
    members = [
        (binary_name, debian_binary),
        *(before or []),
        (member, compress(control_tar)),
        ("data.tar.gz", _data()),
        *(after or []),
    ]
    _ar(path, members)
    if trailing:
        with path.open("ab") as out:
            out.write(trailing)
    return path


def two_gzip_members(first: bytes, second: bytes) -> Callable[[bytes], bytes]:
    return lambda _raw: gzip.compress(first, mtime=0) + gzip.compress(second, mtime=0)
