"""`aptship debianize` writes a dh-virtualenv debian/; `aptship build` finds what it built."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from debian.changelog import Changelog
from debian.deb822 import Deb822

from publisher.cli_build import build as build_cmd
from publisher.cli_build import debianize as debianize_cmd
from publisher.debianize import build, debianize, python_dependency, read_project
from publisher.errors import InvalidPackage, UsageError
from tests.clirun import invoke

COMPLETE = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "My_Service"
version = "1.2.0rc1"
description = "A service   that says things"
requires-python = ">=3.10,<4"
authors = [{ name = "No Mail" }, { name = "Ann Author", email = "ann@example.invalid" }]
maintainers = [
    { email = "nameless@example.invalid" },
    { name = "Max M", email = "max@example.invalid" },
]

[project.scripts]
my-service = "my_service:main"
my-service-admin = "my_service.admin:main"

[project.urls]
Homepage = "https://example.invalid/my-service"
"""

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def write_project(root: Path, text: str = COMPLETE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(text)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "my-service")


def stanzas(path: Path) -> list[Deb822]:
    with path.open() as fh:
        return list(Deb822.iter_paragraphs(fh))


def test_debianize_writes_dh_virtualenv_files(project: Path) -> None:
    p, files = debianize(project, now=NOW)
    debian = project / "debian"
    assert sorted(f.relative_to(debian).as_posix() for f in files) == [
        "changelog",
        "control",
        "my-service.links",
        "rules",
        "source/format",
    ]
    assert (p.package, p.version, p.debian_version) == ("my-service", "1.2.0rc1", "1.2.0~rc1-1")

    source, binary = stanzas(debian / "control")
    assert source["Source"] == "my-service"
    assert source["Maintainer"] == "Max M <max@example.invalid>"
    assert source["Build-Depends"] == (
        "debhelper-compat (= 13), dh-virtualenv (>= 1.2), python3, python3-venv"
    )
    assert source["Homepage"] == "https://example.invalid/my-service"
    assert binary["Package"] == "my-service"
    assert binary["Architecture"] == "any"
    assert binary["Depends"] == (
        "${misc:Depends}, ${shlibs:Depends}, python3 (>= 3.10), ${aptship:Python}"
    )
    assert binary["Description"].splitlines()[0] == "A service that says things"

    rules = (debian / "rules").read_text()
    assert rules.startswith("#!/usr/bin/make -f\n")
    assert (debian / "rules").stat().st_mode & 0o111 == 0o111
    for needle in (
        "export DH_VIRTUALENV_INSTALL_ROOT=/opt/venvs\n",
        "\tdh $@ --with python-virtualenv\n",
        "override_dh_virtualenv:\n",
        "--builtin-venv",
        "--python /usr/bin/python3",
        "override_dh_strip_nondeterminism:\n\n",
        "override_dh_builddeb:\n\tdh_builddeb -- -Zgzip -z1\n",
    ):
        assert needle in rules
    assert "--no-index" not in rules
    assert "PIP_CONFIG_FILE" not in rules

    changelog = Changelog((debian / "changelog").read_text())
    assert changelog.package == "my-service"
    assert str(changelog.version) == "1.2.0~rc1-1"
    assert changelog.author == "Max M <max@example.invalid>"
    assert changelog.date == "Wed, 01 May 2024 12:00:00 +0000"

    assert (debian / "my-service.links").read_text() == (
        "opt/venvs/my-service/bin/my-service usr/bin/my-service\n"
        "opt/venvs/my-service/bin/my-service-admin usr/bin/my-service-admin\n"
    )
    assert (debian / "source" / "format").read_text().strip() in ("3.0 (native)", "1.0")


