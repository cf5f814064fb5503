"""A fast synthetic .deb writer: the ar and tar members are written directly.

No ``dpkg-deb``: each package is ``debian-binary``, ``control.tar.gz`` and
``data.tar.gz`` in an ar archive, built in memory with :mod:`tarfile` and
:mod:`gzip` (level 1), with fixed mtimes so the bytes are reproducible and the
cache under ``benchmarks/work/`` stays valid between runs.

Package ``i`` of a data set is ``bench-<i>`` (5 versions ``1.<v>.0-1``), so
``N`` entries are the first ``N/5`` packages times 5 versions, and the data sets
of every size share their files.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

VERSIONS_PER_PACKAGE = 5
MTIME = 1_700_000_000


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{MTIME:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _tar_gz(files: list[tuple[str, bytes]], *, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs: set[str] = set()
        for name, content in files:
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i]) + "/"
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = MTIME
                    info.uname = info.gname = "root"
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = MTIME
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(content))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw


def package_name(index: int) -> str:
    return f"bench-{index:05d}"


def version_string(v: int) -> str:
    return f"1.{v}.0-1"


def filename(package: str, version: str, arch: str = "amd64") -> str:
    return f"{package}_{version}_{arch}.deb"


def control_text(package: str, version: str, arch: str = "amd64", installed_kb: int = 4) -> str:
    """A realistic control paragraph (about 600 bytes, like a dh-virtualenv service)."""
    return (
        f"Package: {package}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        "Maintainer: Bench Team <bench@aptship.invalid>\n"
        f"Installed-Size: {installed_kb}\n"
        "Depends: python3 (>= 3.11), libc6 (>= 2.36), adduser\n"
        "Section: python\n"
        "Priority: optional\n"
        f"Homepage: https://bench.invalid/{package}\n"
        f"Description: synthetic service {package} for aptship benchmarks\n"
        " This package was written by benchmarks/debgen.py.  It carries a small\n"
        " payload and a control paragraph shaped like a dh-virtualenv service so\n"
        " that the indexes have realistic sizes.\n"
    )


def deb_bytes(
    package: str, version: str, arch: str = "amd64", payload: bytes | None = None
) -> bytes:
    body = payload if payload is not None else f"{package} {version}\n".encode()
    data_member = _tar_gz([(f"./usr/share/doc/{package}/VERSION", body)], compress=payload is None)
    ctrl = _tar_gz([("./control", control_text(package, version, arch).encode())])
    data_name = "data.tar.gz" if payload is None else "data.tar"
    return (
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.gz", ctrl)
        + _ar_member(data_name, data_member)
    )


def write_deb(path: Path, package: str, version: str, arch: str = "amd64") -> Path:
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(deb_bytes(package, version, arch))
        os.replace(tmp, path)
    return path


def dataset(cache: Path, entries: int) -> list[Path]:
    """The ``entries`` .debs of a data set (cached): N/5 packages x 5 versions, sorted."""
    if entries % VERSIONS_PER_PACKAGE:
        raise ValueError(f"entries must be a multiple of {VERSIONS_PER_PACKAGE}")
    cache.mkdir(parents=True, exist_ok=True)
    existing = {e.name for e in os.scandir(cache)}
    out: list[Path] = []
    for i in range(entries // VERSIONS_PER_PACKAGE):
        pkg = package_name(i)
        for v in range(1, VERSIONS_PER_PACKAGE + 1):
            ver = version_string(v)
            name = filename(pkg, ver)
            path = cache / name
            if name not in existing:
                write_deb(path, pkg, ver)
            out.append(path)
    return out


def extra_deb(cache: Path, index: int, version: int) -> Path:
    """One more version of package ``index`` (not part of any data set)."""
    cache.mkdir(parents=True, exist_ok=True)
    pkg, ver = package_name(index), version_string(version)
    return write_deb(cache / filename(pkg, ver), pkg, ver)


def big_deb(path: Path, size: int, package: str = "bench-bigfile", version: str = "1.0-1") -> Path:
    """A .deb of about ``size`` bytes with an incompressible, uncompressed data member."""
    if path.exists() and abs(path.stat().st_size - size) < 64 * 1024:
        return path
    rnd = random_bytes(size - 16 * 1024)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(deb_bytes(package, version, "amd64", payload=rnd))
    os.replace(tmp, path)
    return path


def random_bytes(n: int) -> bytes:
    import random

    return random.Random(n).randbytes(n)  # noqa: S311 - payload filler, not crypto
