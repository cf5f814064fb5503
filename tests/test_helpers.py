"""The shared test helpers fail loudly: the TOML writer, the CLI runner, wait_until_up."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import aptship, run_main
from tests.procs import free_port, stop, wait_until_up
from tests.tomlfile import toml_dumps, write_toml


def test_toml_round_trips_or_raises(tmp_path: Path) -> None:
    data = {"a": {"b": [1, "x"], "c": True, "d": {"e": 0.5}}}
    assert write_toml(tmp_path / "x.toml", data).read_text() == toml_dumps(data)
    with pytest.raises(ValueError, match="does not round-trip"):
        toml_dumps({"keys": ("A", "B")})  # a tuple reads back as a list
    with pytest.raises(TypeError):
        toml_dumps({"path": None})


def test_in_process_and_subprocess_runners_agree(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    code, out, err = run_main("list", config=missing)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and str(missing) in err
    done = aptship("list", config=missing, env={"APTSHIP_ACTOR": "x"})
    assert (done.returncode, done.stdout, done.stderr) == (code, out, err)


def test_wait_until_up_fails_when_the_process_dies() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the port it gave is free
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        with pytest.raises(RuntimeError, match="exited with 3:\nthe log"):
            wait_until_up(f"http://127.0.0.1:{port}/", proc, lambda: "the log", timeout=60)
    finally:
        stop(proc)