def test_debianize_rules_parse_as_make(project: Path) -> None:
    debianize(project, hermetic=True)
    out = subprocess.run(
        ["make", "-n", "-f", "debian/rules", "override_dh_virtualenv", "override_dh_builddeb"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = " ".join(out.replace("\\\n", " ").split())
    assert out == (
        "rm -rf debian/aptship-src mkdir debian/aptship-src "
        "tar -cf - --exclude=./debian . | tar -xf - -C debian/aptship-src "
        "dh_virtualenv --builtin-venv --python /usr/bin/python3 "
        "--sourcedirectory=debian/aptship-src --extra-pip-arg=--verbose "
        "--extra-pip-arg=--no-index "
        "--extra-pip-arg=--find-links=/usr/share/python-wheels dh_builddeb -- -Zgzip -z1"
    )


@pytest.mark.parametrize("how", ["flag", "tool-table"])
def test_hermetic_rules(project: Path, how: str) -> None:
    if how == "tool-table":
        with (project / "pyproject.toml").open("a") as fh:
            fh.write("\n[tool.aptship]\nhermetic = true\n")
    (project / "wheels").mkdir()
    debianize(project, hermetic=True if how == "flag" else None)
    rules = (project / "debian" / "rules").read_text()
    assert "--extra-pip-arg=--no-index" in rules
    assert "--extra-pip-arg=--find-links=/usr/share/python-wheels" in rules
    assert "--extra-pip-arg=--find-links=$(CURDIR)/wheels" in rules
    assert "unexport PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS\n" in rules
    assert "export PIP_CONFIG_FILE=/dev/null\n" in rules


def test_no_hermetic_flag_beats_tool_table(project: Path) -> None:
    with (project / "pyproject.toml").open("a") as fh:
        fh.write("\n[tool.aptship]\nhermetic = true\n")
    p, _ = debianize(project, hermetic=False)
    assert not p.hermetic
    assert "--no-index" not in (project / "debian" / "rules").read_text()


def test_hermetic_without_wheels_dir_has_no_project_find_links(project: Path) -> None:
    debianize(project, hermetic=True)
    assert "$(CURDIR)/wheels" not in (project / "debian" / "rules").read_text()


def test_refuses_existing_debian_without_force(project: Path) -> None:
    (project / "debian").mkdir()
    (project / "debian" / "postinst").write_text("#!/bin/sh\n# mine\n")
    with pytest.raises(UsageError, match=r"already exists.*--force"):
        debianize(project)
    assert sorted(p.name for p in (project / "debian").iterdir()) == ["postinst"]

    debianize(project, force=True, revision="2")
    assert (project / "debian" / "postinst").read_text() == "#!/bin/sh\n# mine\n"
    assert "(1.2.0~rc1-2)" in (project / "debian" / "changelog").read_text()


def test_force_removes_a_stale_links_file(project: Path) -> None:
    debianize(project)
    text = COMPLETE.split("[project.scripts]")[0]
    (project / "pyproject.toml").write_text(text)
    debianize(project, force=True)
    assert not (project / "debian" / "my-service.links").exists()


def test_missing_metadata_names_every_field_in_one_error(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "bare",
        '[project]\ndynamic = ["version"]\nauthors = [{ name = "No Mail" }]\n',
    )
    with pytest.raises(UsageError) as info:
        debianize(root)
    message = info.value.message
    for field in ("name", "version", "--version", "description", "maintainer"):
        assert field in message
    assert "dynamic" in message
    assert not (root / "debian").exists()


def test_missing_static_version_and_bad_requires_python(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p",
        '[project]\nname = "p1"\ndescription = "d"\nrequires-python = "three"\n'
        'authors = [{ name = "A", email = "a@example.invalid" }]\n',
    )
    with pytest.raises(UsageError) as info:
        read_project(root)
    assert "version: set [project] version or pass --version" in info.value.message
    assert "requires-python" in info.value.message
    assert "description" not in info.value.message


def test_version_and_maintainer_options(tmp_path: Path) -> None:
    text = COMPLETE.replace('version = "1.2.0rc1"', 'dynamic = ["version"]')
    root = write_project(tmp_path / "dyn", text)
    p = read_project(root, version="2.0.0.post1", maintainer="CI Bot <ci@example.invalid>")
    assert p.debian_version == "2.0.0+post1-1"
    assert p.maintainer == "CI Bot <ci@example.invalid>"
    with pytest.raises(UsageError, match=r"maintainer.*not 'Name <email>'"):
        read_project(root, version="1.0", maintainer="ci@example.invalid")
    with pytest.raises(UsageError, match="not a PEP 440 version"):
        read_project(root, version="latest")


def test_version_option_must_agree_with_a_static_version(project: Path) -> None:
    assert read_project(project, version="1.2.0-rc.1").debian_version == "1.2.0~rc1-1"
    with pytest.raises(UsageError, match=r"says 1\.2\.0rc1 but --version says 1\.3\.0"):
        read_project(project, version="1.3.0")


def test_package_name_must_be_valid_for_debian(tmp_path: Path) -> None:
    root = write_project(tmp_path / "x", COMPLETE.replace('"My_Service"', '"x"'))
    with pytest.raises(UsageError, match="name: 'x' gives the Debian package name 'x'"):
        read_project(root)


def test_no_pyproject_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no pyproject\.toml"):
        debianize(tmp_path)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "python3"),
        ("<4", "python3"),
        (">=3.9", "python3 (>= 3.9)"),
        ("~=3.10", "python3 (>= 3.10)"),
        ("==3.11.*", "python3 (>= 3.11)"),
        (">3.8,!=3.9.*", "python3 (>> 3.8)"),
        (">=3.8, >=3.10.2, <3.13", "python3 (>= 3.10.2)"),
    ],
)
def test_python_dependency(spec: str | None, expected: str) -> None:
    assert python_dependency(spec) == expected


