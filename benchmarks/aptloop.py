"""A real ``apt-get update`` in a loop, in a background thread, while a benchmark publishes.

apt runs with an isolated configuration (every directory it uses, the dpkg status
file and the credentials point into a temp tree through ``APT_CONFIG``; the same
pattern as ``tests/aptenv.py``, copied so the harness does not import the tests)
against an ``aptship serve`` URL with a read token in ``auth.conf.d``.  Lists are
kept between runs, as on a real host: each run fetches InRelease and, when it
changed, the indexes it names.

Each run's output is scanned for what apt prints when it sees an index that does not
match the InRelease it just read (``Hash Sum mismatch``, ``File has unexpected
size``, ``Mirror sync in progress?``): any such run is a mismatch, and the benchmark
fails.  A run that exits non-zero or prints ``W:``/``E:``/``Err:`` lines is a failure.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import BenchError, md_table

MISMATCH = ("Hash Sum mismatch", "File has unexpected size", "Mirror sync in progress?")
RUN_TIMEOUT = 120  # seconds for one apt-get update (loopback)
KEEP = 3  # outputs of failed runs kept for the report


@dataclass
class LoopResult:
    runs: int = 0
    failures: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.runs} apt-get update runs, {self.failures} failed, "
            f"{self.mismatches} with a hash mismatch"
        )


def classify(returncode: int, output: str) -> tuple[bool, bool]:
    """(failed, mismatched) for one ``apt-get update`` run's exit code and output."""
    mismatched = any(marker in output for marker in MISMATCH)
    bad_lines = any(ln.startswith(("W:", "E:", "Err:")) for ln in output.splitlines())
    return returncode != 0 or bad_lines or mismatched, mismatched


# Every directory an isolated apt needs below its root (tests/aptenv.py uses it too).
APT_DIRS = (
    "etc/apt/sources.list.d",
    "etc/apt/preferences.d",
    "etc/apt/trusted.gpg.d",
    "etc/apt/auth.conf.d",
    "etc/apt/apt.conf.d",
    "etc/apt/keyrings",
    "var/lib/apt/lists/partial",
    "var/cache/apt/archives/partial",
    "var/log/apt",
    "var/lib/dpkg",
)


def apt_config(root: Path) -> Path:
    """An ``APT_CONFIG`` file that keeps every apt directory below ``root``."""
    for sub in APT_DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    status = root / "var/lib/dpkg/status"
    status.touch()
    (root / "etc/apt/sources.list").write_text("")
    etc = root / "etc/apt"
    settings = {
        "Dir": f"{root}/",
        "Dir::Etc": f"{etc}/",
        "Dir::Etc::SourceList": f"{etc}/sources.list",
        "Dir::Etc::SourceParts": f"{etc}/sources.list.d",
        "Dir::Etc::Preferences": f"{etc}/preferences",
        "Dir::Etc::PreferencesParts": f"{etc}/preferences.d",
        "Dir::Etc::Trusted": f"{etc}/trusted.gpg",
        "Dir::Etc::TrustedParts": f"{etc}/trusted.gpg.d",
        "Dir::Etc::netrc": f"{etc}/auth.conf",
        "Dir::Etc::netrcparts": f"{etc}/auth.conf.d",
        "Dir::Etc::main": f"{etc}/apt.conf",
        "Dir::Etc::parts": f"{etc}/apt.conf.d",
        "Dir::State": f"{root}/var/lib/apt/",
        "Dir::State::status": str(status),
        "Dir::Cache": f"{root}/var/cache/apt/",
        "Dir::Log": f"{root}/var/log/apt/",
        "APT::Architecture": "amd64",
        "Acquire::Languages": "none",
        "Acquire::Retries": "0",
        "Debug::NoLocking": "true",
        "APT::Sandbox::User": "root",
    }
    config = root / "apt.conf"
    lines = [f'{k} "{v}";' for k, v in settings.items()]
    config.write_text("\n".join([*lines, 'APT::Architectures { "amd64"; };', ""]))
    return config


