"""Hand-made .deb files for the intake attacks (dpkg-deb --build refuses to make them).

``crafted_deb`` writes ar + tar with any control bytes and a gz or xz control
member.  ``bomb_deb`` streams a control file of ``size`` bytes (a Description of
``a``) through xz, so the test never holds the expanded text in memory.
"""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

HEAD = b"Package: innocent\nVersion: 1.0-1\nArchitecture: all\nMaintainer: T <t@x.invalid>\n"


def _ar_header(name: str, size: int) -> bytes:
    return f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{size:<10}`\n".encode()


def _ar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with path.open("wb") as out:
        out.write(b"!<arch>\n")
        for name, data in members:
            out.write(_ar_header(name, len(data)) + data + (b"\n" if len(data) % 2 else b""))
    return path


class _Repeat(io.RawIOBase):
    """``head`` then ``filler`` bytes up to ``size``, produced on demand."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.left = head, size

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.left)
        chunk = (self.head + b"a" * n)[:n] if self.head else b"a" * n
        self.head = self.head[n:]
        buf[:n] = chunk
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


def _add(tar: tarfile.TarFile, files: dict[str, tuple[io.RawIOBase | bytes, int]]) -> None:
    for name, (content, size) in files.items():
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else content)


def _tar(files: dict[str, tuple[io.RawIOBase | bytes, int]], compression: str) -> bytes:
    """The tar of ``files``, gz or xz; streamed, so a bomb's text is never in memory."""
    buf = io.BytesIO()
    if compression == "xz":
        with lzma.LZMAFile(buf, "wb", preset=0) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
            _add(tar, files)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            _add(tar, files)
    return buf.getvalue()


def _data() -> bytes:
    return _tar({"./usr/share/doc/innocent/README": (b"x\n", 2)}, "gz")


def crafted_deb(path: Path, control: bytes, compression: str = "gz") -> Path:
    suffix = {"gz": ".gz", "xz": ".xz"}[compression]
    control_tar = _tar({"./control": (control, len(control))}, compression)
    return _ar(
        path,
        [
            ("debian-binary", b"2.0\n"),
            (f"control.tar{suffix}", control_tar),
            ("data.tar.gz", _data()),
        ],
    )


def bomb_deb(path: Path, size: int) -> Path:
    """A small .deb whose control file expands to ``size`` bytes."""
    head = HEAD + b"Description: "
    control_tar = _tar({"./control": (_Repeat(head, size), size)}, "xz")
    return _ar(
        path,
        [("debian-binary", b"2.0\n"), ("control.tar.xz", control_tar), ("data.tar.gz", _data())],
    )
