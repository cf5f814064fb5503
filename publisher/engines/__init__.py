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

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from publisher.debfile import DebInfo
    from publisher.state import Entry, Head
    from publisher.storage.base import Storage
    from publisher.sweep import Restore, Sweep

Progress = Callable[[int], None]


class Engine(Protocol):
    name: str
    # True: the engine keeps a package set of its own (aptly), which ``apply`` updates
    # before every state commit.  False: aptship's state is the package set, and the
    # pool files a commit adds are guarded against a concurrent gc (publisher.sweep).
    mirrors_state: bool
    # True: ``render`` publishes the public keyring before the Release it checks.
    publishes_keyring: bool

    def prepare(self, infos: Sequence[DebInfo], progress: Progress | None) -> list[Entry]:
        """Refuse conflicting content, store the files, and return their entries."""
        ...

    def apply(self, channel: str, added: Sequence[Entry], removed: Sequence[Entry]) -> None:
        """Make the engine's package set of ``channel`` follow a state change."""
        ...

    def render(
        self,
        channel: str,
        *,
        force: bool = False,
        head: Head | None = None,
        since: Sweep | None = None,
    ) -> int:
        """Publish ``channel``'s committed state for apt; return its generation.

        ``head``: the head just committed, if known; ``since``: the gc sweep record
        read before the operation's writes (engines without a pool of their own
        ignore both)."""
        ...

    def restorers(
        self, infos: Sequence[DebInfo], entries: Sequence[Entry]
    ) -> Mapping[str, Restore]:
        """By pool key, how to store each file of a prepared batch (``infos`` and the
        ``entries`` :meth:`prepare` made of them) again if gc took it meanwhile; keys
        without one are absent."""
        ...

    @property
    def serving(self) -> Storage:
        """The storage that holds ``dists/`` and ``pool/`` as apt sees them."""
        ...
