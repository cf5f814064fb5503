"""Shared data of the access tests: the endpoint x caller matrix, path traversals,
and an app on S3.  Used by tests/server and by the nginx front's tests (tests/front)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient

from publisher.tokens import ROLES
from repo_server import create_app
from tests.s3server import REGION
from tests.server.conftest import TOKENS, BufferedClient, EnvFactory, ServerEnv

CALLERS: list[str | None] = [None, "bad", "read", "publish", "other", "promote", "admin"]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    role: str
    scoped: bool = True  # needs the role on a channel (dev/staging) rather than anywhere
    body: str | None = None  # "deb" (raw upload) or "json"
    data: Any = None
    exact: bool = False  # only this role: the setup script writes its token onto a host


CASES = {
    "keyring": Case("GET", "/archive-keyring.asc", "read", scoped=False),
    "dists": Case("GET", "/dists/dev/InRelease", "read"),
    "dists-by-hash": Case("GET", "/dists/dev/main/binary-amd64/Packages.gz", "read"),
    "pool": Case("GET", "POOL", "read"),
    "channels": Case("GET", "/api/v1/channels", "read", scoped=False),
    "channel": Case("GET", "/api/v1/channels/dev", "read"),
    "entries": Case("GET", "/api/v1/channels/dev/packages", "read"),
    "package": Case("GET", "/api/v1/channels/dev/packages/hello", "read"),
    "preferences": Case("GET", "/api/v1/channels/dev/preferences", "read"),
    "setup": Case("GET", "/api/v1/channels/dev/setup", "read", exact=True),
    "diff": Case("GET", "/api/v1/channels/staging/diff?from=dev", "read"),
    "history": Case("GET", "/api/v1/history", "read", scoped=False),
    "history-channel": Case("GET", "/api/v1/history?channel=dev", "read"),
    "publish": Case("POST", "/api/v1/channels/dev/packages", "publish", body="deb"),
    "promote": Case(
        "POST",
        "/api/v1/channels/staging/promote",
        "promote",
        body="json",
        data={"package": "hello", "from": "dev", "dry_run": True},
    ),
    "rollback": Case(
        "POST", "/api/v1/channels/dev/rollback", "promote", body="json", data={"package": "hello"}
    ),
    "remove": Case("DELETE", "/api/v1/channels/dev/packages/hello/1.0-1", "admin"),
    "metrics": Case("GET", "/metrics", "admin", scoped=False),
}


def expected(case: Case, who: str | None) -> int | None:
    """401/403, or None for 'any 2xx'."""
    if who not in TOKENS:
        return 401
    role, channels = TOKENS[who]
    if ROLES.index(role) < ROLES.index(case.role) or (case.exact and role != case.role):
        return 403
    if case.scoped and not ({"dev", "staging", "*"} & set(channels)):
        # a pool file of channels the token cannot read is answered as if absent
        return 404 if case.path == "POOL" else 403
    return None


def call(
    client: FlaskClient,
    env: ServerEnv,
    case: Case,
    who: str | None,
    published: dict[str, Any],
    scheme: str,
) -> Any:
    path = published["pool"] if case.path == "POOL" else case.path
    kw: dict[str, Any] = {"headers": env.headers(who, scheme)}
    if case.body == "deb":
        kw["data"] = published["deb"]
        kw["content_type"] = "application/vnd.debian.binary-package"
    elif case.body == "json":
        kw["json"] = case.data
    return client.open(path, method=case.method, **kw)


def s3_client(make_env: EnvFactory, s3_bucket: tuple[str, str], **server: Any) -> Any:
    endpoint, bucket = s3_bucket
    storage = {
        "type": "s3",
        "bucket": bucket,
        "prefix": f"repo-{uuid.uuid4().hex[:8]}",
        "region": REGION,
        "endpoint_url": endpoint,
        "path_style": True,
    }
    env = make_env(storage, **server)
    app = create_app(env.config_path)
    app.test_client_class = BufferedClient
    return env, app.test_client()


TRAVERSALS = [
    "/pool/../aptship.toml",
    "/pool/%2e%2e/aptship.toml",
    "/pool/main/..%2f..%2faptship.toml",
    "/dists/..%2faptship.toml",
    "/dists/dev/../../aptship.toml",
    "/dists/dev/%2e%2e/%2e%2e/tokens.json",
    "/dists/dev/..\\..\\aptship.toml",
    "/dists/dev/%5c..%5captship.toml",
    "/pool/main/%2Fetc%2Fpasswd",
    "//etc/passwd",
    "/pool//etc/passwd",
    "/.aptship/state/dev/head.json",
    "/dists/dev/../../.aptship/state/dev/head.json",
    "/pool/../.aptship/state/dev/head.json",
    "/aptship.toml",
    "/tokens.json",
    "/repo/archive-keyring.asc",
    "/pool/main/h/hello/%00.deb",
]
