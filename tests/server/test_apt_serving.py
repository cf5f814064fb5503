"""apt file serving: exact bytes, ranges, conditional GETs, pool access, path safety."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from tests.conftest import tokens_of
from tests.server.access import TRAVERSALS, s3_client
from tests.server.conftest import EnvFactory, ServerEnv

DebFactory = Callable[..., Path]


@pytest.fixture
def hello(env: ServerEnv, debs: DebFactory) -> tuple[str, bytes]:
    """(pool URL path, bytes) of hello 1.0-1 published into dev."""
    deb = debs("hello", "1.0-1")
    (entry,) = env.repo().publish("dev", [deb])
    return "/" + entry["filename"], deb.read_bytes()


# -- bytes, ranges, conditional requests (both backends) -------------------------------
def check_serving(client: FlaskClient, env: ServerEnv, url: str, data: bytes) -> None:
    h = env.headers("read", "basic")
    full = client.get(url, headers=h)
    assert full.status_code == 200
    assert full.data == data
    assert full.headers["Content-Length"] == str(len(data))
    assert full.headers["Content-Type"] == "application/vnd.debian.binary-package"
    assert full.headers["Accept-Ranges"] == "bytes"
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]

    head = client.head(url, headers=h)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(data)) and head.headers["ETag"] == etag

    part = client.get(url, headers={**h, "Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.data == data[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(data)}"
    tail = client.get(url, headers={**h, "Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.data == data[-16:]
    fresh = client.get(url, headers={**h, "Range": "bytes=5-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.data == data[5:10]
    stale = client.get(url, headers={**h, "Range": "bytes=5-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.data == data
    beyond = client.get(url, headers={**h, "Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416

    assert client.get(url, headers={**h, "If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={**h, "If-Modified-Since": modified}).status_code == 304
    changed = client.get(url, headers={**h, "If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.data == data

    for index in ("/dists/dev/InRelease", "/dists/dev/main/binary-amd64/Packages.gz"):
        stored = env.repo().storage.read_bytes(index.lstrip("/"))
        got = client.get(index, headers=h)
        assert got.status_code == 200 and got.data == stored
        assert "no-cache" in got.headers["Cache-Control"]
        again = client.get(index, headers={**h, "If-None-Match": got.headers["ETag"]})
        assert again.status_code == 304
    key = client.get("/archive-keyring.asc", headers=h)
    assert key.status_code == 200 and key.data.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK")


def test_local_serving(client: FlaskClient, env: ServerEnv, hello: tuple[str, bytes]) -> None:
    check_serving(client, env, *hello)


def test_s3_serving(make_env: EnvFactory, s3_bucket: tuple[str, str], debs: DebFactory) -> None:
    env, client = s3_client(make_env, s3_bucket)
    deb = debs("hello", "1.0-1")
    (entry,) = env.repo().publish("dev", [deb])
    check_serving(client, env, "/" + entry["filename"], deb.read_bytes())


def test_s3_pool_redirect(
    make_env: EnvFactory, s3_bucket: tuple[str, str], debs: DebFactory
) -> None:
    env, client = s3_client(make_env, s3_bucket, pool_redirect=True)
    deb = debs("hello", "1.0-1")
    (entry,) = env.repo().publish("dev", [deb])
    resp = client.get("/" + entry["filename"], headers=env.headers("read", "basic"))
    assert resp.status_code == 302
    assert requests.get(resp.headers["Location"], timeout=30).content == deb.read_bytes()
    # access is still checked before the redirect is handed out
    assert client.get("/" + entry["filename"], headers=env.headers("other")).status_code == 404
    # indexes are never redirected
    assert client.get("/dists/dev/InRelease", headers=env.headers("read")).status_code == 200


# -- pool access follows the channels ----------------------------------------------------
def test_pool_file_needs_a_readable_channel(
    client: FlaskClient, env: ServerEnv, debs: DebFactory
) -> None:
    repo = env.repo()
    dev_only = tokens_of(env.config_path).create("dev", "read", ["dev"])
    h = {"Authorization": f"Bearer {dev_only}"}
    (in_dev,) = repo.publish("dev", [debs("alpha", "1.0")])
    beta = debs("beta", "1.0")  # built once: a rebuild a second later differs (tar mtimes)
    (in_staging,) = repo.publish("staging", [beta])
    assert client.get("/" + in_dev["filename"], headers=h).status_code == 200
    hidden = client.get("/" + in_staging["filename"], headers=h)
    nowhere = client.get("/pool/main/n/nowhere/nowhere_1.0_amd64.deb", headers=h)
    assert (hidden.status_code, nowhere.status_code) == (404, 404)  # no probing of staging
    assert client.get("/" + in_staging["filename"], headers=env.headers("read")).status_code == 200
    # the cache is keyed on state generations: once dev holds the file, it is readable
    repo.publish("dev", [beta])
    assert client.get("/" + in_staging["filename"], headers=h).status_code == 200
    # ...and once no channel holds it any more, nobody gets it
    repo.remove("beta", "1.0", "dev", force=True)
    repo.remove("beta", "1.0", "staging", force=True)
    assert client.get("/" + in_staging["filename"], headers=env.headers("admin")).status_code == 404


# -- path safety --------------------------------------------------------------------------


def test_traversal_never_leaves_the_repository(
    client: FlaskClient, env: ServerEnv, hello: tuple[str, bytes], tmp_path: Path
) -> None:
    secrets = [
        (tmp_path / "aptship.toml").read_bytes(),
        Path("/etc/passwd").read_bytes()[:64],
        *[p.read_bytes() for p in (tmp_path / "repo" / ".aptship").rglob("*.json")],
    ]
    for path in TRAVERSALS:
        for who in ("admin", "read"):
            resp = client.get(path, headers=env.headers(who, "basic"))
            assert resp.status_code in (400, 403, 404), (path, who, resp.status_code)
            assert not any(s and s in resp.data for s in secrets), (path, who)


def test_symlinks_out_of_the_repository_are_not_followed(
    client: FlaskClient, env: ServerEnv, hello: tuple[str, bytes], tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    (root / "dists" / "dev" / "leak").symlink_to(tmp_path / "aptship.toml")
    (root / "pool" / "main" / "leak.deb").symlink_to(tmp_path / "aptship.toml")
    for path in ("/dists/dev/leak", "/pool/main/leak.deb"):
        resp = client.get(path, headers=env.headers("admin", "basic"))
        assert resp.status_code in (400, 404), (path, resp.status_code)
        assert b"tokens" not in resp.data and b"signing" not in resp.data


def test_unknown_paths_and_methods(
    client: FlaskClient, env: ServerEnv, hello: tuple[str, bytes]
) -> None:
    h = env.headers("admin", "basic")
    assert client.get("/", headers=h).status_code == 404
    assert client.get("/dists/dev/NoSuchFile", headers=h).status_code == 404
    assert client.get("/pool/main/n/nope/nope_1_amd64.deb", headers=h).status_code == 404
    resp = client.post(hello[0], headers=h, data=b"x")
    assert resp.status_code == 405
    assert b"405" in resp.data or b"not allowed" in resp.data.lower()