def test_cli_debianize_text_and_json(project: Path) -> None:
    result = invoke(debianize_cmd, project, "--hermetic")
    assert result.exit_code == 0, result.output
    assert "package my-service 1.2.0~rc1-1 (from 1.2.0rc1; hermetic)" in result.output
    assert f"next: aptship build {project}" in result.output

    result = invoke(debianize_cmd, project, "--force", "--json", "--revision", "4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["package"] == "my-service"
    assert data["version"] == "1.2.0~rc1-4"
    assert data["python_version"] == "1.2.0rc1"
    assert data["scripts"] == ["my-service", "my-service-admin"]


# -- build: fast checks with tiny debian/ directories (the real dh-virtualenv build is e2e) --

TINY_CONTROL = """\
Source: tiny
Maintainer: T <t@example.invalid>
Build-Depends: debhelper-compat (= 13)
Rules-Requires-Root: no

Package: tiny
Architecture: all
Description: tiny test package
 built by the aptship test suite
"""


def tiny_source(root: Path, version: str, rules: str = "#!/usr/bin/make -f\n%:\n\tdh $@\n") -> Path:
    debian = root / "debian"
    (debian / "source").mkdir(parents=True)
    (debian / "control").write_text(TINY_CONTROL)
    (debian / "source" / "format").write_text("3.0 (native)\n")
    (debian / "changelog").write_text(
        f"tiny ({version}) unstable; urgency=medium\n\n  * test\n\n"
        " -- T <t@example.invalid>  Wed, 01 May 2024 12:00:00 +0000\n"
    )
    (debian / "rules").write_text(rules)
    (debian / "rules").chmod(0o755)
    return root


def test_build_without_debian_dir_is_a_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="aptship debianize"):
        build(project, log=io.StringIO())


def test_build_refuses_a_stale_changelog(project: Path) -> None:
    debianize(project)
    text = (project / "pyproject.toml").read_text().replace("1.2.0rc1", "1.2.0")
    (project / "pyproject.toml").write_text(text)
    with pytest.raises(UsageError) as err:
        build(project, log=io.StringIO())
    assert "at 1.2.0~rc1-1 but pyproject.toml's version 1.2.0 is Debian version 1.2.0-1:" in (
        err.value.message
    )
    assert "aptship debianize --force" in err.value.message


def test_failed_build_is_invalid_package(tmp_path: Path) -> None:
    src = tiny_source(
        tmp_path / "tiny", "1.0-1", "#!/usr/bin/make -f\n%:\n\t@echo boom-$@; exit 1\n"
    )
    log = io.StringIO()
    with pytest.raises(InvalidPackage, match=r"build failed.*status 2") as err:
        build(src, log=log)
    assert "boom-clean" in log.getvalue()
    assert "  | boom-clean" in err.value.message  # the cause is in the error itself


def test_failed_build_quotes_the_cause_from_a_long_log(tmp_path: Path) -> None:
    """The cause scrolls far above the end of the log (pip, then a traceback, then
    make): the error quotes it and the tail, each bounded."""
    rules = (
        "#!/usr/bin/make -f\n%:\n"
        "\t@echo 'error: Multiple top-level packages discovered in a flat-layout'\n"
        "\t@for i in $$(seq 200); do echo noise-$$i; done\n"
        "\t@python3 -c 'print(\"x\" * 100000)'\n"
        "\t@echo last-line; exit 1\n"
    )
    src = tiny_source(tmp_path / "tiny", "1.0-1", rules)
    with pytest.raises(InvalidPackage) as err:
        build(src, log=io.StringIO())
    message = err.value.message
    assert "errors earlier in the log:\n  | error: Multiple top-level packages" in message
    assert "  | last-line\n" in message
    assert message.endswith("returned exit status 2")
    assert "noise-200" in message and "noise-100\n" not in message
    assert "x" * 401 not in message  # each quoted line is cut
    assert len(message) < 70 * 420 + 2000  # bounded: never the whole log


def test_build_prints_only_the_deb_path(tmp_path: Path) -> None:
    src = tiny_source(tmp_path / "tiny", "1:0.5-1")
    result = invoke(build_cmd, src)
    assert result.exit_code == 0, result.output
    deb = tmp_path / "tiny_0.5-1_all.deb"
    assert result.stdout == f"{deb}\n"
    assert "dpkg-buildpackage" in result.stderr
    assert deb.is_file()

    result = invoke(build_cmd, src, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "deb": str(deb),
        "package": "tiny",
        "version": "1:0.5-1",
        "architecture": "all",
    }
