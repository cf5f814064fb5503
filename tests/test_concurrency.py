"""Issue 4 acceptance: many publishers into one channel at once.

8 processes (multiprocessing, "spawn") each run `aptship --config CFG publish` 10
times, one .deb per invocation, at the same time, on local storage and on S3
(moto_server).  Each invocation goes through the CLI entry point
(:func:`publisher.cli.main`) with a real config file, exactly as a CI job would, only
without paying interpreter start-up and boto3 import 80 times.  Nothing may be lost:
the state, `aptship list` (a real subprocess), the Packages index and a real apt-get
all see the 80 entries, and `verify` is clean.  No lock files: the only coordination
is the create-only pool and shard writes plus compare-and-swap on the channel head
and on the published record.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from publisher.config import load_config
from publisher.repo import Repository
from publisher.verify import verify
from tests.cliconfig import storage_table, write_config
from tests.clirun import aptship, run_main
from tests.debs import build_deb
from tests.repo_http import apt_for, index_packages, serve_repo

pytestmark = pytest.mark.e2e

WORKERS = 8
ACTOR = {"APTSHIP_ACTOR": "ci@test"}
PER_WORKER = 10


# -- the test -------------------------------------------------------------------------
def publish_each(
    cfg: str, files: list[str], env: dict[str, str]
) -> tuple[int, list[tuple[int, str, str]]]:
    """In a worker process: `aptship --config CFG publish --json FILE` once per file.

    Returns the worker's pid and (exit code, stdout, stderr) per invocation.
    """
    os.environ.update(env)
    results = []
    for f in files:
        result = run_main("publish", "--channel", "dev", "--json", f, config=cfg)
        results.append((result.code, result.stdout, result.stderr))
    return os.getpid(), results


_all_started: Any = None  # a multiprocessing Barrier, set in each worker by _keep


def _keep(barrier: Any) -> None:
    global _all_started
    _all_started = barrier


def warm_up(_: int) -> int:
    """Import what a publish needs, then wait until every worker runs a warm-up at once
    (so the 8 warm-ups are 8 processes, by a barrier rather than by sleeping)."""
    import importlib

    for module in ("boto3", "publisher.cli", "publisher.repo", "publisher.storage.s3"):
        importlib.import_module(module)
    _all_started.wait(timeout=120)
    return os.getpid()


@pytest.fixture(scope="module")
def publishers() -> Iterator[ProcessPoolExecutor]:
    """8 worker processes ("spawn"), started once and shared by every round."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(WORKERS)
    with ProcessPoolExecutor(
        max_workers=WORKERS, mp_context=spawn, initializer=_keep, initargs=(barrier,)
    ) as pool:
        assert len(set(pool.map(warm_up, range(WORKERS)))) == WORKERS
        yield pool


@pytest.fixture(scope="session")
def many_debs(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """8 x 10 distinct .debs, built once per session: debs[worker][i]."""
    out = tmp_path_factory.mktemp("many-debs")
    return [
        [build_deb(out, f"conc-w{w}-p{i}", f"1.{i}-1") for i in range(PER_WORKER)]
        for w in range(WORKERS)
    ]


@pytest.mark.parametrize("round_", [0, 1, 2], ids=lambda r: f"round{r}")
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_publishers_lose_nothing(
    backend: str,
    round_: int,
    many_debs: list[list[Path]],
    publishers: ProcessPoolExecutor,
    gpg_key: tuple[Path, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    cfg = write_config(
        tmp_path / "aptship.toml", storage_table(backend, tmp_path, request), gpg_key
    )
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    env["APTSHIP_ACTOR"] = "ci@test"
    jobs = [
        publishers.submit(publish_each, str(cfg), [str(f) for f in files], env)
        for files in many_debs
    ]
    done = [job.result(timeout=300) for job in jobs]
    assert len({pid for pid, _runs in done}) == WORKERS  # 8 processes at once
    runs = [run for _pid, worker_runs in done for run in worker_runs]
    assert len(runs) == WORKERS * PER_WORKER
    failed = [(code, err) for code, _out, err in runs if code != 0]
    assert failed == [], failed
    published = [json.loads(out)[0] for _code, out, _err in runs]
    assert {r["status"] for r in published} == {"added"}

    expected = sorted(f"conc-w{w}-p{i} 1.{i}-1" for w in range(WORKERS) for i in range(PER_WORKER))
    listed = aptship("list", "--channel", "dev", "--json", config=cfg, env=ACTOR)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(f"{r['package']} {r['version']}" for r in rows) == expected
    assert all(r["pinned"] for r in rows)

    repo = Repository(load_config(cfg))
    assert sorted(index_packages(repo.storage)) == expected
    assert index_packages(repo.storage, arch="arm64") == []
    assert verify(repo) == []
    assert repo.generation("dev") == WORKERS * PER_WORKER  # one commit per publish

    with serve_repo(repo) as url:
        apt = apt_for(repo, url, tmp_path / "apt")
        update = apt.update()
        assert update.returncode == 0, update.output
        assert "W:" not in update.output and "E:" not in update.output, update.output
        got = apt.download("conc-w3-p7=1.7-1")
        assert got.returncode == 0, got.output
        fetched = list(apt.archives.glob("conc-w3-p7_*.deb"))
        assert [f.read_bytes() for f in fetched] == [many_debs[3][7].read_bytes()]
