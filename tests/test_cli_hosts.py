"""`aptship hosts` and `--wait`, local (remote mode: tests/server/test_fleet_live.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.cli import Context
from publisher.cli_hosts import parse_percent, wait_for_rollout
from publisher.config import load_config
from publisher.errors import RolloutTimeout, UsageError
from publisher.fleet_store import FleetStore
from publisher.host_report import Report
from publisher.repo import Repository
from tests.clirun import Cli

DebFactory = Callable[..., Path]


def fleet_of(cli: Cli) -> tuple[Repository, FleetStore]:
    repo = Repository(load_config(cli.config))
    return repo, FleetStore(repo.storage, repo.config.fleet)


@pytest.fixture
def prod(cli: Cli, debs: DebFactory) -> FleetStore:
    """svc 1.0-1 pinned in prod, 1.1-1 in staging; web-1 runs 1.0-1, web-2 0.9-1."""
    cli("publish", "--channel", "dev", str(debs("svc", "1.0-1")))
    cli("promote", "svc", "--from", "dev", "--to", "staging")
    cli("promote", "svc", "--from", "staging", "--to", "prod")
    cli("publish", "--channel", "dev", str(debs("svc", "1.1-1")))
    cli("promote", "svc", "--from", "dev", "--to", "staging")
    _repo, store = fleet_of(cli)
    store.report("prod", "web-1", "hosts", Report("web-1.example", {"svc": "1.0-1"}))
    store.report("prod", "web-2", "hosts", Report("web-2.example", {"svc": "0.9-1", "x1": None}))
    return store


def test_hosts_json_and_text(cli: Cli, prod: FleetStore) -> None:
    view = cli.json("hosts", "--channel", "prod")
    assert isinstance(view, dict)
    assert [(h["host_id"], h["hostname"], h["state"]) for h in view["hosts"]] == [
        ("web-1", "web-1.example", "converged"),
        ("web-2", "web-2.example", "behind"),
    ]
    assert view["hosts"][1]["behind"] == ["svc"] and view["pins"] == {"svc": "1.0-1"}
    assert view["rollout"] == [
        {
            "package": "svc",
            "pin": "1.0-1",
            "hosts": 2,
            "on_pin": 1,
            "behind": 1,
            "stale": 0,
            "summary": "svc: 1/2 hosts on 1.0-1; 1 behind",
        }
    ]
    text = cli("hosts", "--channel", "prod")
    assert "web-2.example" in text and "svc=0.9-1 (pin 1.0-1)" in text
    assert "svc: 1/2 hosts on 1.0-1; 1 behind" in text
    assert json.loads(cli("hosts", "--channel", "prod", "--package", "x1", "--json"))["hosts"] == []
    assert "unknown channel" in cli("hosts", "--channel", "nope", code=4)


def run(cli: Cli, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one CLI run."""
    result = cli.call(*args)
    return result.code, result.stdout, result.stderr


def test_promote_wait_times_out_with_exit_10_and_stays_committed(
    cli: Cli, prod: FleetStore
) -> None:
    args = ("promote", "svc", "--from", "staging", "--to", "prod", "--wait")
    code, out, err = run(cli, *args, "--timeout", "0", "--poll", "0.01")
    assert code == RolloutTimeout.exit_code == 10
    assert "promoted: svc 1.1-1 staging -> prod" in out
    assert "svc: 0/2 hosts on 1.1-1; 2 behind" in out
    assert "error: fewer than 100% of the hosts in prod run the pin" in err
    repo, _store = fleet_of(cli)
    assert repo.pin_map("prod") == {"svc": "1.1-1"}  # the promote itself is committed
    # a rollback back to 1.0-1, which web-1 runs: 50% is reached at once
    code, out, err = run(
        cli, "rollback", "svc", "--channel", "prod", "--wait", "--min-converged", "50%"
    )
    assert code == 0, err
    assert out.splitlines()[-1] == "svc: 1/2 hosts on 1.0-1; 1 behind"


def test_wait_until_hosts_report_the_pin(cli: Cli, prod: FleetStore) -> None:
    cli("promote", "svc", "--from", "staging", "--to", "prod")
    ctx = Context(str(cli.config))
    polls: list[int] = []

    def host_updates(_seconds: float) -> None:
        """One host converges per poll (as hosts report after their apt-get run)."""
        polls.append(1)
        host = f"web-{len(polls)}"
        prod.report("prod", host, "hosts", Report(host, {"svc": "1.1-1"}))

    done = wait_for_rollout(
        ctx, "prod", ["svc"], timeout=3600, percent=100, poll=0, sleep=host_updates
    )
    assert len(polls) == 2
    assert [r["summary"] for r in done] == ["svc: 2/2 hosts on 1.1-1; 0 behind"]
    out, err = cli.capsys.readouterr()
    assert "svc: 2/2 hosts on 1.1-1; 0 behind" in out
    assert "waiting: svc: 0/2 hosts on 1.1-1; 2 behind" in err


def test_wait_option_checks(cli: Cli, prod: FleetStore) -> None:
    base = ("promote", "svc", "--from", "staging", "--to", "prod", "--wait")
    assert "--min-converged" in cli(*base, "--min-converged", "lots", code=2)
    assert "between 0% and 100%" in cli(*base, "--min-converged", "120%", code=2)
    assert "--json" in cli(*base, "--json", code=2)
    repo, _ = fleet_of(cli)
    assert repo.pin_map("prod") == {"svc": "1.0-1"}  # refused before the promote ran
    assert parse_percent("90%") == 90.0 and parse_percent(" 75 ") == 75.0
    with pytest.raises(UsageError):
        parse_percent("-1")


def test_no_host_with_the_package_is_reached_at_once(cli: Cli, prod: FleetStore) -> None:
    code, out, _err = run(cli, "promote", "svc", "--from", "dev", "--to", "staging", "--wait")
    assert code == 0
    assert out.splitlines()[-1] == "staging: no live host has svc installed"
