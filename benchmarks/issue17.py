"""Issue 17's table ("Performance, round 2"), re-measured in one run.

Each line of the issue's table, per aptship configuration: the issue's number as
"before", this run's value, the peers' values with the ratio aptship ÷ peer (the
convention of every table in RESULTS.md: below 1, aptship is faster), the target and
a verdict (``met``, ``MISSED``, or ``not measured`` when this run lacked the size or
the section).  Plus the two rows the issue adds: the CI path's p50 and the apt-get
loop during the S3 publishes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.common import Measure, fmt_ratio, fmt_seconds, md_table

if TYPE_CHECKING:
    from benchmarks.cli import Bench

CI_TARGET = 0.15  # seconds: p50 client wall of one API upload into 10k


def measure_of(b: Bench, size: int, tool: str, op: str) -> Measure | None:
    m = b.results.get(size, {}).get(tool, {}).get(op)
    return m if m and m.runs else None


def wall_of(b: Bench, size: int, tool: str, op: str) -> float | None:
    m = measure_of(b, size, tool, op)
    return m.wall if m else None


# issue 17's table: (operation, N, op, value before, peers, target)
# A float target is a limit in seconds; a peer's name means "at most that peer's time".
ISSUE17 = (
    ("add one .deb at 50k", 50000, "add", "0.78 s", ("reprepro", "aptly"), 0.3),
    ("promote one at 50k", 50000, "promote", "0.76 s", ("reprepro", "aptly"), 0.3),
    ("add one at 1k", 1000, "add", "0.29 s", ("aptly", "reprepro"), 0.15),
    ("import 10k .debs", 10000, "import", "13-24 s", ("aptly",), "aptly"),
    ("re-render + sign at 10k", 10000, "reindex", "1.77 s", ("reprepro",), "reprepro"),
    ("verify --fast at 10k", 10000, "verify", "1.05 s", ("reprepro", "aptly"), 0.3),
)
ISSUE17_TITLE = "Issue 17: performance round 2 — one run, side by side"


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def issue17_rows(b: Bench, label: str) -> list[list[str]]:
    """The issue's rows for one aptship configuration: before, now, peers, verdict."""
    rows = []
    for title, size, op, before, peers, goal in ISSUE17:
        mine = wall_of(b, size, label, op)
        seen = {p: wall_of(b, size, p, op) for p in peers}
        cells = ", ".join(f"{p} {fmt_seconds(v)} ({fmt_ratio(mine, v)})" for p, v in seen.items())
        ok: bool | None = None
        if isinstance(goal, float):
            text = f"<= {goal} s"
            if mine is not None:
                ok = mine <= goal
            if op == "add" and size == 1000:
                text += " and < aptly"
                aptly = seen.get("aptly")
                if ok is not None and aptly is not None:
                    ok = ok and mine is not None and mine < aptly
        else:
            text = f"<= {goal}"
            ref = seen.get(goal)
            if mine is not None and ref is not None:
                ok = mine <= ref
        rows.append([title, label, before, fmt_seconds(mine), cells or "-", text, _verdict(ok)])
    s3 = b.s3.get((10000, label), {}).get("add")
    mid = _median([c.bytes_sent / 1024**2 for c in s3]) if s3 else None
    rows.append(
        [
            "S3 bytes sent per add-one at 10k",
            label,
            "28 MB",
            "n/a" if mid is None else f"{mid:.2f} MB",
            "-",
            "<= 4 MB",
            _verdict(None if mid is None else mid <= 4),
        ]
    )
    imp, peer = measure_of(b, 50000, label, "import"), measure_of(b, 50000, "aptly", "import")
    ratio = fmt_ratio(imp.rss_mb, peer.rss_mb) if imp and peer else "n/a"
    rows.append(
        [
            "import 50k peak RSS",
            label,
            "281 MB",
            f"{imp.rss_mb:.0f} MB" if imp else "n/a",
            f"aptly {peer.rss_mb:.0f} MB ({ratio})" if peer else "-",
            "<= 150 MB",
            _verdict(None if imp is None else imp.rss_mb <= 150),
        ]
    )
    ci = b.ci.get((10000, label))
    api = ci.api.pct("client", 0.5) if ci else None
    server = ci.api.pct("server", 0.5) if ci else None
    rows.append(
        [
            "CI path: API upload into 10k, p50",
            label,
            "-",
            "n/a" if api is None else f"{fmt_seconds(api)} (server {fmt_seconds(server)})",
            "-",
            f"<= {CI_TARGET * 1000:.0f} ms",
            _verdict(None if api is None else api <= CI_TARGET),
        ]
    )
    loops = [r for (_n, lab), r in sorted(b.apt_loops.items()) if lab == label]
    runs = sum(r.runs for r in loops)
    bad = sum(r.mismatches for r in loops)
    rows.append(
        [
            "apt-get update loop during the S3 publishes",
            label,
            "-",
            f"{runs} runs, {bad} mismatches" if loops else "n/a",
            "-",
            "0 hash mismatches",
            _verdict(None if not runs else bad == 0),
        ]
    )
    return rows


def render_issue17(b: Bench, labels: list[str]) -> list[str]:
    """Issue 17's table, re-measured in this run, with the peers' times and ratios."""
    rows = [row for label in labels for row in issue17_rows(b, label)]
    return [
        f"## {ISSUE17_TITLE}",
        "",
        "\"before\" is the issue's table. The number after each peer's time is the ratio "
        "aptship ÷ peer, as in the tables above (below 1: aptship is faster). The CI path "
        "is the client's wall time of one API upload (the server's own time in "
        "brackets); the apt-get loop row counts every size's S3 runs.",
        "",
        md_table(
            ["operation", "config", "before", "now", "peers (aptship ÷ peer)", "target", "verdict"],
            rows,
        ),
        "",
    ]
