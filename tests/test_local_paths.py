"""LocalStorage resolves a key's directory once, and still refuses every escape."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.errors import UsageError
from publisher.storage.local import LocalStorage


def test_a_link_made_after_its_directory_was_resolved_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("pool/a/file", b"ok")
    assert storage.read_bytes("pool/a/file") == b"ok"  # pool/a is now remembered
    (tmp_path / "repo/pool/a/link").symlink_to(outside)
    with pytest.raises(UsageError):
        storage.read_bytes("pool/a/link")
    with pytest.raises(UsageError):
        storage.stat("pool/a/link")


def test_a_linked_directory_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/f").write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("x", b"ok")
    (tmp_path / "repo/dir").symlink_to(tmp_path / "elsewhere")
    for _ in range(2):  # refused again, not remembered
        with pytest.raises(UsageError):
            storage.read_bytes("dir/f")
    with pytest.raises(UsageError):
        storage.write_bytes("dir/new", b"x")
    assert not (tmp_path / "elsewhere/new").exists()


def test_links_inside_the_root_still_work(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("real/f", b"data")
    (tmp_path / "repo/alias").symlink_to(tmp_path / "repo/real")
    (tmp_path / "repo/real/g").symlink_to(tmp_path / "repo/real/f")
    assert storage.read_bytes("alias/f") == b"data"
    assert storage.read_bytes("real/g") == b"data"


def test_the_directory_memory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import publisher.storage.local as local

    monkeypatch.setattr(local, "DIR_CACHE", 3)
    storage = LocalStorage(tmp_path / "repo")
    for i in range(10):
        storage.write_bytes(f"d{i}/f", b"x")
        storage.stat(f"d{i}/f")
    assert len(storage._real_dirs) <= 3
