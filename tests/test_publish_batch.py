"""``aptship publish DIR`` and ``@LIST``: the whole set is one commit and one render,
whatever ``limits.max_batch_files`` says (that limit bounds the API; docs/cli.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.cli import main
from publisher.config import load_config
from publisher.repo import Repository


def aptship(config: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(config), *args])
    return int(exc.value.code or 0)


@pytest.fixture
def config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert aptship(tmp_path / "unused.toml", "init", str(tmp_path / "srv")) == 0
    cfg = tmp_path / "srv" / "aptship.toml"
    cfg.write_text(cfg.read_text() + "\n[limits]\nmax_batch_files = 2\n")
    capsys.readouterr()
    return cfg


def test_directory_and_list_are_one_commit_and_one_render(
    config: Path, debs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "debs-dir"
    folder.mkdir()
    for v in ("1.0-1", "1.1-1", "1.2-1"):
        debs("app", v).rename(folder / f"app_{v}_amd64.deb")
    (folder / "notes.txt").write_text("not a package")
    listing = tmp_path / "list"
    listing.write_text(f"{debs('tool', '0.1')}\n\n{debs('tool', '0.2')}\n")
    repo = Repository(load_config(config))
    assert aptship(config, "publish", "--channel", "dev", str(folder), f"@{listing}") == 0
    out = capsys.readouterr().out
    assert out.count("published: ") == 5, out
    assert repo.states.read_head("dev").generation == 1  # one commit
    record = repo.storage.read_bytes(".aptship/state/dev/published.json")
    assert b'"generation": 1' in record  # rendered once, showing that commit
    assert {r["version"] for r in repo.list_entries("dev")} == {
        "1.0-1",
        "1.1-1",
        "1.2-1",
        "0.1",
        "0.2",
    }
    # the API path keeps its limit
    from publisher.errors import BatchTooLarge

    with pytest.raises(BatchTooLarge):
        repo.publish("dev", sorted(folder.glob("*.deb")))


def test_one_bad_file_in_a_directory_writes_nothing(
    config: Path, debs: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "debs-dir"
    folder.mkdir()
    debs("app", "1.0-1").rename(folder / "a.deb")
    (folder / "b.deb").write_bytes(b"!<arch>\nnot really")
    assert aptship(config, "publish", "--channel", "dev", str(folder)) != 0
    assert "b.deb" in capsys.readouterr().err
    root = config.parent / "repo"
    assert not list(root.rglob("pool/**/*.deb"))


@pytest.mark.parametrize(
    ("arg", "message"),
    [("@{tmp}/missing.list", "cannot read the file list"), ("{tmp}/empty", "holds no .deb")],
)
def test_unusable_arguments_are_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arg: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    assert aptship(config, "publish", "--channel", "dev", arg.format(tmp=tmp_path)) != 0
    assert message in capsys.readouterr().err
