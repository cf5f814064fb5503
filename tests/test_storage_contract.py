"""One contract for every storage backend: local directory and S3 (moto_server)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher.config import StorageConfig
from publisher.errors import NotFound, PreconditionFailed, StorageError, UsageError
from publisher.storage.base import Storage
from publisher.storage.local import LocalStorage
from publisher.storage.s3 import CHUNK, S3Storage, make_client

MIB = 1024 * 1024
HASHES = ("md5", "sha1", "sha256")
UNSAFE_KEYS = ["../x", "/abs", "a//b", "a/./b", ""]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "repo")
    s3: S3Storage = request.getfixturevalue("s3_storage")
    return s3


@pytest.fixture(scope="module")
def big_payload() -> bytes:
    """~20 MiB: three 8 MiB parts on S3 (the last one short)."""
    return os.urandom(20 * MIB + 12345)


class MaxReadStream(io.RawIOBase):
    """A non-seekable stream that records the largest read request."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.max_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.max_read = max(self.max_read, size if size is not None and size >= 0 else 1 << 62)
        return self._data.read(size)


def test_roundtrip(storage: Storage) -> None:
    etag = storage.write_bytes("dists/stable/Release", b"hello", content_type="text/plain")
    assert storage.read_bytes("dists/stable/Release") == b"hello"
    data, read_etag = storage.read_with_etag("dists/stable/Release")
    assert (data, read_etag) == (b"hello", etag)
    info = storage.stat("dists/stable/Release")
    assert (info.key, info.size, info.etag) == ("dists/stable/Release", 5, etag)
    assert info.mtime > 0
    assert storage.exists("dists/stable/Release")
    with storage.open_read("dists/stable/Release") as fh:
        assert fh.read(2) == b"he"
        assert fh.read() == b"llo"
    storage.write_bytes("dists/stable/Release", b"again")
    assert storage.read_bytes("dists/stable/Release") == b"again"


@pytest.mark.parametrize("method", ["read_bytes", "read_with_etag", "open_read", "stat"])
def test_missing_key_is_not_found(storage: Storage, method: str) -> None:
    storage.write_bytes("present", b"x")
    with pytest.raises(NotFound):
        getattr(storage, method)("absent/key")
    assert not storage.exists("absent/key")


def test_create_only_refuses_existing_key(storage: Storage) -> None:
    etag = storage.write_bytes("pool/a.deb", b"original", create_only=True)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes("pool/a.deb", b"other", create_only=True)
    assert storage.read_with_etag("pool/a.deb") == (b"original", etag)


def test_if_match_compare_and_swap(storage: Storage) -> None:
    old = storage.write_bytes("heads/stable", b"v1")
    new = storage.write_bytes("heads/stable", b"v2", if_match=old)
    assert new != old
    assert storage.read_with_etag("heads/stable") == (b"v2", new)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes("heads/stable", b"v3", if_match=old)
    assert storage.read_with_etag("heads/stable") == (b"v2", new)
    with pytest.raises(PreconditionFailed):
        storage.write_bytes("heads/missing", b"v1", if_match=old)
    assert not storage.exists("heads/missing")


def _check_stream(storage: Storage, key: str, data: bytes) -> None:
    result = storage.write_stream(key, io.BytesIO(data), hash_names=HASHES)
    assert result.size == len(data)
    assert result.hashes == {n: hashlib.new(n, data).hexdigest() for n in HASHES}
    assert result.etag == storage.stat(key).etag
    assert storage.stat(key).size == len(data)
    assert hashlib.sha256(storage.read_bytes(key)).digest() == hashlib.sha256(data).digest()


def test_write_stream_small(storage: Storage) -> None:
    _check_stream(storage, "pool/small.deb", os.urandom(100_000))
    _check_stream(storage, "pool/empty.deb", b"")


def test_write_stream_large(storage: Storage, big_payload: bytes) -> None:
    _check_stream(storage, "pool/big.deb", big_payload)
    if isinstance(storage, S3Storage):
        assert storage.stat("pool/big.deb").etag.strip('"').endswith("-3")  # multipart
        assert storage.content_sha256("pool/big.deb") == hashlib.sha256(big_payload).hexdigest()


def test_write_stream_reads_bounded_chunks(storage: Storage) -> None:
    data = os.urandom(CHUNK + MIB)
    stream = MaxReadStream(data)
    result = storage.write_stream("pool/piped.deb", stream, hash_names=("sha256",))  # type: ignore[arg-type]
    assert result.hashes == {"sha256": hashlib.sha256(data).hexdigest()}
    assert 0 < stream.max_read <= CHUNK
    assert storage.read_bytes("pool/piped.deb") == data


