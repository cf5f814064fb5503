"""Release lists SHA256 (and MD5Sum when release_hashes asks for it), by-hash holds
SHA256 copies of stored files only, and without ``plain`` in index_formats (the
default) the uncompressed Packages is listed, never written (docs/s3.md, "Request
budget").  A real apt-get accepts the result."""

from __future__ import annotations

import gzip
import hashlib
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.dists import read_record
from publisher.repo import KEYRING_KEY, Repository
from publisher.state import bucket_of, shard_key
from publisher.verify import verify
from tests.aptenv import AptEnv
from tests.httpserve import serve_directory

RepoFactory = Callable[..., Repository]


def release_entries(release: str, field: str) -> dict[str, tuple[str, int]]:
    from debian.deb822 import Release

    return {i["name"]: (i[field], int(i["size"])) for i in Release(release).get(field, [])}


def check_listed_plain(repo: Repository, root: Path, *, md5sum: bool = False) -> None:
    """Each arch's listed Packages digests equal the text inside Packages.gz and .xz;
    Release lists MD5Sum only when ``md5sum``."""
    release = (root / "dists/dev/Release").read_text()
    assert "SHA512" not in release
    assert ("\nMD5Sum:\n" in release) is md5sum
    sha256 = release_entries(release, "sha256")
    md5 = release_entries(release, "md5sum")
    if md5sum:
        assert set(md5) == set(sha256)
    for arch in ("amd64", "arm64"):
        base = root / f"dists/dev/main/binary-{arch}"
        text = gzip.decompress((base / "Packages.gz").read_bytes())
        assert lzma.decompress((base / "Packages.xz").read_bytes()) == text
        name = f"main/binary-{arch}/Packages"
        assert sha256[name] == (hashlib.sha256(text).hexdigest(), len(text))
        if md5sum:
            assert md5[name] == (hashlib.md5(text, usedforsecurity=False).hexdigest(), len(text))
        assert not (base / "Packages").exists()
        assert not (base / "by-hash/SHA512").exists()
        stored = {p.name for p in (base / "by-hash/SHA256").iterdir()}
        assert hashlib.sha256(text).hexdigest() not in stored
        for suffix in (".gz", ".xz"):
            assert sha256[name + suffix][0] in stored
    assert verify(repo) == []


@pytest.mark.parametrize("formats", [["gz", "xz"], ["xz"]])
def test_listed_plain_follows_every_change(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path, formats: list[str]
) -> None:
    repo = make_repo(index_formats=formats)
    root = tmp_path / "repo"
    names = [f"pkg{i}" for i in range(12)]
    repo.publish("dev", [debs(n, "1.0-1") for n in names])
    if formats == ["gz", "xz"]:
        check_listed_plain(repo, root)
    repo.publish("dev", [debs("pkg3", "2.0-1")])  # incremental: one bucket changes
    repo.publish("dev", [debs("allpkg", "1.0", "all")])  # both architectures change
    repo.remove("pkg5", "1.0-1", "dev", force=True)  # a bucket may empty
    repo.promote("pkg3", "2.0-1", "dev", "staging")
    if formats == ["gz", "xz"]:
        check_listed_plain(repo, root)
    release = (root / "dists/dev/Release").read_text()
    incremental = release_entries(release, "sha256")
    repo.reindex(["dev"])  # a full render lists the same digests
    assert release_entries((root / "dists/dev/Release").read_text(), "sha256") == incremental
    assert verify(repo) == []


def test_md5sum_is_listed_on_request_and_after_a_switch(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """release_hashes = ["MD5Sum", "SHA256"] lists both; a channel rendered without MD5
    digests gets them all with the next publish (a full render), not just the changed
    files'."""
    root = tmp_path / "repo"
    repo = make_repo(index_formats=["gz", "xz"])
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(6)])
    repo.publish("dev", [debs("armpkg", "1.0-1", "arm64")])
    check_listed_plain(repo, root)
    assert all(not f.md5 for f in read_record(repo.storage, "dev").files.values())
    repo = make_repo(index_formats=["gz", "xz"], release_hashes=["SHA256", "MD5Sum"])
    repo.publish("dev", [debs("pkg1", "2.0-1")])  # changes amd64 only
    check_listed_plain(repo, root, md5sum=True)
    repo.publish("dev", [debs("pkg2", "2.0-1")])  # incremental again
    check_listed_plain(repo, root, md5sum=True)
    release = (root / "dists/dev/Release").read_text()
    for name, (digest, size) in release_entries(release, "md5sum").items():
        path = root / "dists/dev" / name
        if path.exists():
            data = path.read_bytes()
            assert (hashlib.md5(data, usedforsecurity=False).hexdigest(), len(data)) == (
                digest,
                size,
            ), name


@pytest.mark.parametrize("bad", [["MD5Sum"], ["SHA256", "SHA1"], []])
def test_release_hashes_must_name_sha256_and_known_fields(
    make_repo: RepoFactory, bad: list[str]
) -> None:
    from publisher.errors import ConfigError

    with pytest.raises(ConfigError, match="release_hashes"):
        make_repo(release_hashes=bad)


