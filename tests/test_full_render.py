"""A full render builds its indexes bucket by bucket.  A large index file is written
from its parts instead of being held whole (a compressed one from its parts as they
are, the uncompressed ``Packages`` from the gz or xz parts, unpacked while it is
written): the bytes, the record and the signed Release are the same as when it is
held."""

from __future__ import annotations

import gzip
import hashlib
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher import dists
from publisher.dists import read_record
from publisher.index import SUFFIX
from publisher.repo import Repository
from publisher.storage.local import LocalStorage
from publisher.verify import verify

PLAIN = "main/binary-amd64/Packages"


def render_full(repo: Repository, monkeypatch: pytest.MonkeyPatch, unpack_min: int) -> list[str]:
    """``reindex --full`` with ``dists.UNPACK_MIN`` set; the keys written as streams."""
    streamed: list[str] = []
    real = LocalStorage.write_stream

    def spy(self: LocalStorage, key: str, *args: object, **kwargs: object) -> object:
        streamed.append(key)
        return real(self, key, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(dists, "UNPACK_MIN", unpack_min)
        m.setattr(LocalStorage, "write_stream", spy)
        repo.reindex(["dev"], full=True)
    return streamed


@pytest.mark.parametrize("formats", [["plain", "gz", "xz"], ["plain", "xz"], ["plain"]])
def test_a_large_plain_index_is_written_from_its_compressed_parts(
    make_repo: Callable[..., Repository],
    debs: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    formats: list[str],
) -> None:
    repo = make_repo(index_formats=formats)
    repo.publish("dev", [debs(f"pkg{i}", "1.0-1") for i in range(12)])
    root = Path(repo.config.storage.path) / "dists/dev"
    assert render_full(repo, monkeypatch, unpack_min=1 << 40) == []  # held whole
    held = read_record(repo.storage, "dev")
    held_bytes = (root / PLAIN).read_bytes()
    held_files = {fmt: (root / f"{PLAIN}{SUFFIX[fmt]}").read_bytes() for fmt in formats}

    streamed = render_full(repo, monkeypatch, unpack_min=1)
    record = read_record(repo.storage, "dev")
    info = record.files[PLAIN]
    if formats == ["plain"]:  # nothing to unpack from: held whole
        assert streamed == []
    else:  # every index file of the architecture; the small pins index is held
        assert sorted(streamed) == sorted(
            f"dists/dev/{record.files[PLAIN + SUFFIX[fmt]].by_hash()[0]}" for fmt in formats
        )
    assert {p: f.to_json() for p, f in record.files.items()} == {
        p: f.to_json() for p, f in held.files.items()
    }
    data = (root / PLAIN).read_bytes()
    assert data == held_bytes
    assert len(data) == info.size and hashlib.sha256(data).hexdigest() == info.sha256
    assert data.count(b"Package: pkg") == 12
    if "gz" in formats:
        assert gzip.decompress((root / f"{PLAIN}.gz").read_bytes()) == data
    if "xz" in formats:
        assert lzma.decompress((root / f"{PLAIN}.xz").read_bytes()) == data
    for fmt in formats:  # each file is the one held whole, at its path and by hash
        stored = (root / f"{PLAIN}{SUFFIX[fmt]}").read_bytes()
        assert stored == held_files[fmt]
        assert (root / record.files[PLAIN + SUFFIX[fmt]].by_hash()[0]).read_bytes() == stored
    undated = [line for line in record.release.splitlines() if not line.startswith("Date:")]
    assert undated == [line for line in held.release.splitlines() if not line.startswith("Date:")]
    assert verify(repo) == []
