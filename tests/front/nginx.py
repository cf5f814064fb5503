"""Debian's nginx running a shipped front (``conf/nginx/aptship*.conf``) on loopback.

:func:`render_front` fills the ``EDIT`` lines of a shipped file (listen address,
upstream, repository root, auth cache directory) and fails if one of them is not
found, so the tests always run the files users copy.  :func:`start_nginx`
runs ``nginx -p PREFIX -c CONF -e LOG -g 'daemon off;'`` with everything (pid, logs,
temp and cache directories) under ``PREFIX``, waits for the port and always stops
it.  The benchmarks reuse both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.procs import stop

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "nginx"
SHIPPED = CONF_DIR / "aptship.conf"  # local storage
SHIPPED_S3 = CONF_DIR / "aptship-s3.conf"  # S3 storage
START_TIMEOUT = 15.0
_EDITS = {
    "listen": "    listen 80;",
    "upstream": "    server 127.0.0.1:8080;",
    "root": "    root /var/lib/aptship/repo;",
    "cache": "proxy_cache_path /var/cache/nginx/aptship-auth ",
}


def render_front(
    *,
    port: int,
    upstreams: list[str],
    root: Path | None,
    cache: Path,
    conf: Path = SHIPPED,
) -> str:
    """A shipped config with loopback values in place of the example ones.

    ``root``: the repository directory (``aptship.conf``); None for ``aptship-s3.conf``,
    which has no root line.
    """
    text = conf.read_text()
    values = {
        "listen": f"    listen 127.0.0.1:{port};",
        "upstream": "\n".join(f"    server {u};" for u in upstreams),
        "cache": f"proxy_cache_path {cache} ",
    }
    if root is not None:
        values["root"] = f"    root {root};"
    for name, value in values.items():
        line = _EDITS[name]
        if text.count(line) != 1:
            raise AssertionError(f"{conf.name}: expected one {name} line {line!r}")
        text = text.replace(line, value)
    return text


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def start_nginx(
    http_body: str, prefix: Path, port: int, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``http_body`` inside ``http {}``, all state under ``prefix``."""
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed (Debian package nginx-light)")
    temp = prefix / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    # Workers of a root master run as "nobody" by default, who cannot read the tests'
    # private temp directories.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{http_body}
}}
"""
    )
    log = prefix / "stderr.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "nginx",
                "-p",
                str(prefix),
                "-c",
                str(conf),
                "-e",
                str(prefix / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                errors = (
                    (prefix / "error.log").read_text(errors="replace")
                    if (prefix / "error.log").exists()
                    else ""
                )
                raise RuntimeError(f"nginx did not start:\n{log.read_text()}\n{errors}")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)
