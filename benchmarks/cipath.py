"""The CI path: publishing one .deb through ``aptship serve`` into a channel of N.

A copy of the N-entry aptship repository is served by ``aptship serve`` on
127.0.0.1, with a ``publish`` token for ``bench`` made by ``aptship token create``
(docs/server.md).  Then K new .debs are uploaded one at a time, as a CI job does:

* ``api``: ``POST /api/v1/channels/bench/packages`` with the raw .deb as the body
  (what ``aptship --server URL publish`` sends, publisher/remote.py), from this
  process over one keep-alive connection.  Client wall time per upload, and the
  server's own time from the ``Server-Timing: app;dur=<ms>`` answer header.
* ``cli``: ``aptship --server URL publish --channel bench FILE`` with
  ``$APTSHIP_TOKEN``: the client wall time includes the interpreter's start-up.  The
  server's time is the growth of ``aptship_http_request_duration_seconds_sum`` for
  ``api.publish`` on ``/metrics`` (an admin token) across each upload.

Every upload must answer 201 ``added``; anything else fails the measurement.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from benchmarks import debgen
from benchmarks.common import APTSHIP, BenchError, discard, fmt_seconds, md_table, run
from benchmarks.serverbench import aptship_server

CHANNEL = "bench"
API_VERSION = 8  # debgen version index of the API uploads (6 and 7: add-one and S3)
CLI_VERSION = 9
_DUR = re.compile(r"(?:^|,)\s*app;dur=([0-9.]+)")
_HIST = re.compile(
    r'^aptship_http_request_duration_seconds_sum\{endpoint="api\.publish"\}\s+(\S+)$', re.M
)


@dataclass
class Uploads:
    """K uploads of one kind: client wall and server time per upload, in seconds."""

    client: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)

    def pct(self, which: str, q: float) -> float | None:
        values = sorted(getattr(self, which))
        if not values:
            return None
        if q >= 1:
            return float(values[-1])
        if q == 0.5:
            return float(statistics.median(values))
        return float(values[min(len(values) - 1, round(q * (len(values) - 1)))])


@dataclass
class CiPath:
    entries: int
    how: str
    api: Uploads = field(default_factory=Uploads)
    cli: Uploads = field(default_factory=Uploads)


def server_time(resp: requests.Response) -> float | None:
    """Seconds from ``Server-Timing: app;dur=<ms>``, None without that header."""
    found = _DUR.search(resp.headers.get("Server-Timing", ""))
    return float(found.group(1)) / 1000 if found else None


def publish_seconds_sum(base: str, admin: str) -> float:
    """Total server time of ``api.publish`` so far (all workers), from /metrics."""
    resp = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    if resp.status_code != 200:
        raise BenchError(f"GET /metrics answered {resp.status_code}: {resp.text[:300]}")
    found = _HIST.search(resp.text)
    return float(found.group(1)) if found else 0.0


def make_token(config: Path, env: dict[str, str], name: str, role: str, channel: str) -> str:
    args = ["token", "create", "--name", name, "--role", role, "--channel", channel]
    proc = subprocess.run(
        [APTSHIP, "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    secret = proc.stdout.strip()
    if proc.returncode != 0 or not secret or len(secret.split()) != 1:
        raise BenchError(f"aptship token create failed: {proc.stdout}{proc.stderr}")
    return secret


def copy_repository(
    src_root: Path, dest_root: Path, config_text: Callable[[Path], str], trash: Path
) -> Path:
    """``cp -a`` of ``src_root/repo`` to ``dest_root/repo``; write its config; return it
    (a ``dest_root`` left over goes to ``trash``)."""
    discard(dest_root, trash)
    dest_root.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(src_root / "repo"), str(dest_root / "repo")], check=True)
    config = dest_root / "aptship.toml"
    config.write_text(config_text(dest_root / "repo"))
    return config


def check_answer(resp: requests.Response, deb: Path) -> None:
    json_answer = resp.headers.get("Content-Type", "").startswith("application/json")
    body = resp.json() if json_answer else {}
    if resp.status_code != 201 or body.get("status") != "added":
        raise BenchError(
            f"upload of {deb.name} answered HTTP {resp.status_code}: {resp.text[:500]}"
        )


def run_ci_path(
    *,
    config: Path,
    entries: int,
    env: dict[str, str],
    work: Path,
    uploads: int,
    log: Callable[[str], None],
) -> CiPath:
    """Serve ``config``'s repository and upload ``uploads`` new .debs each way."""
    packages = entries // debgen.VERSIONS_PER_PACKAGE
    if uploads > packages:
        raise BenchError(f"{uploads} uploads need {uploads} packages; N={entries} has {packages}")
    picks = [(11 + 13 * i) % packages for i in range(uploads)]
    if len(set(picks)) != uploads:
        picks = list(range(uploads))
    extra = work / "debs-ci"
    api_debs = [debgen.extra_deb(extra, i, API_VERSION) for i in picks]
    cli_debs = [debgen.extra_deb(extra, i, CLI_VERSION) for i in picks]
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**8}"
    publish = make_token(config, env, f"bench-ci-{tag}", "publish", CHANNEL)
    admin = make_token(config, env, f"bench-admin-{tag}", "admin", "*")
    with aptship_server(config, env, work / "logs") as (base, _pid, how):
        result = CiPath(entries=entries, how=how)
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {publish}"
            for deb in api_debs:
                with deb.open("rb") as fh:
                    start = time.perf_counter()
                    resp = session.post(
                        f"{base}/api/v1/channels/{CHANNEL}/packages",
                        data=fh,
                        headers={
                            "Content-Type": "application/vnd.debian.binary-package",
                            "Content-Disposition": f'attachment; filename="{deb.name}"',
                        },
                        timeout=(10, 300),
                    )
                    wall = time.perf_counter() - start
                check_answer(resp, deb)
                result.api.client.append(wall)
                took = server_time(resp)
                if took is not None:
                    result.api.server.append(took)
        cli_env = {**env, "APTSHIP_TOKEN": publish}
        for deb in cli_debs:
            before = publish_seconds_sum(base, admin)
            sample, out = run(
                [APTSHIP, "--server", base, "publish", "--channel", CHANNEL, str(deb)],
                env=cli_env,
                check=False,
            )
            if sample_failed(out):
                raise BenchError(f"aptship --server publish {deb.name} failed:\n{out[-2000:]}")
            result.cli.client.append(sample.wall)
            result.cli.server.append(publish_seconds_sum(base, admin) - before)
    log(
        f"  CI path N={entries}: API p50 {fmt_ms(result.api.pct('client', 0.5))} "
        f"(server {fmt_ms(result.api.pct('server', 0.5))}), CLI p50 "
        f"{fmt_ms(result.cli.pct('client', 0.5))} (server {fmt_ms(result.cli.pct('server', 0.5))})"
    )
    return result


