"""The ``aptship`` command line.

:func:`main` is the single exit point: it runs the click group, prints
``error: <message>`` for any :class:`AptshipError` and exits with that error's
documented exit code (see docs/cli.md).  Commands import the heavy modules lazily so
``aptship --help`` stays fast.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import NoReturn

import click

from publisher.cli_common import (
    Context,
    Operations,
    allow_partial_option,
    channel_option,
    dist_option,
    emit_json,
    json_option,
    package_version,
    pass_ctx,
    pause_collector,
    started,
    version_option,
    warn_deprecated,
)
from publisher.errors import AptshipError, InvalidPackage, UsageError

# Commands defined in other modules (each module's ``COMMANDS``), by name: a module
# is imported only when one of its commands runs or help lists every command, so a
# publish does not pay for the server's and the builder's imports.
# tests/test_cli_reference.py checks this map against the modules.
COMMAND_MODULES = {
    "debianize": "publisher.cli_build",
    "build": "publisher.cli_build",
    "migrate": "publisher.cli_migrate",
    "token": "publisher.cli_server",
    "serve": "publisher.cli_server",
    "webhooks": "publisher.cli_webhooks",
}


class LazyGroup(click.Group):
    """A group whose COMMAND_MODULES commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            import importlib

            for command in importlib.import_module(COMMAND_MODULES[cmd_name]).COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def expand_debs(args: tuple[Path, ...]) -> list[str | Path]:
    """FILE arguments of ``publish``: a .deb, a directory (its ``*.deb`` files, not
    recursive, sorted; a directory named ``*.deb`` is refused as not a regular file)
    or ``@LIST`` (one path per line; blank lines ignored; kept as strings: a Path
    object each would cost 16 MB of a 50,000-line list's publish)."""
    out: list[str | Path] = []
    for arg in args:
        text = str(arg)
        if text.startswith("@"):
            listed = Path(text[1:])
            try:
                with listed.open(encoding="utf-8") as fh:
                    out += [name for line in fh if (name := line.strip())]
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidPackage(f"cannot read the file list {listed}: {exc}") from exc
        elif arg.is_dir() and not arg.name.endswith(".deb"):  # a *.deb must be a file
            found = sorted(p for p in arg.iterdir() if p.name.endswith(".deb") and p.is_file())
            if not found:
                raise InvalidPackage(f"{arg}: directory holds no .deb file")
            out += found
        else:
            out.append(arg)
    return out


@cli.command()
@channel_option("Channel (apt suite) to publish into.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--oidc",
    is_flag=True,
    help="With --server: exchange this CI job's OIDC ID token (GitHub Actions, or "
    "$APTSHIP_ID_TOKEN) for a short-lived token; no stored secret (docs/ci.md).",
)
@dist_option
@json_option
@pass_ctx
def publish(
    ctx: Context,
    channel: str,
    files: tuple[Path, ...],
    oidc: bool,
    dist: str | None,
    as_json: bool,
) -> None:
    """Validate FILES (.deb), store them in the pool and add them to the channel.

    A FILE may be a directory (its *.deb files) or @LIST (a file naming one .deb per
    line); locally the whole set is one commit and one render, however many files.
    Nothing is written if one file is invalid; the same bytes again are a no-op.
    """
    debs = expand_debs(files)
    if oidc:
        if not ctx.server:
            raise UsageError("--oidc works with --server URL (the server exchanges the token)")
        from publisher.oidc_client import oidc_repository

        repo: Operations = oidc_repository(ctx.server)
    else:
        repo = ctx.ops
    # locally, any number of files is one commit per suite; remotely, one upload per file
    batch = repo.publish_all
    show_bar = not as_json and sys.stderr.isatty() and len(debs) > 1
    if show_bar:
        with click.progressbar(length=len(debs), label="publishing", file=sys.stderr) as bar:
            results = batch(channel, debs, progress=bar.update, dist=dist)
    else:
        results = batch(channel, debs, dist=dist)
    if as_json:
        emit_json(results)
        return
    for r in results:
        what = "published" if r["status"] == "added" else "unchanged (same bytes already published)"
        pin = " [pinned]" if r["pinned"] else ""
        click.echo(
            f"{what}: {r['package']} {r['version']} {r['architecture']} -> {r['channel']}{pin}"
        )


