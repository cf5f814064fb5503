"""Turn a ``pyproject.toml`` project into a dh-virtualenv ``debian/`` and build it.

:func:`read_project` collects what a Debian package needs from ``[project]`` and
reports every missing field at once; :func:`debianize` writes ``debian/control``,
``rules``, ``changelog``, ``source/format`` and ``<package>.links``; :func:`build`
runs ``dpkg-buildpackage -us -uc -b`` and finds the ``.deb`` it wrote next to the
project.  The version mapping lives in :mod:`publisher.pep440`.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from debian.deb822 import Deb822
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from publisher import pep440
from publisher.errors import InvalidPackage, UsageError
from publisher.versions import PACKAGE_RE, strip_epoch

INSTALL_ROOT = "/opt/venvs"
PYTHON = "/usr/bin/python3"
SYSTEM_WHEELS = "/usr/share/python-wheels"
# Where debian/rules copies the project for pip (see render_rules).
SOURCE_COPY = "debian/aptship-src"
MAINTAINER_RE = re.compile(r"^[^<>@\s][^<>]*\s<[^<>\s@]+@[^<>\s@]+>$")
# Console script names that make a valid, unsurprising file name in /usr/bin.
SCRIPT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Project:
    """The metadata a Debian package is made of, read from ``pyproject.toml``."""

    directory: Path
    name: str
    package: str
    version: str
    debian_version: str
    description: str
    maintainer: str
    scripts: tuple[str, ...]
    python_depends: str
    homepage: str | None
    hermetic: bool
    has_wheels_dir: bool


@dataclass(frozen=True)
class BuiltDeb:
    path: Path
    package: str
    version: str
    architecture: str

    def to_dict(self) -> dict[str, str]:
        return {
            "deb": str(self.path),
            "package": self.package,
            "version": self.version,
            "architecture": self.architecture,
        }


def debian_package_name(project_name: str) -> str:
    """Debian policy spelling of a Python project name: lowercase, ``_`` -> ``-``."""
    return project_name.strip().lower().replace("_", "-")


def load_pyproject(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "pyproject.toml"
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(
            f"no pyproject.toml in {project_dir}: aptship debianize packages a Python "
            "project described by pyproject.toml [project]"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None


def _first_maintainer(project: Mapping[str, Any]) -> str | None:
    """``Name <email>`` of the first maintainer, else author, with a name and an email."""
    for key in ("maintainers", "authors"):
        people = project.get(key)
        if not isinstance(people, list):
            continue
        for person in people:
            if not isinstance(person, dict):
                continue
            name, mail = person.get("name"), person.get("email")
            if isinstance(name, str) and name.strip() and isinstance(mail, str) and mail.strip():
                return f"{name.strip()} <{mail.strip()}>"
    return None


def python_dependency(requires_python: str | None) -> str:
    """``python3`` with the lower bound of ``requires-python`` as a Debian relation."""
    if not requires_python:
        return "python3"
    best: tuple[tuple[int, ...], bool] | None = None
    for spec in SpecifierSet(requires_python):
        if spec.operator not in (">=", ">", "~=", "=="):
            continue
        text = spec.version.removesuffix(".*")
        release = pep440.parse(text).release
        candidate = (release, spec.operator == ">")
        if best is None or candidate > best:
            best = candidate
    if best is None:
        return "python3"
    release, strict = best
    return f"python3 ({'>>' if strict else '>='} {'.'.join(map(str, release))})"


def _homepage(project: Mapping[str, Any]) -> str | None:
    urls = project.get("urls")
    if isinstance(urls, dict):
        for key, value in urls.items():
            if key.lower() == "homepage" and isinstance(value, str):
                return value
    return None


def _tables(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """([project], [tool.aptship]) of a parsed pyproject.toml, empty when absent."""
    project = data.get("project")
    tools = data.get("tool")
    tool = tools.get("aptship") if isinstance(tools, dict) else None
    return (
        project if isinstance(project, dict) else {},
        tool if isinstance(tool, dict) else {},
    )


def _read_name(project: Mapping[str, Any], problems: list[str]) -> tuple[str, str]:
    """(project name, Debian package name)."""
    name = project.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name: set [project] name")
        return "", ""
    package = debian_package_name(name)
    if not PACKAGE_RE.match(package):
        problems.append(
            f"name: {name!r} gives the Debian package name {package!r}, which Debian does "
            "not allow (lowercase letters, digits and + - ., at least 2 characters)"
        )
    return name, package


def _read_version(
    project: Mapping[str, Any], version: str | None, revision: str, problems: list[str]
) -> tuple[str | None, str]:
    """(normalized PEP 440 version, Debian version) from --version or [project] version."""
    static = project.get("version")
    static = static.strip() if isinstance(static, str) and static.strip() else None
    if version is not None and static is not None:
        # pip builds the wheel with pyproject's version: the .deb must say the same.
        try:
            differs = pep440.parse(version) != pep440.parse(static)
        except UsageError:
            differs = False  # reported below
        if differs:
            problems.append(
                f"version: pyproject.toml says {static} but --version says {version}; "
                "drop --version or change pyproject.toml"
            )
    if version is None:
        if static is not None:
            version = static
        elif "version" in (project.get("dynamic") or []):
            problems.append(
                "version: it is dynamic in pyproject.toml; pass the version to package "
                "with --version (e.g. --version 1.2.0)"
            )
        else:
            problems.append("version: set [project] version or pass --version")
    if version is None:
        return None, ""
    try:
        version = str(pep440.parse(version))
        return version, pep440.debian_version(version, revision)
    except UsageError as exc:
        problems.append(f"version: {exc.message}")
        return version, ""


def _read_description(project: Mapping[str, Any], problems: list[str]) -> str:
    description = project.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append("description: set [project] description (one line, the package synopsis)")
        return ""
    return " ".join(description.split())


def _read_maintainer(
    project: Mapping[str, Any], maintainer: str | None, problems: list[str]
) -> str | None:
    """--maintainer, else the first [project] maintainer or author with an email."""
    if maintainer is not None:
        maintainer = maintainer.strip()
        if not MAINTAINER_RE.match(maintainer):
            problems.append(f"maintainer: --maintainer {maintainer!r} is not 'Name <email>'")
        return maintainer
    found = _first_maintainer(project)
    if found is None:
        problems.append(
            "maintainer: no [project] maintainers or authors entry has both a name and an "
            "email; add one or pass --maintainer 'Name <email>'"
        )
    return found


def _read_scripts(project: Mapping[str, Any], problems: list[str]) -> tuple[str, ...]:
    raw_scripts = project.get("scripts") or {}
    if not isinstance(raw_scripts, dict):
        problems.append("scripts: [project.scripts] must be a table of name = 'module:func'")
        return ()
    scripts = []
    for script in raw_scripts:
        if SCRIPT_RE.match(script):
            scripts.append(script)
        else:
            problems.append(f"scripts: {script!r} is not a usable command name for /usr/bin")
    return tuple(sorted(scripts))


def _read_python_depends(project: Mapping[str, Any], problems: list[str]) -> str:
    requires_python = project.get("requires-python")
    if requires_python is None:
        return "python3"
    try:
        return python_dependency(str(requires_python))
    except (InvalidSpecifier, UsageError):
        problems.append(f"requires-python: {requires_python!r} is not a version specifier")
        return "python3"


def _read_hermetic(tool: Mapping[str, Any], hermetic: bool | None, problems: list[str]) -> bool:
    """--hermetic/--no-hermetic, else [tool.aptship] hermetic, else False."""
    if hermetic is not None:
        return hermetic
    setting = tool.get("hermetic", False)
    if not isinstance(setting, bool):
        problems.append("tool.aptship.hermetic: must be true or false")
        return False
    return setting


def read_project(
    project_dir: Path,
    *,
    version: str | None = None,
    maintainer: str | None = None,
    revision: str = "1",
    hermetic: bool | None = None,
) -> Project:
    """Read and check ``pyproject.toml``; raise one :class:`UsageError` naming every gap."""
    project, tool = _tables(load_pyproject(project_dir))
    problems: list[str] = []
    name, package = _read_name(project, problems)
    version, debian_version = _read_version(project, version, revision, problems)
    description = _read_description(project, problems)
    maintainer = _read_maintainer(project, maintainer, problems)
    scripts = _read_scripts(project, problems)
    python_depends = _read_python_depends(project, problems)
    hermetic = _read_hermetic(tool, hermetic, problems)
    if problems:
        raise UsageError(
            f"{project_dir / 'pyproject.toml'} lacks what a Debian package needs:\n  - "
            + "\n  - ".join(problems)
        )
    if version is None or maintainer is None:  # unreachable: each gap is a problem above
        raise UsageError("pyproject.toml lacks a version or a maintainer")
    return Project(
        directory=project_dir,
        name=name,
        package=package,
        version=version,
        debian_version=debian_version,
        description=description,
        maintainer=maintainer,
        scripts=scripts,
        python_depends=python_depends,
        homepage=_homepage(project),
        hermetic=hermetic,
        has_wheels_dir=(project_dir / "wheels").is_dir(),
    )


# -- rendering ---------------------------------------------------------------------------------


def render_control(p: Project) -> str:
    source: dict[str, str] = {
        "Source": p.package,
        "Section": "misc",
        "Priority": "optional",
        "Maintainer": p.maintainer,
        "Build-Depends": "debhelper-compat (= 13), dh-virtualenv (>= 1.2), python3, python3-venv",
        "Standards-Version": "4.6.2",
        "Rules-Requires-Root": "no",
    }
    if p.homepage:
        source["Homepage"] = p.homepage
    binary = {
        "Package": p.package,
        "Architecture": "any",
        "Depends": (
            f"${{misc:Depends}}, ${{shlibs:Depends}}, {p.python_depends}, ${{aptship:Python}}"
        ),
        "Description": (
            f"{p.description}\n"
            f" {p.name} {p.version} in a Python virtualenv at {INSTALL_ROOT}/{p.package},\n"
            " built with dh-virtualenv."
        ),
    }
    return Deb822(source).dump() + "\n" + Deb822(binary).dump()


# Prints the Depends relation on the building interpreter's minor version.
PYTHON_RANGE = (
    "import sys; a, b = sys.version_info[:2]; "
    'print(f"python3 (>= {a}.{b}), python3 (<< {a}.{b + 1})")'
)


def render_rules(p: Project) -> str:
    """``debian/rules``: dh with dh-virtualenv, which pip-installs a copy of the project.

    The copy (``debian/aptship-src``, without ``debian/``) is what pip builds:
    setuptools' automatic discovery in a flat-layout project would otherwise take
    ``debian/`` for a second top-level package and refuse to build.
    """
    # pip --verbose: dh_virtualenv gives pip a --log file that it deletes, and pip then
    # prints a failing build backend's output (the cause) only when verbose.
    args = [
        "--builtin-venv",
        f"--python {PYTHON}",
        f"--sourcedirectory={SOURCE_COPY}",
        "--extra-pip-arg=--verbose",
    ]
    env = [f"export DH_VIRTUALENV_INSTALL_ROOT={INSTALL_ROOT}"]
    if p.hermetic:
        args += ["--extra-pip-arg=--no-index", f"--extra-pip-arg=--find-links={SYSTEM_WHEELS}"]
        if p.has_wheels_dir:
            args.append("--extra-pip-arg=--find-links=$(CURDIR)/wheels")
        env += [
            "# Hermetic: pip sees only the --find-links wheels below, no index, no pip config.",
            "unexport PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS",
            "export PIP_CONFIG_FILE=/dev/null",
        ]
    env += ["export PIP_DISABLE_PIP_VERSION_CHECK=1", "export PIP_NO_INPUT=1"]
    dh_virtualenv = " \\\n\t\t".join(["dh_virtualenv", *args])
    return (
        "#!/usr/bin/make -f\n"
        "# Written by `aptship debianize` from pyproject.toml.\n\n"
        + "\n".join(env)
        + "\n\n%:\n\tdh $@ --with python-virtualenv\n\n"
        "# pip builds a copy of the project without debian/ (flat-layout discovery).\n"
        f"override_dh_virtualenv:\n\trm -rf {SOURCE_COPY}\n\tmkdir {SOURCE_COPY}\n"
        f"\ttar -cf - --exclude=./debian . | tar -xf - -C {SOURCE_COPY}\n"
        f"\t{dh_virtualenv}\n\n"
        f"override_dh_clean:\n\tdh_clean\n\trm -rf {SOURCE_COPY}\n\n"
        "# Nothing to normalise in a virtualenv, and it costs seconds.\n"
        "override_dh_strip_nondeterminism:\n\n"
        "# The virtualenv runs only on the Python minor version that built it.\n"
        "override_dh_gencontrol:\n"
        f"\tdh_gencontrol -- -Vaptship:Python=\"$$({PYTHON} -c '{PYTHON_RANGE}')\"\n\n"
        "# gzip -1: much faster than the xz default for a large virtualenv.\n"
        "override_dh_builddeb:\n\tdh_builddeb -- -Zgzip -z1\n"
    )


def changelog_date(now: datetime | None = None) -> str:
    if now is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        now = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return email.utils.format_datetime(now)


def render_changelog(p: Project, now: datetime | None = None) -> str:
    return (
        f"{p.package} ({p.debian_version}) unstable; urgency=medium\n\n"
        f"  * {p.name} {p.version}, packaged by aptship debianize.\n\n"
        f" -- {p.maintainer}  {changelog_date(now)}\n"
    )


def render_links(p: Project) -> str:
    return "".join(
        f"{INSTALL_ROOT.lstrip('/')}/{p.package}/bin/{s} usr/bin/{s}\n" for s in p.scripts
    )


def debianize(
    project_dir: Path,
    *,
    version: str | None = None,
    maintainer: str | None = None,
    revision: str = "1",
    hermetic: bool | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> tuple[Project, list[Path]]:
    """Write ``debian/`` for ``project_dir``; return the project and the files written.

    An existing ``debian/`` is refused unless ``force``; with ``force`` only the files
    aptship writes are replaced, anything else there (maintainer scripts...) is kept.
    """
    debian = project_dir / "debian"
    if debian.exists() and not force:
        raise UsageError(
            f"{debian} already exists: pass --force to overwrite the files aptship writes "
            "there (other files in it are kept)"
        )
    p = read_project(
        project_dir, version=version, maintainer=maintainer, revision=revision, hermetic=hermetic
    )
    files: dict[str, str] = {
        "control": render_control(p),
        "rules": render_rules(p),
        "changelog": render_changelog(p, now),
        "source/format": "3.0 (native)\n",
    }
    links = debian / f"{p.package}.links"
    if p.scripts:
        files[links.name] = render_links(p)
    elif links.exists():
        links.unlink()
    written = []
    for rel, text in files.items():
        path = debian / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    (debian / "rules").chmod(0o755)
    return p, written


# -- building ----------------------------------------------------------------------------------


def _tool_output(args: list[str], cwd: Path) -> str:
    try:
        result = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise UsageError(f"{args[0]} not found: install dpkg-dev") from None
    if result.returncode != 0:
        raise UsageError(f"{' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout.strip()


def _binary_packages(control: Path) -> list[tuple[str, str]]:
    """(package, Architecture field) of each binary stanza in debian/control."""
    with control.open(encoding="utf-8") as fh:
        stanzas = list(Deb822.iter_paragraphs(fh))
    return [(s["Package"], s.get("Architecture", "any")) for s in stanzas[1:] if "Package" in s]


def _deb_architecture(field: str, host: str) -> str | None:
    """Architecture of the .deb ``dpkg-buildpackage -b`` builds for one stanza, if any."""
    archs = field.split()
    if "all" in archs:
        return "all"
    if "any" in archs or host in archs or any(a.endswith("-any") for a in archs):
        return host
    return None


def _check_version_matches(project_dir: Path, debian_version: str) -> None:
    """Refuse to build a .deb whose version disagrees with pyproject.toml's static version."""
    try:
        data = load_pyproject(project_dir)
    except UsageError:
        return
    version = data.get("project", {}).get("version")
    if not isinstance(version, str):
        return
    expected = pep440.debian_upstream_version(version)
    upstream = debian_version.rpartition("-")[0] or debian_version
    if upstream != expected:
        wanted = f"{expected}-1"  # what `debianize --force` writes (default --revision 1)
        raise UsageError(
            f"debian/changelog is at {debian_version} but pyproject.toml's version {version} "
            f"is Debian version {wanted}: run `aptship debianize --force {project_dir}` "
            f"(or add a {wanted} changelog entry) before building"
        )


