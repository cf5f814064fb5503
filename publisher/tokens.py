"""Access tokens: random secrets whose SHA-256 digests live in the storage backend.

Every server on one bucket (or directory) shares the same tokens (docs/server.md,
"Tokens" and "Several servers on one bucket").  The layout is one small JSON object
per token, written create-only, so concurrent writers never lose each other's
tokens and no read-modify-write of a shared file is needed::

    .aptship/tokens/names/<name>.json      {"sha256": "<hex>"}   claims the name
    .aptship/tokens/sha256/<hex>.json      the token: name, role, channels, packages,
                                           created_at, expires_at (exchanged tokens)
    .aptship/tokens/imported/<hex>         a digest imported from server.tokens_file

No object holds a secret: :meth:`TokenStore.create` returns the secret once and
stores only its digest.  Creating claims the name first (create-only), then writes
the token; revoking deletes the token first, then the name.  A request's secret is
looked up by reading the one object named by its digest, never by listing.

Lookups are cached per process for ``cache_seconds`` (positive and negative
answers, in two bounded LRU maps), so a token created or revoked through any server
works or stops working on every server within that time.  The store that revokes a
token forgets it at once.  Secrets an attacker makes up fill only the negative map
(bounded), and each costs at most one read of one object.

Roles are ordered ``read < publish < promote < admin``; a token may act with its
role or any lower one, on the channels it lists (``"*"`` = every channel).  A token
may also list package-name patterns (``"packages": ["svc-*"]``, shell-style, see
:mod:`fnmatch`): it then publishes, promotes, rolls back and removes only packages
whose names match one of them (reading is not limited).  No list = every package.
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from publisher.errors import ConfigError, NotFound, PreconditionFailed, UsageError

if TYPE_CHECKING:
    from publisher.config import Config
    from publisher.storage.base import Storage

ROLES = ("read", "publish", "promote", "admin")
ALL_CHANNELS = "*"
FORMAT = 1
TOKENS_PREFIX = ".aptship/tokens/"
NAMES_PREFIX = TOKENS_PREFIX + "names/"
DIGESTS_PREFIX = TOKENS_PREFIX + "sha256/"
IMPORTED_PREFIX = TOKENS_PREFIX + "imported/"
DEFAULT_CACHE_SECONDS = 5.0
CACHE_SIZE = 4096  # entries in each of the positive and negative lookup caches
MAX_RECORD_BYTES = 64 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_PATTERN_RE = re.compile(r"^[a-z0-9*?][a-z0-9.+*?-]{0,99}$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


def role_rank(role: str) -> int:
    """Position of ``role`` in ``ROLES``; UsageError for an unknown role."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise UsageError(f"unknown role {role!r} (roles: {', '.join(ROLES)})") from None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def utc_stamp(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))


@dataclass(frozen=True)
class Token:
    """One token as stored (never its secret)."""

    name: str
    sha256: str
    role: str
    channels: tuple[str, ...]
    created_at: str = ""
    packages: tuple[str, ...] = ()  # name patterns this token may change; () = all
    expires_at: float | None = None  # seconds since the epoch; None = never
    # Who this token was issued to when it came from a trusted publisher (OIDC):
    # {"publisher": name, "claims": {...}}; shown in the audit log.
    grant: dict[str, Any] | None = field(default=None, compare=False, hash=False)

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

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= (
            self.expires_at
        )

    def to_json(self) -> dict[str, Any]:
        """The public description (without the digest)."""
        data: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "channels": list(self.channels),
            "packages": list(self.packages),
            "created_at": self.created_at,
        }
        if self.expires_at is not None:
            data["expires_at"] = utc_stamp(self.expires_at)
        if self.grant is not None:
            data["grant"] = self.grant
        return data

    def record(self) -> dict[str, Any]:
        """What is stored: the public description plus the digest."""
        data = self.to_json() | {"format": FORMAT, "sha256": self.sha256}
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        return data


def token_from_record(raw: Any) -> Token:
    """A :class:`Token` from its stored JSON; ValueError/KeyError/TypeError if malformed."""
    if not isinstance(raw, dict):
        raise TypeError("a token record must be a JSON object")
    expires = raw.get("expires_at")
    grant = raw.get("grant")
    return Token(
        name=str(raw["name"]),
        sha256=str(raw["sha256"]),
        role=str(raw["role"]),
        channels=tuple(str(c) for c in raw["channels"]),
        created_at=str(raw.get("created_at", "")),
        packages=tuple(str(p) for p in raw.get("packages", ())),
        expires_at=None if expires is None else float(expires),
        grant=grant if isinstance(grant, dict) else None,
    )


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid token name {name!r}: use letters, digits, '.', '_', '@', '-' "
            "(at most 64 characters)"
        )
    return name


