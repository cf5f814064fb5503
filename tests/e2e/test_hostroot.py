"""The throwaway host root: unpacked from the cached mmdebstrap tarball, used via chroot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.hostroot import debian_mirror, host_root, run_in_root

pytestmark = pytest.mark.e2e


def test_host_root_runs_python_and_apt(tmp_path: Path) -> None:
    with host_root(tmp_path) as root:
        assert (root / "etc" / "debian_version").read_text().startswith("12.")
        py = run_in_root(root, ["python3", "-c", "print(1)"])
        assert (py.returncode, py.stdout) == (0, "1\n"), py.stderr
        apt = run_in_root(root, ["apt-get", "--version"])
        assert apt.returncode == 0, apt.stderr
        assert apt.stdout.startswith("apt ")
    assert not root.exists()


def test_each_host_root_is_fresh(tmp_path: Path) -> None:
    with host_root(tmp_path) as first:
        (first / "root" / "marker").write_text("dirty")
        with host_root(tmp_path) as second:
            assert first != second
            assert not (second / "root" / "marker").exists()


def test_mirror_comes_from_the_machines_apt_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APTSHIP_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian bookworm-updates main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://two.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://three.invalid/security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://two.invalid/debian"
    assert debian_mirror("bookworm-security", tmp_path) == "http://three.invalid/security"
