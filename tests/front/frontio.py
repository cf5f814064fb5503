"""Requests through the nginx front and the access checks they must pass, shared by
tests/front's local and S3 tests."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from tests.front.conftest import Front
from tests.server.access import CALLERS, CASES, TRAVERSALS, Case, expected
from tests.server.conftest import ServerEnv

AUTH_CACHE_SECONDS = 5  # proxy_cache_valid in conf/nginx/aptship.conf
APT_PATHS = ("keyring", "dists", "dists-by-hash", "pool")


def send(
    base: str,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with ``path`` sent verbatim; (status, headers, body)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def case_request(
    env: ServerEnv,
    case: Case,
    who: str | None,
    published: dict[str, Any],
) -> tuple[str, dict[str, str], bytes | None]:
    scheme = "basic" if not case.path.startswith(("/api/", "/metrics")) else "bearer"
    path = published["pool"] if case.path == "POOL" else case.path
    headers = env.headers(who, scheme)
    body: bytes | None = None
    if case.body == "deb":
        body = published["deb"]
        headers["Content-Type"] = "application/vnd.debian.binary-package"
    elif case.body == "json":
        body = json.dumps(case.data).encode()
        headers["Content-Type"] = "application/json"
    return path, headers, body


READ_CASES = [name for name, case in CASES.items() if case.method == "GET"]
WRITE_CASES = [name for name, case in CASES.items() if case.method != "GET"]


def check_case(front: Front, published: dict[str, Any], name: str) -> None:
    """One case for every caller, with the statuses of repo_server, through nginx.

    Read-only cases also go twice through nginx (the second time from the cached
    decision) and once to gunicorn directly, and must answer alike.
    """
    case = CASES[name]
    passes = 2 if case.method == "GET" else 1
    for who in CALLERS:
        path, headers, body = case_request(front.env, case, who, published)
        want = expected(case, who)
        results = [send(front.url, path, headers, case.method, body) for _ in range(passes)]
        if case.method == "GET":
            results.append(send(front.app.url, path, headers, case.method, body))
        for status, got_headers, data in results:
            context = f"{name}: {case.method} {path} as {who}: {status} {data[:200]!r}"
            if want is None:
                assert 200 <= status < 300, context
            else:
                assert status == want, context
                if want == 401:
                    assert got_headers["WWW-Authenticate"] == 'Basic realm="aptship"', context
        assert len({r[0] for r in results}) == 1, (name, who)
        if name in APT_PATHS:  # nginx served the bytes aptship serves
            assert len({r[2] for r in results}) == 1, (name, who)


FRONT_TRAVERSALS = [
    *TRAVERSALS,
    "/dists/dev/./InRelease",
    "/dists/dev//InRelease",
    "/dists/dev/%2e/InRelease",
    "/dists/staging/../prod/InRelease",
    "/dists/dev/%2e%2e/prod/InRelease",
    "/dists/prod%2fInRelease",
    "/pool/main/h/hello/../../../../dists/prod/InRelease",
    "/pool/main/h/hello/..%2f..%2f..%2f..%2f.aptship/state/dev/head.json",
    "/pool/%2e%2e/.aptship/state/dev/head.json",
    "/dists/dev/InRelease%00",
    "/dists/dev/InRelease%2500",
    "/dists/dev/%ff/InRelease",
    "/_front/auth",
    "/_aptship_auth",
    "/.aptship/",
    "/dists/",
    "/dists/dev/",
    "/pool/",
]
