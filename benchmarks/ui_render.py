"""Server-side render time of the dashboard (issue 9): not a test, a timing script.

Builds 200 packages x 3 channels (dev, staging, prod; 3 versions per package in dev,
2 in staging, 1 in prod, with pin moves) by committing synthetic entries straight
into the channel state (no .debs, no signing: the dashboard reads only the state),
then times ``GET /ui/`` and ``GET /ui/packages/<name>`` through Flask's test client
and prints the medians of 20 runs.  Target: < 200 ms each.

    .venv/bin/python -m benchmarks.ui_render [--packages 200] [--runs 20]

"Overview (cold)" drops the dashboard's per-generation summary cache before every run,
as happens on the first view after any change to a channel.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flask.testing import FlaskClient

from publisher.config import load_config
from publisher.pins import set_pin
from publisher.repo import Repository
from publisher.state import ChannelState, Entry
from publisher.tokens import open_tokens
from repo_server import create_app
from repo_server.ui import UI_EXTENSION

TARGET_MS = 200.0
CONFIG = """\
[repository]
origin = "bench"
label = "bench"

[storage]
type = "local"
path = "repo"

[signing]
keys = ["0000000000000000000000000000000000000000"]

[server]
secret_key_env = "APTSHIP_UI_BENCH_SECRET"

[channels.dev]
[channels.staging]
promote_from = ["dev"]
[channels.prod]
promote_from = ["staging"]
"""
# channel -> the versions it holds (oldest first); the last one is pinned
LAYOUT = {"dev": ["1.0-1", "1.1-1", "2.0-1"], "staging": ["1.0-1", "1.1-1"], "prod": ["1.0-1"]}


def entry(package: str, version: str) -> Entry:
    sha = hashlib.sha256(f"{package}_{version}".encode()).hexdigest()
    return Entry(
        package=package,
        version=version,
        architecture="amd64",
        filename=f"pool/main/{package[0]}/{package}/{package}_{version}_amd64.deb",
        size=1000 + len(package),
        md5=sha[:32],
        sha1=sha[:40],
        sha256=sha,
        control=f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n",
        published_at="2024-01-01T00:00:00Z",
        published_by="bench",
    )


def build(root: Path, packages: int) -> tuple[Path, str]:
    (root / "aptship.toml").write_text(CONFIG)
    repo = Repository(load_config(root / "aptship.toml"))
    secret = open_tokens(repo.config, repo.storage).create("bench", "promote", ["*"])
    names = [f"svc-{i:04d}" for i in range(packages)]
    for channel, versions in LAYOUT.items():

        def change(state: ChannelState, versions: list[str] = versions) -> None:
            for i, name in enumerate(names):
                ps = state.edit(name)
                for version in versions:
                    ps.entries.append(entry(name, version))
                    set_pin(ps, version, "promote", "bench")
                if i % 10 == 0 and len(versions) > 1:  # a rollback in effect
                    set_pin(ps, versions[-2], "rollback", "bench")

        repo.states.update(channel, change)
    return root / "aptship.toml", secret


def median_ms(
    runs: int, call: Callable[[], object], before: Callable[[], None] | None = None
) -> float:
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("APTSHIP_UI_BENCH_SECRET", "ui-render-benchmark-secret-0123456789")
    with tempfile.TemporaryDirectory(prefix="aptship-ui-bench-") as tmp:
        started = time.perf_counter()
        config, secret = build(Path(tmp), args.packages)
        print(
            f"built {args.packages} packages x 3 channels in {time.perf_counter() - started:.1f} s"
        )
        app = create_app(config)
        client: FlaskClient = app.test_client()
        page = client.get("/ui/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        signed = client.post("/ui/login", data={"token": secret, "csrf_token": csrf.group(1)})
        assert signed.status_code == 303, signed.text

        def get(path: str) -> Callable[[], object]:
            def call() -> object:
                response = client.get(path)
                assert response.status_code == 200, response.text[:500]
                return response.data

            return call

        def drop_cache() -> None:
            app.extensions[UI_EXTENSION]._summaries.clear()

        overview = client.get("/ui/").data
        package = client.get("/ui/packages/svc-0100").data
        results = {
            "overview (cold)": median_ms(args.runs, get("/ui/"), drop_cache),
            "overview (cached summaries)": median_ms(args.runs, get("/ui/")),
            "overview ?q=svc-01": median_ms(args.runs, get("/ui/?q=svc-01")),
            "package page": median_ms(args.runs, get("/ui/packages/svc-0100")),
        }
    sizes = f"{len(overview) / 1024:.0f} KiB overview, {len(package) / 1024:.0f} KiB package page"
    print(f"page sizes: {sizes}")
    print(f"median of {args.runs} server-side renders (target < {TARGET_MS:.0f} ms):")
    slow = False
    for name, ms in results.items():
        ok = ms < TARGET_MS
        slow = slow or not ok
        print(f"  {name:<30} {ms:8.1f} ms  {'ok' if ok else 'SLOW'}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
