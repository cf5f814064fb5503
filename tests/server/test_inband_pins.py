"""Pins travel inside the signed channel: a real apt-get, set up by the server's setup
script, fetches ``dists/<ch>/main/pins`` as an index target, checks it against
InRelease, and follows every pin move with ``apt-get update`` alone.  Also: a
tampered pins file is rejected, and two publishes within one second never leave a
host on the older InRelease (a 304 for changed content)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import requests

from publisher.pins import PINS_PATH
from tests.aptenv import AptEnv, set_up_host
from tests.server.conftest import EnvFactory, ServerEnv
from tests.server.live import LiveServer, start_server

pytestmark = pytest.mark.e2e
DebFactory = Callable[..., Path]


def candidate(apt: AptEnv, package: str) -> tuple[str, str]:
    """(installed-independent) candidate version and the pin priority apt shows."""
    out = apt.policy(package).output
    cand = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Candidate:" in line)
    return cand, out


def lists_pins(apt: AptEnv, channel: str = "dev") -> Path:
    (path,) = (apt.root / "var/lib/apt/lists").glob(f"*_dists_{channel}_main_pins")
    return path


def test_apt_follows_the_pins_with_update_alone(
    make_env: EnvFactory, debs: DebFactory, tmp_path: Path, tools: None
) -> None:
    env = make_env()
    repo = env.repo()
    repo.publish("dev", [debs("hello", "1.0-1")])
    repo.publish("dev", [debs("hello", "2.0-1")])
    with served(env, tmp_path) as server:
        apt = host(env, server, tmp_path / "host")
        pref = apt.root / "etc/apt/preferences.d/aptship-dev.pref"
        assert pref.is_symlink() and not pref.exists()  # dangling until apt fetched the pins

        first = apt.update()
        assert first.returncode == 0, first.output
        assert pref.resolve() == lists_pins(apt).resolve()
        # the link's name is the one apt itself gives the target
        where = apt.run("indextargets", "--format", "$(FILENAME)", "Identifier: AptshipPins")
        assert Path(where.stdout.strip()).resolve() == pref.resolve(), where.output
        assert "Pin: version 2.0-1" in pref.read_text()
        assert candidate(apt, "hello")[0] == "2.0-1"
        # apt ran the fleet reporter (curl) after the update: hello is pinned, not installed
        host_id = (apt.root / "etc/aptship/host-id").read_text().strip()
        seen = requests.get(
            f"{server.url}/api/v1/channels/dev/hosts", auth=("t", env.secrets["read"]), timeout=30
        ).json()
        (record,) = [h for h in seen["hosts"] if h["host_id"] == host_id]
        assert record["packages"] == {"hello": None}
        assert record["apt_update"]

        # a rollback moves the pin down; apt follows it with `apt-get update` alone
        repo.rollback("hello", "dev")
        again = apt.update()
        assert again.returncode == 0, again.output
        cand, policy = candidate(apt, "hello")
        assert cand == "1.0-1", policy
        assert "1001" in policy
        got = apt.download("hello")
        assert got.returncode == 0, got.output
        assert (apt.archives / "hello_1.0-1_amd64.deb").exists()

        # the pins file is listed in the signed Release with its hashes
        release = requests.get(
            f"{server.url}/dists/dev/Release", auth=("t", env.secrets["read"]), timeout=30
        ).text
        assert f" {PINS_PATH}\n" in release


def test_a_tampered_pins_file_is_rejected_and_the_old_pins_stay(
    make_env: EnvFactory, debs: DebFactory, tmp_path: Path, tools: None
) -> None:
    env = make_env()
    repo = env.repo()
    repo.publish("dev", [debs("hello", "1.0-1")])
    with served(env, tmp_path) as server:
        apt = host(env, server, tmp_path / "host")
        assert apt.update().returncode == 0
        assert candidate(apt, "hello")[0] == "1.0-1"
        before = lists_pins(apt).read_bytes()

        repo.publish("dev", [debs("hello", "2.0-1")])  # the pin moves to 2.0-1 ...
        record_files = repo.dists.storage.read_bytes(".aptship/state/dev/published.json")
        assert PINS_PATH.encode() in record_files
        root = Path(repo.config.storage.path or "")
        pins_text = (root / "dists/dev" / PINS_PATH).read_text()
        assert "Pin: version 2.0-1" in pins_text
        evil = pins_text.replace("2.0-1", "0.0-0")  # ... and someone swaps the file
        index = root / "dists/dev" / PINS_PATH
        targets = [index, *[index.parent / "by-hash" / p.parent.name / p.name
                            for p in (index.parent / "by-hash").glob("*/*")]]  # fmt: skip
        for target in targets:
            if target.read_text() == pins_text:
                target.write_text(evil)

        tampered = apt.update()
        assert tampered.returncode != 0
        assert "Hash Sum mismatch" in tampered.output or "unexpected size" in tampered.output, (
            tampered.output
        )
        assert lists_pins(apt).read_bytes() == before  # the host keeps its verified pins
        assert candidate(apt, "hello")[0] == "1.0-1"

        repo.reindex(["dev"])  # repair: rendered again from state
        for target in targets:
            target.unlink(missing_ok=True)
        repo.reindex(["dev"])
        healed = apt.update()
        assert healed.returncode == 0, healed.output
        assert candidate(apt, "hello")[0] == "2.0-1"


def test_two_publishes_in_one_second_never_leave_a_host_behind(
    make_env: EnvFactory, debs: DebFactory, tmp_path: Path, tools: None
) -> None:
    """apt revalidates InRelease with If-Modified-Since only (one-second resolution).

    The two publishes are made to land in the same second by giving both InRelease
    files the same modification time (in the future, so that the clock of this
    machine cannot make the second one look settled)."""
    env = make_env()
    repo = env.repo()
    repo.publish("dev", [debs("hello", "1.0-1")])
    root = Path(repo.config.storage.path or "")
    stamp = time.time() + 30
    mutable = ("InRelease", "Release", "Release.gpg", PINS_PATH)
    for name in mutable:
        os.utime(root / "dists/dev" / name, (stamp, stamp))
    with served(env, tmp_path) as server:
        apt = host(env, server, tmp_path / "host")
        assert apt.update().returncode == 0
        assert candidate(apt, "hello")[0] == "1.0-1"
        repo.publish("dev", [debs("hello", "2.0-1")])
        for name in mutable:
            os.utime(root / "dists/dev" / name, (stamp + 0.4, stamp + 0.4))
        second = apt.update()
        assert second.returncode == 0, second.output
        assert candidate(apt, "hello")[0] == "2.0-1", second.output

        # a settled file still answers 304 to the date it was served with
        old = time.time() - 60
        os.utime(root / "dists/dev/InRelease", (old, old))
        auth = ("t", env.secrets["read"])
        url = f"{server.url}/dists/dev/InRelease"
        full = requests.get(url, auth=auth, timeout=30)
        modified = full.headers["Last-Modified"]
        cached = requests.get(url, auth=auth, headers={"If-Modified-Since": modified}, timeout=30)
        assert cached.status_code == 304


# -- helpers ---------------------------------------------------------------------------
def served(env: ServerEnv, tmp_path: Path) -> AbstractContextManager[LiveServer]:
    return start_server(env.config_path, tmp_path / "server")


def host(env: ServerEnv, server: LiveServer, root: Path) -> AptEnv:
    return set_up_host(server.url, "dev", env.secrets["read"], root)
