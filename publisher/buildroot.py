"""``aptship build --dist CODENAME``: build in a clean chroot of that distribution.

A build root is ``mmdebstrap --variant=apt`` of CODENAME with the build tools
(:data:`BUILD_INCLUDE`: dpkg-dev, debhelper, dh-virtualenv, python3-venv and the
system wheels a hermetic build installs from).  It is made once and cached as a
tarball in ``$APTSHIP_CACHE`` (else ``~/.cache/aptship``), named after a hash of its
recipe (codename, packages, mirror); a tarball older than :data:`MAX_AGE` is stale
and made again, so security updates reach the builds.  Each build unpacks it into a
fresh directory, copies the project in, stamps the distribution into the Debian
version (``1.4.2-1+deb13``, :func:`publisher.distributions.stamp`), runs
``dpkg-buildpackage`` with ``chroot`` and copies the .deb out; the root is removed
afterwards.  Needs root (mmdebstrap's root mode and chroot), as package builds
in a clean root do; no mounts are needed.

The Debian mirror is the one this machine's apt uses (``/etc/apt/sources.list`` and
``sources.list.d``), or ``$APTSHIP_DEBIAN_MIRROR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from publisher.distributions import RELEASES, stamp
from publisher.errors import InvalidPackage, UsageError
from publisher.versions import strip_epoch

if TYPE_CHECKING:
    from publisher.debianize import BuiltDeb

VARIANT = "apt"
BUILD_INCLUDE = (
    "build-essential",
    "debhelper",
    "dh-virtualenv",
    "python3",
    "python3-venv",
    "python3-setuptools-whl",
    "python3-wheel-whl",
)
MAX_AGE = 7 * 24 * 3600.0  # seconds before a cached build root is made again
APT_DIR = Path("/etc/apt")
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
BUILD_DIR = "/build"


def sources_entries(apt_dir: Path) -> Iterator[tuple[list[str], str, list[str], list[str]]]:
    """(types, uri, suites, components) of every entry in the machine's apt sources."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for raw in path.read_text().splitlines():
            words = raw.split("#", 1)[0].split()
            if words and words[1:2] and words[1].startswith("["):
                # Drop an options block: deb [signed-by=... arch=...] URI suite comps
                end = next((i for i, w in enumerate(words) if w.endswith("]")), None)
                if end is None:
                    continue
                words = [words[0], *words[end + 1 :]]
            if len(words) >= 3:
                yield [words[0]], words[1], [words[2]], words[3:]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            key = None
            for line in block.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, value = line.split(":", 1)
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield (
                    fields.get("types", "").split(),
                    uri,
                    fields.get("suites", "").split(),
                    fields.get("components", "").split(),
                )


def debian_mirror(suite: str, apt_dir: Path = APT_DIR) -> str:
    """The URI this machine's apt uses for ``<suite> main`` (``$APTSHIP_DEBIAN_MIRROR`` wins).

    A suite the machine does not use (trixie on a bookworm machine) comes from the
    mirror of the machine's own release: a Debian mirror carries every release.
    """
    override = os.environ.get("APTSHIP_DEBIAN_MIRROR")
    if override:
        return override
    entries = [e for e in sources_entries(apt_dir) if "deb" in e[0] and "main" in e[3]]
    for _types, uri, suites, _components in entries:
        if suite in suites:
            return uri
    for _types, uri, suites, _components in entries:
        if any(s in RELEASES for s in suites):
            return uri
    raise UsageError(
        f"no apt source for '{suite} main' in {apt_dir}/sources.list(.d): "
        "set APTSHIP_DEBIAN_MIRROR to a Debian mirror this machine can reach"
    )


def cache_dir() -> Path:
    configured = os.environ.get("APTSHIP_CACHE")
    path = Path(configured) if configured else Path.home() / ".cache" / "aptship"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], log: TextIO, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, **kw
    )


def build_root_tarball(codename: str, log: TextIO, *, now: float | None = None) -> Path:
    """The cached build root of ``codename``, made with mmdebstrap when missing or stale."""
    if codename not in RELEASES:
        raise UsageError(f"unknown distribution {codename!r} (known: {', '.join(RELEASES)})")
    line = f"deb {debian_mirror(codename)} {codename} main"
    recipe = {"suite": codename, "variant": VARIANT, "include": BUILD_INCLUDE, "mirror": line}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    tarball = cache_dir() / f"buildroot-{codename}-{key}.tar"
    age = (now or time.time()) - tarball.stat().st_mtime if tarball.is_file() else None
    if age is not None and age < MAX_AGE:
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise UsageError("build --dist needs mmdebstrap: apt-get install mmdebstrap")
    log.write(f"aptship: making the {codename} build root with mmdebstrap ({line})\n")
    log.flush()
    fd, partial_name = tempfile.mkstemp(prefix=f"{tarball.stem}.", suffix=".tar", dir=cache_dir())
    os.close(fd)
    partial = Path(partial_name)
    try:
        result = _run(
            [
                "mmdebstrap",
                "--mode=root",
                f"--variant={VARIANT}",
                f"--include={','.join(BUILD_INCLUDE)}",
                "--format=tar",
                # Like the machine's own apt setup: mirrors may serve an older Release.
                "--aptopt=Acquire::Check-Valid-Until false",
                codename,
                str(partial),
                line,
            ],
            log,
        )
        if result.returncode != 0:
            raise UsageError(
                f"mmdebstrap failed ({result.returncode}) for {codename} with {line!r}:\n"
                f"{result.stderr[-4000:]}"
            )
        partial.chmod(0o644)
        os.replace(partial, tarball)  # atomic: a concurrent build sees old or new, whole
    finally:
        partial.unlink(missing_ok=True)
    for old in cache_dir().glob(f"buildroot-{codename}-*.tar"):
        if old != tarball:
            old.unlink(missing_ok=True)
    return tarball


