"""aptly as a mirror client of an aptship repository in its default configuration:
Release lists SHA256 only and the uncompressed Packages is listed, not stored
(docs/config.md, release_hashes and index_formats).  aptly checks the signature
with gpgv, picks an index Release lists, checks it by SHA256 and downloads the pool."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.repo import KEYRING_KEY, Repository
from tests.httpserve import serve_directory

pytestmark = pytest.mark.e2e

RepoFactory = Callable[..., Repository]


def test_aptly_mirrors_a_default_repository(
    make_repo: RepoFactory, debs: Callable[..., Path], tmp_path: Path
) -> None:
    assert shutil.which("aptly"), "aptly is installed by .ci/run"
    repo = make_repo()
    built = [debs("app", "1.0-1"), debs("app", "1.1-1"), debs("lib", "0.1", "all")]
    repo.publish("dev", built)
    repo.publish("dev", [debs("tool", "2.0-1")])  # an incremental publish too
    root = tmp_path / "repo"
    release = (root / "dists/dev/Release").read_text()
    assert "\nSHA256:\n" in release and "MD5Sum" not in release
    assert not (root / "dists/dev/main/binary-amd64/Packages").exists()
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(
        ["gpg", "--dearmor", "--output", str(keyring), str(root / KEYRING_KEY)], check=True
    )
    conf = tmp_path / "aptly.conf"
    conf.write_text(json.dumps({"rootDir": str(tmp_path / "aptly"), "gpgProvider": "gpg"}))

    def aptly(*args: str) -> str:
        proc = subprocess.run(
            ["aptly", f"-config={conf}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    with serve_directory(root) as (url, requests):
        aptly("mirror", "create", f"-keyring={keyring}", "-architectures=amd64", "m", url, "dev")
        aptly("mirror", "update", f"-keyring={keyring}", "m")
    assert any(r.endswith("/Packages.xz") or r.endswith("/Packages.gz") for r in requests)
    listed = set(aptly("mirror", "search", "m", "Name (% *)").split())
    assert listed == {"app_1.0-1_amd64", "app_1.1-1_amd64", "lib_0.1_all", "tool_2.0-1_amd64"}
    pool = list((tmp_path / "aptly/pool").rglob("*.deb"))  # aptly prefixes a checksum
    for deb in built:
        (copy,) = [p for p in pool if p.name.endswith("_" + deb.name) or p.name == deb.name]
        assert copy.read_bytes() == deb.read_bytes()
