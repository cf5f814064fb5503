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

import contextlib
import io
import json
import lzma
import multiprocessing
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from publisher.config import StorageConfig, load_config
from publisher.repo import KEYRING_KEY, Repository
from publisher.storage.base import Storage
from publisher.storage.s3 import make_client
from publisher.verify import verify
from tests.aptenv import AptEnv
from tests.debs import build_deb
from tests.httpserve import serve_directory
from tests.s3proxy import serve_storage
from tests.s3server import REGION

pytestmark = pytest.mark.e2e

APTSHIP = str(Path(sys.executable).parent / "aptship")
WORKERS = 8
PER_WORKER = 10


# -- helpers shared with test_crash_safety ------------------------------------------
def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def write_config(path: Path, storage: dict[str, Any], gpg_key: tuple[Path, str]) -> Path:
    """A real aptship.toml, as CI would have it (credentials come from the environment)."""
    home, fpr = gpg_key
    tables: dict[str, dict[str, Any]] = {
        "repository": {"origin": "aptship-test", "label": "aptship-test"},
        "storage": storage,
        "signing": {"gnupghome": str(home), "keys": [fpr]},
        "channels.dev": {"description": "dev builds"},
    }
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def storage_table(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The [storage] table of a fresh repository on ``backend`` ("local" or "s3")."""
    if backend == "local":
        return {"type": "local", "path": str(tmp_path / "repo")}
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    # Registered after s3_bucket, so it runs before that fixture's one-by-one cleanup.
    request.addfinalizer(lambda: empty_bucket(endpoint, bucket))
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": f"conc-{uuid.uuid4().hex[:8]}",
        "region": REGION,
        "endpoint_url": endpoint,
        "path_style": True,
    }


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Delete every object, 1000 per request (publishing leaves ~10 objects per .deb)."""
    cfg = StorageConfig(type="s3", region=REGION, endpoint_url=endpoint, path_style=True)
    client = make_client(cfg)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def aptship(cfg: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, APTSHIP_ACTOR="ci@test")
    return subprocess.run(
        [APTSHIP, "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def index_packages(storage: Storage, channel: str = "dev", arch: str = "amd64") -> list[str]:
    """``name version`` of every stanza in dists/<channel>/main/binary-<arch>/Packages.xz."""
    data = lzma.decompress(storage.read_bytes(f"dists/{channel}/main/binary-{arch}/Packages.xz"))
    text = data.decode()
    names = re.findall(r"^Package: (\S+)$", text, re.M)
    versions = re.findall(r"^Version: (\S+)$", text, re.M)
    assert len(names) == len(versions)
    return [f"{n} {v}" for n, v in zip(names, versions, strict=True)]


@contextmanager
def serve_repo(repo: Repository) -> Iterator[str]:
    """Base URL of the repository over loopback HTTP: the directory, or the S3 proxy."""
    root = repo.config.storage.path
    if repo.config.storage.type == "local" and root is not None:
        with serve_directory(root) as (url, _requests):
            yield url
    else:
        with serve_storage(repo.storage) as url:
            yield url


def apt_for(repo: Repository, url: str, root: Path) -> AptEnv:
    apt = AptEnv(root)
    key = root / "archive-keyring.asc"
    key.write_bytes(repo.storage.read_bytes(KEYRING_KEY))
    apt.add_source(url, "dev", key)
    return apt


# -- the test -------------------------------------------------------------------------
def publish_each(
    cfg: str, files: list[str], env: dict[str, str]
) -> tuple[int, list[tuple[int, str, str]]]:
    """In a worker process: `aptship --config CFG publish --json FILE` once per file.

    Returns the worker's pid and (exit code, stdout, stderr) per invocation.
    """
    from publisher.cli import main

    os.environ.update(env)
    results = []
    for f in files:
        out, err = io.StringIO(), io.StringIO()
        code: int | str | None = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["--config", cfg, "publish", "--channel", "dev", "--json", f])
            except SystemExit as exc:
                code = exc.code
        results.append((code if isinstance(code, int) else 1, out.getvalue(), err.getvalue()))
    return os.getpid(), results


def warm_up(_: int) -> int:
    """Import what a publish needs, and stay busy long enough to occupy one worker."""
    import importlib

    for module in ("boto3", "publisher.cli", "publisher.repo", "publisher.storage.s3"):
        importlib.import_module(module)
    time.sleep(0.3)
    return os.getpid()


@pytest.fixture(scope="module")
def publishers() -> Iterator[ProcessPoolExecutor]:
    """8 worker processes ("spawn"), started once and shared by every round."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=spawn) as pool:
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
    listed = aptship(cfg, "list", "--channel", "dev", "--json")
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
