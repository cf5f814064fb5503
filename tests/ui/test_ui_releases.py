"""The dashboard's releases page: one row per package and channel with distributions,
its release and each distribution's build; a split release is marked."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.repo import Repository
from repo_server import create_app
from tests.conftest import config_dict, tokens_of
from tests.server.conftest import BufferedClient, toml_dumps
from tests.ui import SESSION_VAR, csrf_of

DebFactory = Callable[..., Path]


def test_releases_page_shows_builds_per_distribution(
    tmp_path: Path,
    gpg_key: tuple[Path, str],
    debs: DebFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = config_dict({"type": "local", "path": str(tmp_path / "repo")}, gpg_key[0], [gpg_key[1]])
    data["repository"]["distributions"] = ["bookworm", "trixie"]
    data["server"]["secret_key_env"] = SESSION_VAR
    config = tmp_path / "aptship.toml"
    config.write_text(toml_dumps(data))
    store = tokens_of(config)
    reader = store.create("reader", "read", ["dev", "bookworm-dev", "trixie-dev"])
    repo = Repository(load_config(config))
    for n in (12, 13):
        repo.publish("dev", [debs("svc", f"1.0-1+deb{n}", "all")])
        repo.publish("dev", [debs("svc", f"2.0-1+deb{n}", "all")])
    repo.publish("dev", [debs("lib", "3.0-1+deb12", "all")])
    repo.rollback("svc", "trixie-dev")  # trixie back to 1.0: a split release

    monkeypatch.setenv(SESSION_VAR, "a-test-session-key-of-enough-length")
    app = create_app(config)
    app.testing = True
    app.test_client_class = BufferedClient
    client = app.test_client()
    page = client.get("/ui/login")
    done = client.post("/ui/login", data={"token": reader, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    overview = client.get("/ui/").text
    assert 'href="/ui/releases"' in overview
    html = client.get("/ui/releases").text
    assert '<h2 id="channel-dev">dev</h2>' in html
    assert "channel-staging" not in html  # the token cannot read staging's suites
    rows = dict(re.findall(r'<tr data-package="([a-z]+)">(.*?)</tr>', html, re.S))
    assert "split" in rows["svc"]
    assert "2.0-1+deb12" in rows["svc"] and "1.0-1+deb13" in rows["svc"]
    assert "split" not in rows["lib"] and "3.0-1+deb12" in rows["lib"]
    repo.rollback("svc", "bookworm-dev")
    html = client.get("/ui/releases").text
    rows = dict(re.findall(r'<tr data-package="([a-z]+)">(.*?)</tr>', html, re.S))
    assert "split" not in rows["svc"] and '<td class="cell">1.0</td>' in rows["svc"]
