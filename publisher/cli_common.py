"""What every ``aptship`` command module shares: the invocation :class:`Context`,
``--json`` and ``--channel`` options, output helpers and deprecation warnings.

:mod:`publisher.cli` (the group and the repository commands) and the command modules
it registers (:mod:`publisher.cli_build`, :mod:`publisher.cli_server`...) all import
this module and never each other, so there is no import cycle.  The vocabulary the
options follow is documented in docs/cli.md: ``--from``/``--to`` always name
channels, a version is ``PACKAGE=VERSION`` or ``--version``.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from publisher.errors import UsageError
from publisher.results import EntryRow, PromoteRow, PublishRow, RemoveRow, RollbackRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from publisher.config import Config
    from publisher.repo import Repository

F = TypeVar("F", bound=Callable[..., Any])
TOKEN_ENV = "APTSHIP_TOKEN"  # noqa: S105 - the name of a variable, not a secret


class Operations(Protocol):
    """What both a local :class:`Repository` and a ``RemoteRepository`` offer."""

    def publish(
        self,
        channel: str,
        paths: Sequence[str | Path],
        *,
        progress: Callable[[int], None] | None = None,
        dist: str | None = None,
    ) -> list[PublishRow]: ...
    def publish_all(
        self,
        channel: str,
        paths: Sequence[str | Path],
        *,
        progress: Callable[[int], None] | None = None,
        dist: str | None = None,
    ) -> list[PublishRow]: ...
    def promote(
        self,
        package: str,
        version: str | None,
        src: str,
        dst: str,
        *,
        dry_run: bool = False,
        with_deps: bool = False,
        allow_partial: bool = False,
    ) -> PromoteRow: ...
    def promote_all(
        self, src: str, dst: str, *, dry_run: bool = False, with_deps: bool = False
    ) -> list[PromoteRow]: ...
    def rollback(
        self, package: str, channel: str, to: str | None = None, *, allow_partial: bool = False
    ) -> RollbackRow: ...
    def remove(
        self, package: str, version: str, channel: str, *, force: bool = False
    ) -> RemoveRow: ...
    def list_entries(self, channel: str | None = None) -> list[EntryRow]: ...
    def show(self, package: str) -> dict[str, Any]: ...
    def diff(self, src: str, dst: str) -> list[dict[str, Any]]: ...
    def pins(self, channel: str) -> str: ...
    def channel_summary(self, channel: str) -> dict[str, Any]: ...
    def history(
        self, channel: str | None = None, package: str | None = None
    ) -> list[dict[str, Any]]: ...


class Context:
    """One ``aptship`` invocation: the global options, the config and repository."""

    def __init__(self, config_path: str | None, server: str | None = None) -> None:
        self.config_path = config_path
        self.server = server
        self._config: Config | None = None
        self._repo: Repository | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from publisher.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def repo(self) -> Repository:
        """The local repository; commands that need storage or the key use this."""
        if self.server:
            name = click.get_current_context().command_path
            raise UsageError(f"`{name}` works on a local config only, not with --server")
        if self._repo is None:
            from publisher.repo import Repository

            self._repo = Repository(self.config)
            started()
        return self._repo

    @property
    def ops(self) -> Operations:
        """The repository operations: through the server's API when --server is given."""
        if not self.server:
            return self.repo
        from publisher.remote import RemoteRepository

        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise UsageError(f"--server needs a token in ${TOKEN_ENV}")
        started()
        return RemoteRepository(self.server, token)


pass_ctx = click.make_pass_decorator(Context)

# Start-up (docs/operations.md, "Performance"): a command spends about half of a small
# publish loading modules, and the cyclic collector would scan their objects again
# and again while they load.  ``aptship`` (cli.main) pauses it; once a command has
# what it works with (:func:`started`), it runs again, with the objects alive then
# (modules, classes, the config) frozen out of its passes.
_paused = False


def pause_collector() -> bool:
    """Pause the cyclic collector for start-up; True if this paused it."""
    global _paused
    if not gc.isenabled():
        return False
    gc.disable()
    _paused = True
    return True


def started() -> None:
    """Start-up is over: collect again (what is alive now stays out of every pass)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def current() -> Context:
    """The running invocation's :class:`Context` (a bare one outside the main group)."""
    found = click.get_current_context().find_object(Context)
    return found if found is not None else Context(None)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def channel_option(help: str, *, required: bool = True, multiple: bool = False) -> Callable[[F], F]:
    """``--channel/-c CH``: the one spelling of "which channel" on every command."""
    return click.option(
        "--channel",
        "-c",
        "channels" if multiple else "channel",
        required=required,
        multiple=multiple,
        metavar="CH",
        help=help,
    )


dist_option = click.option(
    "--dist",
    "dist",
    metavar="CODENAME",
    help="The .debs' distribution when their version has no +debNN stamp.",
)


allow_partial_option = click.option(
    "--allow-partial",
    is_flag=True,
    help="With distributions: go ahead when some distribution lacks the release's build.",
)


version_option = click.option(
    "--version",
    "version",
    metavar="VERSION",
    help="Exact Debian version (the same as PACKAGE=VERSION).",
)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def warn_deprecated(old: str, new: str) -> None:
    """One line on stderr for a spelling kept for one release (see docs/cli.md)."""
    click.echo(f"warning: {old} is deprecated and will be removed; use {new}", err=True)


def package_version(spec: str, version: str | None) -> tuple[str, str | None]:
    """``PACKAGE[=VERSION]`` plus ``--version`` -> (package, version or None)."""
    package, sep, inline = spec.partition("=")
    if not package:
        raise UsageError(f"expected PACKAGE[=VERSION], got {spec!r}")
    if sep and not inline:
        raise UsageError(f"expected PACKAGE=VERSION, got {spec!r}")
    if inline and version and inline != version:
        raise UsageError(f"{spec!r} and --version {version} name different versions")
    return package, inline or version or None
