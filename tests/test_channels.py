"""Issue 3 acceptance: promote exact artifacts, roll back, pins that move real apt."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.errors import NotFound, PolicyViolation
from publisher.gc import collect
from publisher.repo import KEYRING_KEY, Repository
from publisher.verify import verify
from tests.aptenv import AptEnv
from tests.conftest import RepoFactory, packages_text, snapshot
from tests.httpserve import serve_directory


def stanza(repo: Repository, channel: str, package: str, version: str) -> dict[str, str]:
    text = packages_text(repo.storage, channel)
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("Package") == package and fields.get("Version") == version:
            return fields
    raise AssertionError(f"{package} {version} not in {channel}")


def test_promote_dev_staging_prod_is_the_same_artifact(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0-1"), debs("app", "1.1-1")])
    assert repo.promote("app", "1.0-1", "dev", "staging")["status"] == "promoted"
    assert repo.promote("app", None, "staging", "prod")["new_pin"] == "1.0-1"
    dev, prod = stanza(repo, "dev", "app", "1.0-1"), stanza(repo, "prod", "app", "1.0-1")
    for field in ("Filename", "Size", "SHA256", "MD5sum"):
        assert dev[field] == prod[field]
    pool = [p for p in (tmp_path / "repo" / "pool").rglob("*.deb") if "1.0-1" in p.name]
    assert len(pool) == 1
    assert repo.promote("app", "1.0-1", "staging", "prod")["status"] == "unchanged"
    assert repo.pin_map("prod") == {"app": "1.0-1"}
    assert repo.pin_map("dev") == {"app": "1.1-1"}


def test_promote_outside_policy_is_refused_and_changes_nothing(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0-1")])
    before = snapshot(tmp_path / "repo")
    with pytest.raises(PolicyViolation, match="does not promote from 'dev'"):
        repo.promote("app", "1.0-1", "dev", "prod")
    with pytest.raises(NotFound, match="not in channel 'dev'"):
        repo.promote("app", "9.9", "dev", "staging")
    with pytest.raises(NotFound, match="not in channel"):
        repo.promote("ghost", None, "dev", "staging")
    assert snapshot(tmp_path / "repo") == before


def test_promote_all_dry_run_and_diff(repo: Repository, debs: Callable[..., Path]) -> None:
    repo.publish("dev", [debs("aa", "1.0"), debs("bb", "2.0"), debs("cc", "3.0")])
    repo.promote("aa", None, "dev", "staging")
    plan = repo.promote_all("dev", "staging", dry_run=True)
    assert {(r["package"], r["status"]) for r in plan} == {
        ("aa", "unchanged"),
        ("bb", "planned"),
        ("cc", "planned"),
    }
    assert repo.pin_map("staging") == {"aa": "1.0"}
    diff = {r["package"]: r["action"] for r in repo.diff("dev", "staging")}
    assert diff == {"aa": "none (same)", "bb": "promote 2.0", "cc": "promote 3.0"}
    gen = repo.generation("staging")
    repo.promote_all("dev", "staging")
    assert repo.generation("staging") == gen + 1  # one commit for the whole train
    assert repo.pin_map("staging") == {"aa": "1.0", "bb": "2.0", "cc": "3.0"}


def test_rollback_steps_back_through_history(repo: Repository, debs: Callable[..., Path]) -> None:
    for v in ("1.0", "2.0", "3.0"):
        repo.publish("dev", [debs("app", v)])
    assert repo.rollback("app", "dev")["new_pin"] == "2.0"
    assert repo.rollback("app", "dev")["new_pin"] == "1.0"
    with pytest.raises(PolicyViolation, match="nothing to roll back to"):
        repo.rollback("app", "dev")
    assert repo.rollback("app", "dev", to="3.0")["new_pin"] == "3.0"
    with pytest.raises(NotFound):
        repo.rollback("app", "dev", to="7.0")
    assert [e.new for e in repo.package_state("dev", "app").pin_history] == [  # type: ignore[union-attr]
        "1.0",
        "2.0",
        "3.0",
        "2.0",
        "1.0",
        "3.0",
    ]
    assert len(repo.list_entries("dev")) == 3  # nothing deleted
    actions = [(r["action"], r.get("new")) for r in repo.history("dev", "app")]
    assert actions[-3:] == [("rollback", "2.0"), ("rollback", "1.0"), ("rollback", "3.0")]
    assert all(r["actor"] for r in repo.history("dev", "app"))


def test_history_records_actor_from_env(
    repo: Repository, debs: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APTSHIP_ACTOR", "ci-bot")
    repo.publish("dev", [debs("app", "1.0")])
    repo.promote("app", None, "dev", "staging")
    rows = repo.history()
    assert [(r["action"], r["channel"], r["actor"]) for r in rows] == [
        ("publish", "dev", "ci-bot"),
        ("promote", "staging", "ci-bot"),
    ]
    assert rows[1]["old"] is None and rows[1]["new"] == "1.0"


def test_remove_refuses_pinned_unless_forced(repo: Repository, debs: Callable[..., Path]) -> None:
    repo.publish("dev", [debs("app", "1.0"), debs("app", "2.0")])
    with pytest.raises(PolicyViolation, match="pinned"):
        repo.remove("app", "2.0", "dev")
    assert repo.remove("app", "1.0", "dev")["new_pin"] == "2.0"
    assert repo.remove("app", "2.0", "dev", force=True)["new_pin"] is None
    with pytest.raises(NotFound):
        repo.remove("app", "2.0", "dev")


def test_auto_pin_off_keeps_pin(
    make_repo: Callable[..., Repository], debs: Callable[..., Path]
) -> None:
    repo = make_repo(channels={"dev": {"auto_pin": False}})
    repo.publish("dev", [debs("app", "1.0")])
    assert repo.pin_map("dev") == {}


@pytest.mark.e2e
def test_pins_make_apt_downgrade_and_upgrade(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    for v in ("1.0-1", "2.0-1"):
        repo.publish("dev", [debs("app", v)])
    repo.rollback("app", "dev")  # B (2.0-1) -> A (1.0-1)
    apt = AptEnv(tmp_path / "apt")
    apt.set_installed("app", "2.0-1")
    root = tmp_path / "repo"
    with serve_directory(root) as (url, _log):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        apt.set_preferences(repo.pins("dev"))
        assert apt.update().returncode == 0
        sim = apt.simulate("app")
        assert sim.returncode == 0, sim.output
        assert "DOWNGRADE" in sim.output.upper() and "1.0-1" in sim.output, sim.output
        policy = apt.policy("app").output
        assert "Candidate: 1.0-1" in policy, policy
        assert "1001" in policy, policy
        repo.publish("dev", [debs("app", "3.0-1")])  # C: newest, publish pins it
        apt.set_preferences(repo.pins("dev"))
        assert apt.update().returncode == 0
        sim = apt.simulate("app")
        assert "Inst app [2.0-1] (3.0-1" in sim.output, sim.output
        assert "Candidate: 3.0-1" in apt.policy("app").output


@pytest.mark.e2e
def test_promoted_pin_upgrades_prod_host(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0-1"), debs("app", "3.0-1")])
    for v in ("1.0-1", "3.0-1"):
        repo.promote("app", v, "dev", "staging")
        repo.promote("app", v, "staging", "prod")
    repo.rollback("app", "prod")
    apt = AptEnv(tmp_path / "apt")
    apt.set_installed("app", "3.0-1")
    root = tmp_path / "repo"
    with serve_directory(root) as (url, _log):
        apt.add_source(url, "prod", root / KEYRING_KEY)
        apt.set_preferences(repo.pins("prod"))
        assert apt.update().returncode == 0
        assert "Inst app [3.0-1] (1.0-1" in apt.simulate("app").output
        repo.promote("app", "3.0-1", "staging", "prod")
        apt.set_preferences(repo.pins("prod"))
        assert apt.update().returncode == 0
        out = apt.simulate("app").output
        assert "app is already the newest version (3.0-1)" in out, out


@pytest.mark.e2e
def test_retention_keeps_newest_and_pinned(
    make_repo: Callable[..., Repository], debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repo(channels={"dev": {"keep": 3, "auto_pin": False}})
    repo.publish("dev", [debs("app", "1.0")])
    repo.rollback("app", "dev", to="1.0")  # pin the oldest by hand
    for v in ("2.0", "3.0", "4.0", "5.0", "6.0"):
        repo.publish("dev", [debs("app", v)])
    assert repo.pin_map("dev") == {"app": "1.0"}
    versions = sorted(r["version"] for r in repo.list_entries("dev"))
    assert versions == ["1.0", "4.0", "5.0", "6.0"]
    root = tmp_path / "repo"
    apt = AptEnv(tmp_path / "apt")
    with serve_directory(root) as (url, _log):
        apt.add_source(url, "dev", root / KEYRING_KEY)
        assert apt.update().returncode == 0
        for v in versions:
            got = apt.download(f"app={v}")
            assert got.returncode == 0, got.output
        assert apt.download("app=2.0").returncode != 0


def test_pins_file_format(repo: Repository, debs: Callable[..., Path]) -> None:
    repo.publish("dev", [debs("app", "1:2.0~rc1-1"), debs("lib", "0.1")])
    text = repo.pins("dev")
    assert "Package: app\nPin: version 1:2.0~rc1-1\nPin-Priority: 1001\n" in text
    assert "Package: lib\nPin: version 0.1\nPin-Priority: 1001\n" in text


def test_verify_clean_then_reports_each_problem(
    make_repo: RepoFactory,
    debs: Callable[..., Path],
    tmp_path: Path,
    gpg_key: tuple[Path, str],
) -> None:
    repo = make_repo(index_formats=["plain", "gz", "xz"])  # a plain index to tamper with
    repo.publish("dev", [debs("app", "1.0"), debs("app", "2.0"), debs("lib", "1.0")])
    repo.publish("dev", [debs("intact", "1.0")])
    repo.promote("intact", "1.0", "dev", "staging")
    assert verify(repo) == []
    root = tmp_path / "repo"
    entries = {(r["package"], r["version"]): r["filename"] for r in repo.list_entries("dev")}
    (root / entries[("app", "1.0")]).unlink()
    corrupt = root / entries[("lib", "1.0")]
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + b"X")
    index = root / "dists/dev/main/binary-amd64/Packages"
    data = index.read_bytes()
    index.unlink()  # a hard link to its by-hash copy (LocalStorage.copy): own inode
    index.write_bytes(data)
    index.write_text(index.read_text().replace("Priority: optional", "Priority: required", 1))
    problems = verify(repo)
    text = "\n".join(problems)
    assert f"{entries[('app', '1.0')]}: missing" in text
    assert f"{entries[('lib', '1.0')]}: SHA256 differs" in text
    assert "dists/dev/main/binary-amd64/Packages: SHA256 differs from Release" in text
    fast = "\n".join(verify(repo, fast=True))
    assert "SHA256 differs from the index" not in fast and "missing" in fast
    # an InRelease signed by a different key
    from publisher.signing import generate_dev_key

    other_home = tmp_path / "other-gnupg"
    other = generate_dev_key(other_home, "intruder", "intruder@aptship.invalid")
    import gnupg

    forged = gnupg.GPG(gnupghome=str(other_home)).sign(
        (root / "dists/staging/Release").read_bytes(), keyid=other, clearsign=True
    )
    (root / "dists/staging/InRelease").write_bytes(bytes(forged.data))
    staging = "\n".join(verify(repo, channels=["staging"]))
    assert "InRelease: signature does not verify" in staging
    repo.reindex(["staging"])
    assert verify(repo, channels=["staging"]) == []


def test_gc_deletes_orphans_a_grace_after_marking_them(
    repo: Repository, debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo.publish("dev", [debs("app", "1.0"), debs("app", "2.0")])
    root = tmp_path / "repo"
    orphan = root / "pool/main/o/orphan/orphan_1.0_amd64.deb"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"not referenced")
    old = time.time() - 7 * 86400
    os.utime(orphan, (old, old))  # the grace counts from gc's mark, not from the mtime
    referenced = {r["filename"] for r in repo.list_entries()}
    now = time.time()
    assert collect(repo, grace=3600, dry_run=False, clock=lambda: now) == []  # marks
    assert collect(repo, grace=3600, dry_run=False, clock=lambda: now + 3000) == []
    key = "pool/main/o/orphan/orphan_1.0_amd64.deb"
    dry = collect(repo, grace=3600, dry_run=True, clock=lambda: now + 3600)
    assert key in dry and orphan.exists()
    deleted = collect(repo, grace=3600, dry_run=False, clock=lambda: now + 3600)
    assert key in deleted
    assert not orphan.exists()
    assert all((root / key).exists() for key in referenced)
    assert not set(deleted) & referenced
    assert verify(repo) == []


def test_republishing_same_bytes_does_not_undo_a_rollback(
    repo: Repository, debs: Callable[..., Path]
) -> None:
    old, new = debs("app", "1.0"), debs("app", "1.1")
    repo.publish("dev", [old, new])
    assert repo.pin_map("dev") == {"app": "1.1"}
    assert [e.new for e in repo.package_state("dev", "app").pin_history] == ["1.1"]  # type: ignore[union-attr]
    repo.publish("dev", [debs("app", "0.9")])
    repo.rollback("app", "dev", to="1.0")
    result = repo.publish("dev", [new])
    assert result[0]["status"] == "unchanged" and result[0]["pinned"] is False
    assert repo.pin_map("dev") == {"app": "1.0"}
