"""The whole story: a dh-virtualenv service from source to a host and back, with apt alone.

Builds hello-service at 1.0.0, 1.1.0 and 2.0.0rc1 with ``aptship debianize`` and
``aptship build``; serves the repository with a real gunicorn (``aptship serve``);
publishes through the API with a publish token as CI would; promotes dev -> staging
-> prod; and drives a throwaway bookworm root (mmdebstrap, chroot) configured by the
server's setup script, once: after every promote and rollback the hosts converge
with ``apt-get update && apt-get install -y`` alone (the pins travel in the signed
channel), an image built with ``APTSHIP_ROOT`` works inside the image, the follow
agent converges a host by itself; then an exact version, and purge.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.aptenv import set_up_host
from tests.clirun import aptship_ok
from tests.e2e.hostroot import host_root, in_root
from tests.e2e.hostroot import installed_version as hostroot_installed_version
from tests.server.live import start_server

pytestmark = pytest.mark.e2e
SERVICE = "hello-service"


def cli(*args: str, **env: str) -> str:
    return aptship_ok(*args, env=env)


def installed_version(root: Path) -> str:
    return hostroot_installed_version(root, SERVICE)


def configure_host(root: Path, url: str, channel: str, token: str, host_id: str) -> None:
    """Run the server's setup script inside the host root, once."""
    script = requests.get(
        f"{url}/api/v1/channels/{channel}/setup", auth=("host", token), timeout=30
    )
    assert script.status_code == 200, script.text
    (root / "tmp" / "aptship-setup.sh").write_text(script.text)
    in_root(root, f"APTSHIP_HOST_ID={host_id} sh /tmp/aptship-setup.sh")


def fleet(url: str, token: str) -> dict[str, str]:
    """``aptship hosts --channel prod --json`` through the server: host id -> state."""
    out = cli("--server", url, "hosts", "--channel", "prod", "--json", APTSHIP_TOKEN=token)
    return {h["host_id"]: h["state"] for h in json.loads(out)["hosts"]}


def converge(root: Path) -> str:
    """What a host's operator types after any promote or rollback; the version it runs."""
    in_root(root, f"apt-get update && apt-get install -y {SERVICE}")
    return installed_version(root)


def test_service_goes_from_source_to_host_and_back(
    hello_deb: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    debs = {v: hello_deb(v) for v in ("1.0.0", "1.1.0", "2.0.0rc1")}
    cli("init", str(tmp_path / "srv"))
    config = tmp_path / "srv" / "aptship.toml"
    base = ["--config", str(config)]

    def token(name: str, role: str, *channels: str) -> str:
        scope = [arg for channel in channels for arg in ("--channel", channel)]
        return cli(*base, "token", "create", "--name", name, "--role", role, *scope).strip()

    ci_token = token("ci", "publish", "dev")
    rm_token = token("release", "promote", "staging", "prod")
    prod_host = token("web", "read", "prod")
    dev_host = token("dev1", "read", "dev")

    with (
        start_server(config, tmp_path / "server") as server,
        host_root(tmp_path) as web1,
        host_root(tmp_path) as web2,
        host_root(tmp_path) as image,
    ):
        remote = ["--server", server.url]
        for deb in debs.values():  # CI: no storage credentials, no signing key
            cli(*remote, "publish", "--channel", "dev", str(deb), APTSHIP_TOKEN=ci_token)

        def promote(spec: str, src: str, dst: str) -> None:
            cli(*remote, "promote", spec, "--from", src, "--to", dst, APTSHIP_TOKEN=rm_token)

        promote(f"{SERVICE}=1.0.0-1", "dev", "staging")
        promote(SERVICE, "staging", "prod")
        hosts = {"web-1": web1, "web-2": web2}
        for host_id, root in hosts.items():  # set up once; never again below
            configure_host(root, server.url, "prod", prod_host, host_id)
            auth = (root / "etc/apt/auth.conf.d/aptship.conf").stat().st_mode & 0o777
            assert auth == 0o600
            assert converge(root) == "1.0.0-1"
            assert in_root(root, SERVICE).stdout.strip() == "hello-service 1.0.0"
        # each host reported after its update and its dpkg run
        assert fleet(server.url, prod_host) == {"web-1": "converged", "web-2": "converged"}

        # promote: both hosts upgrade with `apt-get update && apt-get install -y` alone
        promote(f"{SERVICE}=1.1.0-1", "dev", "staging")
        promote(SERVICE, "staging", "prod")
        assert fleet(server.url, prod_host) == {"web-1": "behind", "web-2": "behind"}
        for root in hosts.values():
            assert converge(root) == "1.1.0-1"
            assert in_root(root, SERVICE).stdout.strip() == "hello-service 1.1.0"

        # roll back: both downgrade the same way, with no extra flags
        assert fleet(server.url, prod_host) == {"web-1": "converged", "web-2": "converged"}
        cli(*remote, "rollback", SERVICE, "--channel", "prod", APTSHIP_TOKEN=rm_token)
        assert fleet(server.url, prod_host) == {"web-1": "behind", "web-2": "behind"}
        for root in hosts.values():
            assert converge(root) == "1.0.0-1"
            assert in_root(root, SERVICE).stdout.strip() == "hello-service 1.0.0"
        assert fleet(server.url, prod_host) == {"web-1": "converged", "web-2": "converged"}

        # an image build: the script runs outside the root, apt runs inside it later
        script = requests.get(
            f"{server.url}/api/v1/channels/prod/setup", auth=("host", prod_host), timeout=30
        ).text
        subprocess.run(
            ["sh", "-c", script],
            env={**os.environ, "APTSHIP_ROOT": str(image), "APTSHIP_FOLLOW": "1"},
            check=True,
            capture_output=True,
        )
        in_root(image, "apt-get update")  # the keyring path is the one inside the image
        in_root(image, f"apt-get install -y {SERVICE}=1.1.0-1")
        assert installed_version(image) == "1.1.0-1"
        # the follow agent alone converges it to the pin (a downgrade here)
        follow = in_root(image, "/usr/local/sbin/aptship-follow")
        assert f"{SERVICE}=1.0.0-1" in follow.stdout, follow.stdout
        assert installed_version(image) == "1.0.0-1"
        image_id = (image / "etc/aptship/host-id").read_text().strip()
        assert fleet(server.url, prod_host)[image_id] == "converged"
        assert (
            "every pinned package is on its pin"
            in in_root(image, "/usr/local/sbin/aptship-follow").stdout
        )

        root = web1
        in_root(root, f"apt-get install -y {SERVICE}=1.1.0-1")
        assert installed_version(root) == "1.1.0-1"

        policy = in_root(root, f"apt-cache policy {SERVICE}").stdout
        assert "2.0.0~rc1" not in policy, policy  # the prod host cannot see dev-only builds

        in_root(root, f"apt-get purge -y {SERVICE}")
        assert not (root / "opt/venvs" / SERVICE).exists()
        assert not (root / "usr/bin" / SERVICE).exists()

        # a dev host sees the release candidate, ordered before a 2.0.0 final
        dev = set_up_host(server.url, "dev", dev_host, tmp_path / "dev-host")
        assert dev.update().returncode == 0
        dev_policy = dev.policy(SERVICE).output
        assert "2.0.0~rc1-1" in dev_policy, dev_policy
        assert "Candidate: 2.0.0~rc1-1" in dev_policy
        ordered = subprocess.run(
            ["dpkg", "--compare-versions", "2.0.0~rc1-1", "lt", "2.0.0-1"], check=False
        )
        assert ordered.returncode == 0
