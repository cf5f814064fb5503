"""The fleet model: report validation, host states, rollouts, and the record store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.config import FleetConfig, parse_config
from publisher.errors import (
    ConfigError,
    HostLimit,
    HostOwned,
    InvalidReport,
    ReportTooLarge,
)
from publisher.fleet import HostRecord, fleet_view, host_key, host_view, rollouts, state_counts
from publisher.fleet_store import FleetStore
from publisher.host_report import Report, now_iso, parse_iso, parse_report
from publisher.storage.local import LocalStorage
from tests.conftest import config_dict
from tests.fleetdata import HOSTILE, body

LIMITS = FleetConfig()
NOW = parse_iso("2026-11-30T21:00:00Z")
PINS = {"svc": "1.4.2-1", "other-svc": "2.0-1"}


def record(host_id: str, packages: dict[str, str | None], age: float = 0) -> HostRecord:
    return HostRecord(host_id, host_id, "tok", packages, None, now_iso(NOW - age))


# -- reports --------------------------------------------------------------------------
def test_a_good_report_is_parsed_and_its_time_normalised() -> None:
    report = parse_report(
        body(
            packages={"svc": "1.4.2-1", "other-svc": None}, apt_update="2026-11-30T22:00:00+01:00"
        ),
        LIMITS,
    )
    assert report == Report("web-1", {"svc": "1.4.2-1", "other-svc": None}, "2026-11-30T21:00:00Z")
    assert parse_report(b'{"hostname": "h", "packages": {}}', LIMITS).packages == {}


DEEP = b"[" * 20000 + b"]" * 20000


@pytest.mark.parametrize(("what", "data"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_reports_are_refused(what: str, data: bytes) -> None:
    with pytest.raises(InvalidReport) as info:
        parse_report(data, LIMITS)
    assert type(info.value) is InvalidReport
    assert info.value.http_status == 400


def test_an_oversized_report_is_413() -> None:
    data = body(hostname="a" * 200, packages={f"p{i:04d}": "1.0-1" for i in range(900)})
    assert len(data) > 1024
    with pytest.raises(ReportTooLarge) as info:
        parse_report(data, FleetConfig(max_report_bytes=1024))
    assert info.value.http_status == 413
    parse_report(data, LIMITS)  # the same report under the default limit is fine


def test_limits_come_from_config(tmp_path: Path) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path)}, tmp_path, ["K"])
    data["fleet"] = {"max_packages": 2, "stale_after": 60, "report_interval": 0.5}
    cfg = parse_config(data, tmp_path / "aptship.toml")
    assert cfg.fleet.max_packages == 2 and cfg.fleet.stale_after == 60.0
    with pytest.raises(InvalidReport):
        parse_report(body(packages={"aa": None, "bb": None, "cc": None}), cfg.fleet)
    for bad in ({"max_packages": 0}, {"stale_after": -1}, {"stale_after": True}, {"nope": 1}):
        data["fleet"] = bad
        with pytest.raises(ConfigError):
            parse_config(data, tmp_path / "aptship.toml")


# -- states and rollouts ----------------------------------------------------------------
def test_host_states() -> None:
    on = record("a", {"svc": "1.4.2-1", "other-svc": None, "unpinned": "9"})
    off = record("b", {"svc": "1.4.1-1", "other-svc": "2.0-1"})
    old = record("c", {"svc": "1.4.2-1"}, age=3601)
    assert host_view(on, PINS, NOW, 3600)["state"] == "converged"
    view = host_view(off, PINS, NOW, 3600)
    assert view["state"] == "behind" and view["behind"] == ["svc"]
    assert view["pins"] == {"other-svc": "2.0-1", "svc": "1.4.2-1"}
    assert host_view(old, PINS, NOW, 3600)["state"] == "stale"
    assert host_view(old, PINS, NOW, 7200)["state"] == "converged"
    # restricted to one package, a host behind on another one is converged
    assert host_view(off, PINS, NOW, 3600, package="other-svc")["state"] == "converged"
    assert state_counts([on, off, old], PINS, NOW, 3600) == {
        "converged": 1,
        "behind": 1,
        "stale": 1,
    }


def test_on_pin_uses_dpkg_equality() -> None:
    pins = {"svc": "1.0"}
    assert host_view(record("a", {"svc": "0:1.0"}), pins, NOW, 60)["state"] == "converged"
    assert host_view(record("a", {"svc": "1.0-0"}), pins, NOW, 60)["state"] == "converged"
    assert host_view(record("a", {"svc": "1.0.0"}), pins, NOW, 60)["state"] == "behind"


def test_rollout_counts_live_hosts_and_stale_ones_apart() -> None:
    records = [record(f"h{i}", {"svc": "1.4.2-1"}) for i in range(37)]
    records += [record(f"x{i}", {"svc": "1.4.1-1"}) for i in range(3)]
    records += [record("gone", {"svc": "1.0-1"}, age=9999), record("none", {"svc": None})]
    roll = rollouts(records, PINS, NOW, 3600)["svc"]
    assert roll.line() == "svc: 37/40 hosts on 1.4.2-1; 3 behind; 1 stale"
    assert (roll.hosts, roll.on_pin, roll.behind, roll.stale) == (40, 37, 3, 1)
    assert roll.reached(90) and not roll.reached(95) and not roll.reached(100)
    assert rollouts([], PINS, NOW, 3600, ["svc"])["svc"].reached(100)  # nobody runs it


def test_fleet_view_filters_by_package() -> None:
    records = [record("a", {"svc": "1.4.2-1"}), record("b", {"other-svc": "1.0-1"})]
    view = fleet_view("prod", records, PINS, 3600, now=NOW)
    assert [h["host_id"] for h in view["hosts"]] == ["a", "b"]
    assert view["states"] == {"converged": 1, "behind": 1, "stale": 0}
    assert [r["summary"] for r in view["rollout"]] == [
        "other-svc: 0/1 hosts on 2.0-1; 1 behind",
        "svc: 1/1 hosts on 1.4.2-1; 0 behind",
    ]
    only = fleet_view("prod", records, PINS, 3600, package="svc", now=NOW)
    assert [h["host_id"] for h in only["hosts"]] == ["a"]
    assert only["pins"] == {"svc": "1.4.2-1"} and len(only["rollout"]) == 1


# -- the record store -------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> FleetStore:
    return FleetStore(LocalStorage(tmp_path / "repo"), FleetConfig(max_hosts_per_token=2))


REPORT = Report("web-1", {"svc": "1.4.2-1"}, None)


def test_records_are_stored_per_channel_and_host(store: FleetStore, tmp_path: Path) -> None:
    rec = store.report("prod", "0123abcd", "web-token", REPORT)
    path = tmp_path / "repo" / ".aptship" / "hosts" / "prod" / "0123abcd.json"
    assert json.loads(path.read_text()) == rec.to_json()
    assert set(rec.to_json()) == {
        "host_id",
        "hostname",
        "token",
        "packages",
        "apt_update",
        "last_seen",
    }
    assert store.records("prod") == [rec] and store.records("staging") == []
    again = store.report("prod", "0123abcd", "web-token", Report("web-1b", {}, None))
    assert store.records("prod") == [again]


def test_a_token_cannot_overwrite_another_tokens_host(store: FleetStore, tmp_path: Path) -> None:
    store.report("prod", "h1", "alice", REPORT)
    path = tmp_path / "repo" / host_key("prod", "h1")
    before = path.read_bytes()
    with pytest.raises(HostOwned):
        store.report("prod", "h1", "mallory", Report("evil", {}, None))
    assert path.read_bytes() == before


def test_hosts_per_token_are_capped(store: FleetStore) -> None:
    store.report("prod", "h1", "alice", REPORT)
    store.report("prod", "h2", "alice", REPORT)
    with pytest.raises(HostLimit):
        store.report("prod", "h3", "alice", REPORT)
    store.report("prod", "h1", "alice", REPORT)  # updating an own host is fine
    store.report("prod", "h3", "bob", REPORT)  # another token has its own budget
    store.report("staging", "h3", "alice", REPORT)  # and so has another channel
    assert [r.host_id for r in store.records("prod")] == ["h1", "h2", "h3"]


def test_unreadable_records_are_skipped(store: FleetStore, tmp_path: Path) -> None:
    store.report("prod", "good", "alice", REPORT)
    bad = tmp_path / "repo" / ".aptship" / "hosts" / "prod"
    (bad / "junk.json").write_text("{not json")
    (bad / "half.json").write_text('{"host_id": "half"}')
    assert [r.host_id for r in store.records("prod")] == ["good"]


def test_host_ids_are_checked() -> None:
    for bad in ("", "A", "-a", "a/b", "..", "a" * 65, "a b"):
        with pytest.raises(InvalidReport):
            host_key("prod", bad)
    assert host_key("prod", "0" * 64).endswith("/prod/" + "0" * 64 + ".json")


class RacingStorage(LocalStorage):
    """Another token's report lands between our read and our write (once)."""

    def __init__(self, root: Path, rival: Callable[[], None]) -> None:
        super().__init__(root)
        self.rival: Callable[[], None] | None = rival

    def read_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            return super().read_with_etag(key)
        finally:
            if self.rival is not None:
                rival, self.rival = self.rival, None
                rival()


def test_racing_tokens_never_overwrite_each_other(tmp_path: Path) -> None:
    other = FleetStore(LocalStorage(tmp_path / "repo"), LIMITS)
    storage = RacingStorage(
        tmp_path / "repo", lambda: other.report("prod", "h1", "mallory", Report("m", {}))
    )
    with pytest.raises(HostOwned):
        FleetStore(storage, LIMITS).report("prod", "h1", "alice", REPORT)
    assert [(r.host_id, r.token) for r in other.records("prod")] == [("h1", "mallory")]
    # the same race on an update: the compare-and-swap loses, re-reads, and wins cleanly
    storage.rival = lambda: other.report("prod", "h1", "mallory", Report("m2", {}))
    FleetStore(storage, LIMITS).report("prod", "h1", "mallory", REPORT)
    assert other.records("prod")[0].hostname == "web-1"