class AptLoop:
    """``apt-get update`` of ``suites`` at ``url`` (read token ``secret``), run back to back
    in a thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, root: Path, url: str, key: Path, suites: list[str], secret: str) -> None:
        self.root = root
        self.config = apt_config(root)
        keyfile = root / "etc/apt/keyrings/aptship.asc"
        keyfile.write_bytes(key.read_bytes())
        (root / "etc/apt/sources.list.d/aptship.list").write_text(
            "".join(f"deb [signed-by={keyfile}] {url} {suite} main\n" for suite in suites)
        )
        parts = urlsplit(url)
        auth = root / "etc/apt/auth.conf.d/aptship.conf"
        auth.write_text(
            f"machine {parts.scheme}://{parts.netloc}{parts.path.rstrip('/')} "
            f"login bench password {secret}\n"
        )
        auth.chmod(0o600)
        self.env = {**os.environ, "APT_CONFIG": str(self.config), "LC_ALL": "C"}
        self.env["DEBIAN_FRONTEND"] = "noninteractive"
        self.result = LoopResult()
        self._done = threading.Condition()
        self._finished = 0  # runs finished so far
        self._started_at: list[float] = []  # start time of each run, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def update_once(self) -> tuple[int, str]:
        proc = subprocess.run(
            ["apt-get", "update", "-o", "APT::Update::Error-Mode=any"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._done:
                    self._started_at.append(time.monotonic())
                code, output = self.update_once()
                failed, mismatched = classify(code, output)
                with self._done:
                    self.result.runs += 1
                    self.result.failures += failed
                    self.result.mismatches += mismatched
                    if failed and len(self.result.examples) < KEEP:
                        self.result.examples.append(output.strip()[-1500:])
                    self._finished += 1
                    self._done.notify_all()
        except BaseException as exc:  # reported by stop()
            self._error = exc
            with self._done:
                self._done.notify_all()

    def start(self) -> AptLoop:
        """Check that apt accepts the repository once, then loop in the background."""
        code, output = self.update_once()
        failed, _ = classify(code, output)
        if failed:
            raise BenchError(f"apt-get update failed before any publish:\n{output[-2000:]}")
        self._thread = threading.Thread(target=self._loop, name="apt-get-loop", daemon=True)
        self._thread.start()
        return self

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until a run that started after this call has finished (so apt has
        fetched whatever was published before it)."""
        now = time.monotonic()
        deadline = now + timeout
        with self._done:
            while self._error is None:
                later = [i for i, t in enumerate(self._started_at) if t > now]
                if later and self._finished > later[0]:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"apt-get update did not finish a run within {timeout:.0f} s")
                self._done.wait(left)

    def stop(self) -> LoopResult:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(RUN_TIMEOUT + 10)
        if self._error is not None:
            raise BenchError(f"the apt-get loop stopped: {self._error!r}")
        return self.result


def render_apt_loops(loops: dict[tuple[int, str], LoopResult]) -> list[str]:
    """The apt-get loop that ran against the S3 repository during the publishes above."""
    rows = [
        [f"{size:,}", label, str(r.runs), str(r.failures), str(r.mismatches)]
        for (size, label), r in sorted(loops.items())
    ]
    bad = sum(r.mismatches + r.failures for r in loops.values())
    verdict = "none expected, " + ("FAILED: see Notes and failures" if bad else "none seen")
    return [
        "During these publishes `aptship serve` served the S3 repository (the same config) "
        "and a real `apt-get update` (isolated `APT_CONFIG`, a read token in "
        "`auth.conf.d`, lists kept between runs, sources `bench` and `stage`) ran back to "
        "back in a background thread; after each publish the next operation waited for "
        "one complete update, so apt fetched every published state. A mismatch is a run "
        "printing `Hash Sum mismatch`, `File has unexpected size` or `Mirror sync in "
        f"progress?`; a failure is a non-zero exit or a `W:`/`E:`/`Err:` line ({verdict}). "
        "apt shares the CPUs with the publishes, so the wall times above include that load.",
        "",
        md_table(["N", "config", "apt-get update runs", "failures", "hash mismatches"], rows)
        if rows
        else "The apt-get loop did not run (see failures).",
        "",
    ]
