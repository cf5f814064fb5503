"""scripts/demo, the README's first command, is idempotent: a second run (with the
.debs rebuilt) succeeds and leaves the repository in the same state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import aptship_ok

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def run_demo(target: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APTSHIP_")}
    env |= {"APTSHIP_NO_SETUP": "1", "APTSHIP_BIN": str(Path(sys.executable).parent)}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo"), str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def state(target: Path) -> tuple[object, dict[str, str]]:
    listed = aptship_ok("list", "--json", config=target / "aptship.toml")
    rows = [
        {k: r[k] for k in ("channel", "version", "pinned", "sha256")} for r in json.loads(listed)
    ]
    debs = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (target / "build").glob("*.deb")
    }
    return rows, debs


def test_demo_runs_twice(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    first = run_demo(target)
    assert first.returncode == 0, first.stderr[-4000:]
    # the host followed prod through the server with plain apt-get
    for line in (
        "host runs hello-aptship 1.0-1 (prod's pin)",
        "host runs hello-aptship 1.1-1 (upgraded after the promote)",
        "host runs hello-aptship 1.0-1 (downgraded after the rollback)",
        "The host runs: hello-aptship 1.0-1",
        "hello-aptship: 1/1 hosts on 1.0-1; 0 behind",
    ):
        assert line in first.stdout, first.stdout[-4000:]
    before = state(target)
    assert len(before[1]) == 2
    for deb in (target / "build").glob("*.deb"):
        deb.unlink()  # rebuilt: reproducible, so the same bytes again
    again = run_demo(target)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "unchanged (same bytes already published)" in again.stdout
    assert "repository is healthy" in again.stdout
    assert state(target) == before
    third = run_demo(target)  # and with the .debs kept
    assert third.returncode == 0, third.stderr[-4000:]
    assert state(target) == before


def readme_commands() -> str:
    """The shell block under README.md's "What it does"."""
    section = (ROOT / "README.md").read_text().split("\n## What it does\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0]


def test_readme_commands_run_as_written_after_the_demo(tmp_path: Path) -> None:
    """In a checkout: `demo/` from scripts/demo and `.venv/` from scripts/setup."""
    assert run_demo(tmp_path / "demo").returncode == 0
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APTSHIP_")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no aptship until the README activates it
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_commands()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rolled back hello-aptship in prod: 1.1-1 -> 1.0-1" in result.stdout
    assert "demo-host" in result.stdout  # aptship hosts: the demo's host reported
    assert result.stdout.rstrip().endswith("repository is healthy")
