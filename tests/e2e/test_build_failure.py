"""A dh-virtualenv build that fails in the Python build backend: `aptship build`
quotes the backend's own message (pip hides it unless verbose), not just a status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirun import aptship

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
    clean = ("APTSHIP_", "PIP_")
    run = aptship("debianize", "--hermetic", project, drop_env=clean)
    assert run.returncode == 0, run.stderr
    run = aptship("build", project, drop_env=clean, timeout=600)
    assert run.returncode == 3, run.stderr[-4000:]
    error = run.stderr[run.stderr.index("error: build failed") :]
    assert "dpkg-buildpackage exited with status 2" in error
    assert "Multiple top-level packages discovered in a flat-layout: ['first', 'second']" in error
    assert run.stdout == ""
