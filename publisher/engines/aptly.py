"""The aptly engine: an existing aptly server does the package-set work.

Each aptship channel is an aptly local repo ``<repo_prefix><channel>``, published as
distribution ``<channel>``, component ``main``, under ``publish_prefix``.  aptship
keeps its own state (entries, pins, pin history, audit) in its storage as with the
native engine; aptly holds the packages and signs the published indexes.

* publish: each .deb is streamed to a unique upload directory of aptly's files API
  and added to the channel's repo, then the distribution is published or updated;
* promote: the package is found by name/version/architecture in the source repo
  and added by key to the target repo;
* remove and retention: deleted by key;
* errors: "file already exists and is different" -> ImmutableConflict; 409 "used by
  other tasks" -> retried with backoff, then a clear error; unreachable -> a
  StorageError naming the URL.

Every aptly call happens before aptship commits its state, so when aptly fails the
state is unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from publisher.debfile import hash_file
from publisher.errors import (
    ConfigError,
    ImmutableConflict,
    NotFound,
    StorageError,
)
from publisher.state import Entry, now_iso
from publisher.storage.local import LocalStorage

if TYPE_CHECKING:
    from publisher.config import AptlyConfig, Config
    from publisher.debfile import DebInfo
    from publisher.engines import Progress
    from publisher.state import Head, StateStore
    from publisher.storage.base import Storage
    from publisher.sweep import Restore, Sweep

log = logging.getLogger("aptship.aptly")
T = TypeVar("T")
RETRIES = 6
CHUNK = 1024 * 1024


def _query(entry_package: str, version: str, arch: str) -> str:
    return f"Name (= {entry_package}), $Version (= {version}), $Architecture (= {arch})"


class _MultipartFile:
    """A ``multipart/form-data`` body with one file part, read from disk in chunks.

    It has a length, so requests sends a Content-Length instead of chunked encoding
    (aptly's files API does not take chunked multipart bodies).
    """

    def __init__(self, name: str, path: Path) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._path = path
        self._parts: list[Any] = []

    def __len__(self) -> int:
        return len(self._head) + self._path.stat().st_size + len(self._tail)

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        with self._path.open("rb") as fh:
            self._parts = [io.BytesIO(self._head), fh, io.BytesIO(self._tail)]
            yield

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self._parts and (size < 0 or len(out) < size):
            chunk = self._parts[0].read(CHUNK if size < 0 else size - len(out))
            if chunk:
                out += chunk
            else:
                self._parts.pop(0)
        return out


class AptlyEngine:
    name = "aptly"
    mirrors_state = True
    publishes_keyring = False

    def __init__(self, config: Config, states: StateStore, actor: Callable[[], str]) -> None:
        if config.aptly is None:
            raise ConfigError(f"{config.path}: engine = 'aptly' needs an [aptly] table")
        self.config = config
        self.cfg: AptlyConfig = config.aptly
        self.states = states
        self.actor = actor
        self._sources: dict[str, Path] = {}  # sha256 -> local .deb, from prepare to apply

    # -- plumbing --------------------------------------------------------------------
    @cached_property
    def client(self) -> Any:
        from aptly_api import Client

        auth = None
        if self.cfg.username:
            auth = (self.cfg.username, self.cfg.password())
        return Client(self.cfg.url, timeout=self.cfg.timeout, http_auth=auth)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from aptly_api.base import AptlyAPIException

        delay = 0.2
        for attempt in range(RETRIES):
            try:
                return fn()
            except requests.ConnectionError as exc:
                raise StorageError(
                    f"aptly at {self.cfg.url} is unreachable ({what}): {exc}"
                ) from None
            except requests.Timeout:
                raise StorageError(f"aptly at {self.cfg.url} timed out ({what})") from None
            except AptlyAPIException as exc:
                text = str(exc)
                status = getattr(exc, "status_code", 0)
                if "already exists and is different" in text:
                    raise ImmutableConflict(f"aptly refused {what}: {text}") from None
                if status == 409 and "used by other tasks" in text and attempt < RETRIES - 1:
                    time.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
                    delay *= 2
                    continue
                if status == 404:
                    raise NotFound(f"aptly: {what}: {text}") from None
                raise StorageError(f"aptly at {self.cfg.url} failed ({what}): {text}") from None
        raise StorageError(f"aptly at {self.cfg.url} stayed busy ({what}); try again")

    def repo_name(self, channel: str) -> str:
        return f"{self.cfg.repo_prefix}{channel}"

    def _ensure_repo(self, channel: str) -> None:
        name = self.repo_name(channel)
        existing = {r.name for r in self._call("list repos", self.client.repos.list)}
        if name not in existing:
            self._call(
                f"create repo {name}",
                lambda: self.client.repos.create(
                    name,
                    comment=f"aptship channel {channel}",
                    default_distribution=channel,
                    default_component="main",
                ),
            )

    def _find(self, repo: str, package: str, version: str, arch: str) -> list[Any]:
        return list(
            self._call(
                f"search {repo}",
                lambda: self.client.repos.search_packages(
                    repo, query=_query(package, version, arch), detailed=True
                ),
            )
        )

    # -- Engine ------------------------------------------------------------------------
    def prepare(self, infos: Sequence[DebInfo], progress: Progress | None) -> list[Entry]:
        repos = {r.name for r in self._call("list repos", self.client.repos.list)}
        ours = sorted(n for n in repos if n.startswith(self.cfg.repo_prefix))
        entries = []
        for info in infos:
            hashes = hash_file(info.path)
            for repo in ours:
                for pkg in self._find(repo, info.package, info.version, info.architecture):
                    theirs = (pkg.fields or {}).get("SHA256")
                    if theirs and theirs != hashes["sha256"]:
                        raise ImmutableConflict(
                            f"{info.path.name}: {info.package} {info.version} "
                            f"({info.architecture}) is already in aptly repo {repo} with "
                            "different content; publish a new version instead"
                        )
            self._sources[hashes["sha256"]] = info.path
            entries.append(
                Entry(
                    package=info.package,
                    version=info.version,
                    architecture=info.architecture,
                    filename=info.pool_key,
                    size=info.size,
                    md5=hashes["md5"],
                    sha1=hashes["sha1"],
                    sha256=hashes["sha256"],
                    control=info.control,
                    published_at=now_iso(),
                    published_by=self.actor(),
                )
            )
            if progress:
                progress(1)
        return entries

    def apply(self, channel: str, added: Sequence[Entry], removed: Sequence[Entry]) -> None:
        if not added and not removed:
            return
        self._ensure_repo(channel)
        repo = self.repo_name(channel)
        uploads = [e for e in added if e.sha256 in self._sources]
        if uploads:
            folder = f"aptship-{uuid.uuid4().hex}"
            for e in uploads:
                self._upload(folder, Path(e.filename).name, self._sources[e.sha256])
            report = self._call(
                f"add uploads to {repo}", lambda: self.client.repos.add_uploaded_file(repo, folder)
            )
            if report.failed_files:
                raise StorageError(f"aptly could not add {report.failed_files}: {report.report}")
        keys = []
        for e in added:
            if e.sha256 in self._sources:
                continue
            keys += self._keys_anywhere(e)
        if keys:
            self._call(
                f"add packages to {repo}",
                lambda: self.client.repos.add_packages_by_key(repo, *keys),
            )
        gone = [
            p.key for e in removed for p in self._find(repo, e.package, e.version, e.architecture)
        ]
        if gone:
            self._call(
                f"delete packages from {repo}",
                lambda: self.client.repos.delete_packages_by_key(repo, *gone),
            )

    def _keys_anywhere(self, entry: Entry) -> list[str]:
        repos = {r.name for r in self._call("list repos", self.client.repos.list)}
        for repo in sorted(n for n in repos if n.startswith(self.cfg.repo_prefix)):
            found = self._find(repo, entry.package, entry.version, entry.architecture)
            matching = [p.key for p in found if (p.fields or {}).get("SHA256") == entry.sha256]
            if matching:
                return matching
        raise NotFound(
            f"{entry.package} {entry.version} ({entry.architecture}) is not in any aptly repo "
            f"with prefix {self.cfg.repo_prefix!r}"
        )

    def _upload(self, folder: str, name: str, path: Path) -> None:
        """Stream one file to aptly's files API (multipart, never the whole file in memory)."""
        body = _MultipartFile(name, path)

        def send() -> None:
            with body.open():
                resp = requests.post(
                    f"{self.cfg.url.rstrip('/')}/api/files/{folder}",
                    data=body,
                    headers={"Content-Type": body.content_type},
                    auth=(self.cfg.username, self.cfg.password()) if self.cfg.username else None,
                    timeout=self.cfg.timeout,
                )
            if resp.status_code >= 400:
                from aptly_api.base import AptlyAPIException

                raise AptlyAPIException(resp.text, status_code=resp.status_code)

        self._call(f"upload {name}", send)

    def restorers(
        self, infos: Sequence[DebInfo], entries: Sequence[Entry]
    ) -> Mapping[str, Restore]:
        """aptly's pool is aptly's: nothing of aptship's to restore."""
        return {}

    def render(
        self,
        channel: str,
        *,
        force: bool = False,
        head: Head | None = None,
        since: Sweep | None = None,
    ) -> int:
        chan = self.config.channel(channel)
        self._ensure_repo(channel)
        prefix = self.cfg.publish_prefix
        signing: dict[str, Any] = {
            "sign_gpgkey": self.cfg.gpg_key or self.config.signing.keys[0],
            "sign_keyring": self.cfg.gpg_keyring,
            "sign_secret_keyring": self.cfg.gpg_secret_keyring,
            "sign_passphrase_file": str(self.cfg.passphrase_file)
            if self.cfg.passphrase_file
            else None,
        }
        published = {
            (p.prefix, p.distribution)
            for p in self._call("list publishes", self.client.publish.list)
        }
        if (prefix, channel) in published:
            self._call(
                f"update publish {channel}",
                lambda: self.client.publish.update(
                    prefix=prefix, distribution=channel, force_overwrite=False, **signing
                ),
            )
        else:
            self._call(
                f"publish {channel}",
                lambda: self.client.publish.publish(
                    source_kind="local",
                    sources=[{"Name": self.repo_name(channel), "Component": "main"}],
                    architectures=list(chan.architectures),
                    prefix=prefix,
                    distribution=channel,
                    origin=self.config.origin,
                    label=self.config.label,
                    acquire_by_hash=True,
                    **signing,
                ),
            )
        return self.states.read_head(channel).generation

    @cached_property
    def serving(self) -> Storage:
        if self.cfg.public_dir is None:
            raise ConfigError(
                f"{self.config.path}: aptly.public_dir (aptly's rootDir/public) is needed to "
                "serve an aptly-published repository"
            )
        root = self.cfg.public_dir
        if self.cfg.publish_prefix not in (".", ""):
            root = root / self.cfg.publish_prefix
        return LocalStorage(root)
