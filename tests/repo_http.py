"""A repository over loopback HTTP, read by a real apt: serve it, point an isolated apt
at it, keep ``apt-get update`` running in a loop, and read its Packages index."""

from __future__ import annotations

import lzma
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from publisher.repo import KEYRING_KEY, Repository
from publisher.storage.base import Storage
from tests.aptenv import AptEnv, AptResult
from tests.httpserve import serve_directory
from tests.s3proxy import serve_storage


def index_packages(storage: Storage, channel: str = "dev", arch: str = "amd64") -> list[str]:
    """``name version`` of every stanza in dists/<channel>/main/binary-<arch>/Packages.xz."""
    data = lzma.decompress(storage.read_bytes(f"dists/{channel}/main/binary-{arch}/Packages.xz"))
    text = data.decode()
    names = re.findall(r"^Package: (\S+)$", text, re.M)
    versions = re.findall(r"^Version: (\S+)$", text, re.M)
    assert len(names) == len(versions)
    return [f"{n} {v}" for n, v in zip(names, versions, strict=True)]


@contextmanager
def serve_repo(repo: Repository) -> Iterator[str]:
    """Base URL of the repository over loopback HTTP: the directory, or the S3 proxy."""
    root = repo.config.storage.path
    if repo.config.storage.type == "local" and root is not None:
        with serve_directory(root) as (url, _requests):
            yield url
    else:
        with serve_storage(repo.storage) as url:
            yield url


def apt_for(repo: Repository, url: str, root: Path) -> AptEnv:
    """An isolated apt in ``root`` with the repository's dev channel as its source."""
    apt = AptEnv(root)
    key = root / "archive-keyring.asc"
    key.write_bytes(repo.storage.read_bytes(KEYRING_KEY))
    apt.add_source(url, "dev", key)
    return apt


class AptLoop(threading.Thread):
    """`apt-get update` over and over until stopped; every result is kept."""

    def __init__(self, apt: AptEnv) -> None:
        super().__init__(daemon=True)
        self.apt = apt
        self.results: list[AptResult] = []
        self.stop = threading.Event()
        self._finished = threading.Condition()

    def run(self) -> None:
        while not self.stop.is_set():
            result = self.apt.update()
            with self._finished:
                self.results.append(result)
                self._finished.notify_all()

    def wait_for_fresh_update(self, timeout: float = 120.0) -> None:
        """Return once an update that started after this call has finished.

        The update running now may have started before the caller's last change, so
        wait for two more results.  Raises if the loop does not get there in time.
        """
        with self._finished:
            target = len(self.results) + 2
            if not self._finished.wait_for(lambda: len(self.results) >= target, timeout):
                raise TimeoutError(f"apt-get update did not finish twice within {timeout}s")
