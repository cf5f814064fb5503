"""The nginx front (conf/nginx/aptship.conf) before a real gunicorn, on loopback.

Reuses the server tests' fixtures (config, tokens of every role) and helpers
(``start_server``, ``free_port``); :mod:`tests.front.nginx` runs Debian's nginx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.front.nginx import SHIPPED_S3, render_front, start_nginx
from tests.server.access import s3_client
from tests.server.conftest import (  # noqa: F401 - fixtures
    EnvFactory,
    ServerEnv,
    env,
    make_env,
    published,
)
from tests.server.live import LiveServer, free_port, start_server


@dataclass
class Front:
    url: str  # nginx
    app: LiveServer  # gunicorn behind it
    env: ServerEnv
    root: Path | None  # the repository directory nginx serves (None: S3)

    def logs(self) -> str:
        return self.app.logs()


@pytest.fixture
def front(env: ServerEnv, tmp_path: Path, tools: None) -> Iterator[Front]:  # noqa: F811
    root = tmp_path / "repo"
    env.repo()  # the repository directory exists before nginx points at it
    root.mkdir(exist_ok=True)
    with start_server(env.config_path, tmp_path / "server") as app:
        port = free_port()
        body = render_front(
            port=port,
            upstreams=[app.url.removeprefix("http://")],
            root=root,
            cache=tmp_path / "nginx" / "auth-cache",
        )
        with start_nginx(body, tmp_path / "nginx", port):
            yield Front(f"http://127.0.0.1:{port}", app, env, root)


@pytest.fixture
def s3_front(
    make_env: EnvFactory,  # noqa: F811
    s3_bucket: tuple[str, str],
    tmp_path: Path,
    tools: None,
) -> Iterator[Front]:
    """conf/nginx/aptship-s3.conf before a real gunicorn on a moto_server bucket."""
    s3_env, _ = s3_client(make_env, s3_bucket)
    with start_server(s3_env.config_path, tmp_path / "server") as app:
        port = free_port()
        body = render_front(
            port=port,
            upstreams=[app.url.removeprefix("http://")],
            root=None,
            cache=tmp_path / "nginx" / "auth-cache",
            conf=SHIPPED_S3,
        )
        with start_nginx(body, tmp_path / "nginx", port):
            yield Front(f"http://127.0.0.1:{port}", app, s3_env, None)
