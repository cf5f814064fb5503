"""Distributions as a dimension of every channel: config, suites, pool namespacing,
publish routing by the ``+debNN`` stamp, and releases promoted and rolled back across
distributions (docs/cli.md, "Releases across distributions")."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher.config import parse_config
from publisher.distributions import release_key, stamped_codename
from publisher.errors import (
    ConfigError,
    DependencyUnsatisfied,
    NotFound,
    PolicyViolation,
    ReleaseIncomplete,
    ReleaseSplit,
    StorageError,
    UsageError,
    WrongDistribution,
)
from publisher.lifecycle import LifecycleOps
from publisher.repo import Repository
from publisher.verify import verify
from tests.conftest import RepoFactory, config_dict, packages_text, snapshot

DebFactory = Callable[..., Path]
DISTS = ["bookworm", "trixie"]


@pytest.fixture
def drepo(make_repo: RepoFactory) -> Repository:
    return make_repo(distributions=DISTS)


def pins_of(repo: Repository, suite: str) -> dict[str, str]:
    return repo.pin_map(suite)


# -- config ---------------------------------------------------------------------------
def test_every_channel_exists_per_distribution(drepo: Repository) -> None:
    cfg = drepo.config
    assert cfg.distributions == ("bookworm", "trixie")
    assert set(cfg.channels) == {f"{d}-{c}" for d in DISTS for c in ("dev", "staging", "prod")}
    assert cfg.groups["prod"] == ("bookworm-prod", "trixie-prod")
    prod = cfg.channel("trixie-prod")
    assert (prod.distribution, prod.group, prod.promote_from) == (
        "trixie",
        "prod",
        ("trixie-staging",),
    )
    with pytest.raises(NotFound, match="bookworm-prod, trixie-prod"):
        cfg.channel("prod")
    assert [s.name for s in cfg.suites("prod")] == ["bookworm-prod", "trixie-prod"]


def test_single_distribution_config_is_unchanged(repo: Repository) -> None:
    assert repo.config.distributions == ()
    assert repo.config.groups == {}
    assert set(repo.config.channels) == {"dev", "staging", "prod"}


@pytest.mark.parametrize(
    ("distributions", "engine", "message"),
    [
        (["bookworm", "sid2"], "native", "unknown distribution 'sid2'"),
        (["bookworm", "bookworm"], "native", "names a distribution twice"),
        (["bookworm"], "aptly", "needs repository.engine = 'native'"),
    ],
)
def test_bad_distributions_are_config_errors(
    tmp_path: Path, distributions: list[str], engine: str, message: str
) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path)}, tmp_path, ["X"])
    data["repository"].update(distributions=distributions, engine=engine)
    data["aptly"] = {"url": "http://127.0.0.1:1"}
    with pytest.raises(ConfigError, match=message):
        parse_config(data, tmp_path / "aptship.toml")


def test_webhook_channels_cover_every_suite(tmp_path: Path) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path)}, tmp_path, ["X"])
    data["repository"]["distributions"] = DISTS
    data["webhooks"] = {
        "endpoints": {
            "ci": {"url": "http://127.0.0.1:9/x", "secret_env": "S", "channels": ["prod"]}
        }
    }
    cfg = parse_config(data, tmp_path / "aptship.toml")
    assert cfg.webhooks.endpoints["ci"].channels == ("bookworm-prod", "trixie-prod")


# -- versions -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "codename"),
    [
        ("1.4.2-1+deb12", "bookworm"),
        ("1.4.2-1+deb13", "trixie"),
        ("1:1.4.2-3+deb13u2", "trixie"),
        ("1.4.2-1", None),
        ("1.4.2+deb12", None),  # a native version has no revision to stamp
        ("1.4.2-1+deb99", "deb99"),
    ],
)
def test_stamp_is_read_from_the_revision(version: str, codename: str | None) -> None:
    assert stamped_codename(version) == codename


@pytest.mark.parametrize(
    ("a", "op", "b"),
    [
        ("1.4.2-1+deb12", "lt", "1.4.2-1+deb13"),
        ("1.4.2-1", "lt", "1.4.2-1+deb12"),
        ("1.4.2-1+deb13", "lt", "1.4.2-2+deb12"),
        ("1.4.2-1+deb13", "lt", "1.4.3~rc1-1+deb12"),
        ("1.4.2-1+deb12", "lt", "1.4.2-1+deb12u1"),
    ],
)
def test_stamped_versions_sort_in_dpkg_order(a: str, op: str, b: str) -> None:
    from debian.debian_support import Version

    assert subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0
    assert Version(a) < Version(b)


def test_release_key_maps_pep440() -> None:
    assert release_key("1.4.2") == "1.4.2"
    assert release_key("2.0.0rc1") == "2.0.0~rc1"
    assert release_key("1!2.0") == "2.0"


# -- publish routing ------------------------------------------------------------------
def test_publish_routes_each_deb_to_its_distribution(drepo: Repository, debs: DebFactory) -> None:
    b = debs("svc", "1.0-1+deb12", "all")
    t = debs("svc", "1.0-1+deb13", "all")
    out = drepo.publish("dev", [b, t])
    assert [(r["channel"], r["version"]) for r in out] == [
        ("bookworm-dev", "1.0-1+deb12"),
        ("trixie-dev", "1.0-1+deb13"),
    ]
    assert out[0]["filename"] == "pool/bookworm/main/s/svc/svc_1.0-1+deb12_all.deb"
    assert out[1]["filename"].startswith("pool/trixie/main/")
    assert pins_of(drepo, "bookworm-dev") == {"svc": "1.0-1+deb12"}
    assert pins_of(drepo, "trixie-dev") == {"svc": "1.0-1+deb13"}
    packages = packages_text(drepo.storage, "trixie-dev")
    assert "1.0-1+deb13" in packages and "deb12" not in packages


def test_same_version_different_bytes_per_distribution(
    drepo: Repository, debs: DebFactory, tmp_path: Path
) -> None:
    """Immutability holds per distribution: --dist names it for unstamped builds."""
    one = debs("svc", "1.0-1", "all", payload="bookworm build\n")
    drepo.publish("dev", [one], dist="bookworm")
    other = tmp_path / "other"
    other.mkdir()
    from tests.debs import build_deb

    two = build_deb(other, "svc", "1.0-1", "all", payload="trixie build\n")
    drepo.publish("dev", [two], dist="trixie")
    b = drepo.package_state("bookworm-dev", "svc")
    t = drepo.package_state("trixie-dev", "svc")
    assert b is not None and t is not None
    assert b.entries[0].sha256 != t.entries[0].sha256
    assert b.entries[0].filename != t.entries[0].filename


def test_wrong_distribution_is_refused_and_changes_nothing(
    drepo: Repository, debs: DebFactory
) -> None:
    drepo.publish("dev", [debs("svc", "1.0-1+deb13", "all")])
    root = Path(str(drepo.config.storage.path))
    before = snapshot(root)
    bookworm = debs("svc", "2.0-1+deb12", "all")
    with pytest.raises(WrongDistribution, match="a bookworm build does not go into 'trixie-dev'"):
        drepo.publish("trixie-dev", [bookworm])
    with pytest.raises(WrongDistribution, match="stamped for bookworm, not trixie"):
        drepo.publish("dev", [bookworm], dist="trixie")
    with pytest.raises(WrongDistribution, match="no \\+debNN distribution stamp"):
        drepo.publish("dev", [debs("svc", "3.0-1", "all")])
    with pytest.raises(WrongDistribution, match="not carried"):
        drepo.publish("dev", [debs("svc", "3.0-1+deb11", "all")])
    with pytest.raises(WrongDistribution, match="not carried"):
        drepo.publish("dev", [debs("svc", "3.0-1", "all")], dist="forky")
    # one bad file in a batch: nothing of the batch is written
    with pytest.raises(WrongDistribution):
        drepo.publish("dev", [debs("svc", "4.0-1+deb12", "all"), debs("svc", "4.0-1", "all")])
    assert snapshot(root) == before


def test_dist_without_distributions_is_a_usage_error(repo: Repository, debs: DebFactory) -> None:
    with pytest.raises(UsageError, match="--dist needs"):
        repo.publish("dev", [debs("svc", "1.0-1", "all")], dist="bookworm")


# -- releases -------------------------------------------------------------------------
def two_releases(repo: Repository, debs: DebFactory, package: str = "svc") -> None:
    for release in ("1.0", "2.0"):
        files = [debs(package, f"{release}-1+deb{n}", "all") for n in (12, 13)]
        repo.publish("dev", files)


def test_promote_release_moves_every_distribution(drepo: Repository, debs: DebFactory) -> None:
    two_releases(drepo, debs)
    r = drepo.promote("svc", "1.0", "dev", "staging")
    assert r["release"] == "1.0" and r["status"] == "promoted" and r["missing"] == []
    assert [b["to"] for b in r["builds"]] == ["bookworm-staging", "trixie-staging"]
    assert pins_of(drepo, "bookworm-staging") == {"svc": "1.0-1+deb12"}
    assert pins_of(drepo, "trixie-staging") == {"svc": "1.0-1+deb13"}
    drepo.promote("svc", "2.0", "dev", "staging")
    again = drepo.promote("svc", "2.0", "dev", "staging")
    assert again["status"] == "unchanged"
    assert drepo.channel_summary("staging")["packages"]["svc"] == {
        "pin": "2.0",
        "builds": {"bookworm-staging": "2.0-1+deb12", "trixie-staging": "2.0-1+deb13"},
    }
    # rollback of the release: both distributions go back
    back = drepo.rollback("svc", "staging")
    assert (back["old_pin"], back["new_pin"]) == ("2.0", "1.0")
    assert pins_of(drepo, "bookworm-staging") == {"svc": "1.0-1+deb12"}
    assert pins_of(drepo, "trixie-staging") == {"svc": "1.0-1+deb13"}
    forward = drepo.rollback("svc", "staging", "2.0")
    assert forward["new_pin"] == "2.0"
    assert not verify(drepo)


def test_promote_without_version_takes_each_distributions_pin(
    drepo: Repository, debs: DebFactory
) -> None:
    two_releases(drepo, debs)
    r = drepo.promote("svc", None, "dev", "staging")
    assert r["release"] == "2.0"


def test_incomplete_release_is_refused_unless_partial(drepo: Repository, debs: DebFactory) -> None:
    drepo.publish("dev", [debs("svc", "1.0-1+deb12", "all")])
    drepo.publish("dev", [debs("svc", "0.9-1+deb13", "all")])
    root = Path(str(drepo.config.storage.path))
    before = snapshot(root)
    with pytest.raises(ReleaseIncomplete, match="no build in trixie-dev"):
        drepo.promote("svc", "1.0", "dev", "staging")
    with pytest.raises(ReleaseIncomplete):
        drepo.promote("svc", "1.0", "dev", "staging", dry_run=True)
    assert snapshot(root) == before
    r = drepo.promote("svc", "1.0", "dev", "staging", allow_partial=True)
    assert r["missing"] == ["trixie-staging"]
    assert pins_of(drepo, "bookworm-staging") == {"svc": "1.0-1+deb12"}
    assert pins_of(drepo, "trixie-staging") == {}
    with pytest.raises(NotFound, match=r"no build of svc 7\.0"):
        drepo.promote("svc", "7.0", "dev", "staging", allow_partial=True)


def test_exact_debian_version_moves_one_distribution(drepo: Repository, debs: DebFactory) -> None:
    two_releases(drepo, debs)
    r = drepo.promote("svc", "1.0-1+deb13", "dev", "staging")
    assert [b["to"] for b in r["builds"]] == ["trixie-staging"]
    assert pins_of(drepo, "bookworm-staging") == {}
    assert pins_of(drepo, "trixie-staging") == {"svc": "1.0-1+deb13"}


def test_suites_and_groups_do_not_mix(drepo: Repository, debs: DebFactory) -> None:
    two_releases(drepo, debs)
    with pytest.raises(UsageError, match="between two configured channels"):
        drepo.promote("svc", "1.0", "bookworm-dev", "staging")
    # a suite is still an ordinary channel
    one = drepo.promote("svc", "1.0-1+deb12", "bookworm-dev", "bookworm-staging")
    assert one["status"] == "promoted"


def test_dependency_check_per_distribution(drepo: Repository, debs: DebFactory) -> None:
    for n in (12, 13):
        drepo.publish("dev", [debs("svc-lib", f"2.0-1+deb{n}", "all")])
        drepo.publish("dev", [debs("svc-a", f"1.0-1+deb{n}", "all", depends="svc-lib (>= 2.0)")])
    root = Path(str(drepo.config.storage.path))
    before = snapshot(root)
    with pytest.raises(DependencyUnsatisfied, match="svc-lib"):
        drepo.promote("svc-a", "1.0", "dev", "staging")
    with pytest.raises(DependencyUnsatisfied, match="svc-lib"):  # --dry-run: the same check
        drepo.promote("svc-a", "1.0", "dev", "staging", dry_run=True)
    assert snapshot(root) == before
    r = drepo.promote("svc-a", "1.0", "dev", "staging", with_deps=True)
    assert [d["package"] for b in r["builds"] for d in b["dependencies"]] == ["svc-lib"] * 2
    for suite in ("bookworm-staging", "trixie-staging"):
        assert set(pins_of(drepo, suite)) == {"svc-a", "svc-lib"}


def test_dependency_met_in_one_distribution_only_is_refused(
    drepo: Repository, debs: DebFactory
) -> None:
    """The check runs in each distribution: bookworm's svc-lib does not help trixie."""
    drepo.publish("dev", [debs("svc-lib", "2.0-1+deb12", "all")])
    drepo.promote("svc-lib", "2.0", "dev", "staging", allow_partial=True)
    for n in (12, 13):
        drepo.publish("dev", [debs("svc-a", f"1.0-1+deb{n}", "all", depends="svc-lib (>= 2.0)")])
    with pytest.raises(DependencyUnsatisfied, match="trixie-staging"):
        drepo.promote("svc-a", "1.0", "dev", "staging")
    assert "svc-a" not in pins_of(drepo, "bookworm-staging")


