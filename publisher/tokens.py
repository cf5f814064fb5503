"""Access tokens: random secrets whose SHA-256 digests live in the tokens file.

The tokens file (``server.tokens_file``) is JSON::

    {"format": 1, "tokens": [{"name": "ci", "sha256": "<hex>", "role": "publish",
                              "channels": ["dev"], "created_at": "2024-...Z"}]}

It never holds a secret: :meth:`TokenStore.create` returns the secret once and
stores only its digest.  Writes are atomic (temp file with mode 0600, fsync,
``os.replace``) and serialised with ``flock`` on the file's directory, so two
``aptship token create`` runs never lose each other's token and no lock file can go
stale.  Readers re-read the file whenever its inode, mtime or size changes, so token
changes take effect in a running server without a restart.

Roles are ordered ``read < publish < promote < admin``; a token may act with its
role or any lower one, on the channels it lists (``"*"`` = every channel).  A token
may also list package-name patterns (``"packages": ["svc-*"]``, shell-style, see
:mod:`fnmatch`): it then publishes, promotes, rolls back and removes only packages
whose names match one of them (reading is not limited).  No list = every package.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from publisher.errors import ConfigError, NotFound, UsageError

ROLES = ("read", "publish", "promote", "admin")
ALL_CHANNELS = "*"
FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_PATTERN_RE = re.compile(r"^[a-z0-9*?][a-z0-9.+*?-]{0,99}$")


def role_rank(role: str) -> int:
    """Position of ``role`` in ``ROLES``; UsageError for an unknown role."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise UsageError(f"unknown role {role!r} (roles: {', '.join(ROLES)})") from None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Token:
    """One token as stored (never its secret)."""

    name: str
    sha256: str
    role: str
    channels: tuple[str, ...]
    created_at: str = ""
    packages: tuple[str, ...] = ()  # name patterns this token may change; () = all

    def has_role(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)

    def covers(self, channel: str) -> bool:
        return ALL_CHANNELS in self.channels or channel in self.channels

    def covers_package(self, package: str) -> bool:
        """May this token change ``package`` (publish, promote, roll back, remove)?"""
        return not self.packages or any(
            fnmatch.fnmatchcase(package, pattern) for pattern in self.packages
        )

    def allows(self, role: str, channel: str) -> bool:
        """May this token act with ``role`` on ``channel``?"""
        return self.has_role(role) and self.covers(channel)

    def to_json(self) -> dict[str, Any]:
        """The public description (without the digest)."""
        data = asdict(self)
        del data["sha256"]
        data["channels"] = list(self.channels)
        data["packages"] = list(self.packages)
        return data


def _parse(data: bytes, path: Path) -> list[Token]:
    try:
        raw = json.loads(data) if data.strip() else {"tokens": []}
        return [
            Token(
                name=str(t["name"]),
                sha256=str(t["sha256"]),
                role=str(t["role"]),
                channels=tuple(str(c) for c in t["channels"]),
                created_at=str(t.get("created_at", "")),
                packages=tuple(str(p) for p in t.get("packages", ())),
            )
            for t in raw["tokens"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"tokens file {path} is corrupt: {exc}") from exc


class TokenStore:
    """The tokens file, re-read whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._tokens: list[Token] = []

    # -- reading -------------------------------------------------------------
    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {self.path}: {exc.strerror}") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> list[Token]:
        try:
            return _parse(self.path.read_bytes(), self.path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {self.path}: {exc.strerror}") from exc

    def tokens(self) -> list[Token]:
        """Every token, re-read if the file changed since the last call."""
        sig = self._signature()
        with self._lock:
            if sig is None:
                self._seen, self._tokens = None, []
            elif sig != self._seen:
                self._tokens = self._read()
                self._seen = sig
            return list(self._tokens)

    def list(self) -> list[Token]:
        return sorted(self.tokens(), key=lambda t: t.name)

    def authenticate(self, secret: str) -> Token | None:
        """The token whose digest matches ``secret`` (constant-time per comparison)."""
        wanted = digest(secret)
        found: Token | None = None
        for token in self.tokens():
            if hmac.compare_digest(wanted, token.sha256):
                found = token
        return found

    # -- writing -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory, os.O_RDONLY)
        except OSError as exc:
            raise ConfigError(f"cannot open {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _write(self, tokens: Iterable[Token]) -> None:
        body = {
            "format": FORMAT,
            "tokens": [
                asdict(t) | {"channels": list(t.channels), "packages": list(t.packages)}
                for t in tokens
            ],
        }
        data = json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"
        tmp = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(6)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ConfigError(f"cannot write tokens file {self.path}: {exc.strerror}") from exc

    def create(
        self, name: str, role: str, channels: Iterable[str], packages: Iterable[str] = ()
    ) -> str:
        """Add a token and return its secret (shown once, never stored)."""
        if not _NAME_RE.match(name):
            raise UsageError(
                f"invalid token name {name!r}: use letters, digits, '.', '_', '@', '-' "
                "(at most 64 characters)"
            )
        role_rank(role)
        chans = tuple(dict.fromkeys(channels))
        if not chans:
            raise UsageError("a token needs at least one channel (or '*' for all channels)")
        patterns = tuple(dict.fromkeys(packages))
        for pattern in patterns:
            if not _PATTERN_RE.match(pattern):
                raise UsageError(
                    f"invalid package pattern {pattern!r}: use package-name characters "
                    "and the wildcards '*', '?' (e.g. 'svc-*')"
                )
        secret = secrets.token_urlsafe(32)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        token = Token(name, digest(secret), role, chans, created, patterns)
        with self._locked():
            current = self._read()
            if any(t.name == name for t in current):
                raise UsageError(f"a token named {name!r} already exists; revoke it first")
            self._write([*current, token])
        return secret

    def revoke(self, name: str) -> Token:
        """Remove the token called ``name``; NotFound if there is none."""
        with self._locked():
            current = self._read()
            gone = [t for t in current if t.name == name]
            if not gone:
                raise NotFound(f"no token named {name!r} in {self.path}")
            self._write(t for t in current if t.name != name)
        return gone[0]


def open_tokens(tokens_file: Path | None) -> TokenStore:
    """The store for ``server.tokens_file``; ConfigError if the key is not set."""
    if tokens_file is None:
        raise ConfigError(
            "server.tokens_file is not set: name a file for the access tokens in [server]"
        )
    return TokenStore(tokens_file)
