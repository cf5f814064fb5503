"""Typed results of the operations that ``Repository``, ``RemoteRepository`` and the
CLI share (the JSON the API answers and ``--json`` prints; docs/cli.md).

They are TypedDicts, so the objects stay plain JSON-ready dicts on the wire while mypy
checks every place that builds or reads one.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class PublishRow(TypedDict):
    """One .deb of ``publish``."""

    package: str
    version: str
    architecture: str
    channel: str
    filename: str
    size: int
    sha256: str
    status: str  # "added" | "unchanged"
    pinned: bool


class EntryRow(TypedDict):
    """One retained version of ``list``."""

    package: str
    version: str
    architecture: str
    channel: str
    pinned: bool
    filename: str
    size: int
    sha256: str
    published_at: str


# "from" is a Python keyword: the functional form names it.  One suite's promotion has
# version, pins and architectures; a release across distributions (docs/cli.md) has
# instead its "release" label, one row per distribution in "builds", and "missing".
PromoteRow = TypedDict(
    "PromoteRow",
    {
        "package": str,
        "version": NotRequired[str],
        "from": str,
        "to": str,
        "status": str,  # "promoted" | "unchanged" | "planned" (dry run)
        "old_pin": NotRequired[str | None],
        "new_pin": NotRequired[str],
        "architectures": NotRequired[list[str]],
        "dependencies": NotRequired[list["PromoteRow"]],  # brought along by --with-deps
        "release": NotRequired[str | None],
        "builds": NotRequired[list["PromoteRow"]],
        "missing": NotRequired[list[str]],
    },
)


class RollbackRow(TypedDict):
    package: str
    channel: str
    old_pin: str | None
    new_pin: str | None  # a release's label may have no pin in some distribution
    release: NotRequired[str | None]  # a release across distributions: its label ...
    builds: NotRequired[list[RollbackRow]]  # ... and one row per distribution


class RemoveRow(TypedDict):
    package: str
    version: str
    channel: str
    removed: list[str]  # architectures
    old_pin: str | None
    new_pin: str | None
