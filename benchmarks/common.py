"""Shared helpers: timed subprocesses with peak RSS, medians, the machine, the GPG key."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
APTSHIP = str(VENV_BIN / "aptship")
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None  # Debian package time
ARG_BUDGET = 512 * 1024  # bytes of file arguments per command line (ARG_MAX is 2 MiB)


class BenchError(RuntimeError):
    """A benchmark step failed: the message says which command and shows its output."""


@dataclass
class Sample:
    """One measured run of one operation: wall seconds and the peak RSS of any process."""

    wall: float
    rss_kb: int


@dataclass
class Measure:
    samples: list[Sample] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    @property
    def runs(self) -> int:
        return len(self.samples)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return max(s.rss_kb for s in self.samples) / 1024


def run(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 1800,
) -> tuple[Sample, str]:
    """Run ``cmd``; return (wall time and peak RSS, its output).

    The peak RSS is ``/usr/bin/time -f %M``: ``ru_maxrss`` of the command and of the
    descendants it waited for (gpg, xz, ...), i.e. of the largest process in its tree.
    ``/usr/bin/time`` is small, so unlike ``wait4`` on a child forked from this (large)
    Python process, the number does not start from this process's own RSS.  Its fork and
    exec add about a millisecond to the wall time.
    """
    with tempfile.TemporaryDirectory(prefix="aptship-bench-") as tmp:
        rss_file = Path(tmp) / "rss"
        full = [TIME, "-f", "%M", "-o", str(rss_file), *cmd] if TIME else list(cmd)
        with (Path(tmp) / "out").open("w+b") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
            # A blocking wait: Popen.wait(timeout=...) polls with sleeps of up to 50 ms,
            # which would round every wall time up to a 50 ms grid.
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
            wall = time.perf_counter() - start
            out.seek(0)
            text = out.read().decode(errors="replace")
        rss = 0
        if TIME:
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss = int(rss_file.read_text().split()[-1])
    if check and proc.returncode != 0:
        raise BenchError(
            f"command failed with exit code {proc.returncode}: "
            f"{' '.join(cmd)[:300]}\n{text[-3000:]}"
        )
    return Sample(wall=wall, rss_kb=rss), text


def run_all(cmds: Iterable[Sequence[str]], **kw: object) -> Sample:
    """Several commands as one operation: summed wall time, largest peak RSS."""
    total, rss = 0.0, 0
    for cmd in cmds:
        sample, _ = run(cmd, **kw)  # type: ignore[arg-type]
        total += sample.wall
        rss = max(rss, sample.rss_kb)
    return Sample(total, rss)


def chunk_args(files: Sequence[Path], budget: int = ARG_BUDGET) -> list[list[str]]:
    """Split file arguments into command lines of at most ``budget`` bytes each."""
    chunks: list[list[str]] = [[]]
    size = 0
    for f in files:
        s = str(f)
        if chunks[-1] and size + len(s) + 1 > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(s)
        size += len(s) + 1
    return chunks


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


TRASH = "trash"  # under --work: trees the run is done with (see discard)


def discard(path: Path, trash: Path) -> None:
    """Move ``path`` into ``trash`` (emptied by :func:`empty_trash` when the run ends).

    Deleting a tree of 10,000+ files just before the next timed import skews that
    import: on an ext4 file system without a journal (this benchmark's VMs), the inode
    allocator skips every inode freed in the last 60 s (365 s while its inode table
    block is unwritten), and each skip is a buffer-cache lookup, so each new file costs
    a scan past the freed ones.  Tools that create a file per .deb (aptship, reprepro)
    paid it; aptly, which hard-links the .debs into its pool, did not.
    """
    if not path.exists():
        return
    trash.mkdir(parents=True, exist_ok=True)
    path.rename(Path(tempfile.mkdtemp(dir=trash, prefix=f"{path.name}-")) / path.name)


SETTLE = 370.0  # seconds after a deletion until ext4 (no journal) reuses its inodes freely


def empty_trash(trash: Path) -> None:
    """Delete ``trash``, and note when (in ``trash``'s parent: see :func:`settle`)."""
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
        (trash.parent / f"{trash.name}.deleted").write_text(f"{time.time()}\n")


def settle(trash: Path, log: Callable[[str], None]) -> float:
    """Wait until :data:`SETTLE` seconds have passed since the last :func:`empty_trash`
    of ``trash`` (a run right after another would otherwise time its first imports in
    the shadow of the previous run's deletions, see :func:`discard`); the seconds
    waited."""
    stamp = trash.parent / f"{trash.name}.deleted"
    try:
        age = time.time() - float(stamp.read_text())
    except (OSError, ValueError):
        return 0.0
    wait = min(SETTLE, max(0.0, SETTLE - age))
    if wait > 0:
        log(f"the last run deleted its trees {age:.0f} s ago: waiting {wait:.0f} s (see discard)")
        time.sleep(wait)
    return wait


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load": loadavg(),
    }


def loadavg() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews timings)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def tool_version(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def gpg_key(work: Path) -> tuple[Path, str]:
    """The throwaway ed25519 signing key every tool signs with: (GNUPGHOME, fingerprint)."""
    from publisher.signing import generate_dev_key

    home = work / "gnupg"
    marker = work / "gnupg.fpr"
    if home.is_dir() and marker.is_file():
        return home, marker.read_text().strip()
    shutil.rmtree(home, ignore_errors=True)
    fpr = generate_dev_key(home, "aptship benchmark key", "bench@aptship.invalid")
    marker.write_text(fpr + "\n")
    return home, fpr


def stop_gpg_agent(home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False
    )


def tool_env(gnupghome: Path, pycache: Path) -> dict[str, str]:
    """The environment of every measured command.

    Python bytecode is cached under ``pycache`` (``PYTHONPYCACHEPREFIX``) and
    ``PYTHONDONTWRITEBYTECODE`` is dropped, so aptship starts as an installed package
    does (with .pyc files) instead of compiling its modules on every run.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["GNUPGHOME"] = str(gnupghome)
    env["LC_ALL"] = "C.UTF-8"
    env.pop("APTSHIP_CONFIG", None)
    return env


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "n/a"
    return f"{a / b:.2f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
