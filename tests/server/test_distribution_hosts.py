"""Hosts of a channel with distributions: the setup script reads ``VERSION_CODENAME``
from the root's os-release and configures that distribution's suite; a real apt then
sees only its own distribution's builds and pins.  A codename the channel does not
carry is a clear error that writes nothing (docs/hosts.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.repo import Repository
from tests.aptenv import run_setup_script, set_up_host
from tests.conftest import config_dict, snapshot, tokens_of
from tests.server.conftest import toml_dumps
from tests.server.live import start_server

pytestmark = pytest.mark.e2e
DebFactory = Callable[..., Path]


@pytest.fixture
def dist_config(tmp_path: Path, gpg_key: tuple[Path, str]) -> tuple[Path, str]:
    """(config path, secret of a read token for channel dev and its suites)."""
    data = config_dict({"type": "local", "path": str(tmp_path / "repo")}, gpg_key[0], [gpg_key[1]])
    data["repository"]["distributions"] = ["bookworm", "trixie"]
    path = tmp_path / "aptship.toml"
    path.write_text(toml_dumps(data))
    secret = tokens_of(path).create("host", "read", ["dev", "bookworm-dev", "trixie-dev"])
    return path, secret


def root_of(tmp_path: Path, name: str, os_release: str | None) -> Path:
    root = tmp_path / name
    (root / "etc").mkdir(parents=True)
    if os_release is not None:
        (root / "etc/os-release").write_text(os_release)
    return root


def test_each_host_gets_its_own_distribution(
    dist_config: tuple[Path, str], debs: DebFactory, tmp_path: Path, tools: None
) -> None:
    config, secret = dist_config
    repo = Repository(load_config(config))
    repo.publish("dev", [debs("svc", "1.0-1+deb12"), debs("svc", "1.0-1+deb13")])
    repo.publish("dev", [debs("svc", "2.0-1+deb12")])
    repo.rollback("svc", "bookworm-dev")  # bookworm pinned back to 1.0
    with start_server(config, tmp_path / "server") as server:
        bookworm = set_up_host(
            server.url,
            "dev",
            secret,
            root_of(tmp_path, "bookworm", 'PRETTY_NAME="Debian 12"\nVERSION_CODENAME=bookworm\n'),
        )
        trixie = set_up_host(
            server.url,
            "dev",
            secret,
            root_of(tmp_path, "trixie", "ID=debian\nVERSION_CODENAME='trixie'\n"),
        )
        for apt in (bookworm, trixie):
            done = apt.update()
            assert done.returncode == 0, done.output
        b = bookworm.policy("svc").output
        t = trixie.policy("svc").output
    assert "Candidate: 1.0-1+deb12" in b and "2.0-1+deb12" in b  # pinned below the newest
    assert "Candidate: 1.0-1+deb13" in t
    assert "deb12" not in t  # a trixie host never sees bookworm builds
    sources = (tmp_path / "trixie/etc/apt/sources.list.d/aptship-trixie-dev.list").read_text()
    assert f"{server.url} trixie-dev main" in sources
    pref = tmp_path / "trixie/etc/apt/preferences.d/aptship-trixie-dev.pref"
    assert "Pin: version 1.0-1+deb13" in pref.read_text()


@pytest.mark.parametrize(
    ("os_release", "shown"),
    [
        ("VERSION_CODENAME=forky\n", "this host runs 'forky'"),
        ("ID=debian\n", "no VERSION_CODENAME"),
        (None, "no VERSION_CODENAME"),
        ("VERSION_CODENAME=bookworm;touch /tmp/x\n", "no VERSION_CODENAME"),
    ],
)
def test_a_codename_the_channel_lacks_writes_nothing(
    dist_config: tuple[Path, str], tmp_path: Path, os_release: str | None, shown: str
) -> None:
    config, secret = dist_config
    root = root_of(tmp_path, "host", os_release)
    before = snapshot(root)
    with start_server(config, tmp_path / "server", workers=1) as server:
        done = run_setup_script(server.url, "dev", secret, root)
    assert done.returncode == 3
    assert shown in done.stderr and "carries bookworm, trixie only" in done.stderr
    assert snapshot(root) == before
