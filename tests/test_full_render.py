"""A full render builds its indexes bucket by bucket.  A large uncompressed
``Packages`` is written from its compressed parts, unpacked while it is written,
instead of being held whole: its bytes, its record and the signed Release are the
same as when it is held, and apt reads it."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher import dists
from publisher.dists import read_record
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

    streamed = render_full(repo, monkeypatch, unpack_min=1)
    record = read_record(repo.storage, "dev")
    info = record.files[PLAIN]
    if formats == ["plain"]:  # nothing to unpack from: held whole
        assert streamed == []
    else:
        assert streamed == [f"dists/dev/{info.by_hash()[0]}"]
    assert {p: f.to_json() for p, f in record.files.items()} == {
        p: f.to_json() for p, f in held.files.items()
    }
    data = (root / PLAIN).read_bytes()
    assert data == held_bytes
    assert len(data) == info.size and hashlib.sha256(data).hexdigest() == info.sha256
    assert data.count(b"Package: pkg") == 12
    if "gz" in formats:
        assert gzip.decompress((root / f"{PLAIN}.gz").read_bytes()) == data
    undated = [line for line in record.release.splitlines() if not line.startswith("Date:")]
    assert undated == [line for line in held.release.splitlines() if not line.startswith("Date:")]
    assert verify(repo) == []
