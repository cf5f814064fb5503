"""The scale-out section: serving targets through the nginx front, and the fleet.

* wrk (bounded, loopback): ``InRelease`` with auth through ``aptship serve`` alone and
  through the nginx front (``conf/nginx/aptship.conf``), ``InRelease`` and a 50 MB
  pool file through the front vs bare nginx on the same directory, in one run.
* :mod:`benchmarks.fleet` against (a) one ``aptship serve``, (b) two replicas behind
  an nginx load balancer, (c) the front.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import debgen
from benchmarks.common import BenchError, fmt_ratio, loadavg, md_table
from benchmarks.drivers import BENCH
from benchmarks.fleet import FleetResult, fleet_driver, make_tokens, run_fleet, target_server

TARGETS = ("serve", "replicas", "front")
TARGET_TITLES = {
    "serve": "(a) one `aptship serve` (2 workers)",
    "replicas": "(b) two replicas (1 worker each) behind nginx",
    "front": "(c) nginx front + `aptship serve` (2 workers)",
}
BIG_FILE = 50 * 1024 * 1024
SERVING_RUNS = 2


@dataclass
class ScaleOut:
    entries: int
    wrk: dict[str, Any] = field(default_factory=dict)  # name -> best WrkResult
    samples: dict[str, list[Any]] = field(default_factory=dict)  # name -> every WrkResult
    fleet: list[FleetResult] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_serving(driver: Any, work: Path, out: ScaleOut, duration: int) -> None:
    from benchmarks import serverbench as sb

    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian package wrk)")
    big = debgen.big_deb(work / "bench-bigfile_1.0-1_amd64.deb", BIG_FILE)
    pool = driver.repository().publish(BENCH, [big])[0]["filename"]
    secret = make_tokens(driver)[BENCH][0]
    header = "Authorization: Basic " + base64.b64encode(f"bench:{secret}".encode()).decode()
    inrelease = f"dists/{BENCH}/InRelease"
    out.load.append(f"before wrk: {loadavg()}")

    def wrk(name: str, base: str, path: str, auth: bool) -> None:
        got = sb.wrk(
            f"{base}/{path}", connections=16, duration=duration, header=header if auth else None
        )
        out.samples.setdefault(name, []).append(got)
        if got.errors:
            out.failures.append(f"wrk {name}: {got.errors} errors in {got.requests} requests")
        best = out.wrk.get(name)
        if best is None or got.requests_per_s > best.requests_per_s:
            out.wrk[name] = got

    # The load of the shared machine drifts: pairs to compare run alternately, twice,
    # and the best run of each counts.
    with target_server("serve", driver, work) as base:
        for _ in range(SERVING_RUNS):
            wrk("serve InRelease", base, inrelease, True)
    with target_server("front", driver, work) as front, sb.nginx(driver.served_dir(), work) as bare:
        for _ in range(SERVING_RUNS):
            wrk("front InRelease", front, inrelease, True)
            wrk("nginx InRelease", bare, inrelease, False)
            wrk("front pool", front, pool, True)
            wrk("nginx pool", bare, pool, False)


def run_scaleout(
    work: Path,
    gnupghome: Path,
    fpr: str,
    *,
    hosts: int,
    rounds: int,
    concurrency: int,
    entries: int,
    targets: list[str],
    wrk_seconds: int | None,
    log: Any,
) -> ScaleOut:
    out = ScaleOut(entries=entries)
    out.load.append(f"start: {loadavg()}")
    driver = fleet_driver(work, gnupghome, fpr, entries)
    for target in targets:
        log(f"fleet: {hosts} hosts x {rounds} rounds against {target}")
        try:
            with target_server(target, driver, work) as base:
                result = run_fleet(
                    target,
                    base,
                    driver,
                    make_tokens(driver),
                    hosts=hosts,
                    rounds=rounds,
                    concurrency=concurrency,
                    debs=work / "debs-fleet",
                )
        except Exception as exc:
            out.failures.append(f"fleet against {target}: {exc}")
            log(f"FAILED fleet against {target}: {exc}")
            continue
        out.fleet.append(result)
        out.load.append(f"after fleet {target}: {loadavg()}")
        log(
            f"  {result.requests} requests, {result.requests_per_s:,.0f} req/s, "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, errors {result.errors}, "
            f"mismatched {result.mismatched_hosts}, stale {result.stale_hosts}, "
            f"{result.publishes} publishes"
        )
        for problem in [*result.error_samples, *result.publisher_errors]:
            log(f"    {problem}")
        if result.errors or result.mismatched_hosts or result.stale_hosts:
            out.failures.append(
                f"fleet against {target}: {result.errors} errors, "
                f"{result.mismatched_hosts} hosts with a hash mismatch, "
                f"{result.stale_hosts} stale hosts"
            )
        if result.publisher_errors:
            out.failures.append(f"fleet against {target}: publisher: {result.publisher_errors[0]}")
    if wrk_seconds:
        log("serving targets: wrk through aptship serve, the front and bare nginx")
        try:
            run_serving(driver, work, out, wrk_seconds)
        except Exception as exc:
            out.failures.append(f"serving targets: {exc}")
            log(f"FAILED serving targets: {exc}")
        out.load.append(f"end: {loadavg()}")
    return out


def render_scaleout(s: ScaleOut, *, smoke: bool, hosts: int, command: str) -> list[str]:
    lines = [
        "<!-- scaleout:start -->",
        "## Scale-out: nginx front, replicas, fleet",
        "",
        f"Command: `{command}`. Load average (1/5/15 min) along the run: "
        + "; ".join(s.load)
        + ". The machine has 2 CPUs shared with other work; the load generator (Python "
        "threads, one keep-alive connection each) runs on them too.",
        "",
    ]
    w = s.wrk
    if w:
        rows = []
        for name in ("serve InRelease", "front InRelease", "nginx InRelease"):
            if name in w:
                r = w[name]
                rows.append(
                    [name, f"{r.requests_per_s:,.0f} req/s", f"{r.p99_ms:.1f} ms", str(r.errors)]
                )
        for name in ("front pool", "nginx pool"):
            if name in w:
                r = w[name]
                rows.append(
                    [
                        f"{name} (50 MB)",
                        f"{r.mb_per_s:,.1f} MB/s",
                        f"{r.p99_ms:.1f} ms",
                        str(r.errors),
                    ]
                )
        lines += [
            "### Serving (wrk -t2 -c16 -d5s, loopback, same run)",
            "",
            "`serve` and `front` send a read token (HTTP Basic); bare nginx serves the same "
            f"directory without auth. Best of {SERVING_RUNS} runs each; the front and bare "
            "nginx run alternately (every run: "
            + "; ".join(
                f"{name} "
                + ", ".join(
                    f"{r.mb_per_s:,.0f} MB/s" if "pool" in name else f"{r.requests_per_s:,.0f}"
                    for r in runs
                )
                for name, runs in s.samples.items()
            )
            + ").",
            "",
            md_table(["what", "throughput", "p99", "errors"], rows),
            "",
        ]
    rows = []
    for r in s.fleet:
        rows.append(
            [
                TARGET_TITLES[r.target],
                f"{r.requests:,}",
                f"{r.requests_per_s:,.0f}",
                f"{r.p50_ms:.1f} ms",
                f"{r.p99_ms:.1f} ms",
                f"{r.not_modified:,}",
                f"{r.downloads:,}",
                str(r.publishes),
                str(r.errors),
                str(r.mismatched_hosts),
                str(r.stale_hosts),
            ]
        )
    if rows:
        first = s.fleet[0]
        lines += [
            f"### Fleet: {hosts:,} hosts, {first.rounds} update rounds with publishing",
            "",
            f"Each host: conditional GET of InRelease, then Packages.gz and pins by-hash when "
            f"it changed (hash and size checked), 5% also download one pool file (hash "
            f"checked); half follow `bench`, half `stage` ({s.entries:,} entries each), "
            f"{10} read tokens per channel. `aptship publish` into bench and `aptship promote` "
            "to stage run back to back during the rounds; a final round after the last "
            "publish must leave every host on it. req/s and latencies cover the rounds with "
            "publishing.",
            "",
            md_table(
                [
                    "target",
                    "requests",
                    "req/s",
                    "p50",
                    "p99",
                    "304s",
                    "pool downloads",
                    "publishes",
                    "errors",
                    "hash mismatch hosts",
                    "stale hosts",
                ],
                rows,
            ),
            "",
        ]
    if not smoke:
        lines += render_targets(s, hosts)
    if s.failures:
        lines += ["Failures:", ""] + [f"- FAILED: {f}" for f in s.failures] + [""]
    lines += ["<!-- scaleout:end -->", ""]
    return lines


def render_targets(s: ScaleOut, hosts: int) -> list[str]:
    rows: list[list[str]] = []

    def target(name: str, value: str, ok: bool | None) -> None:
        rows.append([name, value, "not measured" if ok is None else ("met" if ok else "MISSED")])

    w = s.wrk
    if "front InRelease" in w and "nginx InRelease" in w:
        a, b = w["front InRelease"].requests_per_s, w["nginx InRelease"].requests_per_s
        target(
            "front InRelease with auth >= 50% of bare nginx",
            f"{a:,.0f} vs {b:,.0f} req/s ({fmt_ratio(a, b)})",
            a >= 0.5 * b,
        )
    else:
        target("front InRelease with auth >= 50% of bare nginx", "n/a", None)
    if "front pool" in w and "nginx pool" in w:
        a, b = w["front pool"].mb_per_s, w["nginx pool"].mb_per_s
        target(
            "front pool throughput >= 90% of bare nginx",
            f"{a:,.1f} vs {b:,.1f} MB/s ({fmt_ratio(a, b)})",
            a >= 0.9 * b,
        )
    else:
        target("front pool throughput >= 90% of bare nginx", "n/a", None)
    if "serve InRelease" in w:
        a = w["serve InRelease"].requests_per_s
        target("`aptship serve` InRelease with auth >= 4,000 req/s", f"{a:,.0f} req/s", a >= 4000)
    else:
        target("`aptship serve` InRelease with auth >= 4,000 req/s", "n/a", None)
    for r in s.fleet:
        clean = r.errors == 0 and r.stale_hosts == 0 and r.mismatched_hosts == 0
        target(
            f"{hosts:,}-host fleet, {TARGET_TITLES[r.target]}: 0 errors, 0 stale",
            f"{r.errors} errors, {r.stale_hosts} stale, {r.mismatched_hosts} mismatched",
            clean,
        )
    return ["### Scale-out targets", "", md_table(["target", "measured", "verdict"], rows), ""]
