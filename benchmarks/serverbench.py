"""HTTP serving: ``wrk`` against ``aptship serve`` (with a read token) and nginx.

Both serve the same repository directory on 127.0.0.1: nginx (Debian's
nginx-light, started here with its own config under ``benchmarks/work/nginx``) is
the reference.  Each wrk run is bounded (``-d``) and targets loopback only.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import APTSHIP, REPO_ROOT, BenchError, free_port, wait_port

CANDIDATE_PREFIXES = ("", "/apt", "/repo")


@dataclass
class WrkResult:
    requests_per_s: float
    p99_ms: float
    mb_per_s: float
    errors: int
    requests: int

    def line(self) -> str:
        return (
            f"{self.requests_per_s:,.0f} req/s, p99 {self.p99_ms:.1f} ms, "
            f"{self.mb_per_s:,.1f} MB/s ({self.requests} requests, {self.errors} errors)"
        )


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_BYTES = {"B": 1 / 1024 / 1024, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0, "TB": 1024.0**2}


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    tps = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(\w+)", text, re.M)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if not (rps and tps and p99 and total):
        raise BenchError(f"cannot parse wrk output:\n{text}")
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * _UNITS[p99.group(2)],
        mb_per_s=float(tps.group(1)) * _BYTES[tps.group(2)],
        errors=errors,
        requests=int(total.group(1)),
    )


def wrk(url: str, *, connections: int, duration: int, header: str | None) -> WrkResult:
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to load-test anything but 127.0.0.1: {url}")
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if header:
        args += ["-H", header]
    proc = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"wrk failed: {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


@contextlib.contextmanager
def nginx(root: Path, workdir: Path) -> Iterator[str]:
    """nginx serving ``root`` on a free 127.0.0.1 port, with its own prefix and config."""
    if shutil.which("nginx") is None:
        raise BenchError("nginx is not installed (Debian package nginx-light)")
    prefix = workdir / "nginx"
    shutil.rmtree(prefix, ignore_errors=True)
    temp = prefix / "temp"
    temp.mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types {{ application/octet-stream deb; text/plain InRelease; }}
    default_type application/octet-stream;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
    )
    log = (prefix / "stderr.log").open("wb")
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        if not wait_port(port, 15):
            raise BenchError(f"nginx did not start: {(prefix / 'stderr.log').read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def repo_server_available() -> str | None:
    """None when ``repo_server:create_app`` imports, else why not."""
    try:
        import repo_server.app as app

        app.create_app  # noqa: B018 - only checks that the factory exists
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak RSS) of one process, in MB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_rss(master: int) -> list[float]:
    """Peak RSS of every descendant of ``master`` (the gunicorn workers)."""
    seen, todo, out = set(), [master], []
    while todo:
        pid = todo.pop()
        for kid in _children(pid):
            if kid not in seen:
                seen.add(kid)
                todo.append(kid)
                out.append(peak_rss_mb(kid))
    return out


def _status(url: str, header: str | None) -> int:
    req = urllib.request.Request(url, method="GET")  # noqa: S310 - loopback URL we built
    if header:
        name, value = header.split(": ", 1)
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            resp.read(1)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def server_command(
    config_path: Path, port: int, env: dict[str, str], workers: int | None = None
) -> tuple[list[str], str]:
    """``aptship serve --bind``; while that command does not exist yet, gunicorn directly
    with the project's ``repo_server/gunicorn_conf.py`` and ``repo_server:create_app()``."""
    probe = subprocess.run(
        [APTSHIP, "serve", "--help"], env=env, capture_output=True, timeout=60, check=False
    )
    if probe.returncode == 0:
        cmd = [APTSHIP, "--config", str(config_path), "serve", "--bind", f"127.0.0.1:{port}"]
        if workers:
            cmd += ["--workers", str(workers)]
            return cmd, f"aptship serve --bind 127.0.0.1:PORT --workers {workers}"
        return cmd, "aptship serve --bind 127.0.0.1:PORT"
    gunicorn = str(Path(APTSHIP).parent / "gunicorn")
    conf = REPO_ROOT / "repo_server" / "gunicorn_conf.py"
    cmd = [gunicorn, "--bind", f"127.0.0.1:{port}"]
    if conf.exists():
        cmd += ["-c", str(conf)]
    cmd.append("repo_server:create_app()")
    return cmd, (
        "gunicorn -c repo_server/gunicorn_conf.py 'repo_server:create_app()' "
        "(`aptship serve` is not a command yet)"
    )


@contextlib.contextmanager
def aptship_server(
    config_path: Path, env: dict[str, str], logdir: Path, workers: int | None = None
) -> Iterator[tuple[str, int, str]]:
    """The aptship server on 127.0.0.1; yields (base URL, pid of the master, how started)."""
    port = free_port()
    logdir.mkdir(parents=True, exist_ok=True)
    env = {**env, "APTSHIP_CONFIG": str(config_path)}
    cmd, how = server_command(config_path, port, env, workers)
    log = (logdir / "aptship-serve.log").open("wb")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    try:
        if not wait_port(port, 30) or proc.poll() is not None:
            raise BenchError(
                f"{how} did not start: {(logdir / 'aptship-serve.log').read_text()[-2000:]}"
            )
        time.sleep(1.5)  # let every worker boot
        yield f"http://127.0.0.1:{port}", proc.pid, how
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def basic_header(login: str, secret: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def find_prefix(base: str, secret: str) -> tuple[str, str] | None:
    """The URL prefix under which the server serves ``dists/`` and a header it accepts."""
    for prefix in CANDIDATE_PREFIXES:
        for hdr in (basic_header("bench", secret), f"Authorization: Bearer {secret}"):
            if _status(f"{base}{prefix}/dists/bench/InRelease", hdr) == 200:
                return prefix, hdr
    return None
