"""A batch's intake: inspection on worker processes, and pool files written as one
durable batch (data synced before a file gets its name, directories synced once,
all before the commit)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from publisher import intake
from publisher.config import LimitsConfig
from publisher.debfile import DebInfo, inspect_deb
from publisher.errors import ControlRejected, InvalidPackage, StorageError
from publisher.repo import Repository
from publisher.storage import local
from publisher.storage.local import LocalStorage
from publisher.verify import verify
from tests.security.crafted import HEAD, crafted_deb


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes from the third file on, two files per task."""
    monkeypatch.setattr(intake, "PROCESS_MIN", 3)
    monkeypatch.setattr(intake, "CHUNK", 2)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_inspect_in_order(
    small_pool: None, debs: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """Workers are forked when this process has no other thread, else spawned (a
    thread alive here: a server's, a harness's); the parent never inspects."""
    paths = [debs(f"app{i}", f"1.{i}") for i in range(5)]
    parent = os.getpid()

    def in_a_worker(path: str | Path, limits: LimitsConfig) -> DebInfo:
        assert os.getpid() != parent, "the parent process inspected a file"
        return inspect_deb(path, limits)

    # forked workers inherit this patch; spawned ones import the real module
    monkeypatch.setattr(intake, "inspect_deb", in_a_worker)
    contexts: list[str | None] = []
    get_context = multiprocessing.get_context

    def recording(method: str | None = None) -> Any:
        contexts.append(method)
        return get_context(method)

    monkeypatch.setattr(multiprocessing, "get_context", recording)
    other = threading.Event()
    thread = threading.Thread(target=other.wait)
    if start == "spawn":
        thread.start()
    try:
        assert (threading.active_count() == 1) == (start == "fork")
        infos = intake.inspect_all(paths, LimitsConfig())
    finally:
        other.set()
        if thread.is_alive():
            thread.join()
    monkeypatch.undo()
    assert contexts == [start]
    assert [i.package for i in infos] == [f"app{i}" for i in range(5)]
    assert infos == [inspect_deb(p, LimitsConfig()) for p in paths]


def test_workers_raise_the_first_bad_file_in_order(
    small_pool: None, debs: Callable[..., Path], tmp_path: Path
) -> None:
    paths = [debs(f"app{i}", "1.0") for i in range(6)]
    paths[3] = crafted_deb(tmp_path / "bad3.deb", HEAD.replace(b"\n", b"\r\n"))
    paths[5] = tmp_path / "missing.deb"
    with pytest.raises(ControlRejected, match=r"bad3\.deb"):
        intake.inspect_all(paths, LimitsConfig())
    with pytest.raises(InvalidPackage, match=r"missing\.deb"):
        intake.inspect_all([*paths[4:], paths[0]], LimitsConfig())


def test_a_batch_publishes_through_the_workers(
    small_pool: None, repo: Repository, debs: Callable[..., Path]
) -> None:
    paths = [debs("app", f"1.{i}") for i in range(4)]
    rows = repo.publish("dev", paths)
    assert [r["status"] for r in rows] == ["added"] * 4
    assert verify(repo) == []


def sources_of(tmp_path: Path, sizes: Iterable[int]) -> list[Path]:
    """Files ``src0``, ``src1``, ... of these sizes, each a different content."""
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"src{i}")
        paths[-1].write_bytes(b"x" * size)
    return paths


def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """What write_files does, in order: syncs of files, links, syncs of directories."""
    seen: list[tuple[str, str]] = []
    sync_files, sync_dir, link = local._fsync_files, local._fsync_dir, os.link

    def files(paths: list[str]) -> None:
        sync_files(paths)
        seen.extend(("sync", p) for p in paths)

    def directory(path: str) -> None:
        sync_dir(path)
        seen.append(("dir", path))

    def linking(src: str, dst: str, **kw: object) -> None:
        seen.append(("link", str(src)))
        link(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "_fsync_files", files)
    monkeypatch.setattr(local, "_fsync_dir", directory)
    monkeypatch.setattr(os, "link", linking)
    return seen


