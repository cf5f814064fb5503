"""The channel workflow, run against both engines: native and a real `aptly api serve`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from publisher.config import parse_config
from publisher.errors import ImmutableConflict, PolicyViolation, StorageError
from publisher.repo import Repository
from publisher.verify import verify
from tests.aptenv import set_up_host
from tests.aptlyserver import AptlyServer, aptly_server  # noqa: F401 - fixture
from tests.conftest import config_dict, packages_text, snapshot, tokens_of
from tests.server.live import start_server
from tests.tomlfile import toml_dumps

pytestmark = pytest.mark.e2e


def engine_config(
    engine: str, tmp_path: Path, gpg_key: tuple[Path, str], aptly: AptlyServer | None, **chan: Any
) -> dict[str, Any]:
    channels = {
        "dev": {"keep": chan.get("keep", 10)},
        "staging": {"promote_from": ["dev"]},
        "prod": {"promote_from": ["staging"]},
    }
    data = config_dict(
        {"type": "local", "path": str(tmp_path / "state")}, gpg_key[0], [gpg_key[1]], channels
    )
    if engine == "aptly":
        assert aptly is not None
        data["repository"]["engine"] = "aptly"
        data["aptly"] = {"url": aptly.url, "public_dir": str(aptly.public), "timeout": 30}
    return data


@pytest.fixture(params=["native", "aptly"])
def make_engine_repo(
    request: pytest.FixtureRequest, tmp_path: Path, gpg_key: tuple[Path, str]
) -> Iterator[Callable[..., Repository]]:
    aptly = request.getfixturevalue("aptly_server") if request.param == "aptly" else None

    def factory(**chan: Any) -> Repository:
        data = engine_config(request.param, tmp_path, gpg_key, aptly, **chan)
        return Repository(parse_config(data, tmp_path / "aptship.toml"))

    factory.engine = request.param  # type: ignore[attr-defined]
    factory.aptly = aptly  # type: ignore[attr-defined]
    yield factory


def engine_versions(repo: Repository, channel: str, package: str) -> list[str]:
    """What the engine itself holds for a package (aptly: its repo; native: the index)."""
    if repo.config.engine == "aptly":
        from publisher.engines.aptly import AptlyEngine

        engine = repo.engine
        assert isinstance(engine, AptlyEngine)
        found = engine.client.repos.search_packages(
            engine.repo_name(channel), query=f"Name (= {package})", detailed=True
        )
        return sorted(p.fields["Version"] for p in found)
    text = packages_text(repo.serving, channel)
    return sorted(
        line.split(": ", 1)[1]
        for block in text.split("\n\n")
        if f"Package: {package}\n" in block + "\n"
        for line in block.splitlines()
        if line.startswith("Version: ")
    )


def published_versions(repo: Repository, channel: str, package: str) -> list[str]:
    """What apt would see: the versions in dists/<channel>/main/binary-amd64/Packages."""
    import gzip

    data = repo.serving.read_bytes(f"dists/{channel}/main/binary-amd64/Packages.gz")
    text = gzip.decompress(data).decode()
    return sorted(
        line.split(": ", 1)[1]
        for block in text.split("\n\n")
        if any(line == f"Package: {package}" for line in block.splitlines())
        for line in block.splitlines()
        if line.startswith("Version: ")
    )


def test_publish_list_and_immutability(
    make_engine_repo: Callable[..., Repository], debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_engine_repo()
    first = debs("app", "1.0-1")
    repo.publish("dev", [first, debs("app", "1:2.0-1")])
    rows = repo.list_entries("dev")
    assert [(r["version"], r["pinned"]) for r in rows] == [("1.0-1", False), ("1:2.0-1", True)]
    assert engine_versions(repo, "dev", "app") == ["1.0-1", "1:2.0-1"]
    assert published_versions(repo, "dev", "app") == ["1.0-1", "1:2.0-1"]
    assert verify(repo, channels=["dev"]) == []
    assert repo.publish("dev", [first])[0]["status"] == "unchanged"
    before = snapshot(tmp_path / "state")
    with pytest.raises(ImmutableConflict):
        repo.publish("dev", [debs("app", "1.0-1", payload="other bytes")])
    assert snapshot(tmp_path / "state") == before
    assert engine_versions(repo, "dev", "app") == ["1.0-1", "1:2.0-1"]


def test_promote_policy_rollback_pins(
    make_engine_repo: Callable[..., Repository], debs: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_engine_repo()
    repo.publish("dev", [debs("app", "1.0-1")])
    repo.publish("dev", [debs("app", "2.0-1")])
    before = snapshot(tmp_path / "state")
    with pytest.raises(PolicyViolation):
        repo.promote("app", "1.0-1", "dev", "prod")
    assert snapshot(tmp_path / "state") == before
    for version in ("1.0-1", "2.0-1"):
        repo.promote("app", version, "dev", "staging")
    assert engine_versions(repo, "staging", "app") == ["1.0-1", "2.0-1"]
    assert published_versions(repo, "staging", "app") == ["1.0-1", "2.0-1"]
    dev = {r["version"]: r["sha256"] for r in repo.list_entries("dev")}
    staging = {r["version"]: r["sha256"] for r in repo.list_entries("staging")}
    assert dev == staging
    assert repo.rollback("app", "staging")["new_pin"] == "1.0-1"
    assert "Pin: version 1.0-1\nPin-Priority: 1001" in repo.pins("staging")
    assert [r["action"] for r in repo.history("staging")] == ["promote", "promote", "rollback"]


def test_retention_and_remove(
    make_engine_repo: Callable[..., Repository], debs: Callable[..., Path]
) -> None:
    repo = make_engine_repo(keep=2)
    for v in ("1.0", "2.0", "3.0"):
        repo.publish("dev", [debs("app", v)])
    assert engine_versions(repo, "dev", "app") == ["2.0", "3.0"]
    assert sorted(r["version"] for r in repo.list_entries("dev")) == ["2.0", "3.0"]
    repo.remove("app", "2.0", "dev")
    assert engine_versions(repo, "dev", "app") == ["3.0"]
    assert published_versions(repo, "dev", "app") == ["3.0"]
    with pytest.raises(PolicyViolation):
        repo.remove("app", "3.0", "dev")


def test_aptly_down_is_a_clear_error_and_changes_nothing(
    aptly_server: AptlyServer,  # noqa: F811 - fixture imported above
    debs: Callable[..., Path],
    tmp_path: Path,
    gpg_key: tuple[Path, str],
) -> None:
    data = engine_config("aptly", tmp_path, gpg_key, aptly_server)
    repo = Repository(parse_config(data, tmp_path / "aptship.toml"))
    repo.publish("dev", [debs("app", "1.0-1")])
    before = snapshot(tmp_path / "state")
    aptly_server.stop()
    with pytest.raises(StorageError, match=f"aptly at {aptly_server.url} is unreachable"):
        repo.publish("dev", [debs("app", "2.0-1")])
    with pytest.raises(StorageError, match="unreachable"):
        repo.promote("app", "1.0-1", "dev", "staging")
    assert snapshot(tmp_path / "state") == before
    assert [r["version"] for r in repo.list_entries("dev")] == ["1.0-1"]


def test_apt_installs_from_aptly_through_repo_server(
    aptly_server: AptlyServer,  # noqa: F811 - fixture imported above
    debs: Callable[..., Path],
    tmp_path: Path,
    gpg_key: tuple[Path, str],
) -> None:
    data = engine_config("aptly", tmp_path, gpg_key, aptly_server)
    config = tmp_path / "aptship.toml"
    config.write_text(toml_dumps(data))
    repo = Repository(parse_config(data, config))
    old, new = debs("app", "1.0-1"), debs("app", "2.0-1")
    repo.publish("dev", [old, new])
    token = tokens_of(config).create("host", "read", ["dev"])
    with start_server(config, tmp_path / "server") as server:
        apt = set_up_host(server.url, "dev", token, tmp_path / "apt")
        result = apt.update()
        assert result.returncode == 0, result.output
        got = apt.download("app=1.0-1")
        assert got.returncode == 0, got.output
        assert next(apt.archives.glob("app_*.deb")).read_bytes() == old.read_bytes()
        (apt.root / "etc/apt/auth.conf.d/aptship.conf").unlink()
        denied = apt.update()
        assert "401" in denied.output, denied.output
