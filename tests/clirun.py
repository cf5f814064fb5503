"""The two ways tests run the aptship CLI.

* :func:`aptship` runs the installed console script of this virtualenv in a subprocess
  (what a user or CI runs), with a timeout, stdin closed, and stdout/stderr captured
  apart; :func:`aptship_ok` also requires exit 0 and returns stdout;
  :func:`aptship_popen` starts it without waiting.
* :func:`run_main` calls :func:`publisher.cli.main` in this process (same entry point,
  same exit codes and output) and returns a :class:`CliResult`; ``stdout``/``stderr``
  may be given to send the output to open files instead of capturing it.
* :class:`Cli` (the ``cli`` fixture) binds :func:`run_main` to a config file and an
  expected exit code.
* :func:`invoke` runs one click command object with click's ``CliRunner``, for tests
  that look at the raised exception or at ``--help`` of a single command.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

import click
import pytest
from click.testing import CliRunner, Result

APTSHIP = str(Path(sys.executable).parent / "aptship")
TIMEOUT = 120.0


def _argv(args: Sequence[str | Path], config: Path | str | None) -> list[str]:
    head = ["--config", str(config)] if config is not None else []
    return [*head, *(str(a) for a in args)]


def aptship(
    *args: str | Path,
    config: Path | str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
    drop_env: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``aptship [--config CONFIG] ARGS`` in a subprocess: our environment without the
    variables whose names start with one of ``drop_env``, plus ``env``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(drop_env)}
    return subprocess.run(
        [APTSHIP, *_argv(args, config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=inherited | (env or {}),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def aptship_ok(*args: str | Path, **kw: object) -> str:
    """Like :func:`aptship`, but the command must exit 0; returns its stdout."""
    result = aptship(*args, **kw)  # type: ignore[arg-type]
    words = " ".join(str(a) for a in args)
    assert result.returncode == 0, f"aptship {words}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def aptship_popen(
    *args: str | Path, config: Path | str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``aptship [--config CONFIG] ARGS`` with stdout/stderr piped; do not wait."""
    return subprocess.Popen(
        [APTSHIP, *_argv(args, config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )


class CliResult(NamedTuple):
    """Exit code and output of one in-process run: ``code, out, err = run_main(...)``."""

    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environ(env: dict[str, str] | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_main(
    *args: str | Path,
    config: Path | str | None = None,
    env: dict[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> CliResult:
    """``publisher.cli.main([--config CONFIG] ARGS)`` in this process.

    The exit code is that of the ``SystemExit`` main raises (0 if it returns).  Output
    goes to ``stdout``/``stderr`` when given (then the result's texts are empty), else
    it is captured.  ``env`` is set for the call and restored afterwards.
    """
    from publisher.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with (
        _environ(env),
        contextlib.redirect_stdout(stdout or out),
        contextlib.redirect_stderr(stderr or err),
    ):
        try:
            main(_argv(args, config))
        except SystemExit as exc:
            code = exc.code
    status = code if isinstance(code, int) else (0 if code is None else 1)
    return CliResult(status, out.getvalue(), err.getvalue())


def invoke(command: click.Command, *args: str | Path) -> Result:
    """Run one click command object in-process with click's ``CliRunner``."""
    return CliRunner().invoke(command, [str(a) for a in args])


class Cli:
    """``aptship --config CONFIG ...`` in-process (:func:`run_main`) with an expected
    exit code; ``capsys`` is kept for tests that also call library code that prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        self.capsys = capsys
        self.config = config

    def __call__(self, *args: str, code: int = 0) -> str:
        out, err = self.run(*args, code=code)
        return out if code == 0 else err

    def call(self, *args: str) -> CliResult:
        """The result of ``aptship --config CONFIG ARGS``, whatever its exit code."""
        return run_main(*args, config=self.config)

    def run(self, *args: str, code: int = 0) -> tuple[str, str]:
        """(stdout, stderr) of ``aptship --config CFG ARGS``, which must exit ``code``."""
        result = self.call(*args)
        assert result.code == code, (args, result.stdout, result.stderr)
        return result.stdout, result.stderr

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json"))
