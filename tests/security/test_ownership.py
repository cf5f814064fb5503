"""Finding 7 (name squatting) and finding 8 (dashboard sessions out of the box).

The rule (docs/security.md): the pool is shared, so a (name, version, architecture)
has one set of bytes in the whole repository: the first upload owns it, the same
bytes elsewhere are an idempotent success, other bytes are a 409 in every channel.
What stops a dev publisher from taking a name before prod's build is the token:
publish tokens are scoped to package-name patterns (``token create --package``).
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import requests

from tests.clirun import aptship
from tests.debs import build_deb
from tests.security.conftest import Hostile
from tests.server.live import start_server
from tests.ui import csrf_of


def publish(h: Hostile, deb: Path, who: str, channel: str) -> requests.Response:
    with deb.open("rb") as fh:
        return requests.post(
            f"{h.url}/api/v1/channels/{channel}/packages",
            headers=h.auth(who),
            files={"file": (deb.name, fh)},
            timeout=60,
        )


def promote(h: Hostile, who: str, channel: str, body: dict[str, object]) -> requests.Response:
    return requests.post(
        f"{h.url}/api/v1/channels/{channel}/promote", json=body, headers=h.auth(who), timeout=60
    )


def test_a_scoped_token_cannot_squat_a_name(hostile: Hostile, tmp_path: Path) -> None:
    squat = build_deb(tmp_path / "squat", "prodfuture", "1.0-1", payload="squatter\n")
    refused = publish(hostile, squat, "svc-publisher", "dev")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "package_scope"
    assert not list((hostile.root / "repo" / "pool" / "main").glob("p/prodfuture/*"))
    # the real prod build of that name and version goes through
    real = build_deb(tmp_path / "real", "prodfuture", "1.0-1", payload="the real one\n")
    assert publish(hostile, real, "prod-publisher", "prod").status_code == 201
    # and the scoped token still publishes its own packages
    own = build_deb(tmp_path / "own", "svc-api", "1.0-1")
    assert publish(hostile, own, "svc-publisher", "dev").status_code == 201


def test_one_artifact_identity_has_one_content(hostile: Hostile, tmp_path: Path) -> None:
    """An unscoped publish token can take a name first: documented, and a 409 after."""
    first = build_deb(tmp_path / "a", "prodsquat", "1.0-1", payload="dev build\n")
    assert publish(hostile, first, "dev-publisher", "dev").status_code == 201
    other = build_deb(tmp_path / "b", "prodsquat", "1.0-1", payload="prod build\n")
    clash = publish(hostile, other, "prod-publisher", "prod")
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "immutable_conflict"
    assert publish(hostile, first, "prod-publisher", "prod").status_code in (200, 201)


def test_scoped_promoter_promotes_only_its_packages(hostile: Hostile) -> None:
    other = promote(hostile, "svc-promoter", "staging", {"package": "alpha", "from": "dev"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "package_scope"
    every = promote(hostile, "svc-promoter", "staging", {"all": True, "from": "dev"})
    assert every.status_code == 403
    own = promote(hostile, "svc-promoter", "staging", {"package": "svc-web", "from": "dev"})
    assert own.status_code == 200, own.text
    rollback = requests.post(
        f"{hostile.url}/api/v1/channels/dev/rollback",
        json={"package": "alpha"},
        headers=hostile.auth("svc-promoter"),
        timeout=30,
    )
    assert rollback.status_code == 403


def test_token_create_stores_package_patterns(tmp_path: Path) -> None:
    assert aptship("init", str(tmp_path / "srv")).returncode == 0
    cfg = str(tmp_path / "srv" / "aptship.toml")
    made = aptship(
        "--config", cfg, "token", "create", "--name", "ci", "--role", "publish",
        "--channel", "dev", "--package", "svc-*", "--package", "lib-svc-?",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = json.loads(aptship("--config", cfg, "token", "list", "--json").stdout)
    assert listed[0]["packages"] == ["svc-*", "lib-svc-?"]
    bad = aptship(
        "--config", cfg, "token", "create", "--name", "x", "--role", "publish",
        "--channel", "dev", "--package", "../etc",
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid package pattern" in bad.stderr


def test_init_makes_dashboard_sign_in_work_across_workers(tmp_path: Path) -> None:
    assert aptship("init", str(tmp_path / "srv")).returncode == 0
    key = tmp_path / "srv" / "session.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cfg = tmp_path / "srv" / "aptship.toml"
    assert re.search(r'^secret_key_file = "session.key"', cfg.read_text(), re.M)
    made = aptship(
        "--config", str(cfg), "token", "create", "--name", "ops", "--role", "admin",
        "--channel", "*",
    )  # fmt: skip
    secret = made.stdout.strip()
    with start_server(cfg, tmp_path / "server", workers=2) as server:
        for _ in range(12):
            with requests.Session() as browser:
                page = browser.get(f"{server.url}/ui/login", timeout=30)
                done = browser.post(
                    f"{server.url}/ui/login",
                    data={"token": secret, "csrf_token": csrf_of(page.text)},
                    allow_redirects=False,
                    timeout=30,
                )
                assert done.status_code == 303, done.text
                for _ in range(3):  # each request may land on either worker
                    home = browser.get(f"{server.url}/ui/", allow_redirects=False, timeout=30)
                    assert home.status_code == 200
        assert secret not in server.logs()
        assert key.read_text().strip() not in server.logs()