def test_repair_reads_a_stored_format(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """A lost shard is rebuilt from the published Packages.gz when no plain is stored."""
    repo = make_repo(index_formats=["gz", "xz"])
    repo.publish("dev", [debs("app", "1.0-1"), debs("app", "2.0-1")])
    head = repo.states.read_head("dev")
    bucket = bucket_of("app")
    (tmp_path / "repo" / shard_key("dev", bucket, head.shards[bucket])).unlink()
    repo = make_repo(index_formats=["gz", "xz"])  # nothing cached
    assert verify(repo) != []
    repo.reindex(["dev"])
    assert verify(repo) == []
    assert {e.version for e in repo.states.view("dev").require("app").entries} == {
        "1.0-1",
        "2.0-1",
    }


@pytest.mark.e2e
@pytest.mark.parametrize("order", ["xz", "gz"])
def test_apt_accepts_a_listed_only_plain_index_after_incremental_publishes(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path, order: str
) -> None:
    repo = make_repo(index_formats=["gz", "xz"])
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(6)])
    deb = debs("app", "1.0-1")
    repo.publish("dev", [deb])
    repo.publish("dev", [debs("pkg2", "2.0-1")])
    assert read_record(repo.storage, "dev").files["main/binary-amd64/Packages"].stored is False
    root = tmp_path / "repo"
    apt = AptEnv(tmp_path / "apt")
    apt.prefer_compression(order)
    with serve_directory(root) as (url, requests):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        apt.update_clean()
        assert any("/by-hash/SHA256/" in r for r in requests), requests
        assert not any(r.endswith("/Packages") for r in requests), requests
        assert apt.fetch("app=1.0-1") == deb.read_bytes()
        assert "2.0-1" in apt.policy("pkg2").output
        # apt compares the listed uncompressed hashes of the old and the new Release
        # to decide what to fetch again: a second update across a publish must see it
        newer = debs("app", "2.0-1")
        repo.publish("dev", [newer])
        apt.update_clean()
        assert apt.fetch("app=2.0-1") == newer.read_bytes()


def test_dropping_plain_removes_the_stale_file_at_its_path(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """A repository that wrote the uncompressed Packages (plain in index_formats, the
    default before) stops serving it: the next publish deletes the file, whose
    content no Release lists any more, and verify stays clean."""
    plain = tmp_path / "repo/dists/dev/main/binary-amd64/Packages"
    make_repo(index_formats=["plain", "gz", "xz"]).publish("dev", [debs("app", "1.0-1")])
    assert plain.exists()
    repo = make_repo()
    repo.publish("dev", [debs("app", "1.1-1")])
    assert not plain.exists()
    assert verify(repo) == [] and verify(repo, fast=True) == []
    plain.write_bytes(b"Package: stale\n")  # left by anything else: reindex removes it
    assert verify(repo) != []
    repo.reindex(["dev"])
    assert not plain.exists() and verify(repo) == []


def _damage_member(path: Path, layout: list[list[object]], member: int) -> None:
    """Make the first deflate block of one gzip member of a parts file invalid (block
    type 3), leaving the gzip header and trailer that the layout check reads intact."""
    start = len(gzip.compress(b"", mtime=0)) + sum(int(str(row[1])) for row in layout[:member])
    data = bytearray(path.read_bytes())
    data[start + 10 : start + 26] = b"\xff" * 16  # after the 10-byte gzip header
    path.write_bytes(bytes(data))


def test_a_damaged_stored_index_part_renders_in_full(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """The next publish reads the unchanged parts of the stored Packages.gz back (the
    listed Packages' digests): a damaged part makes it render in full, which writes
    sound files, instead of failing."""
    repo = make_repo()
    names = [f"pkg{i}" for i in range(12)]
    repo.publish("dev", [debs(n, "1.0-1") for n in names])
    info = read_record(repo.storage, "dev").files["main/binary-amd64/Packages.gz"]
    damaged = str(info.layout[0][0])
    other = next(n for n in names if bucket_of(n) != damaged)
    _damage_member(tmp_path / "repo/dists/dev" / info.by_hash()[0], info.layout, 0)
    repo.publish("dev", [debs(other, "2.0-1")])
    check_listed_plain(repo, tmp_path / "repo")


def test_verify_reports_a_damaged_gz_index(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """A Packages.gz whose deflate data is damaged is a problem verify names, not an
    error verify dies of.  The file is a hard link of its by-hash copy: the fast
    check finds that copy's content other than its name."""
    repo = make_repo()
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(12)])
    info = read_record(repo.storage, "dev").files["main/binary-amd64/Packages.gz"]
    _damage_member(tmp_path / "repo/dists/dev/main/binary-amd64/Packages.gz", info.layout, 0)
    problems = verify(repo)
    assert any("main/binary-amd64/Packages.gz: cannot decompress" in p for p in problems), problems
    by_hash = f"dists/dev/{info.by_hash()[0]}: content does not match its name"
    assert by_hash in verify(repo, fast=True)
