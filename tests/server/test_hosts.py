"""The host setup script, run for real with ``sh`` against a temp root."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from repo_server.hosts import apt_list_name
from tests.conftest import snapshot
from tests.server.conftest import ServerEnv


def run_script(
    script: str,
    root: Path,
    *,
    mode: str | None = "prefix",
    host_id: str | None = None,
    args: tuple[str, ...] = (),
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    env = {"APTSHIP_ROOT": str(root), "PATH": "/usr/bin:/bin", **extra}
    if mode:
        env["APTSHIP_ROOT_MODE"] = mode
    if host_id:
        env["APTSHIP_HOST_ID"] = host_id
    return subprocess.run(
        ["sh", "-s", "--", *args],
        input=script,
        env=env,
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
        f"deb [signed-by={root}/etc/apt/keyrings/aptship.asc target+=AptshipPins] "
        "http://localhost dev main\n"
    )
    auth = apt / "auth.conf.d" / "aptship.conf"
    assert auth.read_text() == (
        f"machine http://localhost login token password {env.secrets['read']}\n"
    )
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    # the preferences are apt's verified copy of dists/dev/main/pins, through a link
    pref = apt / "preferences.d" / "aptship-dev.pref"
    assert os.readlink(pref) == "../../../var/lib/apt/lists/localhost_dists_dev_main_pins"
    conf = (apt / "apt.conf.d" / "50aptship").read_text()
    assert 'MetaKey "$(COMPONENT)/pins";' in conf and 'DefaultEnabled "false";' in conf
    assert 'APT::Get::Allow-Downgrades "true";' in conf
    assert f"{root}/usr/local/sbin/aptship-report --updated" in conf
    reporter = root / "usr/local/sbin/aptship-report"
    assert reporter.stat().st_mode & 0o111 and f"prefix='{root}'" in reporter.read_text()
    assert (root / "etc/aptship/channels/dev").read_text() == (
        f"channel=dev\nurl=http://localhost\npins={root}/var/lib/apt/lists/"
        "localhost_dists_dev_main_pins\n"
    )
    assert re.fullmatch(r"[0-9a-f]{32}\n", (root / "etc/aptship/host-id").read_text())
    assert not (root / "etc/systemd").exists()  # the follow agent is opt-in
    # idempotent: a second run leaves the same files and no temp files
    first = snapshot(root)
    assert run_script(resp.get_data(as_text=True), root).returncode == 0
    assert snapshot(root) == first
    assert sorted(p.name for p in (apt / "auth.conf.d").iterdir()) == ["aptship.conf"]


def test_image_build_paths_are_those_inside_the_root(
    client: FlaskClient, env: ServerEnv, tmp_path: Path
) -> None:
    """APTSHIP_ROOT alone (an image build): files name paths as the image sees them."""
    script = client.get("/api/v1/channels/dev/setup", headers=env.headers("read"))
    root = tmp_path / "image"
    done = run_script(script.get_data(as_text=True), root, mode=None, host_id="web-1")
    assert done.returncode == 0, done.stderr
    listing = (root / "etc/apt/sources.list.d/aptship-dev.list").read_text()
    assert listing.startswith("deb [signed-by=/etc/apt/keyrings/aptship.asc target+=")
    assert str(root) not in (root / "etc/apt/apt.conf.d/50aptship").read_text()
    assert "prefix=''" in (root / "usr/local/sbin/aptship-report").read_text()
    assert (root / "etc/aptship/host-id").read_text() == "web-1\n"


def test_follow_agent_and_remove(client: FlaskClient, env: ServerEnv, tmp_path: Path) -> None:
    root = tmp_path / "host"
    dev = client.get("/api/v1/channels/dev/setup", headers=env.headers("read"))
    staging = client.get("/api/v1/channels/staging/setup", headers=env.headers("read"))
    for script in (dev, staging):
        done = run_script(script.get_data(as_text=True), root, APTSHIP_FOLLOW="1")
        assert done.returncode == 0, done.stderr
    timer = root / "etc/systemd/system/aptship-follow.timer"
    assert "RandomizedDelaySec=" in timer.read_text()
    wants = root / "etc/systemd/system/timers.target.wants/aptship-follow.timer"
    assert wants.resolve() == timer.resolve()
    service = (root / "etc/systemd/system/aptship-follow.service").read_text()
    assert f"ExecStart={root}/usr/local/sbin/aptship-follow" in service

    # off dev: staging keeps working, shared files stay
    done = run_script(dev.get_data(as_text=True), root, args=("--remove",))
    assert done.returncode == 0, done.stderr
    apt = root / "etc/apt"
    assert not (apt / "sources.list.d/aptship-dev.list").exists()
    assert not os.path.lexists(apt / "preferences.d/aptship-dev.pref")
    assert (apt / "sources.list.d/aptship-staging.list").exists()
    assert (apt / "auth.conf.d/aptship.conf").exists()
    # off the last channel: nothing of aptship's is left for apt
    done = run_script(staging.get_data(as_text=True), root, args=("--remove",))
    assert done.returncode == 0, done.stderr
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == ["etc/aptship/host-id"], left
    bad = run_script(dev.get_data(as_text=True), root, args=("--bogus",))
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


@pytest.mark.parametrize("who", ["publish", "promote", "admin"])
def test_only_a_read_token_is_written_onto_a_host(
    client: FlaskClient, env: ServerEnv, who: str
) -> None:
    resp = client.get("/api/v1/channels/dev/setup", headers=env.headers(who))
    assert resp.status_code == 403
    assert b"#!/bin/sh" not in resp.data
    assert b"read role" in resp.data


def test_unknown_channel_gets_no_script(client: FlaskClient, env: ServerEnv) -> None:
    resp = client.get("/api/v1/channels/nope/setup", headers=env.headers("admin"))
    assert resp.status_code in (403, 404)
    assert b"#!/bin/sh" not in resp.data


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://127.0.0.1:8080/dists/prod/main/pins", "127.0.0.1:8080_dists_prod_main_pins"),
        (
            "https://apt.example.com/re_po~x/dists/a+b/main/pins",
            "apt.example.com_re%5fpo%7ex_dists_a+b_main_pins",
        ),
        ("https://user:pw@h.example/dists/dev/main/pins", "h.example_dists_dev_main_pins"),
    ],
)
def test_apt_list_name_matches_apt(url: str, name: str) -> None:
    assert apt_list_name(url) == name


@pytest.mark.parametrize("host", ["evil.com'$(touch x)", "a;b", "exa mple"])
def test_a_crafted_host_header_cannot_inject_shell(
    client: FlaskClient, env: ServerEnv, host: str
) -> None:
    resp = client.get("/api/v1/channels/dev/setup", headers={**env.headers("read"), "Host": host})
    assert resp.status_code == 400
    assert b"#!/bin/sh" not in resp.data
