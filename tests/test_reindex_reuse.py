"""``aptship reindex`` reuses a compressed index part only with proof: the stored file
matches the published record's SHA256 and the part's recorded text digest is the
SHA256 of the text rendered now.  Everything else is compressed again; ``--full``
compresses everything.  A real apt-get reads files mixing reused and new parts."""

from __future__ import annotations

import gzip
import lzma
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher import codecs
from publisher.dists import DistWriter, read_record
from publisher.errors import StorageError
from publisher.repo import KEYRING_KEY, Repository
from publisher.state import bucket_of, shard_key
from publisher.verify import verify
from tests.aptenv import AptEnv
from tests.httpserve import serve_directory

RepoFactory = Callable[..., Repository]
INDEXES = ("main/binary-amd64/Packages.gz", "main/binary-amd64/Packages.xz")


def count_compressions(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    made: Counter[str] = Counter()
    real = codecs.make_part

    def counting(fmt: str, bucket: str, text: bytes) -> codecs.Part:
        if fmt != "plain":  # a plain part is its text: nothing to compress
            made[fmt] += 1
        return real(fmt, bucket, text)

    monkeypatch.setattr(codecs, "make_part", counting)
    return made


def buckets(repo: Repository, path: str) -> int:
    return len(read_record(repo.storage, "dev").files[path].layout)


def publish_pending(repo: Repository, deb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit ``deb`` but fail its render: dists/ is left one generation behind."""

    def fail(*args: object, **kwargs: object) -> int:
        raise StorageError("injected: render failed")

    with monkeypatch.context() as m:
        m.setattr(DistWriter, "publish", fail)
        repo.publish("dev", [deb])
    assert any("is not published" in p for p in verify(repo, fast=True))


def test_reindex_reuses_proven_parts_and_full_compresses_all(
    repo: Repository, debs: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(12)])
    before = {p: read_record(repo.storage, "dev").files[p].sha256 for p in INDEXES}
    made = count_compressions(monkeypatch)
    repo.reindex(["dev"])
    assert made == Counter(), made  # every part reused
    after = read_record(repo.storage, "dev").files
    assert {p: after[p].sha256 for p in INDEXES} == before
    repo.reindex(["dev"], full=True)
    assert made == Counter({"gz": buckets(repo, INDEXES[0]), "xz": buckets(repo, INDEXES[1])})
    after = read_record(repo.storage, "dev").files
    assert {p: after[p].sha256 for p in INDEXES} == before  # the same bytes
    assert verify(repo) == []


def test_reindex_compresses_changed_texts_and_damaged_files_again(
    repo: Repository,
    debs: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(12)])
    publish_pending(repo, debs("pkg3", "2.0-1"), monkeypatch)
    made = count_compressions(monkeypatch)
    repo.reindex(["dev"])
    assert made == Counter({"gz": 1, "xz": 1}), made  # only pkg3's bucket changed
    assert verify(repo) == []
    text = gzip.decompress((tmp_path / "repo/dists/dev" / INDEXES[0]).read_bytes())
    assert b"Package: pkg3\nVersion: 2.0-1\n" in text

    # A damaged by-hash copy: its parts cannot be proven, so they are compressed again,
    # and the damaged file is written again (it is what apt fetches).
    info = read_record(repo.storage, "dev").files[INDEXES[1]]
    damaged = tmp_path / "repo/dists/dev" / info.by_hash()[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert any("content does not match its name" in p for p in verify(repo, fast=True))
    made.clear()
    repo.reindex(["dev"])
    assert made == Counter({"xz": buckets(repo, INDEXES[1])}), made
    assert verify(repo) == []
    assert lzma.decompress(damaged.read_bytes()) == text


@pytest.mark.e2e
@pytest.mark.parametrize("order", ["xz", "gz"])
def test_apt_reads_indexes_mixing_reused_and_new_parts(
    make_repo: RepoFactory,
    debs: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    order: str,
) -> None:
    repo = make_repo(index_formats=["gz", "xz"])
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(12)])
    deb = debs("pkg5", "2.0-1")
    publish_pending(repo, deb, monkeypatch)
    made = count_compressions(monkeypatch)
    repo.reindex(["dev"])
    assert 0 < made["xz"] < buckets(repo, INDEXES[1]), made  # reused and new parts
    root = tmp_path / "repo"
    apt = AptEnv(tmp_path / "apt")
    apt.prefer_compression(order)
    with serve_directory(root) as (url, requests):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        apt.update_clean()
        assert any(r.endswith(order) or "/by-hash/SHA256/" in r for r in requests), requests
        assert apt.fetch("pkg5=2.0-1") == deb.read_bytes()
        assert "1.0-1" in apt.policy("pkg7").output


def test_reindex_rebuilds_a_damaged_shard_found_while_rendering(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """Missing shards are found by one listing before the render; a shard whose bytes
    no longer match its hash is found by the render, then rebuilt from dists/."""
    repo.publish("dev", [debs("app", "1.0-1"), debs("app", "2.0-1"), debs("lib", "0.1")])
    head = repo.states.read_head("dev")
    bucket = bucket_of("app")
    shard = tmp_path / "repo" / shard_key("dev", bucket, head.shards[bucket])
    shard.write_bytes(shard.read_bytes().replace(b"2.0-1", b"9.9-9"))
    fresh = Repository(repo.config, repo.storage)  # no cached shard bytes
    assert any("does not match its hash" in p for p in verify(fresh))
    fresh.reindex(["dev"])
    assert verify(fresh) == []
    assert {e.version for e in fresh.states.view("dev").require("app").entries} == {
        "1.0-1",
        "2.0-1",
    }
