"""``python -m benchmarks``: run every benchmark and write ``benchmarks/RESULTS.md``.

See ``benchmarks/README.md`` for what is measured and how to read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import debgen
from benchmarks.aptloop import render_apt_loops
from benchmarks.checks import apt_check, aptship_verify
from benchmarks.cipath import render_ci_path
from benchmarks.common import (
    APTSHIP,
    REPO_ROOT,
    TRASH,
    BenchError,
    Measure,
    discard,
    empty_trash,
    fmt_ratio,
    fmt_seconds,
    gpg_key,
    loadavg,
    machine,
    md_table,
    run,
    settle,
    stop_gpg_agent,
    tool_env,
    tool_version,
)
from benchmarks.drivers import (
    BENCH,
    OP_TITLES,
    OPS,
    STAGE,
    AptlyDriver,
    AptshipDriver,
    Driver,
    RepreproDriver,
    toml_text,
)
from benchmarks.issue17 import measure_of, render_issue17, wall_of

DEFAULT_SIZES = (1000, 10000, 50000)
SMOKE_SIZE = 200
FLEET_HOSTS = 2000
SMOKE_HOSTS = 60
FLEET_ENTRIES = 1000  # entries per channel of the fleet's repository
CI_UPLOADS = 20  # .debs uploaded one at a time through the server, per way, per config
SMOKE_CI_UPLOADS = 3
BIG_FILE = 50 * 1024 * 1024
APTSHIP_CONFIGS = (
    ("aptship", None),  # default index formats: gz, xz (the plain Packages only listed)
    ("aptship +plain", ("plain", "gz", "xz")),
)
REPREPRO_NOTE = (
    "Debian 12's reprepro keeps only one version per package (no `Limit:` support): "
    "its channel holds N/5 entries where the others hold N, so its numbers are a lower "
    "bound on the work."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark aptship against reprepro and aptly; write benchmarks/RESULTS.md.",
    )
    p.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="channel sizes N (entries; multiples of 5), comma-separated",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per operation (median reported)")
    p.add_argument(
        "--import-runs",
        type=int,
        default=None,
        help="runs of the full import (default: --runs below 50,000 entries, 1 from 50,000)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"N={SMOKE_SIZE}, one run, correctness assertions only (verify + real apt-get)",
    )
    p.add_argument("--skip-peers", action="store_true", help="do not run reprepro and aptly")
    p.add_argument("--skip-server", action="store_true", help="do not benchmark aptship serve")
    p.add_argument(
        "--skip-s3",
        action="store_true",
        help="do not count S3 requests (nor run the apt-get loop against the S3 repository)",
    )
    p.add_argument(
        "--skip-ci-path",
        action="store_true",
        help="do not upload .debs through aptship serve (the CI path; not skipped by "
        "--skip-server)",
    )
    p.add_argument(
        "--ci-uploads",
        type=int,
        default=None,
        help=f"uploads per way (API, CLI) in the CI path (default {CI_UPLOADS}; "
        f"--smoke: {SMOKE_CI_UPLOADS})",
    )
    p.add_argument(
        "--skip-fleet",
        action="store_true",
        help="do not run the scale-out section (also skipped by --skip-server)",
    )
    p.add_argument(
        "--fleet-only",
        action="store_true",
        help="run only the scale-out section (front, replicas, fleet) and write it into "
        "--out in place of the previous one",
    )
    p.add_argument(
        "--hosts",
        type=int,
        default=None,
        help=f"simulated hosts in the fleet (default {FLEET_HOSTS:,}; --smoke: {SMOKE_HOSTS})",
    )
    p.add_argument(
        "--fleet-rounds", type=int, default=None, help="update rounds with publishing (default 3)"
    )
    p.add_argument(
        "--fleet-concurrency",
        type=int,
        default=32,
        help="client threads (one keep-alive connection each; default 32)",
    )
    p.add_argument(
        "--fleet-targets",
        default="serve,replicas,front",
        help="comma-separated: serve (one aptship serve), replicas (two behind nginx), "
        "front (conf/nginx/aptship.conf)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default benchmarks/RESULTS.md; with --smoke: WORK/SMOKE.md)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "work",
        help="scratch directory: cached .debs, repositories, logs (default benchmarks/work)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes = [SMOKE_SIZE]
        args.runs = 1
    else:
        try:
            args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
        except ValueError:
            p.error("--sizes takes comma-separated integers")
    if not args.sizes or any(n <= 0 or n % debgen.VERSIONS_PER_PACKAGE for n in args.sizes):
        p.error(f"sizes must be positive multiples of {debgen.VERSIONS_PER_PACKAGE}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.hosts is None:
        args.hosts = SMOKE_HOSTS if args.smoke else FLEET_HOSTS
    if args.ci_uploads is None:
        args.ci_uploads = SMOKE_CI_UPLOADS if args.smoke else CI_UPLOADS
    if args.ci_uploads < 1:
        p.error("--ci-uploads must be at least 1")
    if args.fleet_rounds is None:
        args.fleet_rounds = 1 if args.smoke else 3
    args.fleet_targets = [t for t in str(args.fleet_targets).split(",") if t.strip()]
    if args.hosts < 1 or args.fleet_rounds < 1 or not 1 <= args.fleet_concurrency <= 256:
        p.error("--hosts and --fleet-rounds must be positive, --fleet-concurrency 1..256")
    if any(t not in ("serve", "replicas", "front") for t in args.fleet_targets):
        p.error("--fleet-targets takes serve, replicas and/or front")
    if args.out is None:
        args.out = args.work / "SMOKE.md" if args.smoke else REPO_ROOT / "benchmarks" / "RESULTS.md"
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.absolute()
        self.work.mkdir(parents=True, exist_ok=True)
        self.gnupghome, self.fpr = gpg_key(self.work)
        self.results: dict[int, dict[str, dict[str, Measure]]] = {}
        self.commands: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []
        self.failures: list[str] = []
        self.checks: list[str] = []
        self.hints: list[str] = []
        self.s3: dict[tuple[int, str], dict[str, list[Any]]] = {}  # (N, config) -> op
        self.apt_loops: dict[tuple[int, str], Any] = {}  # (N, config) -> aptloop.LoopResult
        self.ci: dict[tuple[int, str], Any] = {}  # (N, config) -> cipath.CiPath
        self.server: dict[str, Any] = {}
        self.help_time: float | None = None
        self.scaleout: Any = None
        self.kept: AptshipDriver | None = None  # the largest default-config aptship repo
        self.stack = contextlib.ExitStack()
        self.s3_endpoint: str | None = None
        self.load_start = loadavg()
        self.env = tool_env(self.gnupghome, self.work / "pycache")

    # -- helpers ---------------------------------------------------------------------
    @property
    def trash(self) -> Path:
        """Where trees the run is done with wait to be deleted (common.discard)."""
        return self.work / TRASH

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def fail(self, what: str, exc: BaseException) -> None:
        text = f"{what}: {exc}"
        self.failures.append(text.splitlines()[0][:300])
        self.hints += [ln for ln in text.splitlines() if ln.startswith("hint: ")]
        self.log(f"FAILED {text}")
        if self.args.smoke:
            traceback.print_exc()

    def peers(self, size: int) -> list[Driver]:
        if self.args.skip_peers:
            return []
        found: list[Driver] = []
        for tool, cls in (("reprepro", RepreproDriver), ("aptly", AptlyDriver)):
            if shutil.which(tool) is None:
                self.note(f"{tool} is not installed (Debian package {tool}); skipped")
                continue
            found.append(cls(self.work, self.gnupghome, self.fpr, size=size))
        return found

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def import_runs(self, size: int) -> int:
        if self.args.import_runs:
            return int(self.args.import_runs)
        return self.args.runs if size < 50000 else 1

    # -- the local benchmark -------------------------------------------------------------
    def run_size(self, size: int) -> None:
        self.log(f"N = {size}: preparing {size} .debs (cached in {self.work / 'debs'})")
        t = time.perf_counter()
        files = debgen.dataset(self.work / "debs", size)
        self.log(f"  {len(files)} .debs ready in {time.perf_counter() - t:.1f} s")
        packages = size // debgen.VERSIONS_PER_PACKAGE
        picks = [(3 + 7 * r) % packages for r in range(self.args.runs)]
        extras = [debgen.extra_deb(self.work / "debs-extra", i, 6) for i in picks]
        drivers: list[Driver] = [
            AptshipDriver(
                self.work, self.gnupghome, self.fpr, label=label, formats=formats, size=size
            )
            for label, formats in APTSHIP_CONFIGS
        ]
        drivers += self.peers(size)
        self.results[size] = {}
        imports = self.run_imports(drivers, size, files)
        for driver in drivers:
            self.commands[driver.name] = driver.commands
            if driver.name not in imports:
                continue  # its import failed: reported
            try:
                self.results[size][driver.name] = self.run_driver(
                    driver, imports[driver.name], extras
                )
            except Exception as exc:
                self.fail(f"{driver.name} at N={size}", exc)
                continue
            if self.args.smoke or size == min(self.args.sizes):
                self.check(driver, picks)  # full runs: a spot check at the smallest size
            if isinstance(driver, AptshipDriver) and not self.args.skip_s3 and size <= 10000:
                try:
                    self.run_s3(driver, size)
                except Exception as exc:
                    self.fail(f"S3 at N={size} ({driver.name})", exc)
            if isinstance(driver, AptshipDriver) and not self.args.skip_ci_path:
                try:
                    self.run_ci_path(driver, size)
                except Exception as exc:
                    self.fail(f"CI path at N={size} ({driver.name})", exc)
            if (
                isinstance(driver, AptshipDriver)
                and driver.formats is None
                and (self.kept is None or self.kept.size < size)
            ):
                self.kept = driver

    def run_imports(
        self, drivers: list[Driver], size: int, files: list[Path]
    ) -> dict[str, Measure]:
        """The full imports, interleaved: round by round, each tool once, the first of
        a round rotating.  So every tool's imports sample the same minutes of this
        shared machine, whose speed drifts by tens of percent from one minute to the
        next; tool after tool, a ratio measured the drift as much as the tools.  Each
        tool's last import stays for its other operations.  A tool whose import fails
        is reported and leaves the rounds."""
        done: dict[str, Measure] = {d.name: Measure() for d in drivers}
        going = list(drivers)
        for i in range(self.import_runs(size)):
            shift = i % len(going) if going else 0
            for d in going[shift:] + going[:shift]:
                d.reset()
                os.sync()  # start each import with no writeback of the previous run pending
                try:
                    done[d.name].add(d.import_all(files))
                except Exception as exc:
                    self.fail(f"{d.name} at N={size}", exc)
                    going.remove(d)
                    del done[d.name]
                    continue
                wall = done[d.name].samples[-1].wall
                self.log(f"  {d.name:<14} import #{i + 1}: {wall:.2f} s")
        return done

    def run_driver(self, d: Driver, imported: Measure, extras: list[Path]) -> dict[str, Measure]:
        m = {op: Measure() for op in OPS}
        m["import"] = imported
        d.prepare_stage()
        for deb in extras:
            m["add"].add(d.add_one(deb))
        for deb in extras:
            package, version, _ = deb.name.split("_")
            m["promote"].add(d.promote(package, version))
        for _ in range(self.args.runs):
            m["reindex"].add(d.reindex())
        for _ in range(self.args.runs):
            sample = d.verify()
            if sample is not None:
                m["verify"].add(sample)
        self.log(
            f"  {d.name:<14} "
            + ", ".join(f"{op} {fmt_seconds(m[op].wall)}" for op in OPS if m[op].runs)
        )
        return m

    def check(self, d: Driver, picks: list[int]) -> None:
        """Smoke mode: what each tool built verifies and a real apt-get accepts it."""
        latest = [f"{debgen.package_name(picks[0])}"]
        try:
            if isinstance(d, AptshipDriver):
                problems = aptship_verify(d.config_path, fast=False)
                if problems:
                    raise BenchError("aptship verify found problems:\n" + "\n".join(problems))
                older = [
                    f"{debgen.package_name(picks[0])}={debgen.version_string(6)}",
                    f"{debgen.package_name(1)}={debgen.version_string(2)}",
                ]
                got = apt_check(d.served_dir(), d.public_key(), BENCH, older)
                got2 = apt_check(d.served_dir(), d.public_key(), STAGE, latest)
                self.checks.append(f"{d.name}: aptship verify OK; bench: {got}; stage: {got2}")
            else:
                got = apt_check(d.served_dir(), d.public_key(), BENCH, latest)
                got2 = apt_check(d.served_dir(), d.public_key(), STAGE, latest)
                self.checks.append(f"{d.name}: bench: {got}; stage: {got2}")
        except Exception as exc:
            self.fail(f"correctness check of {d.name}", exc)

    # -- S3 ------------------------------------------------------------------------------
    def run_s3(self, local: AptshipDriver, size: int) -> None:
        from benchmarks import s3bench

        if self.s3_endpoint is None:
            self.s3_endpoint = self.stack.enter_context(s3bench.moto_server(self.work / "logs"))
        endpoint = self.s3_endpoint
        bucket = s3bench.make_bucket(endpoint)
        cfg = local.config_dict(s3bench.storage_config(endpoint, bucket))
        cfg_path = local.root / "aptship-s3.toml"

        def factory() -> Any:
            return s3bench.s3_repository(cfg, cfg_path)

        t = time.perf_counter()
        n = s3bench.copy_tree_to_s3(local.root / "repo", factory().storage)
        self.log(f"  S3: copied {n} objects to moto in {time.perf_counter() - t:.1f} s")
        packages = size // debgen.VERSIONS_PER_PACKAGE
        debs = [
            debgen.extra_deb(self.work / "debs-extra", (5 + 11 * r) % packages, 7)
            for r in range(max(2, self.args.runs))
        ]
        adds, promotes = [], []
        with self.apt_loop(local, size, cfg, cfg_path, factory) as loop:
            for deb in debs:
                adds.append(s3bench.measure(factory, lambda r, deb=deb: r.publish(BENCH, [deb])))
                loop.settle()  # apt has fetched this publish before the next one
            for deb in debs:
                package, version, _ = deb.name.split("_")
                promotes.append(
                    s3bench.measure(
                        factory,
                        lambda r, p=package, v=version: r.promote(p, v, BENCH, STAGE),
                    )
                )
                loop.settle()
            self.s3[size, local.name] = {"add": adds, "promote": promotes}
        self.log(
            f"  S3 {local.name} N={size}: add one {[a.requests for a in adds]} requests, "
            f"promote one {[p.requests for p in promotes]} requests"
        )
        if self.args.smoke:
            from publisher.verify import verify

            problems = verify(factory(), fast=True)
            if problems:
                self.fail("S3 verify", BenchError("\n".join(problems)))
            else:
                self.checks.append(f"S3 (moto) N={size}: aptship verify --fast OK")

    @contextlib.contextmanager
    def apt_loop(
        self,
        local: AptshipDriver,
        size: int,
        cfg: dict[str, object],
        cfg_path: Path,
        factory: Any,
    ) -> Iterator[Any]:
        """``aptship serve`` on the S3 repository, and a real apt-get update looping
        against it (bench and stage, a read token) until the block ends."""
        from benchmarks import s3bench
        from benchmarks.aptloop import AptLoop
        from benchmarks.serverbench import aptship_server
        from publisher.tokens import open_tokens

        repo = factory()
        secret = open_tokens(repo.config, repo.storage).create(
            f"bench-apt-{uuid.uuid4().hex[:8]}", "read", [BENCH, STAGE]
        )
        cfg_path.write_text(toml_text(cfg))
        env = {k: v for k, v in self.env.items() if k not in ("AWS_SESSION_TOKEN", "AWS_PROFILE")}
        env.update(s3bench.DUMMY)
        root = self.work / "apt-loop" / f"{local.slug}-{size}"
        discard(root, self.trash)
        with aptship_server(cfg_path, env, self.work / "logs" / "s3-serve") as (base, _, _how):
            loop = AptLoop(root, base, local.public_key(), [BENCH, STAGE], secret).start()
            try:
                yield loop
            finally:
                result = loop.stop()
        self.apt_loops[size, local.name] = result
        self.log(f"  S3 {local.name} N={size}: apt-get loop: {result.line()}")
        if result.mismatches or result.failures:
            raise BenchError(
                f"apt-get update during the S3 publishes: {result.line()}:\n"
                + "\n---\n".join(result.examples)
            )
        self.checks.append(f"S3 (moto) N={size} ({local.name}), apt-get loop: {result.line()}")

    # -- the CI path -------------------------------------------------------------------------
    def run_ci_path(self, local: AptshipDriver, size: int) -> None:
        """K uploads through ``aptship serve`` into a copy of ``local``'s repository."""
        from benchmarks import cipath

        dest = self.work / "repos" / f"ci-{local.slug}-{size}"
        config = cipath.copy_repository(
            local.root,
            dest,
            lambda repo: toml_text(local.config_dict({"type": "local", "path": str(repo)})),
            self.trash,
        )
        try:
            self.ci[size, local.name] = cipath.run_ci_path(
                config=config,
                entries=size,
                env=self.env,
                work=self.work,
                uploads=self.args.ci_uploads,
                log=self.log,
            )
            if self.args.smoke:
                problems = aptship_verify(config, fast=False)
                if problems:
                    raise BenchError("aptship verify after the CI uploads:\n" + "\n".join(problems))
                self.checks.append(
                    f"CI path N={size} ({local.name}): {2 * self.args.ci_uploads} uploads "
                    "through aptship serve added; aptship verify OK"
                )
        finally:
            discard(dest, self.trash)

    # -- server --------------------------------------------------------------------------
    def run_server(self) -> None:
        from benchmarks import serverbench as sb

        why = sb.repo_server_available()
        if why is not None:
            msg = f"repo_server not available ({why}); server benchmark skipped"
            self.server["skipped"] = msg
            self.log(msg)
            return
        if self.kept is None:
            self.server["skipped"] = "no aptship repository was built; server benchmark skipped"
            return
        for tool in ("wrk", "nginx"):
            if shutil.which(tool) is None:
                self.server["skipped"] = f"{tool} is not installed; server benchmark skipped"
                return
        d = self.kept
        repo = d.repository()
        big = debgen.big_deb(self.work / "bench-bigfile_1.0-1_amd64.deb", BIG_FILE)
        pool_key = repo.publish(BENCH, [big])[0]["filename"]
        from publisher.tokens import open_tokens

        secret = open_tokens(repo.config, repo.storage).create(
            f"bench-{uuid.uuid4().hex[:8]}", "read", [BENCH]
        )
        paths = {
            "InRelease": f"dists/{BENCH}/InRelease",
            "Packages.xz": f"dists/{BENCH}/main/binary-amd64/Packages.xz",
            "pool file (50 MB)": pool_key,
        }
        duration = 3 if self.args.smoke else 5
        out: dict[str, dict[str, Any]] = {}
        with sb.aptship_server(d.config_path, d.env, self.work / "logs") as (base, master, how):
            self.server["how"] = how
            found = sb.find_prefix(base, secret)
            if found is None:
                self.server["skipped"] = (
                    f"aptship serve answered no 200 for dists/{BENCH}/InRelease under "
                    f"{sb.CANDIDATE_PREFIXES} with a read token; server benchmark skipped"
                )
                return
            prefix, header = found
            self.server["header"] = "Authorization: " + header.split(" ")[1]
            for name, path in paths.items():
                out[name] = {
                    "aptship": sb.wrk(
                        f"{base}{prefix}/{path}", connections=16, duration=duration, header=header
                    )
                }
            self.server["workers_rss"] = sb.worker_rss(master)
            self.server["master_rss"] = sb.peak_rss_mb(master)
        with sb.nginx(d.served_dir(), self.work) as nbase:
            for name, path in paths.items():
                out[name]["nginx"] = sb.wrk(
                    f"{nbase}/{path}", connections=16, duration=duration, header=None
                )
        self.server["results"] = out
        self.server["prefix"] = prefix or "/"
        self.server["entries"] = d.size

    # -- --help -------------------------------------------------------------------------
    def run_help(self) -> None:
        samples = [run([APTSHIP, "--help"], env=self.env)[0].wall for _ in range(10)]
        samples.sort()
        self.help_time = (samples[4] + samples[5]) / 2

    # -- everything -----------------------------------------------------------------------
    # -- scale-out: front, replicas, fleet -------------------------------------------------
    def run_scaleout(self) -> None:
        from benchmarks.scaleout import run_scaleout

        a = self.args
        self.scaleout = run_scaleout(
            self.work,
            self.gnupghome,
            self.fpr,
            hosts=a.hosts,
            rounds=a.fleet_rounds,
            concurrency=a.fleet_concurrency,
            entries=SMOKE_SIZE if a.smoke else FLEET_ENTRIES,
            targets=a.fleet_targets,
            wrk_seconds=None if a.smoke else 5,
            log=self.log,
        )
        for failure in self.scaleout.failures:
            self.failures.append(failure)

    def scaleout_lines(self) -> list[str]:
        from benchmarks.scaleout import render_scaleout

        if self.scaleout is None:
            return []
        cmd = ("python -m benchmarks " + " ".join(sys.argv[1:])).strip()
        return render_scaleout(
            self.scaleout, smoke=self.args.smoke, hosts=self.args.hosts, command=cmd
        )

    def main_scaleout(self) -> int:
        """``--fleet-only``: the scale-out section, written in place of the previous one."""
        try:
            self.run_scaleout()
        except Exception as exc:
            self.fail("scale-out", exc)
        stop_gpg_agent(self.gnupghome)
        section = "\n".join(self.scaleout_lines())
        out: Path = self.args.out
        old = out.read_text() if out.exists() else "# aptship benchmark results\n\n"
        start, end = "<!-- scaleout:start -->", "<!-- scaleout:end -->\n"
        if start in old and end in old:
            text = old[: old.index(start)] + section + old[old.index(end) + len(end) :]
        else:
            text = old.rstrip("\n") + "\n\n" + section
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(section)
        self.log(f"wrote the scale-out section of {out}")
        if self.failures:
            self.log(f"{len(self.failures)} failure(s): " + "; ".join(self.failures))
            return 1
        return 0

    def main(self) -> int:
        if self.args.fleet_only:
            return self.main_scaleout()
        t0 = time.perf_counter()
        run([APTSHIP, "--help"], env=self.env)  # warm the bytecode cache
        run(
            [sys.executable, "-m", "compileall", "-q", "publisher", "repo_server"],
            env=self.env,
            cwd=REPO_ROOT,
            check=False,
        )
        self.note(
            "each tool's earlier tree is moved aside, not deleted, before the next import; the "
            "run deletes them after the timings: on ext4 without a journal, inodes freed in "
            "the last minute slow every new file (`discard` in benchmarks/common.py)"
        )
        if self.trash.exists():  # an interrupted run's; see common.discard
            self.note("trees left by an interrupted run were deleted at the start")
            empty_trash(self.trash)
        if not self.args.smoke:  # timings only: a smoke run checks correctness
            waited = settle(self.trash, self.log)
            if waited:
                self.note(f"the run waited {waited:.0f} s for the last run's deletions to settle")
        with self.stack:
            for size in self.args.sizes:
                self.run_size(size)
            if not self.args.skip_server:
                try:
                    self.run_server()
                except Exception as exc:
                    self.fail("server benchmark", exc)
                if not self.args.skip_fleet:
                    try:
                        self.run_scaleout()
                    except Exception as exc:
                        self.fail("scale-out", exc)
            self.run_help()
        stop_gpg_agent(self.gnupghome)
        elapsed = time.perf_counter() - t0
        empty_trash(self.trash)  # after the timings: see common.discard
        report = render_report(self, elapsed)
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(report)
        print(report)
        self.log(f"wrote {self.args.out}")
        if self.failures:
            self.log(f"{len(self.failures)} failure(s): " + "; ".join(self.failures))
            return 1
        return 0


