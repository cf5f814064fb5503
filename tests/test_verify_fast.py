"""``verify --fast``: signatures, index sizes and each index's hash once (the by-hash
copy apt fetches), pool sizes; the full verify also hashes every plain path, every
pool file, and checks a listed-only Packages against the compressed files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.repo import Repository
from publisher.state import shard_key
from publisher.verify import verify

RepoFactory = Callable[..., Repository]


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


def test_fast_checks_by_hash_copies_and_sizes(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repo(index_formats=["plain", "gz", "xz"])  # a plain path to check
    repo.publish("dev", [debs("app", "1.0-1")])
    root = tmp_path / "repo"
    assert verify(repo, fast=True) == [] and verify(repo) == []
    base = root / "dists/dev/main/binary-amd64"
    # the plain path is a hard link to its by-hash copy (LocalStorage.copy): give it
    # its own inode first, or the flip below would change the by-hash copy too
    plain = base / "Packages"
    data = plain.read_bytes()
    plain.unlink()
    plain.write_bytes(data)
    assert not (base / "by-hash/SHA256" / hashlib.sha256(data).hexdigest()).samefile(plain)
    flip_last_byte(plain)  # same size: only the full check hashes plain paths
    assert verify(repo, fast=True) == []
    assert any("Packages: SHA256 differs" in p for p in verify(repo))
    gz = next(p for p in (base / "by-hash/SHA256").iterdir() if p.read_bytes()[:2] == b"\x1f\x8b")
    flip_last_byte(gz)
    assert any("content does not match its name" in p for p in verify(repo, fast=True))


def test_fast_checks_pool_sizes_not_bytes(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0-1")])
    pool = next((tmp_path / "repo/pool").rglob("*.deb"))
    flip_last_byte(pool)
    assert verify(repo, fast=True) == []
    assert any("SHA256 differs from the index" in p for p in verify(repo))
    pool.write_bytes(pool.read_bytes() + b"x")
    assert any("size" in p for p in verify(repo, fast=True))


def test_full_verify_checks_a_listed_only_packages_against_its_compressed_files(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repo(index_formats=["gz", "xz"])
    repo.publish("dev", [debs("app", "1.0-1")])
    dists = tmp_path / "repo/dists/dev"
    release = (dists / "Release").read_text()
    wrong = re.sub(
        r"^ ([0-9a-f]{64}) +(\d+) main/binary-amd64/Packages$",
        lambda m: f" {'0' * 64} {m.group(2)} main/binary-amd64/Packages",
        release,
        flags=re.M,
    )
    assert wrong != release
    sigs = repo.signer.sign_release(wrong.encode())
    (dists / "Release").write_text(wrong)
    (dists / "Release.gpg").write_bytes(sigs.release_gpg)
    (dists / "InRelease").write_bytes(sigs.inrelease)
    problems = verify(repo)
    assert any("Packages.gz: decompressed text differs" in p for p in problems), problems
    assert any("Packages.xz: decompressed text differs" in p for p in problems), problems
    assert not any("decompressed" in p for p in verify(repo, fast=True))


@pytest.mark.parametrize("formats", [["plain", "gz", "xz"], ["gz", "xz"], ["xz"]])
@pytest.mark.parametrize("listing", [False, True])  # a stat each, or listings (as on S3)
def test_fast_finds_each_pool_problem_from_the_index_apt_reads(
    make_repo: RepoFactory,
    debs: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    formats: list[str],
    listing: bool,
) -> None:
    """The pool files come from the verified Packages (plain, .gz or .xz, whichever
    is stored), so a missing or resized pool file is found in every configuration."""
    if listing:
        from publisher.storage.base import sizes_by_listing
        from publisher.storage.local import LocalStorage

        monkeypatch.setattr("publisher.storage.base.LIST_FROM", 0)
        monkeypatch.setattr(LocalStorage, "sizes", sizes_by_listing)
    repo = make_repo(index_formats=formats)
    repo.publish("dev", [debs("app", "1.0-1"), debs("lib", "2.0", "all"), debs("tool", "0.1")])
    assert verify(repo, fast=True) == []
    rows = {r["package"]: r["filename"] for r in repo.list_entries("dev")}
    root = tmp_path / "repo"
    (root / rows["app"]).unlink()
    lib = root / rows["lib"]
    lib.write_bytes(lib.read_bytes()[:-1])
    problems = verify(repo, fast=True)
    assert f"{rows['app']}: missing (listed in dists/dev)" in problems, problems
    size = lib.stat().st_size
    assert f"{rows['lib']}: size {size}, index says {size + 1}" in problems, problems
    assert len(problems) == 2, problems  # "all" is in both architectures, reported once


def test_fast_reports_a_missing_shard_and_a_forged_inrelease(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0-1")])
    head = repo.states.read_head("dev")
    bucket, sha = next(iter(head.shards.items()))
    (tmp_path / "repo" / shard_key("dev", bucket, sha)).unlink()
    problems = verify(repo, fast=True)
    assert len(problems) == 1 and f"shards/{bucket}/{sha}.json" in problems[0], problems
    repo = Repository(repo.config, repo.storage)  # no cached shard bytes
    repo.reindex(["dev"])
    assert verify(repo, fast=True) == []
    inrelease = tmp_path / "repo/dists/dev/InRelease"
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Suite: dev", b"Suite: xyz"))
    problems = verify(repo, fast=True)
    assert any("InRelease: signature does not verify" in p for p in problems), problems


def test_pool_refs_parse_any_field_order() -> None:
    """Stanzas written by another tool (aptly's tree) need not put Size after Filename."""
    from publisher.verify import _stanza_refs

    ours = b"Package: a\nVersion: 1\nFilename: pool/a_1.deb\nSize: 10\nSHA256: x\n\n"
    theirs = b"Package: b\nSize: 20\nVersion: 1\nFilename: pool/b_1.deb\n\n"
    text = ours * 3 + theirs + ours.replace(b"a_1", b"c_1")
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]  # stanzas cut anywhere
    assert dict(_stanza_refs(iter(chunks))) == {
        "pool/a_1.deb": 10,
        "pool/b_1.deb": 20,
        "pool/c_1.deb": 10,
    }
