"""docs/cli.md against the real CLI: every command's ``--help`` is walked and compared
with the command's rows in the reference tables, so neither can drift."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from publisher.cli import cli
from tests.clirun import invoke

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
OPTION_RE = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
# Commands whose output is not data (serve replaces itself with gunicorn).
NO_JSON = {"serve"}


def subcommands(group: click.Group) -> dict[str, click.Command]:
    """A group's commands through click's API (the top group loads some lazily)."""
    ctx = click.Context(group)
    found = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(subcommands(group).items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield from commands(command, path)
        else:
            yield path


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = subcommands(command).get(name)
        assert found is not None, path
        command = found
    return command


def documented_synopses() -> list[str]:
    """The first cell of every table row that starts with `aptship ...`."""
    rows = re.findall(r"^\| `(aptship [^`]*)` \|", DOC.read_text(), flags=re.M)
    assert len(rows) > 10
    return rows


def synopses_of(path: tuple[str, ...]) -> list[str]:
    words = " ".join(("aptship", *path))
    return [s for s in documented_synopses() if s == words or s.startswith(words + " ")]


def help_options(path: tuple[str, ...]) -> set[str]:
    """The long options that ``aptship PATH --help`` lists (without --help)."""
    result = invoke(cli, *path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(('cli', *path))}")
    options_part = result.output.split("\nOptions:\n", 1)[1]
    lines = [line for line in options_part.splitlines() if line.startswith("  -")]
    found = {o for line in lines for o in OPTION_RE.findall(line.split("  ")[1])}
    return found - {"--help"}


ALL = list(commands())


def test_the_walk_sees_every_command() -> None:
    names = {" ".join(p) for p in ALL}
    assert {"publish", "promote", "rollback", "pins", "key export", "token create", "serve"} <= (
        names
    )
    assert len(names) >= 20


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_help_matches_the_reference(path: tuple[str, ...]) -> None:
    rows = synopses_of(path)
    assert rows, f"docs/cli.md has no row for `aptship {' '.join(path)}`"
    documented = {o for row in rows for o in OPTION_RE.findall(row)}
    shown = help_options(path)
    assert shown == documented, f"--help shows {sorted(shown)}, docs/cli.md {sorted(documented)}"


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_option_has_help_text(path: tuple[str, ...]) -> None:
    command = command_at(path)
    assert command.help, f"`aptship {' '.join(path)}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"`aptship {' '.join(path)}` option {param.opts} has no help"


DATA = [p for p in ALL if p[-1] not in NO_JSON]


@pytest.mark.parametrize("path", DATA, ids=[" ".join(p) for p in DATA])
def test_data_commands_take_json(path: tuple[str, ...]) -> None:
    assert "--json" in help_options(path)


def test_channel_is_spelled_the_same_everywhere() -> None:
    for path in ALL:
        for param in command_at(path).params:
            if isinstance(param, click.Option) and "--channel" in param.opts:
                assert param.opts == ["--channel", "-c"], path
                assert param.metavar == "CH", path


def test_every_documented_command_exists() -> None:
    known = {" ".join(("aptship", *p)) for p in ALL}
    for synopsis in documented_synopses():
        words = synopsis.split()
        assert any(" ".join(words[:n]) in known for n in (2, 3)), (
            f"docs/cli.md documents `{synopsis}`, which is no command"
        )


def test_global_options_are_documented() -> None:
    first_block = DOC.read_text().split("```")[1]
    global_part = first_block.split("COMMAND")[0]
    assert help_options(()) == set(OPTION_RE.findall(global_part))


def test_publish_help_names_no_missing_argument() -> None:
    """``publish --help`` used to speak of a CHANNEL argument that does not exist."""
    text = invoke(cli, "publish", "--help").output
    assert "CHANNEL" not in text
    assert "Usage: cli publish [OPTIONS] FILES..." in text


def test_exit_code_table_matches_the_error_tree() -> None:
    """docs/cli.md's exit table is the tree in publisher/errors.py: one code per class."""
    from publisher import errors

    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", DOC.read_text(), flags=re.M)
    documented = {
        name: int(code) for code, classes in rows for name in re.findall(r"`(\w+)`", classes)
    }
    assert documented.pop("AptshipError", None) == 1
    for name, code in documented.items():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.AptshipError) and cls.exit_code == code, name
    tree: list[type[errors.AptshipError]] = [errors.AptshipError]
    for cls in tree:
        tree.extend(cls.__subclasses__())
        if cls is errors.AptshipError or cls.__name__ in documented:
            continue
        # an undocumented class is an internal refinement of a documented parent
        parents = [p for p in cls.__mro__[1:] if p.__name__ in documented]
        assert parents and parents[0].exit_code == cls.exit_code, cls.__name__


def test_lazy_command_map_names_every_command_of_its_modules() -> None:
    """COMMAND_MODULES maps each command of each module (its ``COMMANDS``) to that
    module and nothing else; a publish imports none of them."""
    import importlib
    import subprocess
    import sys

    from publisher.cli import COMMAND_MODULES

    found = {
        command.name: module
        for module in set(COMMAND_MODULES.values())
        for command in importlib.import_module(module).COMMANDS
    }
    assert found == COMMAND_MODULES
    ctx = click.Context(cli)
    assert set(COMMAND_MODULES) <= set(cli.list_commands(ctx))
    for name in COMMAND_MODULES:
        assert cli.get_command(ctx, name) is not None, name
    probe = (
        "import sys; import publisher.cli as c; "
        "c.cli.get_command(c.click.Context(c.cli), 'publish'); "
        "print(sorted(set(c.COMMAND_MODULES.values()) & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out
