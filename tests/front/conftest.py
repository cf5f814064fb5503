"""The nginx front (conf/nginx/aptship.conf) before a real gunicorn, on loopback.

Reuses the server tests' fixtures (config, tokens of every role) and helpers
(``start_server``, ``free_port``); :mod:`tests.front.nginx` runs Debian's nginx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.front.nginx import render_front, start_nginx
from tests.server.conftest import ServerEnv, env, make_env  # noqa: F401 - fixtures
from tests.server.live import LiveServer, free_port, start_server
from tests.server.test_auth_matrix import published  # noqa: F401 - fixture


@dataclass
class Front:
    url: str  # nginx
    app: LiveServer  # gunicorn behind it
    env: ServerEnv
    root: Path  # the repository directory nginx serves

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
