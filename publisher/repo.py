"""The repository facade: the operations the CLI and the server share.

Each operation validates everything before it writes anything, stores pool files
create-only outside the state commit, commits the channel state with
compare-and-swap, records one audit event, and renders the channel once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from debian.debian_support import Version

from publisher.audit import current_actor, record_event
from publisher.config import ChannelConfig, Config
from publisher.debfile import DebInfo, hash_file, hash_stream, inspect_deb
from publisher.dists import KEYRING_KEY as KEYRING_KEY  # re-exported: tests and server use it
from publisher.dists import DistWriter
from publisher.errors import ImmutableConflict, InvalidPackage, NotFound, PreconditionFailed
from publisher.lifecycle import LifecycleOps
from publisher.pins import apply_retention, set_pin
from publisher.signing import Signer
from publisher.state import ChannelState, Entry, Head, PackageState, StateStore, now_iso
from publisher.storage import Storage, open_storage
from publisher.versions import newest

Progress = Callable[[int], None]


@dataclass
class PublishResult:
    entry: Entry
    channel: str
    status: str  # "added" | "unchanged"
    pinned: bool

    def to_json(self) -> dict[str, Any]:
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


def entry_json(entry: Entry, channel: str, pin: str | None) -> dict[str, Any]:
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


def _pool_conflict(info: DebInfo) -> ImmutableConflict:
    return ImmutableConflict(
        f"{info.path.name}: {info.package} {info.version} ({info.architecture}) is "
        f"already published as {info.pool_key} with different content; publish a new "
        "version instead (published packages are immutable)"
    )


class Repository(LifecycleOps):
    def __init__(self, config: Config, storage: Storage | None = None) -> None:
        self.config = config
        self.storage = storage if storage is not None else open_storage(config.storage)
        self.states = StateStore(self.storage)

    @cached_property
    def signer(self) -> Signer:
        return Signer(self.config.signing)

    @cached_property
    def dists(self) -> DistWriter:
        return DistWriter(self.config, self.storage, self.signer, self.states)

    # -- pool ---------------------------------------------------------------------
    def _stored_sha256(self, key: str) -> str:
        with self.storage.open_read(key) as fh:
            return hash_stream(fh, ("sha256",))["sha256"]

    def _check_against_pool(self, infos: Sequence[DebInfo]) -> dict[str, dict[str, str]]:
        """Refuse a batch that would change an existing pool file.  Returns known hashes."""
        known: dict[str, dict[str, str]] = {}
        by_key: dict[str, DebInfo] = {}
        for info in infos:
            key = info.pool_key
            # A single file needs no look-up: its create-only write refuses to replace
            # an existing pool file, and _store then compares the content.
            if key in by_key or (len(infos) > 1 and self.storage.exists(key)):
                hashes = known.get(str(info.path)) or hash_file(info.path)
                known[str(info.path)] = hashes
                first = by_key.get(key)
                if first is not None:
                    other = known.get(str(first.path)) or hash_file(first.path)
                    known[str(first.path)] = other
                    theirs = other["sha256"]
                else:
                    theirs = self._stored_sha256(key)
                if theirs != hashes["sha256"]:
                    raise _pool_conflict(info)
            by_key.setdefault(key, info)
        return known

    def _store(self, info: DebInfo, known: dict[str, str] | None) -> Entry:
        key = info.pool_key
        if known is None:
            try:
                with info.path.open("rb") as fh:
                    put = self.storage.write_stream(
                        key,
                        fh,
                        create_only=True,
                        content_type="application/vnd.debian.binary-package",
                    )
                hashes, size = put.hashes, put.size
            except PreconditionFailed:
                hashes, size = hash_file(info.path), info.size
                if self._stored_sha256(key) != hashes["sha256"]:
                    raise _pool_conflict(info) from None
        else:
            hashes, size = known, info.size
        return Entry(
            package=info.package,
            version=info.version,
            architecture=info.architecture,
            filename=key,
            size=size,
            md5=hashes["md5"],
            sha1=hashes["sha1"],
            sha256=hashes["sha256"],
            control=info.control,
            published_at=now_iso(),
            published_by=current_actor(),
        )

    # -- publish --------------------------------------------------------------------
    def publish(
        self,
        channel: str,
        paths: Sequence[str | Path],
        *,
        progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """Publish .debs into ``channel``; one JSON-ready result per file."""
        chan = self.config.channel(channel)
        if not paths:
            raise InvalidPackage("no .deb files given")
        infos = [inspect_deb(p) for p in paths]
        for info in infos:
            if not chan.accepts_architecture(info.architecture):
                raise InvalidPackage(
                    f"{info.path.name}: architecture {info.architecture!r} is not carried by "
                    f"channel {channel!r} (architectures: {', '.join(chan.architectures)}, all)"
                )
        known = self._check_against_pool(infos)
        entries: list[Entry] = []
        for info in infos:
            entries.append(self._store(info, known.get(str(info.path))))
            if progress:
                progress(1)
        return [r.to_json() for r in self.add_entries(chan, entries, action="publish")]

    def add_entries(
        self, chan: ChannelConfig, entries: Sequence[Entry], *, action: str
    ) -> list[PublishResult]:
        """Add stored entries to a channel in one commit, one audit event and one render."""
        actor = current_actor()

        def change(state: ChannelState) -> tuple[list[PublishResult], list[dict[str, Any]]]:
            results: list[PublishResult] = []
            changes: list[dict[str, Any]] = []
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
                status = "unchanged" if existing else "added"
                results.append(PublishResult(entry, chan.name, status, False))
            for name, ps in touched.items():
                # one pin move per package and batch: to the newest version it published
                best = newest(
                    r.entry.version
                    for r in results
                    if r.entry.package == name and r.status == "added"
                )
                old_pin = ps.pin
                if chan.auto_pin and best and (old_pin is None or Version(best) > Version(old_pin)):
                    set_pin(ps, best, action, actor)
                    for change in changes:
                        if change["package"] == name:
                            change["old"], change["new"] = old_pin, ps.pin
            for name, ps in touched.items():
                for gone in apply_retention(ps, chan.keep):
                    changes.append(
                        {
                            "package": name,
                            "version": gone.version,
                            "architecture": gone.architecture,
                            "old": ps.pin,
                            "new": ps.pin,
                            "note": f"dropped by retention (keep = {chan.keep})",
                        }
                    )
            for r in results:  # report the pin as it stands after the whole batch
                r.pinned = r.entry.version == touched[r.entry.package].pin
            return results, changes

        (results, changes), _head, changed = self.states.update(chan.name, change)
        if changed:
            record_event(
                self.storage, action=action, channel=chan.name, changes=changes, actor=actor
            )
        self.render(chan.name, head=_head)
        return results

    # -- render ---------------------------------------------------------------------
    def render(self, channel: str, *, force: bool = False, head: Head | None = None) -> int:
        """Publish the channel's newest state (``head``: one just committed, if known).

        The public keyring is published by the renderer, before the Release it checks.
        """
        return self.dists.publish(channel, force=force, head=head)

    def reindex(self, channels: Iterable[str] | None = None) -> dict[str, int]:
        names = list(channels) if channels else list(self.config.channels)
        for name in names:
            self.config.channel(name)
        return {name: self.render(name, force=True) for name in names}

    def ensure_keyring(self) -> None:
        self.dists.ensure_keyring()

    # -- queries --------------------------------------------------------------------
    def list_entries(self, channel: str | None = None) -> list[dict[str, Any]]:
        names = [channel] if channel else list(self.config.channels)
        rows: list[dict[str, Any]] = []
        for name in names:
            self.config.channel(name)
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

    def generation(self, channel: str) -> int:
        return self.states.read_head(channel).generation
