"""The host setup script, run for real with ``sh`` against a temp root."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from repo_server import create_app
from tests.conftest import snapshot
from tests.server.conftest import EnvFactory, ServerEnv


def run_script(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-s"],
        input=script,
        env={"APTSHIP_ROOT": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_setup_script_writes_the_host_files(
    client: FlaskClient, env: ServerEnv, debs: Callable[..., Path], tmp_path: Path
) -> None:
    env.repo().publish("dev", [debs("hello", "1.0-1")])
    resp = client.get("/api/v1/channels/dev/setup", headers=env.headers("read"))
    assert resp.status_code == 200
    assert resp.mimetype == "text/x-shellscript"
    assert "no-store" in resp.headers["Cache-Control"]
    root = tmp_path / "host"
    done = run_script(resp.get_data(as_text=True), root)
    assert done.returncode == 0, done.stderr
    apt = root / "etc" / "apt"
    assert (apt / "keyrings" / "aptship.asc").read_bytes() == env.repo().signer.export_public()
    assert (apt / "sources.list.d" / "aptship-dev.list").read_text() == (
        f"deb [signed-by={root}/etc/apt/keyrings/aptship.asc] http://localhost dev main\n"
    )
    auth = apt / "auth.conf.d" / "aptship.conf"
    assert auth.read_text() == (
        f"machine http://localhost login token password {env.secrets['read']}\n"
    )
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    prefs = (apt / "preferences.d" / "aptship-dev.pref").read_text()
    assert prefs == env.repo().pins("dev")
    assert "Pin: version 1.0-1" in prefs
    # idempotent: a second run leaves the same files and no temp files
    first = snapshot(root)
    assert run_script(resp.get_data(as_text=True), root).returncode == 0
    assert snapshot(root) == first
    assert sorted(p.name for p in (apt / "auth.conf.d").iterdir()) == ["aptship.conf"]


def test_public_url_and_https_machine(make_env: EnvFactory, tmp_path: Path) -> None:
    env = make_env(public_url="https://apt.example.com/repo/")
    client = create_app(env.config_path).test_client()
    resp = client.get("/api/v1/channels/staging/setup", headers=env.headers("promote"))
    assert resp.status_code == 200
    root = tmp_path / "host"
    assert run_script(resp.get_data(as_text=True), root).returncode == 0
    apt = root / "etc" / "apt"
    assert (
        (apt / "sources.list.d" / "aptship-staging.list")
        .read_text()
        .endswith("] https://apt.example.com/repo staging main\n")
    )
    assert (
        (apt / "auth.conf.d" / "aptship.conf")
        .read_text()
        .startswith("machine apt.example.com/repo login token password ")
    )
    # an empty channel gets an empty preferences file
    assert (apt / "preferences.d" / "aptship-staging.pref").read_text() == ""


@pytest.mark.parametrize("host", ["evil.com'$(touch x)", "a;b", "exa mple"])
def test_a_crafted_host_header_cannot_inject_shell(
    client: FlaskClient, env: ServerEnv, host: str
) -> None:
    resp = client.get("/api/v1/channels/dev/setup", headers={**env.headers("read"), "Host": host})
    assert resp.status_code == 400
    assert b"#!/bin/sh" not in resp.data