LOG_TAIL_LINES = 60  # lines of a failed build's log quoted in the error
LOG_ERROR_LINES = 10  # earlier lines that say "error", quoted when not in the tail
LOG_LINE_CHARS = 400  # each quoted line is cut to this length


class BuildLog:
    """Copies the build output to ``log`` and keeps what a failure message quotes:
    the last lines, and the last lines that say "error" (bounded, never the whole log)."""

    ERROR_RE = re.compile(r"\berror\b", re.IGNORECASE)

    def __init__(self, log: TextIO) -> None:
        self.log = log
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.errors: deque[str] = deque(maxlen=LOG_ERROR_LINES)
        self.count = 0

    def stream(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.log.write(line)
            self.log.flush()
            self.count += 1
            kept = line.rstrip("\n")[:LOG_LINE_CHARS]
            self.tail.append(kept)
            if self.ERROR_RE.search(kept):
                self.errors.append(kept)

    def excerpt(self) -> str:
        """The error lines that scrolled out of the tail, then the tail."""
        parts = []
        earlier = [e for e in self.errors if e not in self.tail]
        if earlier:
            parts.append("errors earlier in the log:")
            parts += [f"  | {e}" for e in earlier]
        skipped = self.count - len(self.tail)
        parts.append(f"last {len(self.tail)} of {self.count} log lines:" if skipped else "log:")
        parts += [f"  | {line}" for line in self.tail]
        return "\n".join(parts)


def run_build(
    argv: list[str],
    log: TextIO,
    where: str,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run a package build, its output streamed to ``log``; a failure names its cause
    (the tail of the build log, :class:`BuildLog`)."""
    output = BuildLog(log)
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        output.stream(proc.stdout or ())
    if proc.returncode != 0:
        raise InvalidPackage(
            f"build failed: dpkg-buildpackage exited with status {proc.returncode} in "
            f"{where}; {output.excerpt()}"
        )


def build(project_dir: Path, *, log: TextIO) -> list[BuiltDeb]:
    """Run ``dpkg-buildpackage -us -uc -b`` in ``project_dir``; its output goes to ``log``.

    Returns the ``.deb`` files it wrote to the parent directory, one per binary package.
    """
    project_dir = project_dir.resolve()
    debian = project_dir / "debian"
    missing = [n for n in ("control", "changelog", "rules") if not (debian / n).is_file()]
    if missing:
        raise UsageError(
            f"{debian} has no {', '.join(missing)}: run `aptship debianize {project_dir}` first"
        )
    if shutil.which("dpkg-buildpackage") is None:
        raise UsageError(
            "dpkg-buildpackage not found: install dpkg-dev, debhelper and dh-virtualenv"
        )
    version = _tool_output(["dpkg-parsechangelog", "-S", "Version"], project_dir)
    _check_version_matches(project_dir, version)
    host = _tool_output(["dpkg", "--print-architecture"], project_dir)
    packages = _binary_packages(debian / "control")

    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    started = time.time()
    run_build(
        ["dpkg-buildpackage", "-us", "-uc", "-b"], log, str(project_dir), cwd=project_dir, env=env
    )

    built = []
    for package, field in packages:
        arch = _deb_architecture(field, host)
        if arch is None:
            continue
        path = project_dir.parent / f"{package}_{strip_epoch(version)}_{arch}.deb"
        if not path.is_file() or path.stat().st_mtime < started - 2:
            raise InvalidPackage(
                f"build failed: dpkg-buildpackage succeeded but did not write {path}"
            )
        built.append(BuiltDeb(path=path, package=package, version=version, architecture=arch))
    if not built:
        raise InvalidPackage(f"build failed: debian/control lists no package for {host}")
    return built
