"""One release of a service across two distributions, from source to hosts and back.

hello-service is built at 1.0.0 and 2.0.0 for bookworm (on this bookworm machine,
published with ``--dist bookworm``) and for trixie (``aptship build --dist trixie``:
inside a cached trixie chroot made with mmdebstrap, stamped ``+deb13``).  Everything
goes through a real gunicorn with CI and release-manager tokens.  A bookworm host root
and a trixie host root (mmdebstrap, chroot), each set up by the server's script for
channel ``prod``, install their own build and run it: the virtualenv's Python differs
(3.11 and 3.13).  Promoting release 1.0.0, then 2.0.0, then rolling back moves both.
A bookworm .deb is refused in the trixie suite; a trixie host never sees a bookworm
build.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from tests.clirun import aptship_ok
from tests.e2e.dhv import PACKAGE, aptship, copy_hello
from tests.e2e.hostroot import cache_dir, host_root, in_root, installed_version


def cli(*args: str, **env: str) -> str:
    return aptship_ok(*args, env=env)


pytestmark = pytest.mark.e2e
build_seconds: dict[str, float] = {}


def build(tmp_path: Path, version: str, dist: str | None) -> Path:
    """hello-service at ``version``: on this machine, or with ``build --dist``."""
    project = copy_hello(tmp_path / f"{dist or 'host'}-{version}" / PACKAGE, version)
    done = aptship("debianize", "--hermetic", str(project))
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    args = ["build", str(project), "--json"] + (["--dist", dist] if dist else [])
    done = aptship(*args)
    assert done.returncode == 0, f"aptship build failed:\n{done.stderr[-6000:]}"
    build_seconds[f"{dist or 'host'} {version}"] = time.monotonic() - started
    return Path(json.loads(done.stdout)["deb"])


def python_of(root: Path) -> str:
    return in_root(root, f"/opt/venvs/{PACKAGE}/bin/python --version").stdout.strip()


def test_one_release_two_distributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APTSHIP_CACHE", str(cache_dir()))  # the trixie build root, kept
    host = {v: build(tmp_path, v, None) for v in ("1.0.0", "2.0.0")}
    trixie = {v: build(tmp_path, v, "trixie") for v in ("1.0.0", "2.0.0")}
    assert trixie["1.0.0"].name == f"{PACKAGE}_1.0.0-1+deb13_amd64.deb"

    cli("init", str(tmp_path / "srv"))
    config = tmp_path / "srv" / "aptship.toml"
    text = config.read_text()
    config.write_text(
        text.replace("[repository]\n", '[repository]\ndistributions = ["bookworm", "trixie"]\n')
    )
    base = ["--config", str(config)]

    def token(name: str, role: str, *channels: str) -> str:
        scope = [arg for channel in channels for arg in ("--channel", channel)]
        return cli(*base, "token", "create", "--name", name, "--role", role, *scope).strip()

    ci_token = token("ci", "publish", "dev")
    rm_token = token("release", "promote", "staging", "prod")
    prod_host = token("web", "read", "prod")

    from tests.server.live import aptship as live_cli
    from tests.server.live import start_server

    with (
        start_server(config, tmp_path / "server") as server,
        host_root(tmp_path) as web_bookworm,
        host_root(tmp_path, "trixie") as web_trixie,
    ):
        remote = ["--server", server.url]
        for version in ("1.0.0", "2.0.0"):
            cli(
                *remote,
                "publish",
                "--channel",
                "dev",
                "--dist",
                "bookworm",
                str(host[version]),
                APTSHIP_TOKEN=ci_token,
            )
            cli(
                *remote, "publish", "--channel", "dev", str(trixie[version]), APTSHIP_TOKEN=ci_token
            )
        # a bookworm build is refused in the trixie suite (exit 3, nothing written)
        refused = live_cli(
            *remote,
            "publish",
            "--channel",
            "trixie-dev",
            "--dist",
            "bookworm",
            str(host["1.0.0"]),
            env={"APTSHIP_TOKEN": ci_token},
        )
        assert refused.returncode == 3, refused.stderr
        assert "does not go into 'trixie-dev'" in refused.stderr

        def promote(release: str) -> None:
            for src, dst in (("dev", "staging"), ("staging", "prod")):
                cli(
                    *remote,
                    "promote",
                    f"{PACKAGE}={release}",
                    "--from",
                    src,
                    "--to",
                    dst,
                    APTSHIP_TOKEN=rm_token,
                )

        def converge(root: Path) -> str:
            in_root(root, f"apt-get update && apt-get install -y {PACKAGE}")
            return installed_version(root, PACKAGE)

        promote("1.0.0")
        roots = {"bookworm": web_bookworm, "trixie": web_trixie}
        for name, root in roots.items():
            script = requests.get(
                f"{server.url}/api/v1/channels/prod/setup", auth=("host", prod_host), timeout=30
            )
            assert script.status_code == 200, script.text
            (root / "tmp" / "aptship-setup.sh").write_text(script.text)
            in_root(root, f"APTSHIP_HOST_ID=web-{name} sh /tmp/aptship-setup.sh")
            assert (root / f"etc/apt/sources.list.d/aptship-{name}-prod.list").is_file()
        assert converge(web_bookworm) == "1.0.0-1"
        assert converge(web_trixie) == "1.0.0-1+deb13"
        for root in roots.values():
            assert in_root(root, PACKAGE).stdout.strip() == f"{PACKAGE} 1.0.0"
        assert python_of(web_bookworm).startswith("Python 3.11.")
        assert python_of(web_trixie).startswith("Python 3.13.")

        promote("2.0.0")
        assert converge(web_bookworm) == "2.0.0-1"
        assert converge(web_trixie) == "2.0.0-1+deb13"

        # the release rolls back as one: both distributions downgrade
        back = json.loads(
            cli(*remote, "rollback", PACKAGE, "--channel", "prod", "--json", APTSHIP_TOKEN=rm_token)
        )
        assert (back["old_pin"], back["new_pin"]) == ("2.0.0", "1.0.0")
        assert converge(web_bookworm) == "1.0.0-1"
        assert converge(web_trixie) == "1.0.0-1+deb13"

        # a trixie host never sees a bookworm build
        policy = in_root(web_trixie, f"apt-cache policy {PACKAGE}").stdout
        versions = re.findall(r"\b(\d+\.\d+\.\d+-1\S*)", policy)
        assert versions and all(v.endswith("+deb13") for v in versions), policy
        diff = json.loads(cli(*base, "diff", "--from", "dev", "--to", "prod", "--json"))
        assert diff[0]["dev"] == "2.0.0" and diff[0]["prod"] == "1.0.0"
        verified = live_cli(*base, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
