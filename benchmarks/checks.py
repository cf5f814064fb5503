"""Correctness checks of what a benchmark built: aptship verify and a real apt-get.

apt runs with an isolated configuration (``tests/aptenv.py``) against the directory
served over loopback HTTP (``tests/httpserve.py``): ``apt-get update`` must succeed
without warnings, and one package must download with matching hashes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import BenchError


def apt_check(served: Path, key: Path, suite: str, downloads: list[str]) -> str:
    """Run apt-get update (and --download-only of ``downloads``); return a one-line summary."""
    if shutil.which("apt-get") is None:
        raise BenchError("apt-get is not installed")
    from tests.aptenv import AptEnv
    from tests.httpserve import serve_directory

    with (
        tempfile.TemporaryDirectory(prefix="aptship-bench-apt-") as tmp,
        serve_directory(served) as (url, _log),
    ):
        env = AptEnv(Path(tmp))
        env.add_source(url, suite, key)
        res = env.update()
        bad = [line for line in res.output.splitlines() if line.startswith(("W:", "E:", "Err:"))]
        if res.returncode != 0 or bad:
            raise BenchError(f"apt-get update against {served} ({suite}) failed:\n{res.output}")
        if downloads:
            # `apt-get download` fetches exact versions and checks their hashes against
            # the index without resolving dependencies (python3 etc. are not in the repo).
            dest = Path(tmp) / "downloads"
            dest.mkdir()
            proc = subprocess.run(
                ["apt-get", "download", *downloads],
                env=env.env(),
                cwd=dest,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            got = sorted(p.name for p in dest.glob("*.deb"))
            if proc.returncode != 0 or len(got) != len(downloads):
                raise BenchError(
                    f"apt-get download of {downloads} from {served} failed (got {got}):\n"
                    f"{proc.stdout}{proc.stderr}{release_hint(served, suite)}"
                )
    return f"apt-get update OK, downloaded {', '.join(downloads)}"


def release_hint(served: Path, suite: str) -> str:
    """Why apt may have ignored the indexes: Release must list the uncompressed name.

    apt looks up each index target by its uncompressed name
    (``main/binary-amd64/Packages``) in Release and silently skips the target when that
    name is missing, even though it then downloads only the .xz or .gz (Debian's
    Release lists the uncompressed Packages without serving it).
    """
    try:
        release = (served / "dists" / suite / "Release").read_text()
    except OSError:
        return ""
    listed = {line.split()[-1] for line in release.splitlines() if line.startswith(" ")}
    missing = sorted(
        name.removesuffix(ext)
        for name in listed
        for ext in (".gz", ".xz")
        if name.endswith(ext) and name.removesuffix(ext) not in listed
    )
    if not missing:
        return ""
    return (
        f"\nhint: dists/{suite}/Release lists {', '.join(sorted(set(missing)))} only compressed; "
        "apt skips an index whose uncompressed name is not in Release (list its size and "
        "hashes there even if the uncompressed file is not served)"
    )


def aptship_verify(config_path: Path, *, fast: bool) -> list[str]:
    from publisher.config import load_config
    from publisher.repo import Repository
    from publisher.verify import verify

    return verify(Repository(load_config(config_path)), fast=fast)
