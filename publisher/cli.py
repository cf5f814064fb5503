"""The ``aptship`` command line.

:func:`main` is the single exit point: it runs the click group, prints
``error: <message>`` for any :class:`AptshipError` and exits with that error's
documented exit code (see docs/cli.md).  Commands import the heavy modules lazily so
``aptship --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import click

from publisher.errors import AptshipError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from publisher.config import Config
    from publisher.repo import Repository


class Operations(Protocol):
    """What both a local :class:`Repository` and a ``RemoteRepository`` offer."""

    def publish(
        self,
        channel: str,
        paths: Sequence[str | Path],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]: ...
    def promote(
        self, package: str, version: str | None, src: str, dst: str, *, dry_run: bool = False
    ) -> dict[str, Any]: ...
    def promote_all(self, src: str, dst: str, *, dry_run: bool = False) -> list[dict[str, Any]]: ...
    def rollback(self, package: str, channel: str, to: str | None = None) -> dict[str, Any]: ...
    def remove(
        self, package: str, version: str, channel: str, *, force: bool = False
    ) -> dict[str, Any]: ...
    def list_entries(self, channel: str | None = None) -> list[dict[str, Any]]: ...
    def show(self, package: str) -> dict[str, Any]: ...
    def diff(self, src: str, dst: str) -> list[dict[str, Any]]: ...
    def pins(self, channel: str) -> str: ...
    def history(
        self, channel: str | None = None, package: str | None = None
    ) -> list[dict[str, Any]]: ...


class Context:
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
            name = click.get_current_context().info_name
            raise UsageError(f"`aptship {name}` works on a local config only, not with --server")
        if self._repo is None:
            from publisher.repo import Repository

            self._repo = Repository(self.config)
        return self._repo

    @property
    def ops(self) -> Operations:
        """The repository operations: through the server's API when --server is given."""
        if not self.server:
            return self.repo
        import os

        from publisher.remote import RemoteRepository

        token = os.environ.get("APTSHIP_TOKEN")
        if not token:
            raise UsageError("--server needs a token in $APTSHIP_TOKEN")
        return RemoteRepository(self.server, token)


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="APTSHIP_CONFIG",
    type=click.Path(dir_okay=False),
    help="Config file (default: $APTSHIP_CONFIG, else ./aptship.toml).",
)
@click.option(
    "--server",
    envvar="APTSHIP_SERVER",
    metavar="URL",
    help="Work through an aptship server's API (token in $APTSHIP_TOKEN).",
)
@click.version_option(package_name="aptship")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, server: str | None) -> None:
    """aptship: a private apt repository for Python services shipped as .debs."""
    ctx.obj = Context(config_path, server)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@json_option
def init(directory: Path, as_json: bool) -> None:
    """Create a local repository with a development signing key in DIRECTORY."""
    from publisher.config import load_config
    from publisher.repo import Repository
    from publisher.scaffold import init_repository

    cfg_path = init_repository(directory)
    repo = Repository(load_config(cfg_path))
    repo.reindex()
    if as_json:
        emit_json({"config": str(cfg_path), "channels": list(repo.config.channels)})
        return
    click.echo(f"wrote {cfg_path}")
    click.echo(
        f"repository at {repo.storage.describe()}; channels: {', '.join(repo.config.channels)}"
    )
    click.echo(
        f"next: export APTSHIP_CONFIG={cfg_path} and run `aptship publish --channel dev FILE.deb`"
    )


