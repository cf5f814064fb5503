"""Issue 4 acceptance: a repository kept in S3 (moto_server over HTTP), used by real apt.

Everything goes through :class:`Repository` with an :class:`S3Storage`; apt reads the
bucket through the loopback proxy in :mod:`tests.s3proxy`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.config import StorageConfig
from publisher.errors import ImmutableConflict
from publisher.repo import KEYRING_KEY, Repository
from publisher.storage.s3 import S3Storage
from publisher.verify import verify
from tests.aptenv import AptEnv
from tests.conftest import packages_text
from tests.debs import build_deb
from tests.s3proxy import serve_storage_logged, storage_key
from tests.s3server import PUBLISH_REQUEST_BUDGET, REGION

pytestmark = pytest.mark.e2e

BUDGET = PUBLISH_REQUEST_BUDGET


def second_view(storage: S3Storage, endpoint: str, prefix: str | None = None) -> S3Storage:
    """Another S3Storage on the same bucket (and prefix), so proxy reads do not count."""
    cfg = StorageConfig(
        type="s3",
        bucket=storage.bucket,
        prefix=storage.prefix if prefix is None else prefix,
        region=REGION,
        endpoint_url=endpoint,
        path_style=True,
    )
    return S3Storage.from_config(cfg)


def listing(storage: S3Storage) -> dict[str, str]:
    """Every object key with its ETag: equal listings mean nothing was written."""
    return {o.key: o.etag for o in storage.list("")}


def test_proxy_serves_only_what_apt_may_read() -> None:
    assert storage_key("/dists/dev/InRelease") == "dists/dev/InRelease"
    assert storage_key("/pool/main/a/app/app_1%3a2.0-1_amd64.deb") == (
        "pool/main/a/app/app_1:2.0-1_amd64.deb"
    )
    assert storage_key("/archive-keyring.asc") == "archive-keyring.asc"
    for hidden in ("/.aptship/state/dev/head.json", "/x/../.aptship/a", "/", "/conf.toml"):
        assert storage_key(hidden) is None, hidden


def test_apt_installs_each_version_from_s3(
    make_repo: Callable[..., Repository],
    s3_storage: S3Storage,
    s3_bucket: tuple[str, str],
    debs: Callable[..., Path],
    tmp_path: Path,
) -> None:
    repo = make_repo(storage=s3_storage)
    files = {"1:2.0-1": debs("app", "1:2.0-1"), "1.5-1": debs("app", "1.5-1")}
    first = repo.publish("dev", [files["1:2.0-1"]])
    second = repo.publish("dev", [files["1.5-1"]])
    assert [r["status"] for r in first + second] == ["added", "added"]
    assert second[0]["pinned"] is False  # older than the pin: listed, not pinned
    assert verify(repo) == []
    # The state and audit log live in the bucket but are never served to apt.
    keys = listing(s3_storage)
    assert any(k.startswith(".aptship/state/dev/") for k in keys)
    assert KEYRING_KEY in keys

    apt = AptEnv(tmp_path / "apt")
    reader = second_view(s3_storage, s3_bucket[0])
    with serve_storage_logged(reader) as (url, requests):
        key = tmp_path / "key.asc"
        key.write_bytes(reader.read_bytes(KEYRING_KEY))
        apt.add_source(url, "dev", key)
        result = apt.update()
        assert result.returncode == 0, result.output
        bad = [
            line
            for line in result.output.splitlines()
            if line.startswith(("W:", "E:"))
            or any(w in line for w in ("signature", "Hash Sum", "NO_PUBKEY", "not signed"))
        ]
        assert bad == [], result.output
        assert any("/by-hash/" in r for r in requests), requests
        for version, deb in files.items():
            assert apt.fetch(f"app={version}") == deb.read_bytes()
        for hidden in (".aptship/state/dev/head.json", "dists/../.aptship/state/dev/head.json"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{url}/{hidden}", timeout=10).close()
            err.value.close()
            assert err.value.code == 404, hidden
    policy = apt.policy("app").output
    assert "1:2.0-1" in policy and "1.5-1" in policy


def test_immutability_on_s3(
    make_repo: Callable[..., Repository],
    s3_storage: S3Storage,
    debs: Callable[..., Path],
    tmp_path: Path,
) -> None:
    repo = make_repo(storage=s3_storage)
    original = debs("app", "1.0-1")
    assert repo.publish("dev", [original])[0]["status"] == "added"
    before = listing(s3_storage)

    again = repo.publish("dev", [original])
    assert again[0]["status"] == "unchanged"
    assert listing(s3_storage) == before  # a no-op writes nothing, not even an audit event

    other = build_deb(tmp_path / "rebuilt", "app", "1.0-1", payload="different bytes\n")
    assert other.read_bytes() != original.read_bytes()
    with pytest.raises(ImmutableConflict, match="immutable"):
        repo.publish("dev", [other])
    assert listing(s3_storage) == before

    # A batch with one good and one conflicting file is refused as a whole.
    good = debs("fresh", "1.0-1")
    with pytest.raises(ImmutableConflict):
        repo.publish("dev", [good, other])
    assert listing(s3_storage) == before
    stored = s3_storage.read_bytes("pool/main/a/app/app_1.0-1_amd64.deb")
    assert stored == original.read_bytes()
    assert "Package: fresh" not in packages_text(s3_storage)
    assert verify(repo) == []


def test_verify_and_reindex_on_s3(
    make_repo: Callable[..., Repository],
    s3_storage: S3Storage,
    debs: Callable[..., Path],
) -> None:
    repo = make_repo(storage=s3_storage)
    repo.publish("dev", [debs("app", "1.0-1"), debs("lib", "0.1", "all")])
    repo.publish("dev", [debs("app", "1.1-1")])
    assert verify(repo) == []
    generation = repo.generation("dev")

    # Damage what apt reads: an index at its path, and InRelease.
    s3_storage.write_bytes("dists/dev/main/binary-amd64/Packages.xz", b"Package: junk\n")
    s3_storage.delete("dists/dev/InRelease")
    problems = verify(repo)
    assert problems, "verify must notice a missing InRelease"
    assert any("InRelease" in p for p in problems)
    done = repo.reindex(["dev"])
    assert done == {"dev": generation}
    assert verify(repo) == []

    s3_storage.write_bytes("dists/dev/main/binary-amd64/Packages.xz", b"Package: junk\n")
    problems = verify(repo)
    assert any("binary-amd64/Packages.xz" in p for p in problems), problems
    repo.reindex()
    assert verify(repo) == []
    index = packages_text(s3_storage)
    assert index.count("Package: app\n") == 2
    assert "Package: lib\n" in index
    assert "Package: lib\n" in packages_text(s3_storage, arch="arm64")


def measure_one_publish(
    repo: Repository, storage: S3Storage, outdir: Path, existing: int
) -> tuple[int, int]:
    """Requests for publishing a new package, then a new version of it, into a channel
    that already holds ``existing`` packages (published in one batch, then a warm-up)."""
    batch = [build_deb(outdir, f"pkg{i:04d}", "1.0-1") for i in range(existing)]
    repo.publish("dev", batch)
    repo.publish("dev", [build_deb(outdir, "warmup", "1.0-1")])
    counts = []
    for version in ("1.0-1", "1.1-1"):
        deb = build_deb(outdir, "app", version)
        fresh = Repository(repo.config, storage)  # like a new `aptship publish` process
        start = storage.request_count
        result = fresh.publish("dev", [deb])
        counts.append(storage.request_count - start)
        assert result[0]["status"] == "added"
    index = packages_text(storage)
    assert index.count("Package: pkg") == existing
    assert index.count("Package: app\n") == 2
    return counts[0], counts[1]


def test_publish_request_budget_is_flat(
    make_repo: Callable[..., Repository],
    s3_storage: S3Storage,
    s3_bucket: tuple[str, str],
    tmp_path: Path,
) -> None:
    small_storage = s3_storage
    large_storage = second_view(s3_storage, s3_bucket[0], s3_storage.prefix + "-large")
    small = measure_one_publish(
        make_repo(storage=small_storage), small_storage, tmp_path / "n20", 20
    )
    large = measure_one_publish(
        make_repo(storage=large_storage), large_storage, tmp_path / "n200", 200
    )
    print(f"S3 requests per publish: N=20 {small}, N=200 {large}")
    assert max(small + large) <= BUDGET, (small, large)
    assert abs(small[0] - large[0]) <= 2, (small, large)
    assert abs(small[1] - large[1]) <= 2, (small, large)
    assert verify(make_repo(storage=large_storage), fast=True) == []
