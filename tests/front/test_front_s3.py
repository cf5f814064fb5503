"""The S3 front (conf/nginx/aptship-s3.conf): nginx fetches allowed objects from the
bucket (moto_server over HTTP) through the presigned URL aptship hands it, with the
same access rules as without the front."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.aptenv import AptEnv
from tests.conftest import tokens_of
from tests.front.conftest import Front
from tests.front.frontio import APT_PATHS, FRONT_TRAVERSALS, check_case, send

pytestmark = pytest.mark.e2e
DebFactory = Callable[..., Path]


def test_access_matrix_on_s3(s3_front: Front, debs: DebFactory) -> None:
    repo = s3_front.env.repo()
    built = [debs("hello", v) for v in ("1.0-1", "2.0-1")]
    for deb in built:
        repo.publish("dev", [deb])
    pool = next(e["filename"] for e in repo.list_entries("dev") if e["version"] == "1.0-1")
    published: dict[str, Any] = {"pool": "/" + pool, "deb": built[-1].read_bytes()}
    for name in APT_PATHS:
        check_case(s3_front, published, name)
    # nginx fetched the bytes from the bucket: gunicorn saw only the access checks
    fresh = tokens_of(s3_front.env.config_path).create("n", "read", ["dev"])
    read = {"Authorization": "Basic " + base64.b64encode(f"x:{fresh}".encode()).decode()}
    before = len(s3_front.app.stdout.read_text().splitlines())
    status, headers, data = send(s3_front.url, "/" + pool, read)
    assert send(s3_front.url, "/dists/dev/InRelease", read)[0] == 200
    seen = s3_front.app.stdout.read_text().splitlines()[before:]
    assert len(seen) == 2 and all("/_front/auth" in line for line in seen), seen
    assert status == 200 and data == built[0].read_bytes()
    assert not any(h.lower().startswith("x-aptship") for h in headers), headers
    assert "X-Amz-Signature" not in str(headers)
    part = send(s3_front.url, "/" + pool, {**read, "Range": "bytes=0-7"})
    assert part[0] == 206 and part[2] == b"!<arch>\n"
    # an index is never confirmed with a 304 (one-second validators)
    status, headers, _ = send(s3_front.url, "/dists/dev/InRelease", read)
    assert status == 200 and "ETag" not in headers
    since = {**read, "If-Modified-Since": headers.get("Last-Modified", "")}
    assert send(s3_front.url, "/dists/dev/InRelease", since)[0] == 200


def test_pool_scoping_and_paths_on_s3(s3_front: Front, debs: DebFactory) -> None:
    repo = s3_front.env.repo()
    store = tokens_of(s3_front.env.config_path)
    dev_only = store.create("dev-only", "read", ["dev"])
    h = {"Authorization": "Basic " + base64.b64encode(f"x:{dev_only}".encode()).decode()}
    (in_dev,) = repo.publish("dev", [debs("alpha", "1.0")])
    (in_staging,) = repo.publish("staging", [debs("beta", "1.0")])
    assert send(s3_front.url, "/" + in_dev["filename"], h)[0] == 200
    assert send(s3_front.url, "/" + in_staging["filename"], h)[0] == 404  # as aptship
    assert send(s3_front.url, "/dists/staging/InRelease", h)[0] == 403
    assert send(s3_front.url, "/dists/dev/NoSuchFile", h)[0] == 404  # S3's 404, answered by aptship
    admin = s3_front.env.headers("admin", "basic")
    secrets = [s3_front.env.config_path.read_bytes()]  # the config, never served
    for path in FRONT_TRAVERSALS:
        for who in (h, admin):
            status, _, data = send(s3_front.url, path, who)
            assert status in (400, 403, 404), (path, status, data[:200])
            assert not any(s in data for s in secrets)
            assert b"Suite: prod" not in data and b'"generation"' not in data, path


def test_apt_get_through_the_s3_front(s3_front: Front, debs: DebFactory, tmp_path: Path) -> None:
    repo = s3_front.env.repo()
    first = debs("hello", "1.0-1")
    repo.publish("dev", [first])
    apt = AptEnv(tmp_path / "host")
    netloc = urlsplit(s3_front.url).netloc
    (apt.root / "etc/apt/auth.conf.d/aptship.conf").write_text(
        f"machine http://{netloc} login token password {s3_front.env.secrets['read']}\n"
    )
    key = tmp_path / "key.asc"
    key.write_bytes(repo.storage.read_bytes("archive-keyring.asc"))
    apt.add_source(s3_front.url, "dev", key)
    update = apt.update()
    assert update.returncode == 0, update.output
    assert apt.fetch("hello=1.0-1") == first.read_bytes()
    second = debs("hello", "2.0-1")
    repo.publish("dev", [second])
    update = apt.update()
    assert update.returncode == 0, update.output
    assert apt.fetch("hello=2.0-1") == second.read_bytes()
