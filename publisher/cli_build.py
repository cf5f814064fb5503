"""``aptship debianize`` and ``aptship build``: from a pyproject.toml project to a .deb.

:mod:`publisher.cli` registers :data:`COMMANDS` on its group; this module does not
import it (shared helpers are in :mod:`publisher.cli_common`).  Errors are raised as
:class:`~publisher.errors.AptshipError` and turned into exit codes by ``cli.main``.
The core logic is in :mod:`publisher.debianize`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from publisher.cli_common import current, emit_json, json_option
from publisher.errors import UsageError

project_dir_argument = click.argument(
    "project_dir",
    required=False,
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)


@click.command()
@project_dir_argument
@click.option(
    "--version",
    "version",
    metavar="PEP440",
    help="Version to package (required when pyproject.toml's version is dynamic).",
)
@click.option(
    "--revision", default="1", show_default=True, help="Debian revision added to the version."
)
@click.option(
    "--maintainer",
    metavar="'NAME <EMAIL>'",
    help="Debian Maintainer (default: first [project] maintainer, else author, with an email).",
)
@click.option(
    "--hermetic/--no-hermetic",
    default=None,
    help="Build without network: pip installs only from /usr/share/python-wheels and the "
    "project's wheels/ (default: [tool.aptship] hermetic, else no).",
)
@click.option("--force", is_flag=True, help="Overwrite the files aptship writes in debian/.")
@json_option
def debianize(
    project_dir: Path,
    version: str | None,
    revision: str,
    maintainer: str | None,
    hermetic: bool | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write a dh-virtualenv debian/ for the project in PROJECT_DIR (default: .).

    Reads pyproject.toml [project]: name, version, description, maintainers/authors,
    scripts and requires-python. The PEP 440 version is mapped to a Debian version
    that sorts the same way (1.2.0rc1 -> 1.2.0~rc1-1).
    """
    from publisher.debianize import debianize as run

    project, files = run(
        project_dir,
        version=version,
        maintainer=maintainer,
        revision=revision,
        hermetic=hermetic,
        force=force,
    )
    if as_json:
        emit_json(
            {
                "package": project.package,
                "version": project.debian_version,
                "python_version": project.version,
                "scripts": list(project.scripts),
                "hermetic": project.hermetic,
                "files": [str(f) for f in files],
            }
        )
        return
    for f in files:
        click.echo(f"wrote {f}")
    mode = "hermetic" if project.hermetic else "pip may use the network"
    click.echo(
        f"package {project.package} {project.debian_version} (from {project.version}; {mode})"
    )
    click.echo(f"next: aptship build {project_dir}")


@click.command()
@project_dir_argument
@click.option(
    "--dist",
    "dist",
    metavar="CODENAME",
    help="Build in a clean chroot of this Debian distribution (or 'all': every one in "
    "[repository] distributions) and stamp the version for it, e.g. 1.4.2-1+deb13.",
)
@json_option
def build(project_dir: Path, dist: str | None, as_json: bool) -> None:
    """Build PROJECT_DIR's .deb with dpkg-buildpackage and print its path.

    The build output goes to stderr and the .deb path alone to stdout, so that
    `aptship publish --channel dev "$(aptship build)"` works. dpkg-buildpackage writes
    the .deb into PROJECT_DIR's parent directory.
    """
    from publisher.debianize import build as run

    if dist is None:
        debs = run(project_dir, log=sys.stderr)
    else:
        from publisher.buildroot import build_for

        codenames = current().config.distributions if dist == "all" else (dist,)
        if not codenames:
            raise UsageError("--dist all needs [repository] distributions in the config")
        debs = [d for c in codenames for d in build_for(project_dir, c, log=sys.stderr)]
    if as_json:
        emit_json(debs[0].to_dict() if len(debs) == 1 else [d.to_dict() for d in debs])
        return
    for deb in debs:
        click.echo(str(deb.path))


COMMANDS = (debianize, build)
