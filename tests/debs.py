"""Build real .deb files for tests with ``dpkg-deb --build`` (no checked-in binaries)."""

from __future__ import annotations

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
    )
    return out
