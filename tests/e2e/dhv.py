"""Real dh-virtualenv .debs of the ``hello-service`` fixture, built once per version.

``build_hello(outdir, version)`` copies ``tests/fixtures/hello-service`` with the given
PEP 440 version, runs ``aptship debianize --hermetic`` and ``aptship build`` (the real
CLI, in a subprocess) and returns the .deb.  Builds are cached per version for the test
session: the first call builds into its ``outdir``, later calls for the same version
return that same file.  A build takes about 9 s on 2 cores.

The ``hello_deb`` session fixture, ``hello_deb("1.0.0") -> Path``, is registered for
every test under ``tests/e2e/`` by ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clirun import aptship

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hello-service"
PACKAGE = "hello-service"
BUILD_TIMEOUT = 900.0  # about 9 s alone; far more on a loaded 2-core machine
_built: dict[str, Path] = {}
build_seconds: dict[str, float] = {}


def copy_hello(dest: Path, version: str) -> Path:
    """Copy the fixture project to ``dest`` with ``version`` in its pyproject.toml."""
    shutil.copytree(
        FIXTURE, dest, ignore=shutil.ignore_patterns("build", "debian", "*.egg-info", "__pycache__")
    )
    pyproject = dest / "pyproject.toml"
    text, count = re.subn(
        r'^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text(), flags=re.M
    )
    assert count == 1, "the fixture's pyproject.toml must have one `version = ...` line"
    pyproject.write_text(text)
    return dest


def build_hello(outdir: Path, version: str) -> Path:
    """Path of a real dh-virtualenv .deb of hello-service at PEP 440 ``version``."""
    cached = _built.get(version)
    if cached is not None and cached.is_file():
        return cached
    # dpkg-buildpackage writes next to the project: one parent directory per version.
    project = copy_hello(outdir / f"{PACKAGE}-{version}" / PACKAGE, version)
    started = time.monotonic()
    result = aptship("debianize", "--hermetic", project)
    assert result.returncode == 0, result.stderr
    result = aptship("build", project, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, f"aptship build failed:\n{result.stderr[-6000:]}"
    build_seconds[version] = time.monotonic() - started
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"aptship build printed more than the .deb path: {result.stdout!r}"
    deb = Path(lines[0])
    assert deb.is_file() and deb.parent == project.parent, deb
    _built[version] = deb
    return deb


@pytest.fixture(scope="session")
def hello_deb(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``hello_deb(version) -> Path``: a session-cached dh-virtualenv .deb of hello-service."""
    outdir = tmp_path_factory.mktemp("hello-debs")
    return lambda version: build_hello(outdir, version)