@cli.command()
@click.option("--channel", "-c", required=True, help="Channel (apt suite) to publish into.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@pass_ctx
def publish(ctx: Context, channel: str, files: tuple[Path, ...], as_json: bool) -> None:
    """Validate FILES (.deb), store them in the pool and add them to CHANNEL."""
    repo = ctx.ops
    show_bar = not as_json and sys.stderr.isatty() and len(files) > 1
    if show_bar:
        with click.progressbar(length=len(files), label="publishing", file=sys.stderr) as bar:
            results = repo.publish(channel, files, progress=bar.update)
    else:
        results = repo.publish(channel, files)
    if as_json:
        emit_json(results)
        return
    for r in results:
        what = "published" if r["status"] == "added" else "unchanged (same bytes already published)"
        pin = " [pinned]" if r["pinned"] else ""
        click.echo(f"{what}: {r['package']} {r['version']} {r['architecture']} -> {channel}{pin}")


@cli.command(name="list")
@click.option("--channel", "-c", help="Only this channel.")
@json_option
@pass_ctx
def list_cmd(ctx: Context, channel: str | None, as_json: bool) -> None:
    """List every retained package version (per channel)."""
    rows = ctx.ops.list_entries(channel)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        pin = "*" if r["pinned"] else " "
        click.echo(
            f"{r['channel']:<10} {pin} {r['package']:<30} {r['version']:<20} {r['architecture']}"
        )


@cli.command()
@click.argument("package")
@json_option
@pass_ctx
def show(ctx: Context, package: str, as_json: bool) -> None:
    """Show a package's versions, pins and pin history in every channel."""
    data = ctx.ops.show(package)
    if as_json:
        emit_json(data)
        return
    click.echo(package)
    for name, ch in data["channels"].items():
        click.echo(f"  {name}: pinned {ch['pin'] or '-'}; versions {', '.join(ch['versions'])}")


@cli.command()
@click.option("--channel", "-c", "channels", multiple=True, help="Only this channel (repeatable).")
@json_option
@pass_ctx
def reindex(ctx: Context, channels: tuple[str, ...], as_json: bool) -> None:
    """Re-render and re-sign channel indexes from the state."""
    done = ctx.repo.reindex(channels or None)
    if as_json:
        emit_json({"reindexed": done})
        return
    for name, gen in done.items():
        click.echo(f"reindexed {name} (generation {gen})")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``PACKAGE[=VERSION]`` -> (package, version or None)."""
    package, _, version = spec.partition("=")
    if not package:
        raise UsageError(f"expected PACKAGE[=VERSION], got {spec!r}")
    return package, version or None


@cli.command()
@click.argument("spec", required=False, metavar="PACKAGE[=VERSION]")
@click.option("--from", "src", required=True, help="Source channel.")
@click.option("--to", "dst", required=True, help="Target channel.")
@click.option("--all", "everything", is_flag=True, help="Promote every package's pinned version.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@json_option
@pass_ctx
def promote(
    ctx: Context,
    spec: str | None,
    src: str,
    dst: str,
    everything: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Copy an exact version from one channel to another and pin it there."""
    if everything == bool(spec):
        raise UsageError("give either PACKAGE[=VERSION] or --all")
    if everything:
        results = ctx.ops.promote_all(src, dst, dry_run=dry_run)
    else:
        package, version = split_spec(spec or "")
        results = [ctx.ops.promote(package, version, src, dst, dry_run=dry_run)]
    if as_json:
        emit_json(results if everything else results[0])
        return
    if not results:
        click.echo(f"nothing pinned in {src}; nothing to promote")
    for r in results:
        click.echo(
            f"{r['status']}: {r['package']} {r['version']} {r['from']} -> {r['to']} "
            f"(pin {r['old_pin'] or '-'} -> {r['new_pin']})"
        )


@cli.command()
@click.argument("package")
@click.option("--channel", "-c", required=True)
@click.option("--to", "to", help="Roll back to this retained version.")
@json_option
@pass_ctx
def rollback(ctx: Context, package: str, channel: str, to: str | None, as_json: bool) -> None:
    """Move a channel's pin back to the previously pinned version (nothing is deleted)."""
    r = ctx.ops.rollback(package, channel, to)
    if as_json:
        emit_json(r)
        return
    click.echo(f"rolled back {package} in {channel}: {r['old_pin']} -> {r['new_pin']}")


@cli.command()
@click.option("--channel", "-c", required=True)
@pass_ctx
def pins(ctx: Context, channel: str) -> None:
    """Print the channel's pins as an apt preferences file (Pin-Priority 1001)."""
    click.echo(ctx.ops.pins(channel), nl=False)


@cli.command()
@click.argument("spec", metavar="PACKAGE=VERSION")
@click.option("--channel", "-c", required=True)
@click.option("--force", is_flag=True, help="Also remove the pinned version.")
@json_option
@pass_ctx
def remove(ctx: Context, spec: str, channel: str, force: bool, as_json: bool) -> None:
    """Remove a version from a channel (the pool file stays until gc)."""
    package, version = split_spec(spec)
    if version is None:
        raise UsageError("remove needs PACKAGE=VERSION")
    r = ctx.ops.remove(package, version, channel, force=force)
    if as_json:
        emit_json(r)
        return
    click.echo(f"removed {package} {version} from {channel} (pin {r['old_pin']} -> {r['new_pin']})")


@cli.command()
@click.argument("src")
@click.argument("dst")
@json_option
@pass_ctx
def diff(ctx: Context, src: str, dst: str, as_json: bool) -> None:
    """Compare the pins of two channels and show what `promote --all` would change."""
    rows = ctx.ops.diff(src, dst)
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{'package':<30} {src:<20} {dst:<20} action")
    for r in rows:
        click.echo(f"{r['package']:<30} {r[src] or '-':<20} {r[dst] or '-':<20} {r['action']}")


@cli.command()
@click.argument("package", required=False)
@click.option("--channel", "-c")
@json_option
@pass_ctx
def history(ctx: Context, package: str | None, channel: str | None, as_json: bool) -> None:
    """The audit log: every publish, promote, rollback and remove."""
    rows = ctx.ops.history(channel, package)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(
            f"{r['at']} {r['actor']:<20} {r['action']:<9} {r['channel']:<10} {r['package']} "
            f"{r.get('version') or ''} pin {r.get('old') or '-'} -> {r.get('new') or '-'}"
        )


@cli.command(name="verify")
@click.option("--fast", is_flag=True, help="Check pool file sizes only, not their hashes.")
@click.option("--channel", "-c", "channels", multiple=True)
@json_option
@pass_ctx
def verify_cmd(ctx: Context, fast: bool, channels: tuple[str, ...], as_json: bool) -> None:
    """Check signatures, index hashes, by-hash files and pool files."""
    from publisher.errors import VerifyFailed
    from publisher.verify import verify

    problems = verify(ctx.repo, fast=fast, channels=list(channels) or None)
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    else:
        for p in problems:
            click.echo(f"problem: {p}")
    if problems:
        raise VerifyFailed(
            f"{len(problems)} problem(s) found; `aptship reindex` repairs index problems"
        )
    if not as_json:
        click.echo("repository is healthy")


@cli.command(name="gc")
@click.option("--dry-run", is_flag=True, help="List what would be deleted.")
@click.option(
    "--grace",
    default="1d",
    show_default=True,
    help="Only delete what a gc run marked unreferenced at least this long ago (min 10s).",
)
@json_option
@pass_ctx
def gc_cmd(ctx: Context, dry_run: bool, grace: str, as_json: bool) -> None:
    """Delete pool, by-hash and state files unreferenced for the grace period."""
    from publisher.gc import collect, parse_duration

    keys = collect(ctx.repo, grace=parse_duration(grace), dry_run=dry_run)
    if as_json:
        emit_json({"dry_run": dry_run, "deleted": keys})
        return
    verb = "would delete" if dry_run else "deleted"
    for k in keys:
        click.echo(f"{verb} {k}")
    click.echo(f"{verb} {len(keys)} object(s)")


@cli.group()
def key() -> None:
    """Signing key commands."""


@key.command(name="export")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
@pass_ctx
def key_export(ctx: Context, output: Path | None) -> None:
    """Print the repository's public key(s), ASCII-armored."""
    public = ctx.repo.signer.export_public()
    if output:
        output.write_bytes(public)
    else:
        click.echo(public.decode("ascii"), nl=False)


def _register_subcommands() -> None:
    from publisher.cli_build import build, debianize
    from publisher.cli_server import serve, token

    for command in (debianize, build, token, serve):
        cli.add_command(command)


_register_subcommands()


def fail(err: AptshipError) -> NoReturn:
    click.echo(f"error: {err.message}", err=True)
    sys.exit(err.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one place that turns errors into exit codes."""
    try:
        cli.main(args=argv, prog_name="aptship", standalone_mode=False)
    except AptshipError as err:
        fail(err)
    except click.exceptions.Exit as ex:
        sys.exit(ex.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as ex:
        ex.show()
        sys.exit(UsageError.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