def test_split_release_is_reported_and_completed_by_a_rerun(
    drepo: Repository, debs: DebFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_releases(drepo, debs)
    real = LifecycleOps.promote

    def failing(self: Any, package: str, version: Any, src: str, dst: str, **kw: Any) -> Any:
        if dst == "trixie-staging" and not kw.get("dry_run"):
            raise StorageError("injected: storage went away")
        return real(self, package, version, src, dst, **kw)

    monkeypatch.setattr(LifecycleOps, "promote", failing)
    with pytest.raises(ReleaseSplit, match="committed in bookworm-staging, then trixie-staging"):
        drepo.promote("svc", "1.0", "dev", "staging")
    problems = verify(drepo)
    assert len(problems) == 1 and "was interrupted" in problems[0]
    assert "run it again" in problems[0]
    monkeypatch.setattr(LifecycleOps, "promote", real)
    r = drepo.promote("svc", "1.0", "dev", "staging")
    assert [b["status"] for b in r["builds"]] == ["unchanged", "promoted"]
    assert verify(drepo) == []


def test_failure_in_the_first_suite_changes_nothing(
    drepo: Repository, debs: DebFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_releases(drepo, debs)
    real = LifecycleOps.promote

    def failing(self: Any, package: str, version: Any, src: str, dst: str, **kw: Any) -> Any:
        if not kw.get("dry_run"):
            raise StorageError("injected")
        return real(self, package, version, src, dst, **kw)

    monkeypatch.setattr(LifecycleOps, "promote", failing)
    with pytest.raises(StorageError, match="injected"):
        drepo.promote("svc", "1.0", "dev", "staging")
    assert verify(drepo) == []


def test_rollback_refused_in_one_distribution_changes_none(
    drepo: Repository, debs: DebFactory
) -> None:
    two_releases(drepo, debs)
    drepo.promote("svc", "1.0", "dev", "staging")
    drepo.promote("svc", "2.0", "dev", "staging")
    drepo.rollback("svc", "trixie-staging")  # trixie alone back to 1.0
    with pytest.raises(PolicyViolation, match="already pinned"):
        drepo.rollback("svc", "staging", "1.0")
    assert pins_of(drepo, "bookworm-staging") == {"svc": "2.0-1+deb12"}


def test_pins_diff_history_list_per_release(drepo: Repository, debs: DebFactory) -> None:
    two_releases(drepo, debs)
    drepo.promote("svc", "1.0", "dev", "staging")
    text = drepo.pins("staging")
    assert "Pin: version 1.0-1+deb12" in text and "Pin: version 1.0-1+deb13" in text
    rows = drepo.diff("dev", "staging")
    assert rows == [
        {
            "package": "svc",
            "dev": "2.0",
            "staging": "1.0",
            "builds": {
                "bookworm": {"dev": "2.0-1+deb12", "staging": "1.0-1+deb12"},
                "trixie": {"dev": "2.0-1+deb13", "staging": "1.0-1+deb13"},
            },
            "action": "promote 2.0",
        }
    ]
    events = drepo.history("staging", "svc")
    assert {e["channel"] for e in events} == {"bookworm-staging", "trixie-staging"}
    listed = drepo.list_entries("dev")
    assert {r["channel"] for r in listed} == {"bookworm-dev", "trixie-dev"}
    assert len(listed) == 4


# -- migration ------------------------------------------------------------------------
def test_migrate_single_distribution_repository(
    make_repo: RepoFactory, debs: DebFactory, tmp_path: Path
) -> None:
    old = make_repo()
    old.publish("dev", [debs("svc", "1.0-1", "all"), debs("lib", "1.0-1", "all")])
    old.publish("dev", [debs("svc", "2.0-1", "all")])
    old.promote("svc", "1.0-1", "dev", "staging")
    old.rollback("svc", "dev")
    before = {ch: old.pin_map(ch) for ch in ("dev", "staging", "prod")}

    new = make_repo(distributions=DISTS)
    with pytest.raises(UsageError, match="not in \\[repository\\] distributions"):
        new.migrate_to_distribution("forky")
    with pytest.raises(UsageError, match="has no \\[repository\\] distributions"):
        old.migrate_to_distribution("bookworm")
    copied = new.migrate_to_distribution("bookworm")
    assert copied == {"bookworm-dev": 2, "bookworm-staging": 1, "bookworm-prod": 0}
    for ch, pins in before.items():
        assert new.pin_map(f"bookworm-{ch}") == pins
        assert new.pin_map(f"trixie-{ch}") == {}
    ps = new.package_state("bookworm-dev", "svc")
    assert ps is not None and ps.entries[0].filename.startswith("pool/main/")  # not moved
    assert verify(new) == []
    # gc keeps the old channels' state and indexes: removing `distributions` goes back
    from publisher.gc import references

    kept = references(new)
    assert old.states.read_head("dev").shard_keys() <= kept
    assert {r["filename"] for r in old.list_entries()} <= kept
    # a second run copies nothing; the migrated pin stack still rolls forward/back
    assert set(new.migrate_to_distribution("bookworm").values()) == {0}
    assert new.rollback("svc", "bookworm-dev", "2.0-1")["new_pin"] == "2.0-1"
    new.publish("dev", [debs("svc", "3.0-1+deb12", "all")])
    assert new.pin_map("bookworm-dev")["svc"] == "3.0-1+deb12"
    # the CLI spelling
    from tests.server.conftest import toml_dumps

    data = config_dict(
        {"type": "local", "path": str(tmp_path / "repo")},
        Path(str(new.config.signing.gnupghome)),
        list(new.config.signing.keys),
    )
    data["repository"]["distributions"] = DISTS
    cfg = tmp_path / "cli.toml"
    cfg.write_text(toml_dumps(data))
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "aptship"),
            "--config",
            str(cfg),
            "migrate",
            "distributions",
            "--to",
            "bookworm",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert '"bookworm-dev": 0' in out.stdout