@pytest.mark.parametrize("size", [1000, 9 * MIB])
def test_write_stream_create_only_conflict(storage: Storage, size: int) -> None:
    storage.write_bytes("pool/c.deb", b"first")
    with pytest.raises(PreconditionFailed):
        storage.write_stream("pool/c.deb", io.BytesIO(os.urandom(size)), create_only=True)
    assert storage.read_bytes("pool/c.deb") == b"first"
    result = storage.write_stream("pool/new.deb", io.BytesIO(b"n" * size), create_only=True)
    assert result.size == size


@pytest.mark.parametrize("size", [1000, 9 * MIB])
def test_write_stream_create_only_loses_race(storage: Storage, size: int) -> None:
    """Another writer creates the key while the stream is read: the final write must fail."""

    class RacingStream(MaxReadStream):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            if not data and not storage.exists("pool/race.deb"):
                storage.write_bytes("pool/race.deb", b"racer")
            return data

    with pytest.raises(PreconditionFailed):
        storage.write_stream("pool/race.deb", RacingStream(b"r" * size), create_only=True)  # type: ignore[arg-type]
    assert storage.read_bytes("pool/race.deb") == b"racer"
    if isinstance(storage, S3Storage):  # the multipart upload was aborted
        uploads = storage._client.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []


def test_copy_replaces_the_target_and_leaves_the_source(storage: Storage) -> None:
    storage.write_bytes("d/by-hash/abc", b"index v2", create_only=True)
    storage.write_bytes("d/Packages", b"index v1")
    etag = storage.copy("d/by-hash/abc", "d/Packages")
    assert storage.read_bytes("d/Packages") == b"index v2"
    assert storage.stat("d/Packages").etag == etag
    # a later write of the target (always a replacement) leaves the source as it was
    storage.write_bytes("d/Packages", b"index v3")
    assert storage.read_bytes("d/by-hash/abc") == b"index v2"
    storage.copy("d/by-hash/abc", "d/new/Packages")  # the target's folder need not exist
    assert storage.read_bytes("d/new/Packages") == b"index v2"
    with pytest.raises(NotFound):
        storage.copy("d/by-hash/missing", "d/Packages")
    assert storage.read_bytes("d/Packages") == b"index v3"


def test_s3_copy_sends_no_content(s3_storage: S3Storage) -> None:
    s3_storage.write_bytes("c/src", os.urandom(MIB), content_type="text/plain")
    before_requests, before_bytes = s3_storage.request_count, s3_storage.bytes_sent
    s3_storage.copy("c/src", "c/dst")
    assert s3_storage.request_count == before_requests + 1
    assert s3_storage.bytes_sent - before_bytes < 1024
    assert s3_storage.content_sha256("c/dst") == s3_storage.content_sha256("c/src")


def test_local_copy_never_moves_the_target_mtime_back(tmp_path: Path) -> None:
    """The server answers If-Modified-Since from the mtime: a path copied from an
    older by-hash file must not look older than the content it replaced."""
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("d/by-hash/old", b"index v1", create_only=True)
    os.utime(tmp_path / "repo/d/by-hash/old", (1_000_000, 1_000_000))
    storage.write_bytes("d/Packages", b"index v2")
    before = (tmp_path / "repo/d/Packages").stat().st_mtime
    storage.copy("d/by-hash/old", "d/Packages")
    assert storage.read_bytes("d/Packages") == b"index v1"
    assert (tmp_path / "repo/d/Packages").stat().st_mtime >= before