@cli.command(name="list")
@channel_option("Only this channel (default: every channel).", required=False)
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
@channel_option(
    "Only this channel (repeatable; default: every channel).", required=False, multiple=True
)
@click.option(
    "--full",
    is_flag=True,
    help="Compress every index part again instead of reusing the intact unchanged ones.",
)
@json_option
@pass_ctx
def reindex(ctx: Context, channels: tuple[str, ...], full: bool, as_json: bool) -> None:
    """Re-render and re-sign channel indexes from the state."""
    done = ctx.repo.reindex(channels or None, full=full)
    if as_json:
        emit_json({"reindexed": done})
        return
    for name, gen in done.items():
        click.echo(f"reindexed {name} (generation {gen})")


@cli.command()
@click.argument("spec", required=False, metavar="PACKAGE[=VERSION]")
@click.option("--from", "src", required=True, metavar="CH", help="Source channel.")
@click.option("--to", "dst", required=True, metavar="CH", help="Target channel.")
@version_option
@click.option("--all", "everything", is_flag=True, help="Promote every package's pinned version.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--with-deps",
    is_flag=True,
    help="Also promote the source's pins of dependencies the target would lack.",
)
@allow_partial_option
@json_option
@pass_ctx
def promote(
    ctx: Context,
    spec: str | None,
    src: str,
    dst: str,
    version: str | None,
    everything: bool,
    dry_run: bool,
    with_deps: bool,
    allow_partial: bool,
    as_json: bool,
) -> None:
    """Copy an exact version from one channel to another and pin it there.

    Without a version, the source channel's pinned version.
    """
    if everything == bool(spec):
        raise UsageError("give either PACKAGE[=VERSION] or --all")
    if everything:
        if version:
            raise UsageError("--version names one package's version; it does not go with --all")
        results = ctx.ops.promote_all(src, dst, dry_run=dry_run, with_deps=with_deps)
    else:
        package, chosen = package_version(spec or "", version)
        one = ctx.ops.promote(
            package,
            chosen,
            src,
            dst,
            dry_run=dry_run,
            with_deps=with_deps,
            allow_partial=allow_partial,
        )
        if as_json:
            emit_json(one)
            return
        results = [
            row
            for build in one.get("builds", [one])
            for row in (build, *build.get("dependencies", []))
        ]
        for gap in one.get("missing", []):
            click.echo(f"warning: no build of this release for {gap} (--allow-partial)", err=True)
    if as_json:
        emit_json(results)
        return
    if not results:
        click.echo(f"nothing pinned in {src}; nothing to promote")
    for r in results:
        click.echo(
            f"{r['status']}: {r['package']} {r['version']} {r['from']} -> {r['to']} "
            f"(pin {r['old_pin'] or '-'} -> {r['new_pin']})"
        )


@cli.command()
@click.argument("spec", metavar="PACKAGE[=VERSION]")
@channel_option("Channel whose pin moves back.")
@version_option
@click.option(
    "--to",
    "old_to",
    hidden=True,
    metavar="VERSION",
    help="Deprecated spelling of --version (--to names a channel elsewhere).",
)
@allow_partial_option
@json_option
@pass_ctx
def rollback(
    ctx: Context,
    spec: str,
    channel: str,
    version: str | None,
    old_to: str | None,
    allow_partial: bool,
    as_json: bool,
) -> None:
    """Move a channel's pin back to the previously pinned version (nothing is deleted).

    With PACKAGE=VERSION or --version, to that retained version.
    """
    if old_to is not None:
        warn_deprecated("`rollback --to VERSION`", "PACKAGE=VERSION or --version VERSION")
        if version and version != old_to:
            raise UsageError(f"--to {old_to} and --version {version} name different versions")
        version = old_to
    package, chosen = package_version(spec, version)
    r = ctx.ops.rollback(package, channel, chosen, allow_partial=allow_partial)
    if as_json:
        emit_json(r)
        return
    for b in r.get("builds", [r]):
        click.echo(f"rolled back {package} in {b['channel']}: {b['old_pin']} -> {b['new_pin']}")


