"""A real ``aptly api serve`` on loopback with its own rootDir, config and GPG key.

The fixture ``aptly_server`` starts Debian's aptly for one test (aptly's database
allows one process at a time, so each test gets a fresh one) and always stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import free_port, stop, wait_until_up

START_TIMEOUT = 30.0


@dataclass
class AptlyServer:
    url: str
    root: Path
    gnupghome: Path
    key: str
    config: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def public(self) -> Path:
        return self.root / "public"

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture
def aptly_server(tmp_path: Path, gpg_key: tuple[Path, str]) -> Iterator[AptlyServer]:
    if shutil.which("aptly") is None:
        pytest.fail("aptly is not installed (Debian package aptly; scripts/setup installs it)")
    home, fpr = gpg_key
    root = tmp_path / "aptly"
    root.mkdir()
    config = tmp_path / "aptly.conf"
    config.write_text(
        json.dumps(
            {
                "rootDir": str(root),
                "architectures": ["amd64", "arm64"],
                "gpgProvider": "gpg",
                "gpgDisableVerify": True,
                "skipContentsPublishing": True,
                "enableMetricsEndpoint": False,
            }
        )
    )
    port = free_port()
    log = tmp_path / "aptly.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["aptly", f"-config={config}", "api", "serve", f"-listen=127.0.0.1:{port}", "-no-lock"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GNUPGHOME": str(home), "GIN_MODE": "release"},
        )
    server = AptlyServer(f"http://127.0.0.1:{port}", root, home, fpr, config, proc, log)
    try:
        wait_until_up(
            f"{server.url}/api/version", proc, log.read_text, timeout=START_TIMEOUT, name="aptly"
        )
        yield server
    finally:
        server.stop()