def test_local_copy_onto_a_link_of_the_same_file_leaves_no_temporary(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("a/src", b"data", create_only=True)
    storage.copy("a/src", "a/dst")
    storage.copy("a/src", "a/dst")  # rename(2) of one link onto another does nothing
    assert storage.read_bytes("a/dst") == b"data"
    assert sorted(p.name for p in (tmp_path / "repo/a").iterdir()) == ["dst", "src"]


def test_local_copy_falls_back_to_bytes_without_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("a/src", b"data")

    def no_links(*_: Any) -> None:
        raise OSError(errno.EPERM, "links not supported")

    monkeypatch.setattr(os, "link", no_links)
    storage.copy("a/src", "a/dst")
    assert storage.read_bytes("a/dst") == b"data"
    assert not (tmp_path / "repo/a/dst").samefile(tmp_path / "repo/a/src")


def test_list_prefix(storage: Storage) -> None:
    keys = ["pool/a/x.deb", "pool/a/y/z.deb", "pool/ab.deb", "dists/s/Release", "top"]
    for key in keys:
        storage.write_bytes(key, key.encode())
    assert {o.key for o in storage.list("pool/a/")} == {"pool/a/x.deb", "pool/a/y/z.deb"}
    assert {o.key for o in storage.list("pool/a")} == {"pool/a/x.deb", "pool/a/y/z.deb"}
    assert {o.key for o in storage.list("pool/")} == {
        "pool/a/x.deb",
        "pool/a/y/z.deb",
        "pool/ab.deb",
    }
    assert {o.key for o in storage.list("")} == set(keys)
    assert list(storage.list("nothing/")) == []
    infos = {o.key: o for o in storage.list("dists/")}
    assert infos["dists/s/Release"].size == len(b"dists/s/Release")
    assert infos["dists/s/Release"].etag == storage.stat("dists/s/Release").etag


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.write_bytes("tmp/x", b"x")
    storage.delete("tmp/x")
    assert not storage.exists("tmp/x")
    storage.delete("tmp/x")
    storage.delete("never/existed")
    with pytest.raises(NotFound):
        storage.read_bytes("tmp/x")


def _calls(storage: Storage, key: str) -> dict[str, Callable[[], Any]]:
    calls: dict[str, Callable[[], Any]] = {
        "read_bytes": lambda: storage.read_bytes(key),
        "read_with_etag": lambda: storage.read_with_etag(key),
        "open_read": lambda: storage.open_read(key),
        "write_bytes": lambda: storage.write_bytes(key, b"x"),
        "write_bytes_create": lambda: storage.write_bytes(key, b"x", create_only=True),
        "write_bytes_match": lambda: storage.write_bytes(key, b"x", if_match="e"),
        "write_stream": lambda: storage.write_stream(key, io.BytesIO(b"x")),
        "stat": lambda: storage.stat(key),
        "exists": lambda: storage.exists(key),
        "delete": lambda: storage.delete(key),
        "local_path": lambda: storage.local_path(key),
    }
    if key:  # an empty prefix lists everything, by design
        calls["list"] = lambda: list(storage.list(key))
    if isinstance(storage, S3Storage):
        calls["presigned_url"] = lambda: storage.presigned_url(key)
    return calls


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(storage: Storage, key: str) -> None:
    for name, call in _calls(storage, key).items():
        with pytest.raises(UsageError):
            call()
            pytest.fail(f"{name}({key!r}) was accepted")


def test_local_symlink_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("inside", b"ok")
    (tmp_path / "repo" / "link").symlink_to(outside)
    with pytest.raises(UsageError):
        storage.read_bytes("link")
    with pytest.raises(UsageError):
        storage.open_read("link")


# -- S3 only ------------------------------------------------------------------


def test_s3_request_count(s3_storage: S3Storage) -> None:
    before_requests, before_bytes = s3_storage.request_count, s3_storage.bytes_sent
    s3_storage.write_bytes("counted", b"0123456789")
    assert s3_storage.request_count == before_requests + 1
    assert s3_storage.bytes_sent >= before_bytes + 10


def test_s3_describe_local_path_and_metadata(s3_storage: S3Storage) -> None:
    assert s3_storage.describe() == f"s3://{s3_storage.bucket}/{s3_storage.prefix}"
    s3_storage.write_bytes("k", b"data")
    assert s3_storage.local_path("k") is None
    assert s3_storage.content_sha256("k") == hashlib.sha256(b"data").hexdigest()
    assert s3_storage.presigned_url("k").startswith("http")


def test_s3_non_seekable_large_stream_has_no_sha256_metadata(s3_storage: S3Storage) -> None:
    data = os.urandom(CHUNK + 1)
    s3_storage.write_stream("pool/pipe.deb", MaxReadStream(data))  # type: ignore[arg-type]
    assert s3_storage.read_bytes("pool/pipe.deb") == data
    assert s3_storage.content_sha256("pool/pipe.deb") is None  # documented fallback


def test_s3_write_stream_memory_is_bounded(s3_storage: S3Storage, tmp_path: Path) -> None:
    path = tmp_path / "big.deb"
    with path.open("wb") as fh:
        for _ in range(4):
            fh.write(os.urandom(6 * MIB))
    tracemalloc.start()
    try:
        with path.open("rb") as fh:
            result = s3_storage.write_stream("pool/mem.deb", fh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.size == 24 * MIB
    assert peak < 2.5 * CHUNK, f"peak {peak / MIB:.1f} MiB"


def test_s3_sse_is_sent(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    cfg = StorageConfig(type="s3", bucket=bucket, endpoint_url=endpoint, path_style=True)
    storage = S3Storage(make_client(cfg), bucket, sse="AES256")
    storage.write_bytes("enc", b"x")
    storage.write_stream("enc-big", io.BytesIO(b"y" * (CHUNK + 1)))
    for key in ("enc", "enc-big"):
        head = storage._client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"


def test_s3_unreachable_endpoint_is_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSHOULDNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-should-not-leak")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cfg = StorageConfig(type="s3", bucket="nowhere", endpoint_url="http://127.0.0.1:9")
    client = make_client(cfg, max_attempts=1, connect_timeout=0.5, read_timeout=0.5)
    storage = S3Storage(client, "nowhere", "p")
    calls: list[Callable[[], object]] = [
        lambda: storage.read_bytes("k"),
        lambda: storage.write_bytes("k", b"x", create_only=True),
        lambda: storage.stat("k"),
        lambda: list(storage.list("")),
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        assert type(info.value) is StorageError
        assert "nowhere" in info.value.message
        assert "should-not-leak" not in info.value.message
        assert "SHOULDNOTLEAK" not in info.value.message


@pytest.mark.parametrize("count", [3, 70])  # a stat each, and (S3) listings
def test_sizes_of_present_keys_only(storage: Storage, count: int) -> None:
    keys = [f"pool/main/{'ab'[i % 2]}/pkg{i}/pkg{i}_{i}.deb" for i in range(count)]
    for i, key in enumerate(keys):
        if i % 3:
            storage.write_bytes(key, b"x" * i)
    storage.write_bytes("pool/main/a/other.deb", b"other")  # listed, never asked for
    asked = [*keys, "pool/main/z/absent.deb", "../outside.deb", "pool/../x.deb"]
    sizes = storage.sizes(asked)
    assert sizes == {key: i for i, key in enumerate(keys) if i % 3}


def test_local_sizes_follow_links_only_inside_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.write_bytes("pool/main/a/app/app_1.deb", b"12345")
    outside = tmp_path / "secret.deb"
    outside.write_bytes(b"x" * 9)
    pool = tmp_path / "repo/pool/main/a/app"
    (pool / "escape.deb").symlink_to(outside)
    (pool / "inside.deb").symlink_to(pool / "app_1.deb")
    (tmp_path / "repo/pool/main/b").symlink_to(tmp_path)  # a directory link out
    (tmp_path / "secret2.deb").write_bytes(b"y")
    keys = [
        "pool/main/a/app/app_1.deb",
        "pool/main/a/app/escape.deb",
        "pool/main/a/app/inside.deb",
        "pool/main/b/secret2.deb",
    ]
    assert storage.sizes(keys) == {"pool/main/a/app/app_1.deb": 5, "pool/main/a/app/inside.deb": 5}


def test_check_key_fast_path_agrees_with_the_full_checks() -> None:
    """check_key takes one regular expression for plain ASCII keys: it accepts
    exactly the keys the full checks accept, hostile ones included."""
    from publisher.storage import keys

    segments = ["a", "pool", "x" * 255, "x" * 256, ".", "..", ".hidden", "a.b", "-x", "é",
                "a b", "a\\b", "a\x00b", "a\x1fb", "a\x7fb", "", "~u", "a+b:c@d=e,f"]  # fmt: skip
    candidates = [*UNSAFE_KEYS, "pool/main/a/app/app_1.0-1_amd64.deb", "dists/x/InRelease"]
    candidates += [f"{a}/{b}" for a in segments for b in segments] + segments
    candidates += [f"/{s}" for s in segments] + [f"{s}/" for s in segments]
    for key in candidates:
        try:
            slow: bool | None = keys._check_key(key) == key
        except UsageError:
            slow = None
        try:
            fast: bool | None = keys.check_key(key) == key
        except UsageError:
            fast = None
        assert fast == slow, key
    assert keys._PLAIN_KEY.fullmatch("pool/main/a/app/app_1.0-1_amd64.deb")  # the fast path
