"""The nginx front keeps aptship's access rules: the access matrix, pool scoping,
path safety and a real apt-get, all through Debian's nginx before a real gunicorn.

Requests go out with :mod:`http.client`, which sends the path byte for byte (no
dot-segment removal), so nginx sees exactly the hostile paths listed here.
"""

from __future__ import annotations

import base64
import http.client
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.aptenv import AptEnv
from tests.conftest import tokens_of
from tests.front.conftest import Front
from tests.front.frontio import (
    AUTH_CACHE_SECONDS,
    FRONT_TRAVERSALS,
    READ_CASES,
    WRITE_CASES,
    check_case,
    send,
)
from tests.server.conftest import TOKENS

pytestmark = pytest.mark.e2e
DebFactory = Callable[..., Path]


def test_access_matrix_reads(front: Front, published: dict[str, Any]) -> None:
    for name in READ_CASES:
        check_case(front, published, name)


@pytest.mark.parametrize("name", WRITE_CASES)
def test_access_matrix_writes(front: Front, published: dict[str, Any], name: str) -> None:
    check_case(front, published, name)


def test_apt_files_are_served_by_nginx(front: Front, published: dict[str, Any]) -> None:
    """dists/ and pool/ come from nginx (its Server header, its sendfile), checked first."""
    h = front.env.headers("read", "basic")
    for path in ("/dists/dev/InRelease", published["pool"]):
        status, headers, data = send(front.url, path, h)
        assert status == 200 and headers["Server"].startswith("nginx"), headers
        assert data == (front.root / path.lstrip("/")).read_bytes()
    # gunicorn sees the access check once per (token, path), never the file request
    fresh = tokens_of(front.env.config_path).create("n", "read", ["dev"])
    fh = {"Authorization": "Basic " + base64.b64encode(f"x:{fresh}".encode()).decode()}
    before = len(front.app.stdout.read_text().splitlines())
    for _ in range(3):
        assert send(front.url, "/dists/dev/InRelease", fh)[0] == 200
        assert send(front.url, published["pool"], fh)[0] == 200
    seen = front.app.stdout.read_text().splitlines()[before:]
    assert len(seen) == 2 and all("/_front/auth" in line for line in seen), seen
    # the mutable index is never answered 304 (validators of one-second resolution)
    _, headers, _ = send(front.url, "/dists/dev/InRelease", h)
    assert "ETag" not in headers and headers["Cache-Control"] == "no-cache"
    stale = send(
        front.url, "/dists/dev/InRelease", {**h, "If-Modified-Since": headers["Last-Modified"]}
    )
    assert stale[0] == 200
    # immutable files: ranges and conditional requests as from aptship
    pool = published["pool"]
    status, headers, data = send(front.url, pool, {**h, "Range": "bytes=0-7"})
    assert status == 206 and data == b"!<arch>\n"
    assert "immutable" in headers["Cache-Control"]
    assert headers["Content-Type"] == "application/vnd.debian.binary-package"
    again = send(front.url, pool, {**h, "If-None-Match": send(front.url, pool, h)[1]["ETag"]})
    assert again[0] == 304
    # a HEAD is checked like a GET; a POST gets aptship's 405
    # as from aptship: a file of unreadable channels does not exist for this token
    assert send(front.url, pool, front.env.headers("other", "basic"), "HEAD")[0] == 404
    assert send(front.url, pool, h, "POST", b"x")[0] == 405


def test_pool_scoping_per_channel(front: Front, debs: DebFactory) -> None:
    repo = front.env.repo()
    store = tokens_of(front.env.config_path)
    dev_only = store.create("dev-only", "read", ["dev"])
    h = {"Authorization": "Basic " + base64.b64encode(f"x:{dev_only}".encode()).decode()}
    (in_dev,) = repo.publish("dev", [debs("alpha", "1.0")])
    beta = debs("beta", "1.0")
    (in_staging,) = repo.publish("staging", [beta])
    assert send(front.url, "/" + in_dev["filename"], h)[0] == 200
    # a pool file of a channel the token cannot read does not exist for it, as in aptship
    assert send(front.url, "/" + in_staging["filename"], h)[0] == 404
    assert send(front.url, "/dists/staging/InRelease", h)[0] == 403
    assert (
        send(front.url, "/" + in_staging["filename"], front.env.headers("read", "basic"))[0] == 200
    )
    # refusals are never cached: once dev holds the file, it is readable at once
    repo.publish("dev", [beta])
    assert send(front.url, "/" + in_staging["filename"], h)[0] == 200
    # allows are cached per (credentials, path): another token is asked about afresh
    assert send(front.url, "/" + in_dev["filename"], front.env.headers("other", "basic"))[0] == 404
    # a revoked token: refused once its cached allows have expired (the documented bound)
    store.revoke("dev-only")
    time.sleep(AUTH_CACHE_SECONDS + 1.5)
    assert send(front.url, "/" + in_dev["filename"], h)[0] == 401
    assert send(front.url, "/dists/dev/InRelease", h)[0] == 401
    repo.remove("beta", "1.0", "dev", force=True)
    repo.remove("beta", "1.0", "staging", force=True)
    admin = front.env.headers("admin", "basic")
    assert send(front.url, "/" + in_staging["filename"], admin)[0] == 404