@cli.command()
@channel_option("Channel whose pins to print.")
@json_option
@pass_ctx
def pins(ctx: Context, channel: str, as_json: bool) -> None:
    """Print the channel's pins as an apt preferences file (Pin-Priority 1001)."""
    text = ctx.ops.pins(channel)
    if as_json:
        summary = ctx.ops.channel_summary(channel)
        pinned = {name: p["pin"] for name, p in sorted(summary["packages"].items()) if p.get("pin")}
        emit_json({"channel": channel, "pins": pinned, "preferences": text})
        return
    click.echo(text, nl=False)


@cli.command()
@click.argument("spec", metavar="PACKAGE[=VERSION]")
@channel_option("Channel to remove the version from.")
@version_option
@click.option("--force", is_flag=True, help="Also remove the pinned version.")
@json_option
@pass_ctx
def remove(
    ctx: Context, spec: str, channel: str, version: str | None, force: bool, as_json: bool
) -> None:
    """Remove a version from a channel (the pool file stays until gc)."""
    package, chosen = package_version(spec, version)
    if chosen is None:
        raise UsageError(f"remove needs {package}=VERSION or --version VERSION")
    r = ctx.ops.remove(package, chosen, channel, force=force)
    if as_json:
        emit_json(r)
        return
    click.echo(f"removed {package} {chosen} from {channel} (pin {r['old_pin']} -> {r['new_pin']})")


@cli.command()
@click.argument("old_channels", nargs=-1, metavar="")  # deprecated: diff SRC DST
@click.option("--from", "src", metavar="CH", help="Source channel (required).")
@click.option("--to", "dst", metavar="CH", help="Target channel (required).")
@json_option
@pass_ctx
def diff(
    ctx: Context, old_channels: tuple[str, ...], src: str | None, dst: str | None, as_json: bool
) -> None:
    """Compare the pins of two channels and show what `promote --all` would change."""
    if old_channels:
        if len(old_channels) != 2 or src or dst:
            raise UsageError("give the channels as --from SRC --to DST")
        warn_deprecated("`diff SRC DST`", "`diff --from SRC --to DST`")
        src, dst = old_channels
    if not src or not dst:
        raise UsageError("give the channels as --from SRC --to DST")
    rows = ctx.ops.diff(src, dst)
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{'package':<30} {src:<20} {dst:<20} action")
    for r in rows:
        click.echo(f"{r['package']:<30} {r[src] or '-':<20} {r[dst] or '-':<20} {r['action']}")


@cli.command()
@click.argument("package", required=False)
@channel_option("Only this channel's events.", required=False)
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
@click.option(
    "--fast",
    is_flag=True,
    help="Check what apt relies on: index hashes, pool file sizes (no pool byte read).",
)
@channel_option(
    "Only this channel (repeatable; default: every channel).", required=False, multiple=True
)
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
    metavar="DURATION",
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
@json_option
@pass_ctx
def key_export(ctx: Context, output: Path | None, as_json: bool) -> None:
    """Print the repository's public key(s), ASCII-armored."""
    signer = ctx.repo.signer
    public = signer.export_public()
    if output:
        output.write_bytes(public)
    if as_json:
        emit_json(
            {
                "keys": list(signer.cfg.keys),
                "armored": public.decode("ascii"),
                "output": str(output) if output else None,
            }
        )
    elif not output:
        click.echo(public.decode("ascii"), nl=False)


def _register_hosts() -> None:
    from publisher.cli_hosts import register  # `hosts`, and --wait on promote/rollback

    register(cli)


_register_hosts()


def fail(err: AptshipError) -> NoReturn:
    click.echo(f"error: {err.message}", err=True)
    sys.exit(err.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one place that turns errors into exit codes.

    As the ``aptship`` command (``argv`` None: the process ends with the command),
    start-up runs without the cyclic collector (:func:`cli_common.started`)."""
    paused = argv is None and pause_collector()
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
    finally:
        if paused:
            started()  # a command that never opened a repository
            gc.freeze()  # the exit's last collection: the process ends here
    sys.exit(0)


if __name__ == "__main__":
    main()
