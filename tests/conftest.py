"""Shared fixtures: a session signing key, repositories on either backend, .deb builder."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from publisher.config import Config, parse_config
from publisher.repo import Repository
from publisher.signing import generate_dev_key
from publisher.storage.base import Storage
from publisher.tokens import TokenStore, open_tokens
from tests.clirun import Cli, run_main
from tests.debs import build_deb

pytest_plugins = ["tests.s3server"]

CHANNELS: dict[str, Any] = {
    "dev": {"description": "dev builds"},
    "staging": {"promote_from": ["dev"]},
    "prod": {"promote_from": ["staging"]},
}


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(gnupghome, fingerprint) of an ed25519 key made once per test session."""
    home = tmp_path_factory.mktemp("gnupg")
    fpr = generate_dev_key(home, "aptship test key", "test@aptship.invalid")
    yield home, fpr
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def config_dict(
    storage: dict[str, Any],
    gnupghome: Path,
    keys: list[str],
    channels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "repository": {"origin": "aptship-test", "label": "aptship-test"},
        "storage": storage,
        "signing": {"gnupghome": str(gnupghome), "keys": keys},
        "server": {},
        "channels": channels if channels is not None else CHANNELS,
    }


def tokens_of(config_path: Path) -> TokenStore:
    """The token store of a written config (what `aptship token ...` uses)."""
    from publisher.config import load_config

    return open_tokens(load_config(config_path))


RepoFactory = Callable[..., Repository]


@pytest.fixture
def make_repo(tmp_path: Path, gpg_key: tuple[Path, str]) -> RepoFactory:
    """Build a Repository on local storage (default) or a given Storage object."""

    def factory(
        channels: dict[str, Any] | None = None,
        storage: Storage | None = None,
        keys: list[str] | None = None,
        gnupghome: Path | None = None,
        **repository: Any,
    ) -> Repository:
        data = config_dict(
            {"type": "local", "path": str(tmp_path / "repo")},
            gnupghome or gpg_key[0],
            keys or [gpg_key[1]],
            channels,
        )
        data["repository"].update(repository)
        cfg: Config = parse_config(data, tmp_path / "aptship.toml")
        return Repository(cfg, storage)

    return factory


@pytest.fixture
def repo(make_repo: RepoFactory) -> Repository:
    return make_repo()


@pytest.fixture
def debs(tmp_path: Path) -> Callable[..., Path]:
    """``debs(name, version, arch="amd64", **kw)`` builds a real .deb with dpkg-deb."""
    out = tmp_path / "debs"
    out.mkdir(exist_ok=True)

    def factory(package: str, version: str, arch: str = "amd64", **kw: Any) -> Path:
        return build_deb(out, package, version, arch, **kw)

    return factory


def packages_text(storage: Storage, channel: str = "dev", arch: str = "amd64") -> str:
    """A channel's Packages for ``arch`` as apt reads it: decompressed from Packages.xz,
    which every default configuration stores (the uncompressed one is only listed)."""
    import lzma

    return lzma.decompress(
        storage.read_bytes(f"dists/{channel}/main/binary-{arch}/Packages.xz")
    ).decode()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes: compare before/after to prove no change."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="session")
def tools() -> None:
    missing = [t for t in ("gpg", "gpgv", "dpkg-deb", "apt-get") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"required system tools missing: {missing} (run .ci/run to install them)")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """A repository made by ``aptship init`` in tmp_path/srv, and a :class:`Cli` on it."""
    made = run_main("init", str(tmp_path / "srv"))
    assert made.code == 0, made.stderr
    assert "wrote" in made.stdout
    return Cli(capsys, tmp_path / "srv" / "aptship.toml")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that talks to the real S3 API (moto_server over HTTP) belongs to the e2e
    tier (pyproject.toml's marker), whichever module it is in."""
    for item in items:
        if "s3_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
