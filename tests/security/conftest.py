"""A real ``aptship serve`` (gunicorn, 2 workers) on loopback, attacked by the tests.

``hostile`` (one per module) writes a config with small ``[limits]`` so that every
attack ends within a few seconds, publishes a few packages, creates tokens and
starts the server.  Helpers open raw sockets (slow clients) and read the workers'
resident memory from ``/proc/<pid>/status`` (psutil is not a dependency).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from publisher.config import load_config
from publisher.repo import Repository
from tests.conftest import config_dict, tokens_of
from tests.debs import build_deb
from tests.server.conftest import app, env, make_env  # noqa: F401 - fixtures
from tests.server.live import LiveServer, start_server
from tests.tomlfile import toml_dumps


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The security suite attacks a real gunicorn: it is the e2e tier (CI runs it;
    ``scripts/test --fast`` leaves it out)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


RSS_LIMIT_KB = 200 * 1024
UPLOAD_LIMIT = 1024 * 1024  # server.max_upload_bytes in these tests
LIMITS: dict[str, Any] = {
    "max_body_bytes": 64 * 1024,
    "header_timeout": 3,
    "body_grace": 3,
    "min_body_rate": 256 * 1024,
    "max_control_bytes": 1024 * 1024,
    "max_control_field_bytes": 16 * 1024,
    "max_json_depth": 32,
    "history_page_max": 50,
}
# name -> (role, channels, package patterns)
TOKENS: dict[str, tuple[str, list[str], list[str]]] = {
    "dev-reader": ("read", ["dev"], []),
    "dev-publisher": ("publish", ["dev"], []),
    "svc-publisher": ("publish", ["dev"], ["svc-*"]),
    "staging-promoter": ("promote", ["staging"], []),
    "svc-promoter": ("promote", ["dev", "staging"], ["svc-*"]),
    "prod-publisher": ("publish", ["prod"], []),
    "admin": ("admin", ["*"], []),
}


@dataclass
class Hostile:
    server: LiveServer
    root: Path
    upload_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)  # name -> pool key

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def basic(self, who: str) -> str:
        return base64.b64encode(f"apt:{self.secrets[who]}".encode()).decode()

    def repo(self) -> Repository:
        return Repository(load_config(self.server.config))


def worker_pids(server: LiveServer) -> list[int]:
    master = server.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def assert_workers_small(server: LiveServer) -> None:
    pids = worker_pids(server)
    assert len(pids) == 2, pids
    sizes = {pid: rss_kb(pid) for pid in pids}
    assert all(kb < RSS_LIMIT_KB for kb in sizes.values()), sizes


def apt_get(h: Hostile, path: str = "/dists/dev/InRelease", timeout: float = 1.0) -> int:
    """One apt-style GET (HTTP Basic, like apt's auth.conf); its status code."""
    headers = {
        "Authorization": f"Basic {h.basic('dev-reader')}",
        "User-Agent": "Debian APT-HTTP/1.3",
    }
    return requests.get(h.url + path, headers=headers, timeout=timeout).status_code


def connect(h: Hostile, timeout: float = 20.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", h.port), timeout=timeout)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or the socket times out)."""
    out = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def wait_closed(sock: socket.socket, deadline: float) -> bytes:
    """What the server sent before closing ``sock``; fails if it is still open at ``deadline``."""
    sock.settimeout(max(deadline - time.monotonic(), 0.1))
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        pytest.fail(f"the server kept a slow connection open (got {out[:80]!r})")
    except ConnectionResetError:
        pass
    return out


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, gpg_key: tuple[Path, str]
) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    upload_dir = root / "uploads"
    upload_dir.mkdir()
    data = config_dict({"type": "local", "path": str(root / "repo")}, gpg_key[0], [gpg_key[1]])
    data["server"].update({"upload_dir": str(upload_dir), "max_upload_bytes": UPLOAD_LIMIT})
    data["limits"] = dict(LIMITS)
    cfg = root / "aptship.toml"
    cfg.write_text(toml_dumps(data))
    store = tokens_of(cfg)
    secrets = {
        name: store.create(name, role, channels, packages)
        for name, (role, channels, packages) in TOKENS.items()
    }
    repo = Repository(load_config(cfg))
    debs = root / "debs"
    debs.mkdir()
    published = {}
    for channel, name in (("dev", "alpha"), ("prod", "secret"), ("dev", "svc-web")):
        (result,) = repo.publish(channel, [build_deb(debs, name, "1.0-1")])
        published[name] = result["filename"]
    with start_server(cfg, root / "server", workers=2) as server:
        yield Hostile(server, root, upload_dir, secrets, published)
