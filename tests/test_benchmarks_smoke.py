"""The benchmark harness in smoke mode: it runs, and what it builds is correct.

``python -m benchmarks --smoke`` builds N=200 repositories with aptship (both index
format configurations) and, when installed, reprepro and aptly; it checks each with
``aptship verify`` and a real isolated ``apt-get update`` + ``apt-get download``,
and exits non-zero if any check fails.  No timing is asserted here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_benchmark_smoke(tmp_path: Path) -> None:
    for tool in ("gpg", "gpgv", "apt-get"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required (run .ci/run to install the system packages)")
    work = tmp_path / "work"
    args = [sys.executable, "-m", "benchmarks", "--smoke", "--skip-server", "--work", str(work)]
    if shutil.which("reprepro") is None or shutil.which("aptly") is None:
        args.append("--skip-peers")
    env = dict(os.environ)
    env.pop("APTSHIP_CONFIG", None)
    proc = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    report = (work / "SMOKE.md").read_text()
    assert "FAILED" not in report, report
    for label in ("aptship:", "aptship +plain:"):
        line = next((ln for ln in report.splitlines() if ln.startswith(f"- {label}")), "")
        assert "aptship verify OK" in line, report
        assert line.count("apt-get update OK") == 2, report
    assert "S3 (moto) N=200: aptship verify --fast OK" in report, report
    for label in ("aptship", "aptship +plain"):
        # a real apt-get update looped against the S3 repository while it was published
        loop = f"- S3 (moto) N=200 ({label}), apt-get loop: "
        line = next((ln for ln in report.splitlines() if ln.startswith(loop)), "")
        runs = line.removeprefix(loop).split(" ", 1)[0]
        assert runs.isdigit() and int(runs) >= 4, report  # at least one run per publish
        assert line.endswith(" 0 failed, 0 with a hash mismatch"), report
        # the CI path: uploads through aptship serve, then a full verify of the result
        ci = f"- CI path N=200 ({label}): 6 uploads through aptship serve added; aptship verify OK"
        assert ci in report.splitlines(), report
    if "--skip-peers" not in args:
        for peer in ("reprepro", "aptly"):
            assert f"- {peer}: bench: apt-get update OK" in report, report


@pytest.mark.e2e
def test_fleet_smoke(tmp_path: Path) -> None:
    """``--fleet-only --smoke``: a small fleet against one server, two replicas behind
    nginx and the nginx front, with publishing: no errors, no hash mismatch, no host
    left on an older index (the command exits 1 otherwise)."""
    if shutil.which("nginx") is None:
        pytest.fail("nginx is required (Debian package nginx-light; run .ci/run)")
    work, out = tmp_path / "work", tmp_path / "RESULTS.md"
    out.write_text("# results\n\nkept\n")
    args = [sys.executable, "-m", "benchmarks", "--fleet-only", "--smoke", "--hosts", "40"]
    env = dict(os.environ)
    env.pop("APTSHIP_CONFIG", None)
    proc = subprocess.run(
        [*args, "--work", str(work), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    report = out.read_text()
    assert report.startswith("# results\n\nkept\n"), report  # the rest of the file is kept
    assert "FAILED" not in report, report
    rows = [ln for ln in report.splitlines() if ln.startswith("| (")]
    assert len(rows) == 3, report
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-3:] == ["0", "0", "0"], row  # errors, mismatched, stale
        assert int(cells[1].replace(",", "")) > 40, row  # every host asked at least once
