"""Issue 19: gc and promotion can never lose a referenced file (deterministic repros).

Each test runs a complete ``aptship gc`` (mark, then sweep one grace later, with an
injected clock) at the worst moment of another operation: after it has written or
reused the objects it will reference and just before it swaps the channel head or
the published record.  Before the fix each of them left a channel referencing a
deleted file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from publisher.audit import read_events
from publisher.dists import record_key
from publisher.errors import NotFound, StorageError, SweepBusy, UsageError
from publisher.gc import MARKS_KEY, MIN_GRACE, collect, parse_duration
from publisher.repo import KEYRING_KEY, Repository
from publisher.state import head_key
from publisher.storage.local import LocalStorage
from publisher.sweep import (
    IDLE,
    SWEEP_KEY,
    SWEEPING,
    Sweep,
    guard,
    new_sweep,
    read_sweep,
    write_sweep,
)
from publisher.verify import verify

DAY = 86400.0


class HookedStorage:
    """Local storage that runs ``hook`` once, just before the first write of ``key``."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalStorage(root)
        self.key: str | None = None
        self.hook: Callable[[], None] | None = None

    def arm(self, key: str, hook: Callable[[], None]) -> None:
        self.key, self.hook = key, hook

    def write_bytes(self, key: str, data: bytes, **kw: Any) -> str:
        if key == self.key and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return self.inner.write_bytes(key, data, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Clock:
    """gc's clock: each full gc (mark, then sweep) moves it on by more than a grace."""

    def __init__(self) -> None:
        self.now = time.time()

    def full_gc(self, repo: Repository) -> list[str]:
        self.now += 3 * DAY
        collect(repo, grace=DAY, dry_run=False, clock=lambda: self.now)  # marks
        self.now += 3 * DAY
        return collect(repo, grace=DAY, dry_run=False, clock=lambda: self.now)  # sweeps


@pytest.fixture
def hooked(tmp_path: Path) -> HookedStorage:
    return HookedStorage(tmp_path / "repo")


@pytest.fixture
def repo(make_repo: Callable[..., Repository], hooked: HookedStorage) -> Repository:
    return make_repo(storage=hooked)


def backdate(root: Path, days: float = 2) -> None:
    """Make every stored object look ``days`` old (reused objects keep their mtime)."""
    old = time.time() - days * DAY
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


def healthy(repo: Repository) -> None:
    """What another process sees (no cached shard bytes): verify clean, files present."""
    fresh = Repository(repo.config, repo.storage)
    assert verify(fresh) == []
    for row in fresh.list_entries():
        assert fresh.storage.exists(row["filename"]), row


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()


def test_remove_keeps_its_new_shard_when_gc_runs_before_the_head_swap(
    repo: Repository, hooked: HookedStorage, debs: Callable[..., Path], clock: Clock
) -> None:
    """Finding 1: gc deleted the shard a remove had written and was about to commit."""
    repo.publish("dev", [debs("app", "1.0"), debs("app", "1.1")])
    deleted: list[str] = []
    hooked.arm(head_key("dev"), lambda: deleted.extend(clock.full_gc(repo)))
    result = repo.remove("app", "1.0", "dev")
    assert result["removed"] == ["amd64"]
    assert [r["version"] for r in repo.list_entries("dev")] == ["1.1"]
    healthy(repo)
    assert any("/shards/" in k for k in deleted)  # gc deleted the new shard: written again


def test_publish_keeps_its_pool_file_when_gc_runs_before_the_head_swap(
    repo: Repository, hooked: HookedStorage, debs: Callable[..., Path], clock: Clock
) -> None:
    """Finding 1: the same gc deleted an in-flight publish's new pool file."""
    repo.publish("dev", [debs("app", "1.0")])
    hooked.arm(head_key("dev"), lambda: clock.full_gc(repo))
    repo.publish("dev", [debs("app", "1.1")])
    assert repo.storage.exists("pool/main/a/app/app_1.1_amd64.deb")
    healthy(repo)


def test_republishing_an_old_removed_version_while_gc_runs(
    repo: Repository, hooked: HookedStorage, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """Finding 2: a reused pool file older than the grace kept its mtime and was deleted
    under the publish that reused it."""
    old = debs("app", "1.0")
    repo.publish("dev", [old, debs("app", "1.1")])
    repo.remove("app", "1.0", "dev")
    backdate(tmp_path / "repo")
    now = time.time()
    assert collect(repo, grace=3 * DAY, dry_run=False, clock=lambda: now) == []  # marks
    hooked.arm(
        head_key("dev"), lambda: collect(repo, grace=DAY, dry_run=False, clock=lambda: now + DAY)
    )
    assert repo.publish("dev", [old])[0]["status"] == "added"
    assert repo.storage.exists("pool/main/a/app/app_1.0_amd64.deb")
    healthy(repo)


def test_render_reusing_earlier_index_bytes_while_gc_runs(
    repo: Repository, hooked: HookedStorage, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """Finding 2: a remove that brought Packages back to earlier identical bytes let gc
    delete the by-hash files the new Release lists."""
    repo.publish("dev", [debs("app", "1.0")])
    repo.publish("dev", [debs("app", "1.1")])
    repo.rollback("app", "dev")
    backdate(tmp_path / "repo")
    now = time.time()
    collect(repo, grace=3 * DAY, dry_run=False, clock=lambda: now)  # marks 1.0-only indexes
    hooked.arm(
        record_key("dev"), lambda: collect(repo, grace=DAY, dry_run=False, clock=lambda: now + DAY)
    )
    repo.remove("app", "1.1", "dev")  # the index is the 1.0-only one again
    healthy(repo)


def test_promote_of_a_version_removed_and_collected_meanwhile_fails_cleanly(
    repo: Repository, hooked: HookedStorage, debs: Callable[..., Path], clock: Clock
) -> None:
    """Finding 3: promote committed from a stale read of the source; with a remove and a
    gc in between, staging referenced a deleted pool file."""
    repo.publish("dev", [debs("app", "1.0"), debs("app", "1.1")])

    def meanwhile() -> None:
        repo.remove("app", "1.0", "dev")
        clock.full_gc(repo)

    hooked.arm(head_key("staging"), meanwhile)
    with pytest.raises(NotFound, match="not in channel 'dev'"):
        repo.promote("app", "1.0", "dev", "staging")
    assert repo.list_entries("staging") == []
    assert not repo.storage.exists("pool/main/a/app/app_1.0_amd64.deb")
    healthy(repo)


def test_promote_records_retention_drops_like_publish(
    make_repo: Callable[..., Repository], debs: Callable[..., Path]
) -> None:
    """Issue 18: with keep = 1, promoting 1.1-1 dropped 1.0-1 from staging silently."""
    repo = make_repo(
        channels={"dev": {}, "staging": {"promote_from": ["dev"], "keep": 1}},
    )
    repo.publish("dev", [debs("app", "1.0-1"), debs("app", "1.1-1")])
    repo.promote("app", "1.0-1", "dev", "staging")
    repo.promote("app", "1.1-1", "dev", "staging")
    assert [r["version"] for r in repo.list_entries("staging")] == ["1.1-1"]
    rows = read_events(repo.storage, channel="staging")
    assert [(r["action"], r["version"], r.get("note")) for r in rows] == [
        ("promote", "1.0-1", None),
        ("promote", "1.1-1", None),
        ("promote", "1.0-1", "dropped by retention (keep = 1)"),
    ]
    publish = make_repo(channels={"dev": {"keep": 1}})
    publish.publish("dev", [debs("lib", "1")])
    publish.publish("dev", [debs("lib", "2")])
    dropped = [r for r in read_events(publish.storage, channel="dev") if r.get("note")]
    assert [(r["action"], r["version"], r["note"]) for r in dropped] == [
        ("publish", "1", "dropped by retention (keep = 1)")
    ]


def test_a_render_failure_after_the_commit_is_a_warning_and_a_pending_render(
    repo: Repository,
    hooked: HookedStorage,
    debs: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 4: remove exited 4 after its change was committed; a retry then said
    "not in channel"."""
    repo.publish("dev", [debs("app", "1.0"), debs("app", "1.1")])

    def fail() -> None:
        raise StorageError("injected: the disk is full")

    hooked.arm(record_key("dev"), fail)
    with caplog.at_level(logging.WARNING, logger="aptship"):
        result = repo.remove("app", "1.0", "dev")
    assert result["version"] == "1.0"
    assert "committed, but publishing dists/dev failed" in caplog.text
    assert [r["version"] for r in repo.list_entries("dev")] == ["1.1"]
    assert [r["action"] for r in repo.history("dev")][-1] == "remove"
    assert any("is not published" in p for p in verify(repo))  # pending
    repo.publish("dev", [debs("lib", "1.0")])  # the next operation publishes it
    healthy(repo)


def test_verify_reports_a_missing_shard_and_reindex_rebuilds_it(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    """Finding 5: verify exited 4 instead of listing the problem."""
    repo.publish("dev", [debs("app", "1.0"), debs("app", "1.1"), debs("lib", "2.0")])
    head = repo.states.read_head("dev")
    lost = {b: sha for b, sha in head.shards.items()}
    for bucket, sha in lost.items():
        (tmp_path / "repo" / f".aptship/state/dev/shards/{bucket}/{sha}.json").unlink()
    fresh = Repository(repo.config, repo.storage)  # no cached shard bytes
    problems = verify(fresh)
    assert len(problems) == len(lost) and all("/shards/" in p for p in problems), problems
    fresh.reindex(["dev"])
    assert verify(fresh) == []
    rows = fresh.list_entries("dev")
    assert {(r["package"], r["version"]) for r in rows} == {
        ("app", "1.0"),
        ("app", "1.1"),
        ("lib", "2.0"),
    }
    assert fresh.pin_map("dev") == {"app": "1.1", "lib": "2.0"}


def test_gc_refuses_a_grace_below_the_minimum() -> None:
    assert parse_duration("10s") == MIN_GRACE
    with pytest.raises(UsageError, match="at least"):
        collect(None, grace=0, dry_run=True)  # type: ignore[arg-type]


def test_guard_waits_for_a_sweep_and_restores_or_refuses_missing_keys(
    repo: Repository, debs: Callable[..., Path]
) -> None:
    repo.publish("dev", [debs("app", "1.0")])
    key = "pool/main/a/app/app_1.0_amd64.deb"
    idle = read_sweep(repo.storage)
    active = write_sweep(repo.storage, new_sweep([key]), expected=idle)
    with pytest.raises(SweepBusy, match="being garbage-collected"):
        guard(repo.storage, {key: None}, what="test")
    guard(repo.storage, {KEYRING_KEY: None}, what="test")  # other keys go on
    write_sweep(repo.storage, Sweep(state=IDLE, owner=active.owner), expected=active)
    restored: list[str] = []
    with pytest.raises(NotFound, match="publish the package again"):
        guard(repo.storage, {"pool/gone.deb": None}, what="test")
    guard(repo.storage, {"pool/gone.deb": lambda: restored.append("x")}, what="test")
    assert restored == ["x"]
    # a quiet sweep record since the keys were written: restorable keys are not looked up
    since = read_sweep(repo.storage)
    guard(repo.storage, {"pool/gone.deb": lambda: restored.append("y")}, what="t", since=since)
    assert restored == ["x"]


def test_a_corrupt_sweep_record_blocks_commits_until_gc_resets_it(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0")])
    corrupt = tmp_path / "repo" / SWEEP_KEY
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"\x00garbage{")
    with pytest.raises(SweepBusy, match="corrupt"):
        guard(repo.storage, {"pool/x.deb": None}, what="test")
    assert collect(repo, grace=DAY, dry_run=True) == []
    assert read_sweep(repo.storage).state == "corrupt"  # a dry run changes nothing
    collect(repo, grace=DAY, dry_run=False)
    assert read_sweep(repo.storage).state == IDLE
    repo.publish("dev", [debs("app", "1.1")])
    healthy(repo)


def test_gc_leaves_a_live_sweep_alone_and_resets_an_abandoned_one(
    repo: Repository, debs: Callable[..., Path], clock: Clock
) -> None:
    repo.publish("dev", [debs("app", "1.0"), debs("app", "1.1")])
    repo.remove("app", "1.0", "dev")
    key = "pool/main/a/app/app_1.0_amd64.deb"
    live = write_sweep(repo.storage, new_sweep(["pool/unrelated.deb"]), expected=Sweep())
    assert clock.full_gc(repo) == []  # another gc is sweeping: this one only marks
    assert repo.storage.exists(key) and read_sweep(repo.storage).owner == live.owner
    abandoned = Sweep(state=SWEEPING, keys=[], started_at=time.time() - 2 * 3600, owner="dead")
    write_sweep(repo.storage, abandoned, expected=read_sweep(repo.storage))
    clock.full_gc(repo)
    assert not repo.storage.exists(key)
    assert read_sweep(repo.storage).state == IDLE
    healthy(repo)


def test_a_corrupt_marks_file_is_rebuilt(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path, clock: Clock
) -> None:
    repo.publish("dev", [debs("app", "1.0"), debs("app", "1.1")])
    repo.remove("app", "1.0", "dev")
    (tmp_path / "repo" / MARKS_KEY).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "repo" / MARKS_KEY).write_text('{"marks": ["not", "a", "map"]}')
    clock.full_gc(repo)
    assert not repo.storage.exists("pool/main/a/app/app_1.0_amd64.deb")
    healthy(repo)
