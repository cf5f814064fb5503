"""Benchmark a repository with two distributions: add one .deb and promote a release.

``.venv/bin/python -m benchmarks.distbench [--size N] [--runs K] [--work DIR] [--out FILE]``

A repository with ``distributions = ["bookworm", "trixie"]`` holds N entries per
distribution in channel ``bench`` (suites ``bookworm-bench``, ``trixie-bench``) and
the same in ``stage``: N/5 synthetic packages x 5 versions (``debgen.py``), stamped
``+deb12`` and ``+deb13``.  Then, each a real ``aptship`` subprocess timed by wall
clock (median of K runs, peak RSS of the process tree):

* add one: ``publish --channel bench FILE`` of one new bookworm .deb (one suite's
  commit, render and signature);
* add one per distribution: ``publish --channel bench B.deb T.deb`` (two suites);
* promote a release: ``promote PKG=1.9.0 --from bench --to stage``, which moves the
  bookworm and the trixie build of a release in two validated suite commits.

Writes ``benchmarks/DISTRIBUTIONS.md`` (default).  The single-distribution numbers
are in ``benchmarks/RESULTS.md`` (``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

from benchmarks.common import (
    APTSHIP,
    Measure,
    chunk_args,
    gpg_key,
    run,
    run_all,
    stop_gpg_agent,
    tool_env,
)
from benchmarks.debgen import VERSIONS_PER_PACKAGE, filename, package_name, write_deb
from benchmarks.drivers import toml_text

DISTS = {"bookworm": 12, "trixie": 13}
BENCH, STAGE = "bench", "stage"


def dist_dataset(cache: Path, entries: int, number: int) -> list[Path]:
    """N entries stamped ``+deb<number>``: N/5 packages x 5 versions (cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(entries // VERSIONS_PER_PACKAGE):
        pkg = package_name(i)
        for v in range(1, VERSIONS_PER_PACKAGE + 1):
            ver = f"1.{v}.0-1+deb{number}"
            out.append(write_deb(cache / filename(pkg, ver), pkg, ver))
    return out


def one(cache: Path, index: int, release: str, number: int) -> Path:
    pkg, ver = package_name(index), f"{release}-1+deb{number}"
    cache.mkdir(parents=True, exist_ok=True)
    return write_deb(cache / filename(pkg, ver), pkg, ver)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distbench", description=__doc__)
    p.add_argument("--size", type=int, default=10_000, help="entries per distribution")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/DISTRIBUTIONS.md"))
    args = p.parse_args(argv)
    if args.size % VERSIONS_PER_PACKAGE or args.size < 10 * VERSIONS_PER_PACKAGE:
        p.error(f"--size must be a multiple of {VERSIONS_PER_PACKAGE}, at least 50")
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    gnupghome, fpr = gpg_key(work)
    env = tool_env(gnupghome, work / "pycache")
    root = work / "repos" / f"distributions-{args.size}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "repo").mkdir(parents=True)
    config = root / "aptship.toml"
    config.write_text(
        toml_text(
            {
                "repository": {
                    "origin": "aptship-bench",
                    "label": "aptship-bench",
                    "distributions": list(DISTS),
                },
                "storage": {"type": "local", "path": str(root / "repo")},
                "signing": {"gnupghome": str(gnupghome), "keys": [fpr]},
                # the import publishes command lines of 512 KiB of file names
                "limits": {"max_batch_files": 20_000},
                "channels": {
                    BENCH: {"architectures": ["amd64"]},
                    STAGE: {"architectures": ["amd64"], "promote_from": [BENCH]},
                },
            }
        )
    )

    def cli(*a: str) -> list[str]:
        return [APTSHIP, "--config", str(config), *a]

    started = time.monotonic()
    load_before = os.getloadavg()
    results: dict[str, Measure] = {}
    try:
        imported = 0.0
        for name, number in DISTS.items():
            files = dist_dataset(work / "debs-dist" / name, args.size, number)
            sample = run_all(
                (cli("publish", "--channel", BENCH, *c) for c in chunk_args(files)), env=env
            )
            imported += sample.wall
        # stage: the same N entries per distribution (in process, not measured)
        from publisher.config import load_config
        from publisher.repo import Repository

        repo = Repository(load_config(config))
        for name in DISTS:
            src = repo.states.view(f"{name}-{BENCH}")
            entries = [e for _n, ps in src.packages() for e in ps.entries]
            repo.add_entries(repo.config.channel(f"{name}-{STAGE}"), entries, action="publish")
        extra = work / "debs-dist" / "extra"
        results["add one .deb (bookworm suite)"] = m = Measure()
        for r in range(args.runs):
            deb = one(extra, 10 + r, "1.8.0", DISTS["bookworm"])
            m.add(run(cli("publish", "--channel", BENCH, str(deb)), env=env)[0])
        results["add one release (a .deb per distribution, 2 suites)"] = m = Measure()
        for r in range(args.runs):
            debs = [str(one(extra, 20 + r, "1.8.0", n)) for n in DISTS.values()]
            m.add(run(cli("publish", "--channel", BENCH, *debs), env=env)[0])
        results["promote a release (2 builds, 2 suites)"] = m = Measure()
        for r in range(args.runs):
            debs = [str(one(extra, 30 + r, "1.9.0", n)) for n in DISTS.values()]
            run(cli("publish", "--channel", BENCH, *debs), env=env)
            spec = f"{package_name(30 + r)}=1.9.0"
            m.add(run(cli("promote", spec, "--from", BENCH, "--to", STAGE), env=env)[0])
        verified, _ = run(cli("verify", "--fast"), env=env)  # raises on a problem
    finally:
        stop_gpg_agent(gnupghome)
    lines = [
        "# aptship with two distributions",
        "",
        f"Generated by `python -m benchmarks.distbench --size {args.size} --runs {args.runs}` "
        f"on {platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{time.monotonic() - started:.0f} s in all.",
        "",
        f'Repository: `distributions = ["bookworm", "trixie"]`, channels `{BENCH}` and '
        f"`{STAGE}`, N = {args.size:,} entries per distribution in each (4 suites, "
        f"{4 * args.size:,} entries). Import of the 2 x {args.size:,} .debs into `{BENCH}`: "
        f"{imported:.1f} s. Median of {args.runs} runs, wall clock of the whole "
        "`aptship` process; peak RSS of its process tree.",
        "",
        "| operation | wall (s) | peak RSS (MB) |",
        "|---|---|---|",
        *(f"| {op} | {m.wall:.2f} | {m.rss_mb:.0f} |" for op, m in results.items()),
        "",
        f"`aptship verify --fast` of the 4 suites afterwards: no problem ({verified.wall:.1f} s).",
        "",
        "Load average (1, 5, 15 min) of the machine, shared with other work: "
        f"{' '.join(f'{x:.1f}' for x in load_before)} at the start, "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end. Compare with "
        "`benchmarks/RESULTS.md` (one distribution) only from runs under similar load.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
