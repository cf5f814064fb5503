"""A real gunicorn serving aptship on loopback, for the end-to-end tests.

``start_server`` runs ``aptship --config CFG serve --bind 127.0.0.1:PORT`` (which
execs gunicorn with ``repo_server/gunicorn_conf.py``), waits for ``/healthz`` with a
timeout, and always terminates it (SIGTERM, then SIGKILL).  ``aptship`` runs the
installed console script of this virtualenv (``tests/clirun.py``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.clirun import APTSHIP as APTSHIP
from tests.clirun import aptship as aptship  # kept importable from here
from tests.procs import free_port as free_port
from tests.procs import stop, wait_until_up

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class LiveServer:
    url: str
    config: Path
    stdout: Path
    stderr: Path
    proc: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


@contextlib.contextmanager
def start_server(
    config: Path, workdir: Path, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """``env`` replaces the metrics directory this gives the server (``{}``: none)."""
    port = free_port()
    workdir.mkdir(parents=True)
    if env is None:
        (workdir / "metrics").mkdir()
        env = {"PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics")}
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    stdout, stderr = workdir / "gunicorn.out", workdir / "gunicorn.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                APTSHIP,
                "--config",
                str(config),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
            ],
            stdout=out,
            stderr=err,
            env={**base, **env},
        )
    server = LiveServer(f"http://127.0.0.1:{port}", config, stdout, stderr, proc)
    try:
        wait_until_up(f"{server.url}/healthz", proc, server.logs, timeout=START_TIMEOUT)
        yield server
    finally:
        stop(proc, STOP_TIMEOUT)
