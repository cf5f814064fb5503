"""docs/tutorial.md as a test: its marked blocks, run in order in a scratch directory.

A ``<!-- tutorial: run -->`` line marks the next fenced block as shell to run; a
``<!-- tutorial: file PATH -->`` line marks the next block as the exact content of
PATH.  All marked blocks become one bash script (``set -euo pipefail``), so ``cd``
and ``export`` carry over as they do for a reader.  It builds two real
dh-virtualenv .debs of the tutorial's flat-layout project, copied exactly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.clirun import aptship_ok

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
MARK_RE = re.compile(r"^<!-- tutorial: (.*?) -->\n", re.M)
BLOCK_RE = re.compile(r"```(\w+)\n(.*?)^```$", re.M | re.S)
HEREDOC = "TUTORIAL_FILE_END"


@dataclass(frozen=True)
class Block:
    kind: str  # "run" or "file"
    path: str | None
    text: str


def marked_blocks(markdown: str) -> list[Block]:
    """Every marked block, in document order; a marker must sit right above a fence."""
    blocks = []
    for mark in MARK_RE.finditer(markdown):
        fence = BLOCK_RE.match(markdown, mark.end())
        assert fence, f"tutorial marker {mark.group(0).strip()!r} is not followed by a block"
        words = mark.group(1).split()
        if words == ["run"]:
            assert fence.group(1) == "sh", "run blocks are shell"
            blocks.append(Block("run", None, fence.group(2)))
        elif len(words) == 2 and words[0] == "file":
            assert not words[1].startswith("/") and ".." not in words[1].split("/")
            blocks.append(Block("file", words[1], fence.group(2)))
        else:
            raise AssertionError(f"unknown tutorial marker {mark.group(0).strip()!r}")
    return blocks


def script(blocks: list[Block]) -> str:
    lines = ["set -euxo pipefail"]
    for block in blocks:
        if block.kind == "run":
            lines.append(block.text)
        else:
            assert block.path is not None and HEREDOC not in block.text
            parent = os.path.dirname(block.path) or "."
            lines.append(f"mkdir -p '{parent}'\ncat > '{block.path}' <<'{HEREDOC}'")
            lines.append(block.text + HEREDOC)
    return "\n".join(lines) + "\n"


def test_the_markers_parse() -> None:
    blocks = marked_blocks(TUTORIAL.read_text())
    files = [b.path for b in blocks if b.kind == "file"]
    assert files == ["hello-service/pyproject.toml", "hello-service/hello_service/__init__.py"]
    runs = [b.text for b in blocks if b.kind == "run"]
    assert len(runs) >= 5
    assert any("debianize --force" in r for r in runs)


def test_a_marker_without_a_block_is_refused() -> None:
    with pytest.raises(AssertionError, match="not followed by a block"):
        marked_blocks("<!-- tutorial: run -->\ntext\n```sh\necho\n```\n")
    with pytest.raises(AssertionError, match="unknown tutorial marker"):
        marked_blocks("<!-- tutorial: walk -->\n```sh\necho\n```\n")


@pytest.mark.e2e
@pytest.mark.slow
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    text = script(marked_blocks(TUTORIAL.read_text()))
    (tmp_path / "tutorial.sh").write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APTSHIP_", "PIP_")) and k != "SOURCE_DATE_EPOCH"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", str(tmp_path / "tutorial.sh")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"the tutorial failed:\n{result.stderr[-8000:]}"
    # What the reader is told happened, happened.
    assert "Pin: version 1.0.0-1" in result.stdout
    debs = sorted(p.name for p in work.glob("hello-service_*.deb"))
    assert [d.split("_")[1] for d in debs] == ["1.0.0-1", "1.1.0-1"]
    pins = aptship_ok(
        "pins",
        "-c",
        "prod",
        "--json",
        config=work / "srv" / "aptship.toml",
        drop_env=("APTSHIP_", "PIP_"),
    )
    assert json.loads(pins)["pins"] == {"hello-service": "1.0.0-1"}
    contents = subprocess.run(
        ["dpkg-deb", "--contents", str(work / debs[1])], capture_output=True, text=True, check=True
    ).stdout
    assert "./opt/venvs/hello-service/bin/hello-service" in contents
    assert "hello_service/__init__.py" in contents
