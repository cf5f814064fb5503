"""``[limits]``: parsed, validated, documented; header limits; the RecursionError net."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask

from publisher.config import LimitsConfig, parse_config
from publisher.errors import BatchTooLarge, ConfigError
from publisher.repo import Repository
from tests.conftest import config_dict
from tests.debs import build_deb
from tests.security.conftest import Hostile, connect, wait_closed


def limits_of(tmp_path: Path, limits: dict[str, object]) -> LimitsConfig:
    data = config_dict({"type": "local", "path": str(tmp_path)}, tmp_path, ["ABCD"])
    data["limits"] = limits
    return parse_config(data, tmp_path / "aptship.toml").limits


def test_limits_defaults_and_overrides(tmp_path: Path) -> None:
    assert limits_of(tmp_path, {}) == LimitsConfig()
    got = limits_of(tmp_path, {"header_timeout": 2, "max_body_bytes": 10, "dpkg_check": False})
    assert (got.header_timeout, got.max_body_bytes, got.dpkg_check) == (2.0, 10, False)


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"max_body_bytes": 0}, "limits.max_body_bytes must be positive"),
        ({"body_grace": -1}, "limits.body_grace must be positive"),
        ({"max_json_depth": "deep"}, "limits.max_json_depth must be of type int"),
        ({"max_batch_files": True}, "limits.max_batch_files must be an integer"),
        ({"bogus": 1}, "unknown key limits.bogus"),
    ],
)
def test_bad_limits_are_config_errors(
    tmp_path: Path, limits: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        limits_of(tmp_path, limits)


def test_every_limit_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs").joinpath
    for name in vars(LimitsConfig()):
        assert f"`{name}`" in docs("config.md").read_text(), name
        assert f"limits.{name}" in docs("security.md").read_text(), name


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(60)) + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", b"431"),
    ],
    ids=["request line", "header count", "header size"],
)
def test_oversized_headers_are_refused(hostile: Hostile, head: bytes, status: bytes) -> None:
    sock = connect(hostile)
    try:
        sock.sendall(head)
        answer = wait_closed(sock, time.monotonic() + 10)
    finally:
        sock.close()
    assert answer.split(b" ")[1] == status, answer[:100]


def test_recursion_error_anywhere_is_a_400(app: Flask) -> None:
    def boom() -> str:
        raise RecursionError("maximum recursion depth exceeded")

    app.add_url_rule("/api/v1/boom", "boom", boom)
    answer = app.test_client().get("/api/v1/boom")
    assert answer.status_code == 400
    assert (answer.json or {})["error"]["code"] == "json_too_deep"


def test_a_batch_past_max_batch_files_changes_nothing(
    make_repo: Callable[..., Repository], tmp_path: Path
) -> None:
    repo = make_repo()
    repo.config = replace(repo.config, limits=LimitsConfig(max_batch_files=2))
    debs = [build_deb(tmp_path, f"p{i}", "1.0-1") for i in range(3)]
    with pytest.raises(BatchTooLarge, match=r"limits\.max_batch_files"):
        repo.publish("dev", debs)
    assert repo.list_entries("dev") == []
    assert len(repo.publish("dev", debs[:2])) == 2
