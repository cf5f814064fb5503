"""S3 request counts for "add one .deb" and "promote one" at a given channel size.

A ``moto_server`` on loopback (started here, as ``tests/s3server.py`` does) holds a
copy of the aptship repository that the local benchmark built for that size (every
object copied as is, pool files included), so the S3 repository has the same N
entries.  Then, in process, one publish and one promote each run against a fresh
:class:`S3Storage` whose ``request_count`` / ``bytes_sent`` (counted at botocore's
``before-send`` hook) are read afterwards.  These counts are deterministic.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import VENV_BIN, BenchError, free_port

REGION = "us-east-1"
DUMMY = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass
class S3Count:
    requests: int
    bytes_sent: int
    wall: float


@contextlib.contextmanager
def moto_server(logdir: Path) -> Iterator[str]:
    """A moto_server on 127.0.0.1 with dummy credentials in this process's environment."""
    binary = VENV_BIN / "moto_server"
    if not binary.exists():
        raise BenchError(f"{binary} not found (pip install 'moto[server]')")
    saved = {k: os.environ.get(k) for k in (*DUMMY, "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    os.environ.update(DUMMY)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    port = free_port()
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / "moto_server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise BenchError(f"moto_server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("moto_server did not start within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def storage_config(endpoint: str, bucket: str) -> dict[str, object]:
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": "repo",
        "region": REGION,
        "endpoint_url": endpoint,
        "path_style": True,
    }


def copy_tree_to_s3(root: Path, storage: object, threads: int = 8) -> int:
    """Copy every file below ``root`` to ``storage`` under the same key; return the count."""
    files = [p for p in root.rglob("*") if p.is_file() and ".tmp-" not in p.name]

    def put(p: Path) -> None:
        storage.write_bytes(p.relative_to(root).as_posix(), p.read_bytes())  # type: ignore[attr-defined]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, files))
    return len(files)


def make_bucket(endpoint: str) -> str:
    from publisher.config import StorageConfig
    from publisher.storage.s3 import make_client

    bucket = f"aptship-bench-{uuid.uuid4().hex[:12]}"
    client = make_client(
        StorageConfig(type="s3", region=REGION, endpoint_url=endpoint, path_style=True)
    )
    client.create_bucket(Bucket=bucket)
    return bucket


def s3_repository(config: dict[str, object], config_path: Path):  # type: ignore[no-untyped-def]
    from publisher.config import parse_config
    from publisher.repo import Repository

    return Repository(parse_config(config, config_path))


def measure(repo_factory, action) -> S3Count:  # type: ignore[no-untyped-def]
    """Run ``action(repo)`` on a fresh repository (fresh counters); count its requests."""
    repo = repo_factory()
    storage = repo.storage
    start = time.perf_counter()
    action(repo)
    wall = time.perf_counter() - start
    return S3Count(storage.request_count, storage.bytes_sent, wall)
