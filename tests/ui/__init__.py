"""Shared setup for the dashboard tests: a small release repository, HTML helpers.

:func:`build_release` writes a config with *relative* paths (so the whole directory
can be copied per test), creates the tokens in ``UI_TOKENS`` and builds, with real
.debs and real signing:

    package  dev              staging                             prod
    hello    2.0-1 (2 kept)   1.0-1 (2 kept): behind dev, and     1.0-1
                              rolled back from 2.0-1
    world    2.0-1 (2 kept)   1.0-1: behind dev                   1.0-1
    tool     1.0-1            1.0-1                               1.0-1
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from flask.testing import FlaskClient

from publisher.config import load_config
from publisher.repo import Repository
from tests.conftest import config_dict, tokens_of
from tests.debs import build_deb
from tests.tomlfile import toml_dumps

SESSION_VAR = "APTSHIP_TEST_UI_SECRET"
# name -> (role, channels)
UI_TOKENS: dict[str, tuple[str, list[str]]] = {
    "release": ("promote", ["*"]),
    "reader": ("read", ["*"]),
    "stager": ("promote", ["dev", "staging"]),
    "devview": ("read", ["dev"]),
}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class ReleaseEnv:
    root: Path
    secrets: dict[str, str]

    @property
    def config_path(self) -> Path:
        return self.root / "aptship.toml"

    def repo(self) -> Repository:
        return Repository(load_config(self.config_path))

    def copy(self, dest: Path) -> ReleaseEnv:
        shutil.copytree(self.root, dest)
        return ReleaseEnv(dest, dict(self.secrets))


def build_release(root: Path, gpg_key: tuple[Path, str]) -> ReleaseEnv:
    root.mkdir(parents=True)
    data = config_dict({"type": "local", "path": "repo"}, gpg_key[0], [gpg_key[1]])
    (root / "uploads").mkdir()
    data["server"].update({"upload_dir": "uploads", "secret_key_env": SESSION_VAR})
    (root / "aptship.toml").write_text(toml_dumps(data))
    store = tokens_of(root / "aptship.toml")
    secrets = {name: store.create(name, role, chans) for name, (role, chans) in UI_TOKENS.items()}
    env = ReleaseEnv(root, secrets)
    debs = root / "debs"
    debs.mkdir()
    repo = env.repo()
    repo.publish("dev", [build_deb(debs, p, "1.0-1") for p in ("hello", "world", "tool")])
    repo.promote_all("dev", "staging")
    repo.promote_all("staging", "prod")
    repo.publish("dev", [build_deb(debs, p, "2.0-1") for p in ("hello", "world")])
    repo.promote("hello", "2.0-1", "dev", "staging")
    repo.rollback("hello", "staging")
    return env


@dataclass
class CellInfo:
    classes: set[str]
    text: str
    title: str


class _Cells(HTMLParser):
    """Collects the overview's ``<td data-package data-channel>`` cells."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], CellInfo] = {}
        self._open: tuple[str, str] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self._open is not None:
            if tag == "td":
                self._depth += 1
            return
        if tag == "td" and "data-package" in a:
            self._open = (a["data-package"], a["data-channel"])
            self.cells[self._open] = CellInfo(
                set(a.get("class", "").split()), "", a.get("title", "")
            )

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == "td":
            if self._depth:
                self._depth -= 1
            else:
                self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.cells[self._open].text += data


def matrix(html: str) -> dict[tuple[str, str], CellInfo]:
    """(package, channel) -> the overview cell's classes, text and title."""
    parser = _Cells()
    parser.feed(html)
    for cell in parser.cells.values():
        cell.text = " ".join(cell.text.split())
    return parser.cells


def sign_in(client: FlaskClient, secret: str) -> str:
    """Sign in through the form; return the session's CSRF token."""
    page = client.get("/ui/login")
    assert page.status_code == 200
    done = client.post("/ui/login", data={"token": secret, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303, done.text
    return csrf_of(client.get("/ui/").text)


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)
