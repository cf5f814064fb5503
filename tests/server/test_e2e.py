"""End to end: tokens made with the CLI, a real gunicorn, a real apt-get set up by the
server's own setup script, on local storage and on S3 (moto_server)."""

from __future__ import annotations

import json
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from publisher.config import load_config
from publisher.errors import (
    Forbidden,
    ImmutableConflict,
    InvalidPackage,
    StorageError,
    Unauthorized,
)
from publisher.remote import RemoteRepository, error_from_response
from publisher.repo import Repository
from tests.aptenv import AptEnv, set_up_host
from tests.cliconfig import storage_table
from tests.clirun import aptship
from tests.debs import build_deb
from tests.procs import free_port
from tests.server.conftest import EnvFactory, ServerEnv
from tests.server.live import LiveServer, start_server

pytestmark = pytest.mark.e2e
DebFactory = Callable[..., Path]
TOKENS = [("ci", "publish", "dev"), ("host", "read", "dev"), ("ops", "admin", "*")]


@dataclass
class Deployed:
    env: ServerEnv
    server: LiveServer
    secrets: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def remote(self, who: str) -> RemoteRepository:
        return RemoteRepository(self.url, self.secrets[who])

    def local(self) -> Repository:
        return Repository(load_config(self.env.config_path))


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return storage_table(request.param, tmp_path, request)


