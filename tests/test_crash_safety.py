"""Issue 4 acceptance: SIGKILL a publisher at a random moment, while apt keeps updating.

Each run starts `aptship publish` (a real subprocess with a real config file) and
kills it with SIGKILL after a random delay between 0 and the measured typical
publish duration (stratified, so that every phase of a publish gets hit).
Meanwhile a thread runs real `apt-get update` in a loop against the repository over
loopback HTTP; no update may ever fail, and none may ever see a "Hash Sum
mismatch".  After each kill, `verify` (and `reindex` when it reports problems) must
leave a healthy repository in which every publish that completed is listed.
"""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.repo import Repository
from publisher.storage.base import Storage
from publisher.verify import verify
from tests.cliconfig import storage_table, write_config
from tests.clirun import aptship, aptship_popen
from tests.debs import build_deb
from tests.repo_http import AptLoop as AptLoop  # moved there; still importable from here
from tests.repo_http import apt_for, index_packages, serve_repo

pytestmark = pytest.mark.e2e
ACTOR = {"APTSHIP_ACTOR": "ci@test"}
UPLOAD_TIMEOUT = 120.0


def start_publish(cfg: Path, deb: Path) -> subprocess.Popen[str]:
    return aptship_popen("publish", "--channel", "dev", deb, config=cfg, env=ACTOR)


def pool_key(deb: Path) -> str:
    """Where build_deb's package lands in the pool (source = package, no epoch)."""
    package, version, arch = deb.name.removesuffix(".deb").split("_")
    return f"pool/main/{package[0]}/{package}/{package}_{version}_{arch}.deb"


def wait_for_upload(proc: subprocess.Popen[str], storage: Storage, key: str) -> float:
    """Seconds until ``key`` exists (the first write of a publish), or until exit.

    Polls (the upload is in another process: no event to wait on), bounded by
    UPLOAD_TIMEOUT."""
    start = time.monotonic()
    while proc.poll() is None and not storage.exists(key):
        if time.monotonic() - start > UPLOAD_TIMEOUT:
            raise TimeoutError(f"{key} not written within {UPLOAD_TIMEOUT}s")
        time.sleep(0.005)  # polling interval, not a wait for an event
    return time.monotonic() - start


@pytest.mark.parametrize(("backend", "runs"), [("local", 20), ("s3", 8)])
def test_sigkill_during_publish(
    backend: str,
    runs: int,
    gpg_key: tuple[Path, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    seed = random.randrange(1 << 32)  # noqa: S311 - test randomness, printed on failure
    rng = random.Random(seed)  # noqa: S311
    cfg = write_config(
        tmp_path / "aptship.toml", storage_table(backend, tmp_path, request), gpg_key
    )
    out = tmp_path / "debs"
    debs = [build_deb(out, f"crash{i}", f"1.{i}-1") for i in range(runs)]
    repo = Repository(load_config(cfg))
    first = aptship(
        "publish", "--channel", "dev", build_deb(out, "warm0", "1.0"), config=cfg, env=ACTOR
    )
    assert first.returncode == 0, first.stderr
    completed = ["warm0 1.0"]
    kills: dict[str, int] = {"killed": 0, "repaired": 0}
    with serve_repo(repo) as url:
        loop = AptLoop(apt_for(repo, url, tmp_path / "apt"))
        loop.start()
        try:
            # The typical duration of a publish (and of its part after the pool upload
            # began), measured with the same command while apt is running.
            totals, tails = [], []
            for name in ("warm1", "warm2", "warm3"):
                deb = build_deb(out, name, "1.0")
                start = time.monotonic()
                proc = start_publish(cfg, deb)
                upload = wait_for_upload(proc, repo.storage, pool_key(deb))
                _out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err
                totals.append(time.monotonic() - start)
                tails.append(totals[-1] - upload)
                completed.append(f"{name} 1.0")
            typical, typical_tail = statistics.median(totals), statistics.median(tails)
            # Even runs: a moment in [0, typical] after start.  Odd runs: a moment in
            # [0, typical tail] after the upload began, so that commits, renders and
            # index writes get interrupted too, not mostly interpreter start-up.
            # Stratified (one moment per slice, slices in random order) for coverage.
            half = (runs + 1) // 2
            anywhere = [typical * (k + rng.random()) / half for k in range(half)]
            in_writes = [typical_tail * (k + rng.random()) / half for k in range(half)]
            rng.shuffle(anywhere)
            rng.shuffle(in_writes)
            for i, deb in enumerate(debs):
                proc = start_publish(cfg, deb)
                if i % 2:
                    wait_for_upload(proc, repo.storage, pool_key(deb))
                    time.sleep(in_writes[i // 2])  # the random kill moment is the point
                else:
                    time.sleep(anywhere[i // 2])  # the random kill moment is the point
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                _out, err = proc.communicate(timeout=120)
                if proc.returncode == 0:
                    completed.append(f"crash{i} 1.{i}-1")
                else:
                    assert proc.returncode == -signal.SIGKILL, err
                    kills["killed"] += 1
                problems = verify(repo)
                if problems:
                    repo.reindex()
                    kills["repaired"] += 1
                    assert verify(repo) == [], (seed, problems)
                listed = set(index_packages(repo.storage))
                missing = [c for c in completed if c not in listed]
                assert missing == [], (seed, missing)
                # A killed publish is either fully listed (after repair) or not at all.
                in_state = {f"{r['package']} {r['version']}" for r in repo.list_entries("dev")}
                assert in_state == listed, seed
            loop.wait_for_fresh_update()  # apt sees the final state at least once more
        finally:
            loop.stop.set()
            loop.join(timeout=120)
        final_apt = apt_for(repo, url, tmp_path / "apt-final")
        assert final_apt.update().returncode == 0
        package, version = completed[-1].split()
        got = final_apt.download(f"{package}={version}")
        assert got.returncode == 0, got.output

    outputs = [r.output for r in loop.results]
    assert len(outputs) >= 3, f"apt-get update ran only {len(outputs)} times"
    assert not [o for o in outputs if "Hash Sum mismatch" in o], seed
    failures = [r.output for r in loop.results if r.returncode != 0 or "E:" in r.output]
    assert failures == [], (seed, failures[:1])
    assert kills["killed"] >= 1, f"nothing was killed (typical {typical:.2f}s, seed {seed})"
    assert verify(repo) == []
    print(
        f"{backend}: {runs} runs, {kills['killed']} killed, {kills['repaired']} repaired by "
        f"reindex, typical publish {typical:.2f}s ({typical_tail:.2f}s after the upload), "
        f"{len(outputs)} apt-get updates, seed {seed}"
    )