# -- the report -----------------------------------------------------------------------------
def _cell(m: Measure | None) -> str:
    return fmt_seconds(m.wall) if m and m.runs else "n/a"


def render_report(b: Bench, elapsed: float) -> str:
    mach = machine()
    cmd = "python -m benchmarks " + " ".join(sys.argv[1:])
    tools = [label for label, _ in APTSHIP_CONFIGS] + ["reprepro", "aptly"]
    lines = [
        "# aptship benchmark results" + (" (smoke run: correctness only)" if b.args.smoke else ""),
        "",
        f"- command: `{cmd.strip()}` (from the repository root, with `.venv`)",
        f"- date: {mach['date']}; total run time {elapsed / 60:.1f} min",
        f"- machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['memory']} memory, "
        f"Linux {mach['kernel']}, Python {mach['python']}",
        f"- tools: {tool_version(['reprepro', '--version'])}; "
        f"aptly {tool_version(['aptly', 'version']).removeprefix('aptly version: ')}; "
        f"{tool_version(['nginx', '-v'])}; {tool_version(['wrk', '--version'])}",
        f"- runs: median of {b.args.runs} per operation; the full import runs "
        + ", ".join(f"{b.import_runs(n)}x at N={n:,}" for n in b.args.sizes)
        + ", interleaved (each round imports once with every tool, the first rotating)"
        + "; peak RSS is the largest over the runs (`/usr/bin/time -f %M`: the largest "
        "process of the command's tree)",
        f"- load average (1/5/15 min) at start: {b.load_start}; at end: {mach['load']} "
        "(other work on this 2-CPU machine inflates wall times)",
        "- Python bytecode of the measured aptship commands is cached (`PYTHONPYCACHEPREFIX` "
        "under the work directory, `PYTHONDONTWRITEBYTECODE` unset), as an installed "
        "package has its .pyc files; one untimed `aptship --help` warms it first",
        "- every operation is a subprocess (start-up included), signed with the same "
        "ed25519 key; channel `bench`, architecture amd64, N/5 packages x 5 versions",
        "",
    ]
    lines += [
        "## Correctness checks" + ("" if b.args.smoke else f" (N = {min(b.args.sizes):,})"),
        "",
        "What each tool built is checked with a real, isolated `apt-get update` and "
        "`apt-get download` of exact versions (aptship also with `aptship verify`); "
        "failures are listed under Notes and failures.",
        "",
    ]
    lines += [f"- {c}" for c in b.checks] or ["- none passed"]
    lines.append("")
    for size in b.args.sizes:
        lines += [f"## N = {size:,} entries", ""]
        rows = []
        for op in OPS:
            row = [OP_TITLES[op]]
            row += [_cell(measure_of(b, size, t, op)) for t in tools]
            for label, _ in APTSHIP_CONFIGS:
                mine = wall_of(b, size, label, op)
                row += [
                    fmt_ratio(mine, wall_of(b, size, peer, op)) for peer in ("reprepro", "aptly")
                ]
            rows.append(row)
        header = ["operation (median wall)", *tools]
        for label, _ in APTSHIP_CONFIGS:
            header += [f"{label} ÷ reprepro", f"{label} ÷ aptly"]
        lines += [md_table(header, rows), ""]
        rss_rows = []
        for op in OPS:
            rss_rows.append(
                [OP_TITLES[op]]
                + [
                    f"{m.rss_mb:.0f} MB" if (m := measure_of(b, size, t, op)) else "n/a"
                    for t in tools
                ]
            )
        lines += ["Peak RSS:", "", md_table(["operation", *tools], rss_rows), ""]
    lines += ["What each tool runs:", ""]
    cmd_rows = [
        [OP_TITLES[op]]
        + [b.commands.get(t, {}).get(op, "n/a") for t in ("aptship", "reprepro", "aptly")]
        for op in OPS
    ]
    lines += [md_table(["operation", "aptship (both configs)", "reprepro", "aptly"], cmd_rows), ""]
    lines += [
        "Configurations: `aptship` writes Packages.gz and Packages.xz and lists the "
        "uncompressed Packages in Release (default `index_formats`, what Debian's archive "
        'serves); `aptship +plain` sets `index_formats = ["plain", "gz", "xz"]` and also '
        "writes the uncompressed file. reprepro writes Packages, .gz and .xz "
        "(`DebIndices: Packages Release . .gz .xz`). aptly 1.5 writes Packages and .gz "
        "(bz2 and Contents switched off: aptship writes neither).",
        "",
        f"Note: {REPREPRO_NOTE}",
        "",
    ]
    lines += render_s3(b)
    lines += render_ci_path(b.ci, skipped=b.args.skip_ci_path)
    lines += render_server(b)
    lines += b.scaleout_lines()
    lines += [
        "## `aptship --help`",
        "",
        f"Median of 10 runs: {fmt_seconds(b.help_time)} (target < 150 ms).",
        "",
    ]
    if not b.args.smoke:
        lines += render_targets(b)
        lines += render_issue17(b, [label for label, _ in APTSHIP_CONFIGS])
    lines += render_samples(b)
    if b.notes or b.failures:
        lines += ["## Notes and failures", ""]
        lines += [f"- {n}" for n in b.notes]
        lines += [f"- FAILED: {f}" for f in b.failures]
        lines += [f"  - {h}" for h in b.hints]
        lines.append("")
    return "\n".join(lines)


