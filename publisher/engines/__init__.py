"""Package-set engines: where a channel's packages and indexes live.

* ``native`` (default): aptship's own pool, spliced indexes and signing
  (:mod:`publisher.dists`) on the configured storage.
* ``aptly``: an existing aptly server does the package-set work through its REST
  API (:mod:`publisher.engines.aptly`); aptship keeps pins, pin history, tokens and
  the audit log in its own storage either way.

The repository calls the engine at four points: ``prepare`` (check and store the
incoming .debs, before any state change), ``apply`` (mirror a channel's added and
removed entries, before the state commit, so a failure leaves the state unchanged),
``render`` (publish the channel) and ``serving`` (the storage apt reads from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from publisher.debfile import DebInfo
    from publisher.state import Entry
    from publisher.storage.base import Storage

Progress = Callable[[int], None]


class Engine(Protocol):
    name: str

    def prepare(self, infos: Sequence[DebInfo], progress: Progress | None) -> list[Entry]:
        """Refuse conflicting content, store the files, and return their entries."""
        ...

    def apply(self, channel: str, added: Sequence[Entry], removed: Sequence[Entry]) -> None:
        """Make the engine's package set of ``channel`` follow a state change."""
        ...

    def render(self, channel: str, *, force: bool = False) -> int:
        """Publish ``channel``'s committed state for apt; return its generation."""
        ...

    @property
    def serving(self) -> Storage:
        """The storage that holds ``dists/`` and ``pool/`` as apt sees them."""
        ...