def test_no_bypass_through_nginx_paths(
    front: Front,
    published: dict[str, Any],
    tmp_path: Path,
) -> None:
    root = front.root
    prod_release = b"Suite: prod"
    secrets = [
        (tmp_path / "aptship.toml").read_bytes(),
        Path("/etc/passwd").read_bytes()[:64],
        *[p.read_bytes() for p in (root / ".aptship").rglob("*.json")],
    ]
    (root / "dists" / "dev" / "leak").symlink_to(tmp_path / "aptship.toml")
    (root / "pool" / "main" / "leak.deb").symlink_to("/etc/passwd")
    paths = [*FRONT_TRAVERSALS, "/dists/dev/leak", "/pool/main/leak.deb"]
    for who in ("read", "admin"):
        h = front.env.headers(who, "basic")
        send(front.url, "/dists/dev/InRelease", h)  # a cached allow for dev must not help
        for path in paths:
            status, _, data = send(front.url, path, h)
            assert status in (400, 403, 404), (path, who, status, data[:200])
            assert not any(s and s in data for s in secrets), (path, who)
            assert prod_release not in data, (path, who)


def test_hostile_requests(front: Front, published: dict[str, Any]) -> None:
    read, other = front.env.headers("read", "basic"), front.env.headers("other", "basic")
    inrelease = "/dists/dev/InRelease"
    # two Authorization headers: nginx refuses the request instead of picking one
    conn = http.client.HTTPConnection(urlsplit(front.url).hostname or "", urlsplit(front.url).port)
    try:
        conn.putrequest("GET", inrelease)
        conn.putheader("Authorization", read["Authorization"])
        conn.putheader("Authorization", other["Authorization"])
        conn.endheaders()
        assert conn.getresponse().status == 400
    finally:
        conn.close()
    # an oversized credential or target is refused without reaching a file
    huge = {"Authorization": "Basic " + "A" * 20000}
    assert send(front.url, inrelease, huge)[0] in (400, 431, 494)
    assert send(front.url, "/dists/dev/" + "a" * 6000, read)[0] in (400, 404, 414)
    assert send(front.url, "/pool/" + "a/" * 5000 + "x.deb", read)[0] in (400, 404, 414)
    # percent-encoded names decode as nginx decodes them: the allowed file, no other
    status, _, data = send(front.url, "/dists/dev/In%52elease", read)
    assert status == 200 and data == (front.root / "dists/dev/InRelease").read_bytes()
    # nginx ends the target at "#": the file before it is what is checked and served
    dev = (front.root / "dists/dev/InRelease").read_bytes()
    assert send(front.url, "/dists/dev/InRelease#/../../prod/InRelease", read)[2] == dev
    assert send(front.url, "/dists/prod/InRelease#/../../dev/InRelease", read)[0] == 403
    # unknown scheme, empty password, garbage base64: 401 as from aptship
    for value in ("Digest x", "Basic " + base64.b64encode(b"x:").decode(), "Basic !!!"):
        status, headers, _ = send(front.url, inrelease, {"Authorization": value})
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="aptship"', value
    # an unknown channel: 403 for a reader, 404 for an admin, as from aptship
    assert send(front.url, "/dists/nope/InRelease", read)[0] == 403
    assert send(front.url, "/dists/nope/InRelease", front.env.headers("admin", "basic"))[0] == 404


def test_apt_get_through_the_front(front: Front, debs: DebFactory, tmp_path: Path) -> None:
    repo = front.env.repo()
    first = debs("hello", "1.0-1")
    repo.publish("dev", [first])
    secret = front.env.secrets["read"]
    assert TOKENS["read"][1] == ["dev", "staging"]
    apt = AptEnv(tmp_path / "host")
    netloc = urlsplit(front.url).netloc
    (apt.root / "etc/apt/auth.conf.d/aptship.conf").write_text(
        f"machine http://{netloc} login token password {secret}\n"
    )
    apt.add_source(front.url, "dev", front.root / "archive-keyring.asc")
    update = apt.update()
    assert update.returncode == 0, update.output
    assert apt.fetch("hello=1.0-1") == first.read_bytes()
    # publish again at once: the next update sees it (no stale 304 through nginx)
    second = debs("hello", "2.0-1")
    repo.publish("dev", [second])
    update = apt.update()
    assert update.returncode == 0, update.output
    assert apt.fetch("hello=2.0-1") == second.read_bytes()
    # without credentials apt is refused by the front
    (apt.root / "etc/apt/auth.conf.d/aptship.conf").unlink()
    refused = apt.update()
    assert refused.returncode != 0 and "401" in refused.output, refused.output
    assert secret not in front.logs()
