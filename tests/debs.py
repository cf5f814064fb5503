"""Build real .deb files for tests with ``dpkg-deb --build`` (no checked-in binaries)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def build_deb(
    outdir: Path,
    package: str,
    version: str,
    arch: str = "amd64",
    *,
    payload: str | None = None,
    depends: str | None = None,
    extra_control: str = "",
    compression: str = "gzip",
) -> Path:
    """Build ``<package>_<version>_<arch>.deb`` in ``outdir`` and return its path.

    ``payload`` goes into ``/usr/share/<package>/VERSION`` so that different versions
    (or deliberately different builds of one version) have different bytes.
    """
    safe_version = version.replace(":", "%3a")
    root = outdir / f"build-{package}-{safe_version}-{arch}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    share = root / "usr" / "share" / package
    share.mkdir(parents=True, exist_ok=True)
    (share / "VERSION").write_text(payload if payload is not None else f"{package} {version}\n")
    control = (
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: Test <test@example.invalid>\nSection: misc\nPriority: optional\n"
    )
    if depends:
        control += f"Depends: {depends}\n"
    control += extra_control
    control += f"Description: test package {package}\n a package built by the aptship test suite\n"
    (root / "DEBIAN" / "control").write_text(control)
    out = outdir / f"{package}_{safe_version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
        # reproducible: the same content gives the same bytes, whenever it is built
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    return out


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _tar_gz(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def craft_deb(path: Path, control: str, *, debian_binary: bytes = b"2.0\n") -> Path:
    """Write a .deb by hand (ar + tar) with any control text, even one dpkg-deb refuses."""
    members = [
        _ar_member("debian-binary", debian_binary),
        _ar_member("control.tar.gz", _tar_gz({"./control": control.encode()})),
        _ar_member("data.tar.gz", _tar_gz({"./usr/share/doc/x/README": b"x\n"})),
    ]
    path.write_bytes(b"!<arch>\n" + b"".join(members))
    return path
