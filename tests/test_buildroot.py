"""``aptship build --dist``'s build roots: the mirror, the cache and its staleness, the
stamped changelog.  The real chroot build runs in tests/e2e/test_distributions_flow.py.

The cache tests put a stand-in ``mmdebstrap`` first in ``PATH`` that only records its
arguments and writes a tarball: what they check is when aptship makes a root and where
it keeps it, not mmdebstrap itself."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from publisher.buildroot import build_root_tarball, debian_mirror, stamped_changelog
from publisher.errors import UsageError


def test_mirror_of_a_release_the_machine_does_not_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APTSHIP_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.invalid/security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://two.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror("trixie", tmp_path) == "http://two.invalid/debian"
    (tmp_path / "sources.list.d" / "debian.sources").write_text("")
    with pytest.raises(UsageError, match="APTSHIP_DEBIAN_MIRROR"):
        debian_mirror("trixie", tmp_path)


@pytest.fixture
def fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mmdebstrap"
    # the output file is the second-to-last argument (codename OUT MIRROR-LINE)
    tool.write_text(
        f'#!/bin/sh\necho "$*" >>{calls}\n'
        'out=""; n=$#; i=0\nfor a; do i=$((i+1)); [ $i -eq $((n-1)) ] && out="$a"; done\n'
        'echo tar >"$out"\n'
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("APTSHIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("APTSHIP_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    return calls


def test_build_root_is_cached_and_rebuilt_when_stale(fake_mmdebstrap: Path) -> None:
    log = io.StringIO()
    first = build_root_tarball("trixie", log)
    assert first.parent.name == "cache" and first.name.startswith("buildroot-trixie-")
    assert first.read_text() == "tar\n" and oct(first.stat().st_mode & 0o777) == "0o644"
    assert "trixie" in fake_mmdebstrap.read_text()
    assert "deb http://127.0.0.1:9/debian trixie main" in fake_mmdebstrap.read_text()
    assert build_root_tarball("trixie", log) == first
    assert len(fake_mmdebstrap.read_text().splitlines()) == 1  # reused
    week = 8 * 24 * 3600
    os.utime(first, (time.time() - week, time.time() - week))
    assert build_root_tarball("trixie", log) == first
    assert len(fake_mmdebstrap.read_text().splitlines()) == 2  # stale: made again
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no leftovers
    with pytest.raises(UsageError, match="unknown distribution"):
        build_root_tarball("sid", log)


def test_stamped_changelog_parses_with_dpkg(tmp_path: Path) -> None:
    old = (
        "svc (1.4.2-1) unstable; urgency=medium\n\n  * x\n\n"
        " -- A <a@b.c>  Mon, 01 Jan 2024 00:00:00 +0000\n"
    )
    debian = tmp_path / "debian"
    debian.mkdir()
    (debian / "changelog").write_text(stamped_changelog(old, "1.4.2-1", "trixie", "A <a@b.c>"))
    version = subprocess.run(
        ["dpkg-parsechangelog", "-S", "Version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert version.stdout.strip() == "1.4.2-1+deb13", version.stderr
