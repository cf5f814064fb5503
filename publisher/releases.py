"""Releases across distributions: promote, roll back, pins, diff and history of a
configured channel that exists once per distribution (docs/cli.md, "Releases across
distributions").

A configured channel (``prod``) is a group of suites (``bookworm-prod``,
``trixie-prod``), each an ordinary channel with its own compare-and-swap head.  A
release operation on the group first validates every suite's part (the plan, the
dependency check of :mod:`publisher.depcheck` in that suite's own distribution, the
caller's authorization) against the current state, and writes nothing if one is
refused.  Then it commits the suites one by one, in distribution order.  A failure
after the first commit (a storage error, or a concurrent change that now refuses the
plan) raises :class:`ReleaseSplit` naming the suites already committed: running the
same command again completes the release, since what is already done is a no-op.
A journal object under ``.aptship/releases/`` lives while the commits run; one left
behind (a crash, a split) is listed by ``aptship verify`` until a run completes it.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from debian.debian_support import Version

from publisher.distributions import release_key, release_of
from publisher.errors import (
    AptshipError,
    NotFound,
    PolicyViolation,
    ReleaseIncomplete,
    ReleaseSplit,
    UsageError,
)
from publisher.lifecycle import LifecycleOps
from publisher.pins import rollback_pin
from publisher.results import PromoteRow, RollbackRow
from publisher.state import PackageState, now_iso

JOURNAL_PREFIX = ".aptship/releases/"  # release operations in progress (one object each)
Step = Callable[[bool], Any]  # dry_run -> result of one suite's part


def release_label(builds: dict[str, str | None]) -> str | None:
    """One release for per-distribution pins: ``1.4.2``, or each build when they differ."""
    present = {c: v for c, v in builds.items() if v}
    if not present:
        return None
    releases = {release_of(v) for v in present.values()}
    if len(releases) == 1 and len(present) == len(builds):
        return releases.pop()
    return " ".join(f"{c}={v or '-'}" for c, v in builds.items())


class ReleaseOps(LifecycleOps):
    """Release-wide variants of the lifecycle operations; mixed into the Repository."""

    # -- helpers ----------------------------------------------------------------------
    def _group_pair(self, src: str, dst: str) -> list[tuple[str, str, str]] | None:
        """(codename, source suite, target suite) per distribution, or None for suites."""
        groups = self.config.groups
        if src not in groups and dst not in groups:
            return None
        if src not in groups or dst not in groups:
            raise UsageError(
                "promote between two configured channels (each of their distributions) "
                f"or between two suites; not {src!r} -> {dst!r}"
            )
        return [
            (s.distribution or "", s.name, d.name)
            for s, d in zip(self.config.suites(src), self.config.suites(dst), strict=True)
        ]

    def _builds(
        self, package: str, version: str | None, suites: Sequence[tuple[str, str]]
    ) -> tuple[dict[str, str | None], bool]:
        """The version of ``package`` each (codename, suite) has for ``version``.

        ``version`` is an exact Debian version (the distributions that have it), a
        release (PEP 440 or Debian upstream: the newest build of it per distribution),
        or None (each suite's pin).  Returns ({suite: version or None}, exact?).
        """
        states: dict[str, PackageState | None] = {
            suite: self.states.view(suite).get(package) for _, suite in suites
        }
        if not any(ps is not None and ps.entries for ps in states.values()):
            names = ", ".join(suite for _, suite in suites)
            raise NotFound(f"package {package!r} is in none of {names}")
        if version is None:
            return {s: ps.pin if ps else None for s, ps in states.items()}, False
        if any(ps is not None and ps.find(version) for ps in states.values()):
            return {
                s: version if ps and ps.find(version) else None for s, ps in states.items()
            }, True
        wanted = release_key(version)
        found: dict[str, str | None] = {}
        for suite, ps in states.items():
            matching = [v for v in (ps.versions() if ps else []) if release_of(v) == wanted]
            found[suite] = max(matching, key=Version) if matching else None
        if not any(found.values()):
            names = ", ".join(suite for _, suite in suites)
            raise NotFound(f"no build of {package} {version} in {names}")
        return found, False

    def _all_or_split(self, what: str, steps: Sequence[tuple[str, Step]]) -> list[Any]:
        """Validate every suite's step (dry run), then commit them in order.

        A journal object marks the commits in progress: removed when all are done (or
        none was), left behind by a crash or a split, for ``aptship verify`` to list.
        """
        for _suite, step in steps:
            step(True)
        key = f"{JOURNAL_PREFIX}{uuid.uuid4().hex}.json"
        record = {"operation": what, "suites": [s for s, _ in steps], "started": now_iso()}
        self.storage.write_bytes(key, json.dumps(record).encode(), create_only=True)
        done: list[str] = []
        results = []
        for suite, step in steps:
            try:
                results.append(step(False))
            except AptshipError as exc:
                if not done:
                    self.storage.delete(key)
                    raise
                record["committed"] = done
                self.storage.write_bytes(key, json.dumps(record).encode())
                raise ReleaseSplit(
                    f"{what}: committed in {', '.join(done)}, then {suite} failed: "
                    f"{exc.message}\nthe release is split across distributions: fix the "
                    "cause and run the same command again to complete it"
                ) from exc
            done.append(suite)
        for journal, other in self.interrupted_releases():  # this run completed them
            if other.get("operation") == what:
                self.storage.delete(journal)
        self.storage.delete(key)
        return results

    def interrupted_releases(self) -> list[tuple[str, dict[str, Any]]]:
        """Release operations that started committing and did not finish (journal, record)."""
        found = []
        for info in self.storage.list(JOURNAL_PREFIX):
            try:
                found.append((info.key, json.loads(self.storage.read_bytes(info.key))))
            except (NotFound, ValueError):
                continue
        return found

    @staticmethod
    def _incomplete(what: str, builds: dict[str, str | None], allow_partial: bool) -> None:
        missing = [suite for suite, v in builds.items() if v is None]
        if missing and not allow_partial:
            raise ReleaseIncomplete(
                f"{what}: no build in {', '.join(missing)} (nothing changed); publish the "
                "missing builds first, or add --allow-partial"
            )

    # -- promote ----------------------------------------------------------------------
    def promote(
        self,
        package: str,
        version: str | None,
        src: str,
        dst: str,
        *,
        dry_run: bool = False,
        with_deps: bool = False,
        authorize: Callable[[str], None] | None = None,
        allow_partial: bool = False,
    ) -> PromoteRow:
        """A package's release, every distribution's build in one validated step."""
        pairs = self._group_pair(src, dst)
        if pairs is None:
            if allow_partial:
                raise UsageError("--allow-partial goes with channels that have distributions")
            return super().promote(
                package,
                version,
                src,
                dst,
                dry_run=dry_run,
                with_deps=with_deps,
                authorize=authorize,
            )
        self._check_promote_path(pairs[0][1], pairs[0][2])
        builds, exact = self._builds(package, version, [(c, s) for c, s, _ in pairs])
        what = f"promote {package} {version or '(pinned)'} {src} -> {dst}"
        if not exact:
            self._incomplete(what, builds, allow_partial)
        steps: list[tuple[str, Step]] = []
        for _codename, s, d in pairs:
            chosen = builds[s]
            if chosen is None:
                continue

            def step(dry: bool, s: str = s, d: str = d, chosen: str = chosen) -> Any:
                return super(ReleaseOps, self).promote(
                    package, chosen, s, d, dry_run=dry, with_deps=with_deps, authorize=authorize
                )

            steps.append((d, step))
        results = [step(True) for _, step in steps] if dry_run else self._all_or_split(what, steps)
        statuses = {r["status"] for r in results}
        labels = {d: r["version"] for (d, _), r in zip(steps, results, strict=True)}
        return {
            "package": package,
            "release": release_label({d: labels.get(d) for _, _, d in pairs}),
            "from": src,
            "to": dst,
            "status": statuses.pop() if len(statuses) == 1 else "promoted",
            "builds": results,
            "missing": [d for _, s, d in pairs if builds[s] is None],
        }

    def promote_all(
        self, src: str, dst: str, *, dry_run: bool = False, with_deps: bool = False
    ) -> list[PromoteRow]:
        pairs = self._group_pair(src, dst)
        if pairs is None:
            return super().promote_all(src, dst, dry_run=dry_run, with_deps=with_deps)
        self._check_promote_path(pairs[0][1], pairs[0][2])
        steps: list[tuple[str, Step]] = []
        for _codename, s, d in pairs:

            def step(dry: bool, s: str = s, d: str = d) -> Any:
                return super(ReleaseOps, self).promote_all(s, d, dry_run=dry, with_deps=with_deps)

            steps.append((d, step))
        if dry_run:
            return [r for _, step in steps for r in step(True)]
        return [r for rs in self._all_or_split(f"promote --all {src} -> {dst}", steps) for r in rs]

    # -- rollback ---------------------------------------------------------------------
    def rollback(
        self, package: str, channel: str, to: str | None = None, *, allow_partial: bool = False
    ) -> RollbackRow:
        if channel not in self.config.groups:
            if allow_partial:
                raise UsageError("--allow-partial goes with channels that have distributions")
            return super().rollback(package, channel, to)
        suites = [(s.distribution or "", s.name) for s in self.config.suites(channel)]
        what = f"rollback {package} in {channel}"
        targets: dict[str, str | None]
        if to is None:
            targets = {s: None for _, s in suites}
            have = {s for _, s in suites if (ps := self.states.view(s).get(package)) and ps.pin}
            targets = {s: None for s in targets if s in have}
        else:
            builds, exact = self._builds(package, to, suites)
            if not exact:
                self._incomplete(what, builds, allow_partial)
            targets = {s: v for s, v in builds.items() if v is not None}

        steps: list[tuple[str, Step]] = []
        for suite, version in targets.items():

            def step(dry: bool, suite: str = suite, version: str | None = version) -> Any:
                if dry:  # the same checks as the commit, on a copy
                    ps = copy.deepcopy(self.states.view(suite).require(package))
                    return {"new_pin": rollback_pin(ps, package, version, "dry-run")}
                return super(ReleaseOps, self).rollback(package, suite, version)

            steps.append((suite, step))
        if not steps:
            raise PolicyViolation(f"{package} is pinned in no suite of {channel!r}")
        results = self._all_or_split(what, steps)
        pins = {r["channel"]: r["new_pin"] for r in results}
        return {
            "package": package,
            "channel": channel,
            "release": release_label({s: pins.get(s) for _, s in suites}),
            "builds": results,
            "old_pin": release_label({r["channel"]: r["old_pin"] for r in results}),
            "new_pin": release_label(pins),
        }

    # -- queries ----------------------------------------------------------------------
    def release_pins(self, channel: str) -> dict[str, dict[str, str | None]]:
        """package -> {suite: pin}: one row per release across the channel's suites."""
        suites = [s.name for s in self.config.suites(channel)]
        rows: dict[str, dict[str, str | None]] = {}
        for suite in suites:
            for name, pin in self.pin_map(suite).items():
                rows.setdefault(name, dict.fromkeys(suites))[suite] = pin
        return dict(sorted(rows.items()))

    def pins(self, channel: str) -> str:
        if channel not in self.config.groups:
            return super().pins(channel)
        return "".join(super(ReleaseOps, self).pins(s) for s in self.config.groups[channel])

    def channel_summary(self, channel: str) -> dict[str, Any]:
        if channel not in self.config.groups:
            return super().channel_summary(channel)
        return {
            "channel": channel,
            "suites": list(self.config.groups[channel]),
            "packages": {
                name: {"pin": release_label(builds), "builds": builds}
                for name, builds in self.release_pins(channel).items()
            },
        }

    def diff(self, src: str, dst: str) -> list[dict[str, Any]]:
        pairs = self._group_pair(src, dst)
        if pairs is None:
            return super().diff(src, dst)
        a, b = self.release_pins(src), self.release_pins(dst)
        rows = []
        for name in sorted(set(a) | set(b)):
            builds = {
                codename: {
                    src: a.get(name, {}).get(s),
                    dst: b.get(name, {}).get(d),
                }
                for codename, s, d in pairs
            }
            mine = release_label({c: v[src] for c, v in builds.items()})
            theirs = release_label({c: v[dst] for c, v in builds.items()})
            if mine is None:
                action = "none (not pinned in source)"
            elif all(v[src] == v[dst] for v in builds.values() if v[src]):
                action = "none (same)"
            else:
                action = f"promote {mine}"
            rows.append(
                {"package": name, src: mine, dst: theirs, "builds": builds, "action": action}
            )
        return rows

    def history(
        self, channel: str | None = None, package: str | None = None
    ) -> list[dict[str, Any]]:
        if channel is None or channel not in self.config.groups:
            return super().history(channel, package)
        suites = set(self.config.groups[channel])
        return [r for r in super().history(None, package) if r.get("channel") in suites]

    def split_releases(self) -> list[str]:
        """``aptship verify``: release operations a crash or a failure left half-applied."""
        return [
            f"{key}: release operation `{rec.get('operation')}` started {rec.get('started')} "
            f"was interrupted (committed: {', '.join(rec.get('committed', [])) or 'unknown'} "
            f"of {', '.join(rec.get('suites', []))}); run it again to complete it"
            for key, rec in self.interrupted_releases()
        ]
