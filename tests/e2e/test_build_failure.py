"""A dh-virtualenv build that fails in the Python build backend: `aptship build`
quotes the backend's own message (pip hides it unless verbose), not just a status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PYPROJECT = """\
[project]
name = "two-tops"
version = "1.0.0"
description = "Two top-level packages in a flat layout: setuptools refuses"
authors = [{ name = "Team", email = "team@example.com" }]
"""


def test_build_error_shows_the_backend_cause(tmp_path: Path) -> None:
    project = tmp_path / "two-tops"
    for package in ("first", "second"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(PYPROJECT)
    aptship = str(Path(sys.executable).parent / "aptship")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APTSHIP_", "PIP_"))}
    run = subprocess.run(
        [aptship, "debianize", "--hermetic", str(project)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [aptship, "build", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 3, run.stderr[-4000:]
    error = run.stderr[run.stderr.index("error: build failed") :]
    assert "dpkg-buildpackage exited with status 2" in error
    assert "Multiple top-level packages discovered in a flat-layout: ['first', 'second']" in error
    assert run.stdout == ""