def check_grant(
    role: str, channels: Iterable[str], packages: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate a role, channels and package patterns; return them deduplicated."""
    role_rank(role)
    chans = tuple(dict.fromkeys(channels))
    if not chans:
        raise UsageError("a token needs at least one channel (or '*' for all channels)")
    patterns = tuple(dict.fromkeys(packages))
    for pattern in patterns:
        if not isinstance(pattern, str) or not _PATTERN_RE.match(pattern):
            raise UsageError(
                f"invalid package pattern {pattern!r}: use package-name characters "
                "and the wildcards '*', '?' (e.g. 'svc-*')"
            )
    return chans, patterns


class _Lru:
    """A small bounded map digest -> (fetched at, token or None)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[float, Token | None]] = OrderedDict()

    def get(self, key: str, now: float, ttl: float) -> tuple[bool, Token | None]:
        hit = self.items.get(key)
        if hit is None or now - hit[0] >= ttl:
            return False, None
        self.items.move_to_end(key)
        return True, hit[1]

    def put(self, key: str, value: Token | None, now: float) -> None:
        self.items[key] = (now, value)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class TokenStore:
    """The tokens in ``storage``, with a short per-process lookup cache."""

    def __init__(
        self,
        storage: Storage,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._found = _Lru(cache_size)
        self._missing = _Lru(cache_size)

    # -- reading ---------------------------------------------------------------------
    def _read_record(self, sha: str) -> Token | None:
        try:
            data = self.storage.read_bytes(f"{DIGESTS_PREFIX}{sha}.json")
        except NotFound:
            return None
        try:
            if len(data) > MAX_RECORD_BYTES:
                raise ValueError("too large")
            return token_from_record(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"token record {DIGESTS_PREFIX}{sha}.json in {self.storage.describe()} "
                f"is corrupt ({exc}); revoke the token by name"
            ) from exc

    def lookup(self, sha: str) -> Token | None:
        """The unexpired token with digest ``sha``, or None (cached for cache_seconds)."""
        if not _DIGEST_RE.match(sha):
            return None
        now = self.clock()
        with self._lock:
            hit, token = self._found.get(sha, now, self.cache_seconds)
            if not hit:
                hit, token = self._missing.get(sha, now, self.cache_seconds)
        if not hit:
            token = self._read_record(sha)
            with self._lock:
                (self._found if token is not None else self._missing).put(sha, token, now)
        if token is None or token.expired():
            return None
        # The storage key is the digest; compare the stored digest in constant time too.
        return token if hmac.compare_digest(token.sha256, sha) else None

    def authenticate(self, secret: str) -> Token | None:
        """The token whose digest matches ``secret``, or None."""
        return self.lookup(digest(secret))

    def _name_digest(self, name: str) -> str | None:
        try:
            raw = json.loads(self.storage.read_bytes(f"{NAMES_PREFIX}{check_name(name)}.json"))
            sha = str(raw["sha256"])
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"token name record for {name!r} is corrupt: {exc}") from exc
        return sha if _DIGEST_RE.match(sha) else None

    def get(self, name: str) -> Token | None:
        """The token called ``name`` (read from storage, not cached), or None."""
        sha = self._name_digest(name)
        return self._read_record(sha) if sha else None

    def list(self, *, include_expired: bool = False) -> list[Token]:
        """Every token, sorted by name (lists storage: for admin commands only)."""
        found = []
        for info in self.storage.list(DIGESTS_PREFIX):
            sha = info.key.removeprefix(DIGESTS_PREFIX).removesuffix(".json")
            if not _DIGEST_RE.match(sha):
                continue
            token = self._read_record(sha)
            if token is not None and (include_expired or not token.expired()):
                found.append(token)
        return sorted(found, key=lambda t: (t.name, t.created_at))

    def tokens(self) -> builtins.list[Token]:
        return self.list()

    # -- writing ---------------------------------------------------------------------
    def _forget(self, sha: str) -> None:
        with self._lock:
            self._found.items.pop(sha, None)
            self._missing.items.pop(sha, None)

    def _write_record(self, token: Token) -> None:
        body = json.dumps(token.record(), sort_keys=True).encode()
        with contextlib.suppress(PreconditionFailed):  # the same digest: a retried write
            self.storage.write_bytes(
                f"{DIGESTS_PREFIX}{token.sha256}.json",
                body,
                create_only=True,
                content_type="application/json",
            )
        self._forget(token.sha256)

    def add(self, token: Token) -> None:
        """Store ``token`` under its name (create-only); UsageError if the name is taken."""
        claim = json.dumps({"sha256": token.sha256}).encode()
        try:
            self.storage.write_bytes(
                f"{NAMES_PREFIX}{check_name(token.name)}.json",
                claim,
                create_only=True,
                content_type="application/json",
            )
        except PreconditionFailed:
            if self._name_digest(token.name) != token.sha256:
                raise UsageError(
                    f"a token named {token.name!r} already exists; revoke it first"
                ) from None
        self._write_record(token)

    def create(
        self,
        name: str,
        role: str,
        channels: Iterable[str],
        packages: Iterable[str] = (),
    ) -> str:
        """Add a token and return its secret (shown once, never stored)."""
        check_name(name)
        chans, patterns = check_grant(role, channels, packages)
        secret = secrets.token_urlsafe(32)
        self.add(Token(name, digest(secret), role, chans, utc_stamp(), patterns))
        return secret

    def issue(
        self,
        name: str,
        role: str,
        channels: Iterable[str],
        packages: Iterable[str],
        *,
        lifetime: float,
        grant: dict[str, Any],
    ) -> tuple[str, Token]:
        """A short-lived token with no name claim (exchanged tokens): secret and token."""
        chans, patterns = check_grant(role, channels, packages)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        token = Token(
            name, digest(secret), role, chans, utc_stamp(now), patterns, now + lifetime, grant
        )
        self._write_record(token)
        return secret, token

    def revoke(self, name: str) -> Token:
        """Remove the token called ``name``; NotFound if there is none."""
        sha = self._name_digest(name)
        if sha is None:
            raise NotFound(f"no token named {name!r} in {self.storage.describe()}")
        try:
            token = self._read_record(sha) or Token(name, sha, "read", ())
        except ConfigError:  # a corrupt record: still revocable by name
            token = Token(name, sha, "read", ())
        self.storage.delete(f"{DIGESTS_PREFIX}{sha}.json")  # stops working first
        self.storage.delete(f"{NAMES_PREFIX}{name}.json")
        self._forget(sha)
        return token

    def prune(self, *, now: float | None = None) -> int:
        """Delete expired (exchanged) tokens; return how many.  They no longer work, so
        this only keeps storage and ``token list`` small."""
        now = time.time() if now is None else now
        removed = 0
        for info in self.storage.list(DIGESTS_PREFIX):
            sha = info.key.removeprefix(DIGESTS_PREFIX).removesuffix(".json")
            if not _DIGEST_RE.match(sha):
                continue
            try:
                token = self._read_record(sha)
            except ConfigError:
                continue  # corrupt: left for `token revoke NAME`
            if token is not None and token.expired(now):
                self.storage.delete(info.key)
                self._forget(sha)
                removed += 1
        return removed

    # -- migration from server.tokens_file --------------------------------------------
    def import_file(self, path: Path) -> builtins.list[str]:
        """Import a tokens file's tokens, once each; return the names imported now.

        Idempotent: a digest imported before is skipped even if its token was revoked
        since (a marker object remembers it), so a restart never brings a revoked
        token back.
        """
        legacy = read_tokens_file(path)
        if not legacy:
            return []
        done = {
            info.key.removeprefix(IMPORTED_PREFIX) for info in self.storage.list(IMPORTED_PREFIX)
        }
        imported = []
        for token in legacy:
            if token.sha256 in done or not _DIGEST_RE.match(token.sha256):
                continue
            try:
                self.add(token)
                imported.append(token.name)
            except UsageError:
                pass  # the name is taken by another token in storage: storage wins
            with contextlib.suppress(PreconditionFailed):
                self.storage.write_bytes(f"{IMPORTED_PREFIX}{token.sha256}", b"", create_only=True)
        return imported


def read_tokens_file(path: Path) -> list[Token]:
    """The tokens of a (legacy) ``server.tokens_file``; [] when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(data) if data.strip() else {"tokens": []}
        return [token_from_record(t) for t in raw["tokens"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"tokens file {path} is corrupt: {exc}") from exc


def open_tokens(config: Config, storage: Storage | None = None) -> TokenStore:
    """The token store of ``config``'s repository (``storage`` if already open)."""
    if storage is None:
        from publisher.storage import open_storage

        storage = open_storage(config.storage)
    return TokenStore(storage, cache_seconds=config.server.token_cache_seconds)