def sample_failed(out: str) -> bool:
    """Whether ``aptship publish`` did not add the file (its line: ``published: ...``)."""
    return not out.startswith("published: ")


def fmt_ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1000:.0f} ms"


def render_ci_path(results: dict[tuple[int, str], CiPath], *, skipped: bool) -> list[str]:
    out = ["## CI path: one .deb at a time through `aptship serve`", ""]
    if skipped:
        return [*out, "Skipped (--skip-ci-path).", ""]
    if not results:
        return [*out, "Not measured (see failures).", ""]
    rows = []
    for (size, label), ci in sorted(results.items()):
        ways = (("API (requests, keep-alive)", ci.api), ("`aptship --server` CLI", ci.cli))
        for way, ups in ways:
            rows.append(
                [
                    f"{size:,}",
                    label,
                    way,
                    str(len(ups.client)),
                    *(fmt_seconds(ups.pct("client", q)) for q in (0.5, 0.9, 1.0)),
                    *(fmt_seconds(ups.pct("server", q)) for q in (0.5, 0.9, 1.0)),
                ]
            )
    how = next(iter(results.values())).how
    return [
        *out,
        f"`{how}` (default workers) on a copy of each N-entry repository, with a "
        "`publish` token from `aptship token create`; new .debs uploaded one at a time "
        "into `bench` (each answered 201 `added`). API: `POST "
        "/api/v1/channels/bench/packages` with the raw .deb, as `aptship --server` sends "
        "it; server time from the `Server-Timing: app;dur=` header. CLI: `aptship "
        "--server URL publish --channel bench FILE` with `$APTSHIP_TOKEN` (interpreter "
        "start-up included); server time from the growth of `/metrics`' "
        '`aptship_http_request_duration_seconds_sum{endpoint="api.publish"}`.',
        "",
        md_table(
            [
                "N",
                "config",
                "client",
                "uploads",
                "client p50",
                "client p90",
                "client max",
                "server p50",
                "server p90",
                "server max",
            ],
            rows,
        ),
        "",
    ]
