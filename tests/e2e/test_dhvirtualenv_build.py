"""A real dh-virtualenv build of the hello-service fixture, from pyproject.toml to .deb."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.dhv import PACKAGE
from tests.e2e.hostroot import host_root, run_in_root

pytestmark = pytest.mark.e2e
Builder = Callable[[str], Path]


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = [t for t in ("dpkg-buildpackage", "dh_virtualenv", "dpkg-deb") if not shutil.which(t)]
    if missing:
        pytest.fail(f"required build tools missing: {missing} (run .ci/run to install them)")


def deb_fields(deb: Path, *names: str) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-deb", "-f", str(deb), *names], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def deb_members(deb: Path) -> dict[str, str]:
    """Path in the .deb -> the `dpkg-deb -c` line describing it."""
    out = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    members = {}
    for line in out.splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        members[name.rstrip("/")] = line
    return members


def host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_release_build(hello_deb: Builder) -> None:
    deb = hello_deb("1.0.0")
    assert deb.name == f"{PACKAGE}_1.0.0-1_{host_arch()}.deb"
    fields = deb_fields(deb, "Package", "Version", "Architecture", "Depends")
    assert fields == {
        "Package": PACKAGE,
        "Version": "1.0.0-1",
        "Architecture": host_arch(),
        "Depends": "python3 (>= 3.11), python3 (<< 3.12)",  # the building Python
    }
    members = deb_members(deb)
    assert "./opt/venvs/hello-service/bin/hello-service" in members
    link = members["./usr/bin/hello-service"]
    assert link.startswith("l")
    assert link.endswith("-> /opt/venvs/hello-service/bin/hello-service")
    # Hermetic: the venv holds only the project (pip/setuptools from Debian's wheels).
    assert not any("site-packages/requests" in m for m in members)


def test_prerelease_maps_to_a_tilde_version(hello_deb: Builder) -> None:
    deb = hello_deb("2.0.0rc1")
    assert deb_fields(deb, "Package", "Version") == {
        "Package": PACKAGE,
        "Version": "2.0.0~rc1-1",
    }
    assert deb.name == f"{PACKAGE}_2.0.0~rc1-1_{host_arch()}.deb"
    assert (
        subprocess.run(["dpkg", "--compare-versions", "2.0.0~rc1-1", "lt", "2.0.0-1"]).returncode
        == 0
    )


def test_installed_service_runs_in_a_host_root(hello_deb: Builder, tmp_path: Path) -> None:
    """dpkg -i the .deb in a chroot; /usr/bin/hello-service runs from the venv."""
    deb = hello_deb("1.0.0")
    with host_root(tmp_path) as root:
        shutil.copy(deb, root / "tmp" / deb.name)
        installed = run_in_root(root, ["dpkg", "-i", f"/tmp/{deb.name}"])
        assert installed.returncode == 0, installed.stdout + installed.stderr
        ran = run_in_root(root, ["hello-service"])
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "hello-service 1.0.0\n"