def render_samples(b: Bench) -> list[str]:
    """Every sample, so medians can be checked: seconds, in run order."""
    out = ["## Raw samples (wall seconds, in run order)", ""]
    rows = []
    for size, tools in b.results.items():
        for tool, ops in tools.items():
            for op in OPS:
                if ops[op].runs:
                    walls = ", ".join(f"{s.wall:.3f}" for s in ops[op].samples)
                    rows.append([f"{size:,}", tool, OP_TITLES[op], walls])
    return [*out, md_table(["N", "tool", "operation", "samples"], rows), ""]


def render_s3(b: Bench) -> list[str]:
    if b.args.skip_s3:
        return ["## S3", "", "Skipped (--skip-s3).", ""]
    if not b.s3:
        return ["## S3", "", "Not measured (needs a size <= 10,000).", ""]
    rows = []
    for (size, label), ops in sorted(b.s3.items()):
        for op, title in (("add", "add one .deb"), ("promote", "promote one")):
            counts = sorted({c.requests for c in ops[op]})
            sent = sorted(c.bytes_sent for c in ops[op])
            rows.append(
                [
                    f"{size:,}",
                    label,
                    title,
                    " / ".join(str(c) for c in counts),
                    f"{sent[len(sent) // 2] / 1024:.1f} KiB",
                    fmt_seconds(sorted(c.wall for c in ops[op])[len(ops[op]) // 2]),
                ]
            )
    return [
        "## S3 requests (moto_server on loopback)",
        "",
        "Counted at botocore's `before-send` hook (`S3Storage.request_count` / "
        "`bytes_sent`), retries included; in process, so no interpreter start-up. "
        "Several values in one cell mean the runs differed.",
        "",
        md_table(
            ["N", "config", "operation", "requests", "bytes sent (median)", "wall (moto)"], rows
        ),
        "",
        *render_apt_loops(b.apt_loops),
    ]


def render_server(b: Bench) -> list[str]:
    out = ["## HTTP serving (wrk, 2 threads, 16 connections, loopback)", ""]
    if b.args.skip_server:
        return [*out, "Skipped (--skip-server).", ""]
    if "skipped" in b.server:
        return [*out, str(b.server["skipped"]), ""]
    if "results" not in b.server:
        return [*out, "Not measured (see failures).", ""]
    rows = []
    for name, res in b.server["results"].items():
        a, n = res["aptship"], res["nginx"]
        rows.append(
            [
                name,
                f"{a.requests_per_s:,.0f}",
                f"{a.p99_ms:.1f} ms",
                f"{a.mb_per_s:,.1f}",
                f"{n.requests_per_s:,.0f}",
                f"{n.p99_ms:.1f} ms",
                f"{n.mb_per_s:,.1f}",
                fmt_ratio(a.requests_per_s, n.requests_per_s),
                str(a.errors),
            ]
        )
    workers = b.server.get("workers_rss", [])
    return [
        *out,
        f"The aptship server (`{b.server.get('how')}`, under prefix "
        f"`{b.server.get('prefix')}`) with a read token (`{b.server.get('header')}`) "
        "vs nginx serving the same directory (no auth) "
        f"from the N = {b.server['entries']:,} repository; "
        "wrk and the servers share the machine's CPUs.",
        "",
        md_table(
            [
                "file",
                "aptship req/s",
                "aptship p99",
                "aptship MB/s",
                "nginx req/s",
                "nginx p99",
                "nginx MB/s",
                "aptship ÷ nginx",
                "aptship errors",
            ],
            rows,
        ),
        "",
        f"Peak RSS of the gunicorn workers: {', '.join(f'{w:.0f} MB' for w in workers) or 'n/a'} "
        f"(master {b.server.get('master_rss', 0):.0f} MB).",
        "",
    ]


def render_targets(b: Bench) -> list[str]:
    rows: list[list[str]] = []

    def target(name: str, value: str, ok: bool | None) -> None:
        rows.append([name, value, "not measured" if ok is None else ("met" if ok else "MISSED")])

    big = max(b.args.sizes)
    at = 50000 if 50000 in b.args.sizes else big
    for label, _ in APTSHIP_CONFIGS:
        add = wall_of(b, at, label, "add")
        target(
            f"{label}: add one .deb at {at:,} <= 0.3 s",
            fmt_seconds(add),
            None if add is None else add <= 0.3,
        )
        for size in [s for s in b.args.sizes if s >= 10000] or [big]:
            mine = wall_of(b, size, label, "add")
            peers = {p: wall_of(b, size, p, "add") for p in ("reprepro", "aptly")}
            known = {p: v for p, v in peers.items() if v is not None}
            target(
                f"{label}: add one faster than reprepro and aptly at {size:,}",
                f"{fmt_seconds(mine)} vs "
                + ", ".join(f"{p} {fmt_seconds(v)}" for p, v in peers.items()),
                None if mine is None or not known else all(mine < v for v in known.values()),
            )
        prom = wall_of(b, at, label, "promote")
        target(
            f"{label}: promote one at {at:,} <= 0.3 s",
            fmt_seconds(prom),
            None if prom is None else prom <= 0.3,
        )
        size10 = 10000 if 10000 in b.args.sizes else big
        imp, aptly = wall_of(b, size10, label, "import"), wall_of(b, size10, "aptly", "import")
        target(
            f"{label}: import {size10:,} at least as fast as aptly",
            f"{fmt_seconds(imp)} vs aptly {fmt_seconds(aptly)}",
            None if imp is None or aptly is None else imp <= aptly,
        )
        rss = measure_of(b, at, label, "add")
        target(
            f"{label}: publishing into {at:,} peaks < 300 MB RSS",
            f"{rss.rss_mb:.0f} MB" if rss else "n/a",
            None if rss is None else rss.rss_mb < 300,
        )
    if b.s3:
        counts = {
            size: max(c.requests for c in ops["add"])
            for (size, label), ops in b.s3.items()
            if label == APTSHIP_CONFIGS[0][0]
        }
        text = ", ".join(f"{c} at {s:,}" for s, c in sorted(counts.items()))
        flat = len(set(counts.values())) == 1 and len(counts) > 1
        if counts:
            target("S3 add one <= 25 requests", text, max(counts.values()) <= 25)
            target("S3 add one O(1) in N", text, flat if len(counts) > 1 else None)
    else:
        target("S3 add one <= 25 requests, O(1) in N", "n/a", None)
    res = b.server.get("results")
    if res:
        inrel = res["InRelease"]["aptship"].requests_per_s
        target(
            "server >= 2,000 req/s for InRelease with auth", f"{inrel:,.0f} req/s", inrel >= 2000
        )
        pool = res["pool file (50 MB)"]
        ratio = pool["aptship"].mb_per_s / max(pool["nginx"].mb_per_s, 1e-9)
        target("pool throughput >= 80% of nginx", f"{ratio * 100:.0f}%", ratio >= 0.8)
    else:
        target("server >= 2,000 req/s for InRelease with auth", "n/a", None)
        target("pool throughput >= 80% of nginx", "n/a", None)
    target(
        "`aptship --help` < 150 ms",
        fmt_seconds(b.help_time),
        None if b.help_time is None else b.help_time < 0.15,
    )
    return ["## Targets", "", md_table(["target", "measured", "verdict"], rows), ""]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return Bench(args).main()
