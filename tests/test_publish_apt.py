"""Issue 2 acceptance: publish real .debs, then a real isolated apt-get installs them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.repo import KEYRING_KEY, Repository
from publisher.signing import gpgv_verify
from tests.aptenv import AptEnv
from tests.httpserve import serve_directory

pytestmark = pytest.mark.e2e


def publish_versions(repo: Repository, debs: Callable[..., Path]) -> dict[str, Path]:
    files = {
        "1.0-1": debs("app", "1.0-1"),
        "1:0.9~rc1+git2-1": debs("app", "1:0.9~rc1+git2-1"),
        "2.0-1": debs("app", "2.0-1"),
    }
    repo.publish("dev", list(files.values()))
    repo.publish("dev", [debs("helper", "0.1", "all")])
    return files


@pytest.mark.parametrize("compression", ["xz", "gz", "uncompressed"])
def test_apt_installs_every_retained_version_byte_identical(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path, compression: str
) -> None:
    files = publish_versions(repo, debs)
    root = tmp_path / "repo"
    apt = AptEnv(tmp_path / "apt")
    apt.config.write_text(
        apt.config.read_text()
        + f'Acquire::CompressionTypes::Order {{ "{compression}"; }};\n'
        + ('Acquire::GzipIndexes "false";\n' if compression == "uncompressed" else "")
    )
    with serve_directory(root) as (url, requests):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        result = apt.update()
        assert result.returncode == 0, result.output
        assert "W:" not in result.output and "E:" not in result.output, result.output
        assert any("/by-hash/" in r for r in requests), requests
        for version, deb in files.items():
            assert apt.fetch(f"app={version}") == deb.read_bytes()
        helper = apt.download("helper")
        assert helper.returncode == 0, helper.output
    policy = apt.policy("app").output
    for version in files:
        assert version in policy


def test_gpgv_verifies_inrelease_and_release_gpg(
    repo: Repository, debs: Callable[..., Path]
) -> None:
    repo.publish("dev", [debs("app", "1.0-1")])
    storage = repo.storage
    key = storage.read_bytes(KEYRING_KEY)
    ok, out = gpgv_verify(key, storage.read_bytes("dists/dev/InRelease"))
    assert ok, out
    ok, out = gpgv_verify(
        key, storage.read_bytes("dists/dev/Release.gpg"), storage.read_bytes("dists/dev/Release")
    )
    assert ok, out
    tampered = storage.read_bytes("dists/dev/Release").replace(b"Suite: dev", b"Suite: xxx")
    ok, _ = gpgv_verify(key, storage.read_bytes("dists/dev/Release.gpg"), tampered)
    assert not ok


def test_key_rotation_signs_with_every_key(
    make_repo: Callable[..., Repository],
    debs: Callable[..., Path],
    gpg_key: tuple[Path, str],
    tmp_path: Path,
) -> None:
    """Two configured keys: both sign; hosts trusting either key alone update cleanly."""
    import gnupg

    from publisher.signing import generate_dev_key

    home, first = gpg_key
    second = generate_dev_key(home, "aptship rotated key", "rotated@aptship.invalid")
    repo = make_repo(keys=[first, second])
    repo.publish("dev", [debs("app", "1.0-1")])
    storage = repo.storage
    ok, out = gpgv_verify(
        storage.read_bytes(KEYRING_KEY), storage.read_bytes("dists/dev/InRelease")
    )
    assert ok, out
    assert out.count("Good signature") == 2, out
    gpg = gnupg.GPG(gnupghome=str(home))
    with serve_directory(tmp_path / "repo") as (url, _requests):
        for fpr in (first, second):
            single = tmp_path / f"{fpr}.asc"
            single.write_text(gpg.export_keys(fpr))
            apt = AptEnv(tmp_path / f"apt-{fpr}")
            apt.add_source(url, "dev", single)
            result = apt.update()
            assert result.returncode == 0, result.output
            assert "E:" not in result.output, result.output
            assert apt.download("app=1.0-1").returncode == 0


def test_compressed_only_indexes_still_list_uncompressed_hashes(
    make_repo: Callable[..., Repository], debs: Callable[..., Path], tmp_path: Path
) -> None:
    """index_formats = gz + xz: apt finds the index by its uncompressed name in Release."""
    from publisher.verify import verify

    repo = make_repo(index_formats=["gz", "xz"])
    deb = debs("app", "1.0-1")
    repo.publish("dev", [deb])
    repo.publish("dev", [debs("app", "2.0-1")])
    root = tmp_path / "repo"
    assert not (root / "dists/dev/main/binary-amd64/Packages").exists()
    assert (root / "dists/dev/main/binary-amd64/Packages.xz").exists()
    assert "main/binary-amd64/Packages\n" in repo.storage.read_bytes("dists/dev/Release").decode()
    assert verify(repo) == []
    apt = AptEnv(tmp_path / "apt")
    with serve_directory(root) as (url, _requests):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        result = apt.update()
        assert result.returncode == 0 and "W:" not in result.output, result.output
        got = apt.download("app=1.0-1")
        assert got.returncode == 0, got.output
        assert next(apt.archives.glob("app_*.deb")).read_bytes() == deb.read_bytes()
