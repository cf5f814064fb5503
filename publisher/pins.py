"""Pins: one chosen version per package per channel, its history, and retention.

The pin stack records the order in which versions were pinned; rolling back pops
it, so two rollbacks go back two steps.  Every move appends a :class:`PinEvent`.
"""

from __future__ import annotations

from collections.abc import Iterable

from publisher.errors import NotFound, PolicyViolation
from publisher.state import Entry, PackageState, PinEvent, Shard, now_iso
from publisher.versions import sort_versions

STACK_LIMIT = 200


def set_pin(ps: PackageState, version: str | None, action: str, actor: str) -> bool:
    """Move the pin (recording history); False if it already points there."""
    if ps.pin == version:
        return False
    ps.pin_history.append(
        PinEvent(at=now_iso(), actor=actor, action=action, old=ps.pin, new=version)
    )
    ps.pin = version
    if version is not None:
        ps.pin_stack = [*ps.pin_stack, version][-STACK_LIMIT:]
    return True


def rollback_pin(ps: PackageState, package: str, to: str | None, actor: str) -> str:
    """Move the pin back one step (or to ``to``); return the new pin."""
    retained = set(ps.versions())
    if to is not None:
        if to not in retained:
            raise NotFound(
                f"{package} {to} is not retained in this channel; cannot roll back to it"
            )
        if to == ps.pin:
            raise PolicyViolation(f"{package} is already pinned to {to}")
        stack = list(ps.pin_stack)
        while stack and stack[-1] != to:
            stack.pop()
        target, new_stack = to, (stack or [to])
    else:
        stack = list(ps.pin_stack)
        while stack and stack[-1] == ps.pin:
            stack.pop()
        while stack and stack[-1] not in retained:
            stack.pop()
        if not stack:
            raise PolicyViolation(
                f"nothing to roll back to: {package} has no earlier pinned version still retained"
            )
        target, new_stack = stack[-1], stack
    ps.pin_history.append(
        PinEvent(at=now_iso(), actor=actor, action="rollback", old=ps.pin, new=target)
    )
    ps.pin = target
    ps.pin_stack = new_stack
    return target


def apply_retention(ps: PackageState, keep: int) -> list[Entry]:
    """Keep the newest ``keep`` versions per architecture, never the pinned one; return drops."""
    dropped: list[Entry] = []
    if len(ps.entries) <= keep:  # fewer entries than kept versions: nothing to drop
        return dropped
    for arch in sorted({e.architecture for e in ps.entries}):
        versions = sort_versions(
            {e.version for e in ps.entries if e.architecture == arch}, reverse=True
        )
        for old in versions[keep:]:
            if old != ps.pin:
                dropped += ps.find(old, arch)
    ps.entries = [e for e in ps.entries if e not in dropped]
    return dropped


PINS_PATH = "main/pins"  # below dists/<channel>/: apt fetches it as a custom index target


def pin_stanza(channel: str, package: str, version: str) -> str:
    """One apt preferences stanza (with its blank separator line) for one pin."""
    return (
        f"Explanation: aptship channel {channel} pins {package} to {version}\n"
        f"Package: {package}\nPin: version {version}\nPin-Priority: 1001\n\n"
    )


def preferences(channel: str, pins: Iterable[tuple[str, str]]) -> str:
    """An apt preferences file that makes apt go to exactly the pinned versions."""
    return "".join(pin_stanza(channel, package, version) for package, version in sorted(pins))


def pins_segment(channel: str, shard: Shard) -> bytes:
    """The preferences stanzas of one state shard (a bucket of the pins index)."""
    return "".join(
        pin_stanza(channel, name, ps.pin)
        for name, ps in sorted(shard.items())
        if ps.pin is not None and ps.entries
    ).encode("utf-8")