def stamped_changelog(changelog: str, version: str, codename: str, maintainer: str) -> str:
    """``changelog`` with an entry on top for the ``+debNN`` build of ``version``."""
    from publisher.debianize import changelog_date

    package = changelog.split(" ", 1)[0]
    return (
        f"{package} ({version}{stamp(codename)}) {codename}; urgency=medium\n\n"
        f"  * Built for {codename} by aptship build --dist.\n\n"
        f" -- {maintainer}  {changelog_date()}\n\n" + changelog
    )


def chroot_command(root: Path, cmd: list[str], env: Mapping[str, str]) -> list[str]:
    return ["chroot", str(root), "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd]


def _copy_tree(src: Path, dst: Path) -> None:
    """``src`` into ``dst`` with tar (keeps modes and links), without VCS and build leftovers."""
    excludes = ["--exclude=./.git", "--exclude=./.venv", "--exclude=./debian/aptship-src"]
    with subprocess.Popen(
        ["tar", "-cf", "-", *excludes, "."], cwd=src, stdout=subprocess.PIPE
    ) as pack:
        unpack = subprocess.run(
            ["tar", "-xf", "-", "-C", str(dst)], stdin=pack.stdout, capture_output=True, check=False
        )
    if pack.returncode != 0 or unpack.returncode != 0:
        raise UsageError(f"cannot copy {src} into the build root: {unpack.stderr.decode()[-500:]}")


def build_for(project_dir: Path, codename: str, *, log: TextIO) -> list[BuiltDeb]:
    """Build ``project_dir``'s .deb(s) for ``codename`` in a clean chroot; return them.

    The .debs are written next to ``project_dir`` (as ``aptship build`` does), with the
    version stamped for the distribution: ``1.4.2-1+deb13``.
    """
    from publisher.debianize import (
        BuiltDeb,
        _binary_packages,
        _check_version_matches,
        _deb_architecture,
        _tool_output,
        run_build,
    )

    if os.geteuid() != 0:
        raise UsageError("build --dist needs root: mmdebstrap --mode=root and chroot")
    project_dir = project_dir.resolve()
    debian = project_dir / "debian"
    missing = [n for n in ("control", "changelog", "rules") if not (debian / n).is_file()]
    if missing:
        raise UsageError(
            f"{debian} has no {', '.join(missing)}: run `aptship debianize {project_dir}` first"
        )
    version = _tool_output(["dpkg-parsechangelog", "-S", "Version"], project_dir)
    _check_version_matches(project_dir, version)
    maintainer = _tool_output(["dpkg-parsechangelog", "-S", "Maintainer"], project_dir)
    packages = _binary_packages(debian / "control")
    stamped = f"{version}{stamp(codename)}"
    tarball = build_root_tarball(codename, log)
    root = Path(tempfile.mkdtemp(prefix=f"aptship-build-{codename}-"))
    try:
        unpacked = _run(
            ["tar", "--extract", "--numeric-owner", "-f", str(tarball), "-C", str(root)], log
        )
        if unpacked.returncode != 0:
            raise UsageError(f"cannot unpack {tarball}: {unpacked.stderr[-500:]}")
        src = root / BUILD_DIR.lstrip("/") / "src"
        src.mkdir(parents=True)
        _copy_tree(project_dir, src)
        changelog = src / "debian" / "changelog"
        changelog.write_text(
            stamped_changelog(changelog.read_text(encoding="utf-8"), version, codename, maintainer),
            encoding="utf-8",
        )
        host = _run(chroot_command(root, ["dpkg", "--print-architecture"], CHROOT_ENV), log)
        arch_host = host.stdout.strip()
        script = f"cd {BUILD_DIR}/src && exec dpkg-buildpackage -us -uc -b"
        run_build(
            chroot_command(root, ["sh", "-c", script], CHROOT_ENV),
            log,
            f"the {codename} build root",
        )
        built = []
        for package, field in packages:
            arch = _deb_architecture(field, arch_host)
            if arch is None:
                continue
            name = f"{package}_{strip_epoch(stamped)}_{arch}.deb"
            made = src.parent / name
            if not made.is_file():
                raise InvalidPackage(f"build failed: dpkg-buildpackage did not write {name}")
            out = project_dir.parent / name
            shutil.copyfile(made, out)
            built.append(BuiltDeb(path=out, package=package, version=stamped, architecture=arch))
        if not built:
            raise InvalidPackage(f"build failed: debian/control lists no package for {arch_host}")
        return built
    finally:
        shutil.rmtree(root, ignore_errors=True)
