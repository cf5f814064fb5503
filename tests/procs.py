"""Helpers for the service processes the fixtures start (moto_server, aptly, gunicorn).

``free_port`` picks a loopback port, ``wait_until_up`` polls a URL until the service
answers (with a deadline, failing early when the process dies), ``stop`` ends it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import requests

POLL_INTERVAL = 0.1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(
    url: str,
    proc: subprocess.Popen[Any],
    logs: Callable[[], str],
    *,
    timeout: float,
    up: Callable[[int], bool] = lambda status: status == 200,
    name: str = "server",
) -> None:
    """Poll ``url`` until ``up(status)``; raise with ``logs()`` if ``proc`` exits or at the
    deadline.  Connection errors mean "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{logs()}")
        try:
            if up(requests.get(url, timeout=min(10.0, timeout)).status_code):
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer on {url} within {timeout}s:\n{logs()}")
        time.sleep(POLL_INTERVAL)  # polling interval, not a wait for an event


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; always reaps the process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