@pytest.fixture
def deployed(
    make_env: EnvFactory, storage: dict[str, Any], tmp_path: Path, tools: None
) -> Iterator[Deployed]:
    env = make_env(storage, tokens=False)
    secrets = {}
    for name, role, channel in TOKENS:
        made = aptship(
            "--config", str(env.config_path), "token", "create",
            "--name", name, "--role", role, "--channel", channel,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", made.stdout), "stdout must be only the secret"
        secrets[name] = made.stdout.strip()
    with start_server(env.config_path, tmp_path / "server") as server:
        yield Deployed(env, server, secrets)
    logs = server.logs()
    for secret in secrets.values():
        assert secret not in logs, "a token leaked into the server log"


def test_serve_removes_the_metrics_directory_it_made(
    make_env: EnvFactory, tmp_path: Path, tools: None
) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR the server makes a temp directory, and removes
    it when it stops; a directory the environment names is the operator's, and stays."""
    env = make_env({"type": "local", "path": str(tmp_path / "repo")}, tokens=False)
    temp = tmp_path / "temp"
    temp.mkdir()
    with start_server(env.config_path, tmp_path / "made", env={"TMPDIR": str(temp)}) as server:
        made = list(temp.glob("aptship-metrics-*"))
        assert len(made) == 1, made
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert list(made[0].glob("*.db")), "the workers keep their metrics there"
    assert server.proc.returncode == 0, server.logs()
    assert not made[0].exists(), "the server left its metrics directory behind"

    named = tmp_path / "named"
    named.mkdir()
    given = {"TMPDIR": str(temp), "PROMETHEUS_MULTIPROC_DIR": str(named)}
    with start_server(env.config_path, tmp_path / "given", env=given) as server:
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert named.is_dir() and not list(temp.glob("aptship-metrics-*"))


def setup_host(deployed: Deployed, root: Path, who: str = "host") -> AptEnv:
    """An isolated apt configured by running the server's setup script."""
    return set_up_host(deployed.url, "dev", deployed.secrets[who], root)


def test_apt_installs_from_the_server(deployed: Deployed, debs: DebFactory, tmp_path: Path) -> None:
    deb = debs("hello", "1.0-1")
    debs("hello", "2.0-1")
    (entry,) = deployed.remote("ci").publish("dev", [deb])
    assert (entry["status"], entry["pinned"]) == ("added", True)
    deployed.remote("ci").publish("dev", [tmp_path / "debs" / "hello_2.0-1_amd64.deb"])

    apt = setup_host(deployed, tmp_path / "host")
    auth = apt.root / "etc/apt/auth.conf.d/aptship.conf"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    update = apt.update()
    assert update.returncode == 0, update.output
    got = apt.download("hello=1.0-1")
    assert got.returncode == 0, got.output
    assert (apt.archives / "hello_1.0-1_amd64.deb").read_bytes() == deb.read_bytes()
    policy = apt.policy("hello").output
    assert "2.0-1" in policy and "1001" in policy  # the channel's pin, from the setup script

    anon = setup_host(deployed, tmp_path / "anon")
    (anon.root / "etc/apt/auth.conf.d/aptship.conf").unlink()
    refused = anon.update()
    assert refused.returncode != 0 and "401" in refused.output, refused.output

    host = ("token", deployed.secrets["host"])
    assert requests.get(f"{deployed.url}/dists/dev/InRelease", auth=host, timeout=30).ok
    prod = requests.get(f"{deployed.url}/dists/prod/InRelease", auth=host, timeout=30)
    assert prod.status_code == 403
    whole = requests.get(f"{deployed.url}/{entry['filename']}", auth=host, timeout=30)
    part = requests.get(
        f"{deployed.url}/{entry['filename']}", auth=host, headers={"Range": "bytes=0-7"}, timeout=30
    )
    assert whole.content == deb.read_bytes()
    assert part.status_code == 206 and part.content == b"!<arch>\n"


def test_remote_mode_gives_the_local_answers(deployed: Deployed, debs: DebFactory) -> None:
    ci, ops, local = deployed.remote("ci"), deployed.remote("ops"), deployed.local()
    files = [debs("app", "1.0-1"), debs("app", "2.0-1"), debs("lib", "0.1")]
    ticks: list[int] = []
    first = ci.publish("dev", files, progress=ticks.append)
    assert [r["status"] for r in first] == ["added"] * 3 and ticks == [1, 1, 1]
    assert ci.publish("dev", files) == local.publish("dev", files)  # all "unchanged" now

    promoted = ops.promote("app", "1.0-1", "dev", "staging")
    assert promoted["status"] == "promoted" and promoted["new_pin"] == "1.0-1"
    assert ops.promote_all("dev", "staging", dry_run=True) == local.promote_all(
        "dev", "staging", dry_run=True
    )
    assert ops.promote("app", "2.0-1", "dev", "staging")["new_pin"] == "2.0-1"
    assert ops.rollback("app", "staging") == {
        "package": "app",
        "channel": "staging",
        "old_pin": "2.0-1",
        "new_pin": "1.0-1",
    }
    assert ops.list_entries() == local.list_entries()
    assert ops.list_entries("staging") == local.list_entries("staging")
    assert ops.pins("staging") == local.pins("staging")
    assert ops.history() == local.history()
    assert ops.history("staging", "app") == local.history("staging", "app")
    assert ops.show("app") == local.show("app")
    assert ops.channel_summary("dev") == local.channel_summary("dev")
    assert ops.diff("dev", "staging") == local.diff("dev", "staging")
    assert ops.remove("lib", "0.1", "dev", force=True)["new_pin"] is None
    # a dev-only reader sees only dev
    reader = deployed.remote("host")
    assert reader.list_entries() == local.list_entries("dev")
    assert {row["channel"] for row in reader.history()} == {"dev"}


def test_remote_errors_match_local_errors(
    deployed: Deployed, debs: DebFactory, tmp_path: Path
) -> None:
    ci, local = deployed.remote("ci"), deployed.local()
    ci.publish("dev", [debs("app", "1.0-1")])
    other = build_deb(tmp_path / "other", "app", "1.0-1", payload="other bytes\n")
    with pytest.raises(ImmutableConflict) as remote_err:
        ci.publish("dev", [other])
    with pytest.raises(ImmutableConflict) as local_err:
        local.publish("dev", [other])
    assert remote_err.value.message == local_err.value.message
    assert remote_err.value.exit_code == 5

    bad = tmp_path / "bad_1.0_amd64.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(InvalidPackage) as remote_bad:
        ci.publish("dev", [bad])
    with pytest.raises(InvalidPackage) as local_bad:
        local.publish("dev", [bad])
    assert remote_bad.value.message == local_bad.value.message and remote_bad.value.exit_code == 3
    # the server refuses it on its own too (a client that does not check first)
    raw = requests.post(
        f"{deployed.url}/api/v1/channels/dev/packages",
        data=bad.read_bytes(),
        headers={"Authorization": f"Bearer {deployed.secrets['ci']}"},
        timeout=30,
    )
    assert raw.status_code == 400
    assert isinstance(error_from_response(raw, deployed.url), InvalidPackage)

    big = build_deb(tmp_path / "big", "big", "1.0", payload=secrets.token_hex(4_000_000))
    assert big.stat().st_size > 3_000_000
    with pytest.raises(Forbidden):  # refused before the upload is read, still answered
        deployed.remote("host").publish("dev", [big])
    with pytest.raises(Unauthorized):
        RemoteRepository(deployed.url, "wrong").publish("dev", [big])
    with pytest.raises(StorageError, match=re.escape(f"http://127.0.0.1:{(port := free_port())}")):
        RemoteRepository(f"http://127.0.0.1:{port}", "x").list_entries()


def test_cli_remote_mode(deployed: Deployed, debs: DebFactory, tmp_path: Path) -> None:
    remote = {"APTSHIP_TOKEN": deployed.secrets["ops"]}
    config = ["--config", str(deployed.env.config_path)]
    server = ["--server", deployed.url]
    deb = debs("app", "1.0-1")
    published = aptship(*server, "publish", "-c", "dev", "--json", str(deb), env=remote)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)[0]["status"] == "added"
    for args in (
        ["list", "--json"],
        ["pins", "-c", "dev"],
        ["pins", "-c", "dev", "--json"],
        ["history", "--json"],
        ["show", "app", "--json"],
        ["diff", "--from", "dev", "--to", "staging", "--json"],
    ):
        here, there = aptship(*config, *args), aptship(*server, *args, env=remote)
        assert (there.returncode, there.stdout) == (here.returncode, here.stdout), args
    other = build_deb(tmp_path / "other", "app", "1.0-1", payload="other bytes\n")
    bad = tmp_path / "bad_1.0_amd64.deb"
    bad.write_bytes(b"not a deb")
    for path, code in ((other, 5), (bad, 3)):
        there = aptship(*server, "publish", "-c", "dev", str(path), env=remote)
        here = aptship(*config, "publish", "-c", "dev", str(path))
        assert there.returncode == here.returncode == code
        assert there.stderr == here.stderr


def test_metrics_and_logs_across_workers(deployed: Deployed, debs: DebFactory) -> None:
    deployed.remote("ci").publish("dev", [debs("app", "1.0-1")])
    for _ in range(6):  # spread over both workers
        requests.get(f"{deployed.url}/dists/dev/InRelease", timeout=30)
    assert requests.get(f"{deployed.url}/metrics", timeout=30).status_code == 401
    text = requests.get(
        f"{deployed.url}/metrics",
        headers={"Authorization": f"Bearer {deployed.secrets['ops']}"},
        timeout=30,
    ).text
    assert 'aptship_publishes_total{channel="dev",status="added"} 1.0' in text
    assert 'aptship_auth_failures_total{reason="missing"} 7.0' in text
    failures = [
        json.loads(line)
        for line in deployed.server.stderr.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(f.get("event") == "auth_failure" and f["path"] == "/metrics" for f in failures)
    assert 'GET /dists/dev/InRelease HTTP/1.1" 401' in deployed.server.logs()
