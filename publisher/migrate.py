"""``aptship migrate distributions``: a single-distribution repository becomes one with
distributions (docs/operations.md, "Adding distributions").

Run it after adding ``[repository] distributions`` to the config.  Each channel's
existing state (``.aptship/state/<channel>/``) is copied, entries, pins, pin stack and
pin history, into the suite of the named distribution (``bookworm-<channel>``) in one
commit per suite, and that suite is rendered.  Entries keep their pool files
(``pool/main/...``): pool files are immutable and never move, so no byte is copied and
a host in the middle of a download is not disturbed.  New publishes go to
``pool/<codename>/main/``.  A package the suite already holds is left as it is, so a
second run is a no-op.  The old suites' state and ``dists/<channel>/`` stay in storage
untouched (the server no longer serves them: hosts are set up again, docs/hosts.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from publisher.audit import current_actor
from publisher.distributions import suite_name
from publisher.errors import UsageError
from publisher.state import ChannelState, PackageState

if TYPE_CHECKING:
    from publisher.repo import Repository


def migrate_to_distribution(repo: Repository, codename: str) -> dict[str, int]:
    """Copy each channel's single-distribution state into its ``codename`` suite.

    Returns suite -> number of packages copied (0: nothing to copy, or done before).
    """
    cfg = repo.config
    if not cfg.distributions:
        raise UsageError(
            "the config has no [repository] distributions: add them (including "
            f"{codename!r}) first, then run the migration"
        )
    if codename not in cfg.distributions:
        raise UsageError(
            f"{codename!r} is not in [repository] distributions ({', '.join(cfg.distributions)})"
        )
    actor = current_actor()
    copied: dict[str, int] = {}
    for channel in cfg.groups:
        suite = suite_name(codename, channel)
        legacy = repo.states.view(channel)
        packages = list(legacy.packages()) if legacy.head.generation else []

        def change(
            state: ChannelState,
            packages: list[tuple[str, PackageState]] = packages,
            channel: str = channel,
        ) -> tuple[int, list[dict[str, Any]]]:
            changes: list[dict[str, Any]] = []
            for name, ps in packages:
                have = state.get(name)
                if have is not None and have.entries:
                    continue
                target = state.edit(name)
                target.entries = list(ps.entries)
                target.pin = ps.pin
                target.pin_stack = list(ps.pin_stack)
                target.pin_history = list(ps.pin_history)
                changes.append(
                    {
                        "package": name,
                        "version": ps.pin,
                        "old": None,
                        "new": ps.pin,
                        "note": f"migrated from channel {channel} ({len(ps.entries)} entries)",
                    }
                )
            return len(changes), changes

        copied[suite] = repo.commit_change(suite, "migrate", actor, change)
    return copied