def test_files_are_synced_before_their_names_and_directories_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "BATCH_CHUNK", 3)
    sources = sources_of(tmp_path, [i * 1000 for i in range(7)])
    storage = LocalStorage(tmp_path / "repo")
    items = [(f"pool/main/a/app{i % 3}/f{i}.deb", src) for i, src in enumerate(sources)]
    storage.write_bytes("pool/main/a/app0/f0.deb", b"already there")
    seen = events(monkeypatch)
    puts = storage.write_files(items)
    assert puts[0] is None  # create-only: an existing key is the caller's to compare
    for (key, src), put in zip(items[1:], puts[1:], strict=True):
        assert put is not None
        assert put.hashes["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
        assert put.size == src.stat().st_size
        assert storage.read_bytes(key) == src.read_bytes()
    links = [i for i, (what, _) in enumerate(seen) if what == "link"]
    synced = {p: i for i, (what, p) in enumerate(seen) if what == "sync"}
    assert len(links) == 7
    for i in links:
        assert synced[seen[i][1]] < i  # the bytes were durable before the name
    dirs = [p for what, p in seen if what == "dir"]
    assert min(i for i, (what, _) in enumerate(seen) if what == "dir") > max(links)
    root = str(tmp_path / "repo")
    assert set(dirs) >= {root, f"{root}/pool", f"{root}/pool/main/a/app1"}
    assert not [p for p in (tmp_path / "repo").rglob(".tmp-*")]


def failed_write(root: Path, items: list[tuple[str, Path]], error: str) -> list[str]:
    """``write_files`` of ``items`` into ``root``, which must fail with ``error`` and
    leave no temporary file; the keys it named."""
    storage = LocalStorage(root)
    with pytest.raises(StorageError, match=error):
        storage.write_files(items)
    assert not [p for p in root.rglob(".tmp-*")]
    return [key for key, _ in items if storage.exists(key)]


def test_a_failed_sync_names_nothing_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the syncing threads are not the writing ones: a failure there still fails the
    # whole chunk before any of its files gets a name
    monkeypatch.setattr(local, "SYNC_GROUP", 2)
    sources = sources_of(tmp_path, range(1, 7))
    sync_files = local._fsync_files
    failing = str(tmp_path / "repo" / "pool" / "b")

    def files(paths: list[str]) -> None:
        if any(p.startswith(failing) for p in paths):
            raise StorageError("cannot sync: injected")
        sync_files(paths)

    monkeypatch.setattr(local, "_fsync_files", files)
    items = [(f"pool/{'ab'[i // 4]}/f{i}.deb", src) for i, src in enumerate(sources)]
    assert failed_write(tmp_path / "repo", items, "injected") == []


def test_a_failed_link_leaves_no_temporary_file_of_the_chunk_copied_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the next chunk is copied while one is linked: a failed link removes both
    monkeypatch.setattr(local, "BATCH_CHUNK", 2)
    sources = sources_of(tmp_path, range(1, 7))
    link = os.link

    def linking(src: str, dst: str, **kw: object) -> None:
        if str(dst).endswith("f1.deb"):
            raise PermissionError(13, "Permission denied")
        link(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", linking)
    items = [(f"pool/a/f{i}.deb", src) for i, src in enumerate(sources)]
    assert failed_write(tmp_path / "repo", items, r"f1\.deb: Permission denied") == [
        "pool/a/f0.deb"
    ]


def test_a_failed_batch_leaves_no_temporary_file(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"x")
    storage = LocalStorage(tmp_path / "repo")
    with pytest.raises(InvalidPackage, match="gone"):
        storage.write_files([("pool/a/good", good), ("pool/a/gone", tmp_path / "gone")])
    assert not storage.exists("pool/a/good")  # nothing of the chunk got a name
    assert not [p for p in (tmp_path / "repo").rglob(".tmp-*")]


def test_the_same_deb_twice_in_a_batch_is_stored_once(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    deb = debs("app", "1.0")
    twin = tmp_path / "twin.deb"
    shutil.copy(deb, twin)
    rows = repo.publish("dev", [deb, twin, debs("tool", "2.0")])
    assert [r["status"] for r in rows] == ["added", "unchanged", "added"]
    assert repo.storage.read_bytes(rows[0]["filename"]) == deb.read_bytes()
    assert verify(repo) == []
