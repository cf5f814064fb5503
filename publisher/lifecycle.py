"""Promote, roll back, remove, pins, diff, history: moving exact artifacts between channels.

A promotion copies entries (same pool file, same hashes: no upload, no rebuild)
into the target channel, pins them there, and re-renders only the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from publisher.audit import current_actor, read_events
from publisher.errors import DependencyUnsatisfied, ImmutableConflict, NotFound, PolicyViolation
from publisher.pins import apply_retention, preferences, rollback_pin, set_pin
from publisher.results import PromoteRow, RemoveRow, RollbackRow
from publisher.state import ChannelState, Entry, PackageState
from publisher.versions import newest

if TYPE_CHECKING:
    from publisher.config import Config
    from publisher.state import StateStore
    from publisher.storage import Storage


T = TypeVar("T")


def retention_changes(package: str, ps: PackageState, keep: int) -> list[dict[str, Any]]:
    """Apply keep-N retention to ``ps``; one audit change per dropped entry."""
    return [
        {
            "package": package,
            "version": gone.version,
            "architecture": gone.architecture,
            "old": ps.pin,
            "new": ps.pin,
            "note": f"dropped by retention (keep = {keep})",
        }
        for gone in apply_retention(ps, keep)
    ]


class LifecycleOps:
    """Channel operations; mixed into :class:`publisher.repo.Repository`."""

    config: Config
    states: StateStore
    storage: Storage

    if TYPE_CHECKING:

        def commit_change(
            self,
            channel: str,
            action: str,
            actor: str,
            change: Callable[[ChannelState], tuple[T, list[dict[str, Any]]]],
        ) -> T: ...

    # -- promote ------------------------------------------------------------------
    def _check_promote_path(self, src: str, dst: str) -> None:
        self.config.channel(src)
        target = self.config.channel(dst)
        if src not in target.promote_from:
            allowed = ", ".join(target.promote_from) or "nowhere"
            raise PolicyViolation(
                f"channel {dst!r} does not promote from {src!r} (promote_from: {allowed})"
            )

    def _promotion_plan(
        self, source: ChannelState, dst: str, wanted: Sequence[tuple[str, str | None]]
    ) -> list[tuple[str, str, list[Entry]]]:
        src, target = source.channel, self.config.channel(dst)
        plan = []
        for package, version in wanted:
            ps = source.get(package)
            if ps is None or not ps.entries:
                raise NotFound(f"package {package!r} is not in channel {src!r}")
            chosen = version or ps.pin
            if chosen is None:
                raise PolicyViolation(f"{package} has no pinned version in {src!r}; name one")
            entries = ps.find(chosen)
            if not entries:
                raise NotFound(
                    f"{package} {chosen} is not in channel {src!r} (retained: "
                    f"{', '.join(ps.versions())})"
                )
            for e in entries:
                if not target.accepts_architecture(e.architecture):
                    raise PolicyViolation(
                        f"channel {dst!r} does not carry architecture {e.architecture!r}"
                    )
            plan.append((package, chosen, entries))
        return plan

    def _carried(self) -> Callable[[str], bool]:
        """Whether the repository carries a package name (in any channel), memoized."""
        views = [self.states.view(name) for name in self.config.channels]
        known: dict[str, bool] = {}

        def carried(name: str) -> bool:
            if name not in known:
                known[name] = any(v.carries(name) for v in views)
            return known[name]

        return carried

    def _check_dependencies(
        self,
        source: ChannelState,
        state: ChannelState,
        plan: list[tuple[str, str, list[Entry]]],
        with_deps: bool,
    ) -> list[tuple[str, str, list[Entry]]]:
        """Refuse (or with ``with_deps``, extend) a plan that leaves a dependency unmet.

        The target's pins are taken as they will be after the plan (docs/cli.md).
        """
        carried = self._carried()
        dst = state.channel
        while True:
            planned = {package: version for package, version, _ in plan}

            def pin_of(name: str, planned: dict[str, str] = planned) -> str | None:
                if name in planned:
                    return planned[name]
                ps = state.get(name)
                return ps.pin if ps is not None else None

            from publisher.depcheck import unsatisfied  # python-debian's deb822: 40 ms to import

            needs = unsatisfied((e for _, _, es in plan for e in es), pin_of, carried)
            if not needs:
                return plan
            extra: dict[str, str] = {}
            if with_deps:
                for need in needs:
                    for name in need.names:
                        ps = source.get(name)
                        if ps is not None and ps.pin and name not in planned:
                            extra[name] = ps.pin
            if not extra:
                pins = {n: pin_of(n) for need in needs for n in need.names}
                raise DependencyUnsatisfied(
                    f"promoting into {dst!r} would leave dependencies unmet (nothing changed):\n"
                    + "\n".join(f"  {need.describe(dst, pins)}" for need in needs)
                    + (
                        f"\n{source.channel!r} cannot supply them either"
                        if with_deps
                        else "\npromote those packages first, or add --with-deps"
                    )
                )
            plan = plan + self._promotion_plan(source, dst, sorted(extra.items()))

    def _promote(
        self,
        src: str,
        dst: str,
        wanted: Sequence[tuple[str, str | None]],
        dry_run: bool,
        with_deps: bool = False,
        authorize: Callable[[str], None] | None = None,
    ) -> list[PromoteRow]:
        self._check_promote_path(src, dst)
        target = self.config.channel(dst)
        actor = current_actor()

        def change(state: ChannelState) -> tuple[list[PromoteRow], list[dict[str, Any]]]:
            # The source is read in every attempt, after the target: what is committed is
            # what the source held just before this compare-and-swap, and the commit
            # guards the pool files it adds (publisher.sweep), so a promote never lands
            # on a removed version or a deleted pool file.
            source = self.states.view(src)
            plan = self._promotion_plan(source, dst, wanted)
            plan = self._check_dependencies(source, state, plan, with_deps)
            for package, _version, _entries in plan:
                if authorize is not None:
                    authorize(package)
            results: list[PromoteRow] = []
            changes: list[dict[str, Any]] = []
            for package, version, entries in plan:
                ps = state.edit(package)
                old_pin, added = ps.pin, False
                for entry in entries:
                    existing = ps.find(entry.version, entry.architecture)
                    if existing and not existing[0].same_artifact(entry):
                        raise ImmutableConflict(
                            f"{package} {version} ({entry.architecture}) is already in {dst!r} "
                            "with different content"
                        )
                    if not existing:
                        ps.entries.append(entry)
                        added = True
                moved = set_pin(ps, version, "promote", actor)
                status = "promoted" if added or moved else "unchanged"
                if dry_run:
                    status = "planned" if status == "promoted" else status
                results.append(
                    {
                        "package": package,
                        "version": version,
                        "from": src,
                        "to": dst,
                        "status": status,
                        "old_pin": old_pin,
                        "new_pin": version,
                        "architectures": sorted(e.architecture for e in entries),
                    }
                )
                if added or moved:
                    changes.append(
                        {
                            "package": package,
                            "version": version,
                            "old": old_pin,
                            "new": version,
                            "from": src,
                        }
                    )
                changes += retention_changes(package, ps, target.keep)
            return results, changes

        if dry_run:
            return change(self.states.view(dst))[0]
        return self.commit_change(dst, "promote", actor, change)

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
    ) -> PromoteRow:
        """One package; dependencies that ``with_deps`` brought along are listed in the
        result's ``dependencies``."""
        first, *deps = self._promote(src, dst, [(package, version)], dry_run, with_deps, authorize)
        if deps:
            first["dependencies"] = deps
        return first

    def promote_all(
        self, src: str, dst: str, *, dry_run: bool = False, with_deps: bool = False
    ) -> list[PromoteRow]:
        self.config.channel(src)
        wanted = [(name, ps.pin) for name, ps in self.states.view(src).packages() if ps.pin]
        if not wanted:
            return []
        return self._promote(src, dst, wanted, dry_run, with_deps)

    # -- rollback / remove ----------------------------------------------------------
    def rollback(self, package: str, channel: str, to: str | None = None) -> RollbackRow:
        self.config.channel(channel)
        actor = current_actor()

        def change(state: ChannelState) -> tuple[RollbackRow, list[dict[str, Any]]]:
            ps = state.require(package)
            old = ps.pin
            state.edit(package)
            new = rollback_pin(ps, package, to, actor)
            result: RollbackRow = {
                "package": package,
                "channel": channel,
                "old_pin": old,
                "new_pin": new,
            }
            return result, [{"package": package, "version": new, "old": old, "new": new}]

        return self.commit_change(channel, "rollback", actor, change)

    def remove(self, package: str, version: str, channel: str, *, force: bool = False) -> RemoveRow:
        self.config.channel(channel)
        actor = current_actor()

        def change(state: ChannelState) -> tuple[RemoveRow, list[dict[str, Any]]]:
            ps = state.require(package)
            gone = ps.find(version)
            if not gone:
                raise NotFound(f"{package} {version} is not in channel {channel!r}")
            old = ps.pin
            if version == ps.pin and not force:
                raise PolicyViolation(
                    f"{package} {version} is pinned in {channel!r}; roll back first or use --force"
                )
            state.edit(package)
            ps.entries = [e for e in ps.entries if e.version != version]
            ps.pin_stack = [v for v in ps.pin_stack if v != version]
            if version == old:
                set_pin(ps, newest(ps.versions()), "remove", actor)
            result: RemoveRow = {
                "package": package,
                "version": version,
                "channel": channel,
                "removed": sorted(e.architecture for e in gone),
                "old_pin": old,
                "new_pin": ps.pin,
            }
            return result, [{"package": package, "version": version, "old": old, "new": ps.pin}]

        return self.commit_change(channel, "remove", actor, change)

    # -- queries --------------------------------------------------------------------
    def pin_map(self, channel: str) -> dict[str, str]:
        self.config.channel(channel)
        return {name: ps.pin for name, ps in self.states.view(channel).packages() if ps.pin}

    def pins(self, channel: str) -> str:
        return preferences(channel, self.pin_map(channel).items())

    def channel_summary(self, channel: str) -> dict[str, Any]:
        self.config.channel(channel)
        view = self.states.view(channel)
        return {
            "channel": channel,
            "generation": view.head.generation,
            "packages": {
                name: {"pin": ps.pin, "versions": ps.versions()} for name, ps in view.packages()
            },
        }

    def diff(self, src: str, dst: str) -> list[dict[str, Any]]:
        """Per package: the pin in each channel and what ``promote --all`` would do."""
        a, b = self.pin_map(src), self.pin_map(dst)
        rows = []
        for name in sorted(set(a) | set(b)):
            if a.get(name) is None:
                action = "none (not pinned in source)"
            elif a.get(name) == b.get(name):
                action = "none (same)"
            else:
                action = f"promote {a[name]}"
            rows.append({"package": name, src: a.get(name), dst: b.get(name), "action": action})
        return rows

    def history(
        self, channel: str | None = None, package: str | None = None
    ) -> list[dict[str, Any]]:
        if channel:
            self.config.channel(channel)
        return read_events(self.storage, channel=channel, package=package)

    def referencing_channels(self, pool_key: str) -> set[str]:
        """Channels whose state references ``pool_key`` (one shard read per channel)."""
        package = pool_key.rsplit("/", 1)[-1].split("_", 1)[0]
        found = set()
        for name in self.config.channels:
            ps = self.states.view(name).get(package)
            if ps is not None and any(e.filename == pool_key for e in ps.entries):
                found.add(name)
        return found
