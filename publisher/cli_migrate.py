"""``aptship migrate ...``: one-off changes of the repository layout (docs/operations.md).

:mod:`publisher.cli` registers :data:`COMMANDS` on its group.
"""

from __future__ import annotations

import click

from publisher.cli_common import current, emit_json, json_option


@click.group()
def migrate() -> None:
    """One-off migrations of the repository layout."""


@migrate.command(name="distributions")
@click.option(
    "--to",
    "codename",
    required=True,
    metavar="CODENAME",
    help="The distribution the existing packages were built for, e.g. bookworm.",
)
@json_option
def distributions(codename: str, as_json: bool) -> None:
    """Copy each channel's packages and pins into its CODENAME suite (after adding
    [repository] distributions to the config); a second run is a no-op."""
    copied = current().repo.migrate_to_distribution(codename)
    if as_json:
        emit_json({"distribution": codename, "copied": copied})
        return
    for suite, count in copied.items():
        click.echo(f"{suite}: {count} packages copied")


COMMANDS = (migrate,)
