"""Two ``aptship serve`` processes on ONE moto_server bucket behave as one server
(issue 14, "Stateless replicas"; docs/server.md, "Several servers on one bucket").

Real processes only: moto_server over HTTP, two gunicorns started by ``aptship serve``,
the CLI in remote mode, plain HTTP clients.  Waiting for a revocation polls with a
deadline of the documented bound plus slack; nothing asserts how fast it happens.
"""

from __future__ import annotations

import lzma
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from publisher.config import ServerConfig
from tests.s3server import REGION
from tests.server.conftest import EnvFactory, ServerEnv
from tests.server.live import LiveServer, aptship, start_server
from tests.ui import csrf_of

pytestmark = pytest.mark.e2e
DebFactory = Callable[..., Path]
SLACK = 20.0  # seconds on top of the documented bound, for a loaded machine


@dataclass
class Replicas:
    env: ServerEnv
    one: LiveServer
    two: LiveServer
    admin: str

    def cli(self, server: LiveServer, *args: str, token: str | None = None) -> str:
        done = aptship(
            "--server", server.url, *args, env={"APTSHIP_TOKEN": token or self.admin}
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def replicas(
    make_env: EnvFactory, s3_bucket: tuple[str, str], tmp_path: Path, tools: None
) -> Iterator[Replicas]:
    endpoint, bucket = s3_bucket
    storage: dict[str, Any] = {
        "type": "s3",
        "bucket": bucket,
        "prefix": f"repo-{uuid.uuid4().hex[:8]}",
        "region": REGION,
        "endpoint_url": endpoint,
        "path_style": True,
    }
    env = make_env(storage, tokens=False)  # no session secret configured: storage's
    made = aptship(
        "--config", str(env.config_path), "token", "create",
        "--name", "root", "--role", "admin", "--channel", "*",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    with (
        start_server(env.config_path, tmp_path / "one", workers=1) as one,
        start_server(env.config_path, tmp_path / "two", workers=1) as two,
    ):
        yield Replicas(env, one, two, admin)
    for server in (one, two):
        assert admin not in server.logs(), "a token leaked into the server log"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_two_replicas_on_one_bucket_behave_as_one(
    replicas: Replicas, debs: DebFactory, tmp_path: Path
) -> None:
    one, two = replicas.one, replicas.two

    # A token created through replica 1 (CLI, remote mode) reads through replica 2.
    ci = replicas.cli(
        one, "token", "create", "--name", "ci", "--role", "publish", "--channel", "dev"
    ).strip()
    reader = replicas.cli(
        one, "token", "create", "--name", "host", "--role", "read", "--channel", "dev"
    ).strip()
    assert requests.get(f"{two.url}/api/v1/channels", headers=bearer(reader), timeout=30).ok
    assert "host" in replicas.cli(two, "token", "list")
    narrow = aptship("--server", two.url, "token", "list", env={"APTSHIP_TOKEN": ci})
    assert narrow.returncode == 6 and "admin" in narrow.stderr  # tokens need an admin on '*'

    # A publish through replica 1 is served by replica 2.
    deb = debs("hello", "1.0-1")
    published = replicas.cli(one, "publish", "--channel", "dev", str(deb), token=ci)
    assert "published: hello 1.0-1" in published
    packages = requests.get(
        f"{two.url}/dists/dev/main/binary-amd64/Packages.xz", auth=("x", reader), timeout=30
    )
    assert packages.status_code == 200
    assert "Package: hello\n" in lzma.decompress(packages.content).decode()
    pool_url = f"{two.url}/pool/main/h/hello/hello_1.0-1_amd64.deb"
    pool = requests.get(pool_url, auth=("x", reader), timeout=30)
    assert pool.status_code == 200 and pool.content == deb.read_bytes()

    # A dashboard session made on replica 1 works on replica 2 (and its CSRF token too).
    browser = requests.Session()
    page = browser.get(f"{one.url}/ui/login", timeout=30)
    signed = browser.post(
        f"{one.url}/ui/login",
        data={"token": replicas.admin, "csrf_token": csrf_of(page.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert signed.status_code == 303, signed.text
    overview = browser.get(f"{two.url}/ui/", allow_redirects=False, timeout=30)
    assert overview.status_code == 200 and "hello" in overview.text
    logout = browser.post(
        f"{two.url}/ui/logout",
        data={"csrf_token": csrf_of(overview.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert (logout.status_code, logout.headers["Location"]) == (303, "/ui/login")

    # A revoke through replica 2 is refused on replica 1 within the documented time.
    url = f"{one.url}/dists/dev/InRelease"
    assert requests.get(url, auth=("x", reader), timeout=30).status_code == 200  # now cached
    assert "revoked token host" in replicas.cli(two, "token", "revoke", "host")
    deadline = time.monotonic() + ServerConfig.token_cache_seconds + SLACK
    while requests.get(url, auth=("x", reader), timeout=30).status_code != 401:
        assert time.monotonic() < deadline, "replica 1 still accepts a revoked token"
        time.sleep(0.2)
    refused = requests.get(f"{two.url}/dists/dev/InRelease", auth=("x", reader), timeout=30)
    assert refused.status_code == 401
