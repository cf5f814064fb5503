"""A real gunicorn serving aptship on loopback, for the end-to-end tests.

``start_server`` runs ``aptship --config CFG serve --bind 127.0.0.1:PORT`` (which
execs gunicorn with ``repo_server/gunicorn_conf.py``), waits for ``/healthz`` with a
timeout, and always terminates it (SIGTERM, then SIGKILL).  ``aptship`` runs the
installed console script of this virtualenv.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.procs import stop

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
APTSHIP = str(Path(sys.executable).parent / "aptship")


def aptship(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APTSHIP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    config: Path
    stdout: Path
    stderr: Path
    proc: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def _wait_until_up(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/healthz", timeout=10).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server not up within {START_TIMEOUT}s:\n{server.logs()}")


@contextlib.contextmanager
def start_server(config: Path, workdir: Path, workers: int = 2) -> Iterator[LiveServer]:
    port = free_port()
    metrics = workdir / "metrics"
    metrics.mkdir(parents=True)
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
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
        )
    server = LiveServer(f"http://127.0.0.1:{port}", config, stdout, stderr, proc)
    try:
        _wait_until_up(server)
        yield server
    finally:
        stop(proc, STOP_TIMEOUT)
