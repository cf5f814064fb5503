"""The repository facade: the operations the CLI and the server share.

Each operation validates everything before it writes anything, stores pool files
create-only outside the state commit, commits the channel state with
compare-and-swap, records one audit event, and renders the channel once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from debian.debian_support import Version

from publisher.audit import current_actor, record_event
from publisher.config import ChannelConfig, Config
from publisher.distributions import route_by_distribution
from publisher.dists import KEYRING_KEY as KEYRING_KEY  # re-exported: tests and server use it
from publisher.dists import DistWriter
from publisher.engines import Engine
from publisher.engines.native import NativeEngine
from publisher.errors import (
    AptshipError,
    BatchTooLarge,
    ImmutableConflict,
    InvalidPackage,
    NotFound,
    StorageError,
)
from publisher.intake import inspect_all
from publisher.lifecycle import retention_changes
from publisher.pins import set_pin
from publisher.releases import ReleaseOps
from publisher.results import EntryRow, PublishRow
from publisher.signing import Signer
from publisher.state import ChannelState, Entry, Head, PackageState, StateStore
from publisher.storage import Storage, open_storage
from publisher.sweep import Restore, Sweep, read_sweep
from publisher.versions import newest

T = TypeVar("T")
log = logging.getLogger("aptship")
Progress = Callable[[int], None]


@dataclass(slots=True)
class PublishResult:
    entry: Entry
    channel: str
    status: str  # "added" | "unchanged"
    pinned: bool

    def to_json(self) -> PublishRow:
        return {
            "package": self.entry.package,
            "version": self.entry.version,
            "architecture": self.entry.architecture,
            "channel": self.channel,
            "filename": self.entry.filename,
            "size": self.entry.size,
            "sha256": self.entry.sha256,
            "status": self.status,
            "pinned": self.pinned,
        }


def entry_json(entry: Entry, channel: str, pin: str | None) -> EntryRow:
    return {
        "package": entry.package,
        "version": entry.version,
        "architecture": entry.architecture,
        "channel": channel,
        "pinned": entry.version == pin,
        "filename": entry.filename,
        "size": entry.size,
        "sha256": entry.sha256,
        "published_at": entry.published_at,
    }


Change = dict[str, Any]


def plan_additions(
    state: ChannelState, chan: ChannelConfig, entries: Sequence[Entry]
) -> tuple[list[PublishResult], list[Change], dict[str, PackageState]]:
    """Add each entry the channel lacks; the same bytes again are "unchanged", other
    bytes under a published (name, version, architecture) are refused."""
    results: list[PublishResult] = []
    changes: list[Change] = []
    touched: dict[str, PackageState] = {}
    for entry in entries:
        ps = state.edit(entry.package)
        touched[entry.package] = ps
        existing = ps.find(entry.version, entry.architecture)
        if existing and not existing[0].same_artifact(entry):
            raise ImmutableConflict(
                f"{entry.package} {entry.version} ({entry.architecture}) is already in "
                f"channel {chan.name!r} with different content"
            )
        if not existing:
            ps.entries.append(entry)
            changes.append(
                {
                    "package": entry.package,
                    "version": entry.version,
                    "architecture": entry.architecture,
                    "old": ps.pin,
                    "new": ps.pin,
                }
            )
        results.append(PublishResult(entry, chan.name, "unchanged" if existing else "added", False))
    return results, changes, touched


def move_pins(
    chan: ChannelConfig,
    touched: Mapping[str, PackageState],
    results: Sequence[PublishResult],
    changes: Sequence[Change],
    action: str,
    actor: str,
) -> None:
    """One pin move per package and batch (with ``auto_pin``): to the newest version
    the batch added, when it is newer than the pin.  Linear in the batch."""
    added: dict[str, list[str]] = {}
    for r in results:
        if r.status == "added":
            added.setdefault(r.entry.package, []).append(r.entry.version)
    changes_of: dict[str, list[Change]] = {}
    for change in changes:
        changes_of.setdefault(change["package"], []).append(change)
    for name, ps in touched.items():
        best = newest(added.get(name, []))
        old_pin = ps.pin
        if chan.auto_pin and best and (old_pin is None or Version(best) > Version(old_pin)):
            set_pin(ps, best, action, actor)
            for change in changes_of.get(name, []):
                change["old"], change["new"] = old_pin, ps.pin


def report_batch(
    chan: ChannelConfig, touched: Mapping[str, PackageState], results: Sequence[PublishResult]
) -> list[Change]:
    """Apply retention (its drops are audited like the additions) and give every result
    the pin as it stands after the whole batch."""
    dropped = [c for name, ps in touched.items() for c in retention_changes(name, ps, chan.keep)]
    for r in results:
        r.pinned = r.entry.version == touched[r.entry.package].pin
    return dropped


class Repository(ReleaseOps):
    def __init__(self, config: Config, storage: Storage | None = None) -> None:
        self.config = config
        self.storage = storage if storage is not None else open_storage(config.storage)
        self.states = StateStore(self.storage)

    @cached_property
    def signer(self) -> Signer:
        return Signer(self.config.signing)

    @cached_property
    def engine(self) -> Engine:
        if self.config.engine == "aptly":
            from publisher.engines.aptly import AptlyEngine

            return AptlyEngine(self.config, self.states, current_actor)
        return NativeEngine(self.storage, self.dists)

    @property
    def serving(self) -> Storage:
        """Where apt's files (dists/, pool/) live: the engine's tree."""
        return self.engine.serving

    def commit(
        self,
        channel: str,
        change: Callable[[ChannelState], T],
        *,
        restore: Mapping[str, Restore] | None = None,
        since: Sweep | None = None,
    ) -> tuple[T, Head, bool]:
        """Commit a state change; the engine mirrors it first (a failure changes nothing).

        With the native engine, the pool files of the entries the change adds are
        guarded against a running gc sweep (:func:`publisher.sweep.guard`); ``restore``
        rewrites those the caller holds the bytes of, if gc deleted them meanwhile.
        """

        def mirror(state: ChannelState) -> None:
            added, removed = state.entry_changes()
            self.engine.apply(channel, added, removed)

        def pool_files(state: ChannelState) -> dict[str, Restore | None]:
            restorers = restore or {}
            return {e.filename: restorers.get(e.filename) for e in state.entry_changes()[0]}

        if self.engine.mirrors_state:
            return self.states.update(channel, change, before_commit=mirror, since=since)
        return self.states.update(channel, change, references=pool_files, since=since)

    def commit_change(
        self,
        channel: str,
        action: str,
        actor: str,
        change: Callable[[ChannelState], tuple[T, list[dict[str, Any]]]],
        *,
        restore: Mapping[str, Restore] | None = None,
        since: Sweep | None = None,
    ) -> T:
        """The one commit step of every operation: commit, audit, publish.

        ``change`` returns (result, audit changes).  Once the commit has landed the
        operation has succeeded: a failure to record the event or to render becomes a
        warning, and the render is left pending (the next operation on the channel,
        or ``aptship reindex``, publishes it; ``aptship verify`` reports it meanwhile).
        """
        since = read_sweep(self.storage) if since is None else since  # before any write
        result, head = self._commit_audited(
            channel, action, actor, change, restore=restore, since=since
        )
        self._render_committed(channel, action, head, since)
        return result

    def _commit_audited(
        self,
        channel: str,
        action: str,
        actor: str,
        change: Callable[[ChannelState], tuple[T, list[dict[str, Any]]]],
        *,
        restore: Mapping[str, Restore] | None,
        since: Sweep,
    ) -> tuple[T, Head]:
        """:meth:`commit_change` up to its render: the commit and its audit event."""
        committed = self.commit(channel, change, restore=restore, since=since)
        (result, changes), head, changed = committed
        self._audit(channel, action, actor, changes, changed=changed)
        return result, head

    def _audit(
        self, channel: str, action: str, actor: str, changes: list[dict[str, Any]], *, changed: bool
    ) -> None:
        """:meth:`_commit_audited`'s audit event; a failure to write it is a warning."""
        # Also when the state ended up unchanged but the operation did something: a
        # publish of a version older than the `keep` newest adds it and drops it again.
        if changed or changes:
            try:
                record_event(
                    self.storage, action=action, channel=channel, changes=changes, actor=actor
                )
            except AptshipError as exc:
                log.warning(
                    "warning: %s on %s committed, but its audit event was not written: %s",
                    action,
                    channel,
                    exc.message,
                )

    def _render_committed(self, channel: str, action: str, head: Head, since: Sweep) -> None:
        """:meth:`commit_change`'s render: a failure leaves it pending, with a warning."""
        try:  # also when nothing changed: completes a render an earlier operation left
            self.render(channel, head=head, since=since)
        except AptshipError as exc:
            log.warning(
                "warning: %s on %s committed, but publishing dists/%s failed (%s); it is "
                "pending: the next operation on %s or `aptship reindex --channel %s` "
                "publishes it",
                action,
                channel,
                channel,
                exc.message,
                channel,
                channel,
            )

    @cached_property
    def dists(self) -> DistWriter:
        return DistWriter(self.config, self.storage, self.signer, self.states)

    # -- publish --------------------------------------------------------------------
    def publish(
        self,
        channel: str,
        paths: Sequence[str | Path],
        *,
        progress: Progress | None = None,
        dist: str | None = None,
    ) -> list[PublishRow]:
        """Publish .debs into ``channel``; one JSON-ready result per file.

        With distributions, each .deb goes to the suite of its distribution (its
        ``+debNN`` stamp, or ``dist``); one commit per suite, in distribution order.
        """
        limits = self.config.limits
        if len(paths) > limits.max_batch_files:
            raise BatchTooLarge(
                f"{len(paths)} files in one publish; at most {limits.max_batch_files} "
                "(limits.max_batch_files)"
            )
        return self.publish_all(channel, paths, progress=progress, dist=dist)

    def publish_all(
        self,
        channel: str,
        paths: Sequence[str | Path],
        *,
        progress: Progress | None = None,
        dist: str | None = None,
    ) -> list[PublishRow]:
        """:meth:`publish` without ``limits.max_batch_files``: the local CLI's
        ``publish DIR`` / ``@LIST`` (docs/cli.md).  However many files, every one is
        inspected before any is stored, and each suite's batch is one commit, one audit
        event and one render.  The server's API never calls this."""
        if not paths:
            raise InvalidPackage("no .deb files given")
        limits = self.config.limits
        self.config.suites(channel)  # NotFound before any file is read
        infos = inspect_all(paths, limits)  # on every core (publisher.intake)
        routed = route_by_distribution(self.config, channel, infos, dist)
        for suite, batch in routed.items():
            chan = self.config.channel(suite)
            for info in batch:
                if not chan.accepts_architecture(info.architecture):
                    raise InvalidPackage(
                        f"{info.path.name}: architecture {info.architecture!r} is not carried "
                        f"by channel {suite!r} (architectures: {', '.join(chan.architectures)}, "
                        "all)"
                    )
        since = read_sweep(self.storage)  # before the pool writes (publisher.sweep.guard)
        del infos  # from here each suite's DebInfos (control texts) live until stored
        out: list[PublishRow] = []
        while routed:
            suite, batch = next(iter(routed.items()))
            del routed[suite]
            entries = self.engine.prepare(batch, progress)
            restore = self.engine.restorers(batch, entries)
            del batch
            actor = current_actor()
            change = self._additions(self.config.channel(suite), entries, "publish", actor)
            del entries  # held by the change until it is committed
            (results, changes), head, changed = self.commit(
                suite, change, restore=restore, since=since
            )
            # :meth:`_commit_audited` in steps: the batch (control texts, hashes,
            # restorers) is needed by neither the audit event nor the render, which
            # reads the committed shards: free it before either is encoded.
            del change, restore
            out += [r.to_json() for r in results]
            del results
            self._audit(suite, "publish", actor, changes, changed=changed)
            del changes
            self._render_committed(suite, "publish", head, since)
        return out

    def add_entries(
        self,
        chan: ChannelConfig,
        entries: Sequence[Entry],
        *,
        action: str,
        restore: Mapping[str, Restore] | None = None,
        since: Sweep | None = None,
    ) -> list[PublishResult]:
        """Add stored entries to a channel in one commit, one audit event and one render."""
        actor = current_actor()
        change = self._additions(chan, entries, action, actor)
        return self.commit_change(chan.name, action, actor, change, restore=restore, since=since)

    @staticmethod
    def _additions(
        chan: ChannelConfig, entries: Sequence[Entry], action: str, actor: str
    ) -> Callable[[ChannelState], tuple[list[PublishResult], list[dict[str, Any]]]]:
        """The state change that adds ``entries`` (see :meth:`add_entries`)."""

        def change(state: ChannelState) -> tuple[list[PublishResult], list[dict[str, Any]]]:
            results, changes, touched = plan_additions(state, chan, entries)
            move_pins(chan, touched, results, changes, action, actor)
            changes += report_batch(chan, touched, results)
            return results, changes

        return change

    # -- render ---------------------------------------------------------------------
    def render(
        self,
        channel: str,
        *,
        force: bool = False,
        head: Head | None = None,
        since: Sweep | None = None,
    ) -> int:
        """Publish the channel's newest state (``head``: one just committed, if known).

        The public keyring is published by the renderer, before the Release it checks.
        """
        if not self.engine.publishes_keyring:
            self.ensure_keyring()
        return self.engine.render(channel, force=force, head=head, since=since)

    def reindex(
        self, channels: Iterable[str] | None = None, *, full: bool = False
    ) -> dict[str, int]:
        """Re-render and re-sign ``channels``; first rebuild any lost state shard.

        A compressed index part whose text is rendered again unchanged is reused from
        the intact stored file (publisher.dists); ``full`` compresses every part again.
        """
        from publisher.repair import rebuild_lost_shards

        names = list(channels) if channels else list(self.config.channels)
        for name in names:
            self.config.channel(name)

        def repair(name: str, *, hashed: bool) -> bool:
            rebuilt = rebuild_lost_shards(self, name, hashed=hashed)
            if rebuilt:
                log.warning(
                    "warning: rebuilt %d entries of lost state shards in %s from dists/; "
                    "pins of the rebuilt packages are set to their newest version",
                    len(rebuilt),
                    name,
                )
            return bool(rebuilt)

        def render(name: str) -> int:
            # Missing shards are found by one listing; a damaged one (its bytes do not
            # match its hash) by the render, which reads and hashes every shard anyway.
            repair(name, hashed=False)
            try:
                return self.render(name, force=True)
            except (NotFound, StorageError):
                if not repair(name, hashed=True):
                    raise
                return self.render(name, force=True)

        if not full:
            return {name: render(name) for name in names}
        with self.dists.recompressing():
            return {name: render(name) for name in names}

    def ensure_keyring(self) -> None:
        self.dists.ensure_keyring()

    # -- queries --------------------------------------------------------------------
    def list_entries(self, channel: str | None = None) -> list[EntryRow]:
        names = [s.name for s in self.config.suites(channel)] if channel else self.config.channels
        rows: list[EntryRow] = []
        for name in names:
            for _pkg, ps in self.states.view(name).packages():
                for e in sorted(ps.entries, key=lambda e: (Version(e.version), e.architecture)):
                    rows.append(entry_json(e, name, ps.pin))
        return rows

    def package_state(self, channel: str, package: str) -> PackageState | None:
        self.config.channel(channel)
        return self.states.view(channel).get(package)

    def show(self, package: str) -> dict[str, Any]:
        channels: dict[str, Any] = {}
        for name in self.config.channels:
            ps = self.package_state(name, package)
            if ps is None or not ps.entries:
                continue
            channels[name] = {
                "pin": ps.pin,
                "versions": ps.versions(),
                "entries": [entry_json(e, name, ps.pin) for e in ps.entries],
                "pin_history": [vars(p) for p in ps.pin_history],
            }
        if not channels:
            raise NotFound(f"package {package!r} is in no channel")
        return {"package": package, "channels": channels}

    def migrate_to_distribution(self, codename: str) -> dict[str, int]:
        from publisher.migrate import migrate_to_distribution

        return migrate_to_distribution(self, codename)

    def generation(self, channel: str) -> int:
        return self.states.read_head(channel).generation
