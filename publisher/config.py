"""Load and validate ``aptship.toml``.

Every key is declared here with its type and default; unknown keys and bad values
are a :class:`ConfigError` naming the key and the file.  Relative paths are resolved
against the directory of the config file.  Secrets never live in this file: only the
names of environment variables or files that hold them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from publisher.distributions import check_codename, suite_name
from publisher.errors import ConfigError

CONFIG_ENV = "APTSHIP_CONFIG"
DEFAULT_ARCHITECTURES = ("amd64", "arm64")
INDEX_FORMATS = ("plain", "gz", "xz")
# What Debian's archive serves: apt fetches a compressed index whenever Release lists
# one, so the uncompressed Packages is only listed (docs/config.md, index_formats).
DEFAULT_INDEX_FORMATS = ("gz", "xz")
# Hash fields Release may list (docs/config.md, release_hashes).  apt checks with the
# strongest listed, so SHA256 is required; MD5Sum is for older mirroring tools.
RELEASE_HASH_FIELDS = ("MD5Sum", "SHA256")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class StorageConfig:
    type: str = "local"
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    path_style: bool = False
    sse: str | None = None
    sse_kms_key_id: str | None = None


@dataclass(frozen=True)
class SigningConfig:
    gnupghome: Path | None = None
    keys: tuple[str, ...] = ()
    passphrase_env: str | None = None
    passphrase_file: Path | None = None

    def passphrase(self) -> str | None:
        """The signing passphrase, read from the environment or a file at use time."""
        if self.passphrase_env:
            value = os.environ.get(self.passphrase_env)
            if value is None:
                raise ConfigError(
                    f"signing.passphrase_env names ${self.passphrase_env}, which is not set"
                )
            return value
        if self.passphrase_file:
            try:
                return self.passphrase_file.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read signing.passphrase_file {self.passphrase_file}: {exc.strerror}"
                ) from exc
        return None


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    description: str = ""
    architectures: tuple[str, ...] = DEFAULT_ARCHITECTURES
    components: tuple[str, ...] = ("main",)
    keep: int = 10
    promote_from: tuple[str, ...] = ()
    auto_pin: bool = True
    distribution: str | None = None  # with [repository] distributions: this suite's codename
    group: str | None = None  # ... and the configured channel it is a suite of

    def accepts_architecture(self, arch: str) -> bool:
        return arch == "all" or arch in self.architectures


@dataclass(frozen=True)
class ServerConfig:
    tokens_file: Path | None = None  # legacy: imported into storage once (docs/server.md)
    token_cache_seconds: float = 5.0  # how long a process trusts a token lookup
    max_upload_bytes: int = 2 * 1024**3
    public_url: str | None = None
    secret_key_env: str | None = None
    secret_key_file: Path | None = None
    pool_redirect: bool = False
    upload_dir: Path | None = None
    metrics_public: bool = False


@dataclass(frozen=True)
class FleetConfig:
    """Host reports and the fleet view (docs/hosts.md, "Fleet view")."""

    max_report_bytes: int = 64 * 1024
    max_packages: int = 1000
    max_hosts_per_token: int = 10_000
    report_interval: float = 2.0  # seconds per report of one (token, host), per process
    report_burst: int = 3  # reports of one (token, host) accepted at once
    stale_after: float = 3600.0  # seconds without a report before a host counts as stale
    cache_seconds: float = 15.0  # how long /metrics and the dashboard reuse a fleet snapshot


DPKG_CHECK_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: bounds on everything a client controls (docs/security.md)."""

    max_body_bytes: int = 1024**2  # any request body but an upload (JSON, forms)
    max_json_depth: int = 32
    max_form_parts: int = 16
    header_timeout: float = 10.0  # seconds to send the request line and headers
    body_grace: float = 10.0  # seconds a body may take ...
    min_body_rate: int = 64 * 1024  # ... plus one second per this many bytes
    max_control_bytes: int = 8 * 1024**2  # decompressed control.tar read to find control
    max_control_field_bytes: int = 64 * 1024  # one control field (name + value)
    max_batch_files: int = 1000  # .debs in one publish
    history_page_max: int = 500  # audit rows per /api/v1/history page
    history_scan_max: int = 2000  # audit objects one history page may read
    # when to cross-check Package/Version/Architecture with dpkg-deb: "auto" (archives
    # not shaped like dpkg-deb's own), "always" or "never"; true/false mean always/never
    dpkg_check: str | bool = "auto"

    def __post_init__(self) -> None:
        if self.dpkg_check not in DPKG_CHECK_MODES and not isinstance(self.dpkg_check, bool):
            raise ConfigError(
                f"limits.dpkg_check must be one of {', '.join(map(repr, DPKG_CHECK_MODES))} "
                f"or a boolean, not {self.dpkg_check!r}"
            )

    @property
    def dpkg_mode(self) -> str:
        """``dpkg_check`` as one of :data:`DPKG_CHECK_MODES` (``true`` is "always")."""
        if isinstance(self.dpkg_check, bool):
            return "always" if self.dpkg_check else "never"
        return self.dpkg_check


WEBHOOK_EVENTS = ("publish", "promote", "rollback", "remove", "fleet.converged", "fleet.diverged")
_ENDPOINT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class WebhookEndpoint:
    """One ``[webhooks.endpoints.<name>]``: where events go and the secret that signs them."""

    name: str
    url: str
    secret_env: str | None = None
    secret_file: Path | None = None
    events: tuple[str, ...] = WEBHOOK_EVENTS
    channels: tuple[str, ...] = ()  # empty: every channel

    def wants(self, event_type: str, channel: str) -> bool:
        return event_type in self.events and (not self.channels or channel in self.channels)

    def secret(self) -> bytes:
        """The signing secret, read from the environment or a file at use time."""
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ConfigError(
                    f"webhooks.endpoints.{self.name}.secret_env names ${self.secret_env}, "
                    "which is not set"
                )
            return value.encode()
        if self.secret_file is None:
            raise ConfigError(f"webhooks.endpoints.{self.name} needs secret_env or secret_file")
        try:
            text = self.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read webhooks.endpoints.{self.name}.secret_file {self.secret_file}: "
                f"{exc.strerror}"
            ) from exc
        if not text:
            raise ConfigError(f"webhooks.endpoints.{self.name}.secret_file is empty")
        return text.encode()


@dataclass(frozen=True)
class WebhooksConfig:
    """``[webhooks]``: release event delivery (docs/webhooks.md)."""

    timeout: float = 10.0  # seconds one attempt may take in all (connect, send, answer)
    max_attempts: int = 12  # then the delivery is "failed" (redeliver by event id)
    backoff_initial: float = 10.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 3600.0  # cap of one wait between attempts
    poll_interval: float = 2.0  # seconds between queue scans of each server process
    lease_seconds: float = 60.0  # a claimed attempt is another replica's after this long
    max_response_bytes: int = 4096  # of a receiver's answer read (and kept in the log)
    endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)


@dataclass(frozen=True)
class TrustedPublisher:
    """``[oidc.publishers.<name>]``: who may exchange an ID token, for what (docs/ci.md)."""

    name: str
    issuer: str
    jwks_url: str
    audience: str
    claims: tuple[tuple[str, str], ...]  # required claim values, compared exactly
    role: str
    channels: tuple[str, ...]
    packages: tuple[str, ...] = ()
    token_lifetime: float = 900.0  # seconds an exchanged token lives


@dataclass(frozen=True)
class OidcConfig:
    """``[oidc]``: trusted publishing (docs/ci.md, "Trusted publishing")."""

    publishers: tuple[TrustedPublisher, ...] = ()
    max_token_lifetime: float = 3600.0
    leeway: float = 60.0  # seconds of clock skew allowed on exp, nbf and iat
    jwks_cache_seconds: float = 300.0
    jwks_refresh_seconds: float = 10.0  # at most one refetch per issuer in this time
    jwks_max_bytes: int = 64 * 1024
    jwks_timeout: float = 5.0
    max_id_token_bytes: int = 16 * 1024


@dataclass(frozen=True)
class AptlyConfig:
    url: str
    username: str | None = None
    password_env: str | None = None
    publish_prefix: str = "."
    repo_prefix: str = "aptship-"
    gpg_key: str | None = None
    gpg_keyring: str | None = None
    gpg_secret_keyring: str | None = None
    passphrase_file: Path | None = None
    timeout: float = 60.0
    public_dir: Path | None = None

    def password(self) -> str:
        """The basic-auth password for aptly's API, from the environment at use time."""
        if not self.password_env:
            raise ConfigError("aptly.username needs aptly.password_env (a variable name)")
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(f"aptly.password_env names ${self.password_env}, which is not set")
        return value


@dataclass(frozen=True)
class Config:
    path: Path
    origin: str = "aptship"
    label: str = "aptship"
    index_formats: tuple[str, ...] = DEFAULT_INDEX_FORMATS
    release_hashes: tuple[str, ...] = ("SHA256",)
    engine: str = "native"
    aptly: AptlyConfig | None = None
    storage: StorageConfig = field(default_factory=StorageConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    oidc: OidcConfig = field(default_factory=OidcConfig)
    channels: dict[str, ChannelConfig] = field(default_factory=dict)
    # [repository] distributions (docs/config.md): empty for a single-distribution
    # repository.  Otherwise ``channels`` holds the suites (``bookworm-prod``...) and
    # ``groups`` maps each configured channel to its suites, in distribution order.
    distributions: tuple[str, ...] = ()
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelConfig:
        from publisher.errors import NotFound

        try:
            return self.channels[name]
        except KeyError:
            if name in self.groups:
                raise NotFound(
                    f"channel {name!r} exists per distribution: name one of its suites "
                    f"({', '.join(self.groups[name])})"
                ) from None
            known = ", ".join(sorted(self.channels)) or "none"
            raise NotFound(f"unknown channel {name!r} (configured: {known})") from None

    def suites(self, name: str) -> list[ChannelConfig]:
        """A configured channel's suites (one per distribution), or the one channel/suite."""
        if name in self.groups:
            return [self.channels[suite] for suite in self.groups[name]]
        return [self.channel(name)]


class _Section:
    """Typed access to one TOML table that reports unknown keys and bad types."""

    def __init__(self, data: Any, where: str, path: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.path = path
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.where}.{key} {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is int and isinstance(value, bool):
            raise self.fail(key, "must be an integer")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be of type {names}, not {type(value).__name__}")
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return tuple(value)

    def path_value(self, key: str) -> Path | None:
        value = self.get(key, str, None)
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.path.parent / p)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.path}: unknown key {self.where}.{unknown[0]}")


def _storage(sec: _Section) -> StorageConfig:
    kind = sec.get("type", str, "local")
    if kind not in ("local", "s3"):
        raise sec.fail("type", f"must be 'local' or 's3', not {kind!r}")
    cfg = StorageConfig(
        type=kind,
        path=sec.path_value("path"),
        bucket=sec.get("bucket", str, ""),
        prefix=sec.get("prefix", str, "").strip("/"),
        region=sec.get("region", str, None),
        endpoint_url=sec.get("endpoint_url", str, None),
        path_style=sec.get("path_style", bool, False),
        sse=sec.get("sse", str, None),
        sse_kms_key_id=sec.get("sse_kms_key_id", str, None),
    )
    sec.finish()
    if kind == "local" and cfg.path is None:
        raise sec.fail("path", "is required when storage.type = 'local'")
    if kind == "s3" and not cfg.bucket:
        raise sec.fail("bucket", "is required when storage.type = 's3'")
    if cfg.sse not in (None, "AES256", "aws:kms"):
        raise sec.fail("sse", "must be 'AES256' or 'aws:kms'")
    return cfg


def _signing(sec: _Section) -> SigningConfig:
    keys = sec.strings("keys", ())
    if not keys:
        raise sec.fail("keys", "must name at least one signing key (fingerprint or key id)")
    cfg = SigningConfig(
        gnupghome=sec.path_value("gnupghome"),
        keys=keys,
        passphrase_env=sec.get("passphrase_env", str, None),
        passphrase_file=sec.path_value("passphrase_file"),
    )
    if "passphrase" in sec.data:
        raise sec.fail(
            "passphrase",
            "is not allowed: name an environment variable (passphrase_env) or a file "
            "(passphrase_file) instead of putting a secret in the config",
        )
    sec.finish()
    return cfg


def _server(sec: _Section) -> ServerConfig:
    max_upload = sec.get("max_upload_bytes", int, ServerConfig.max_upload_bytes)
    if max_upload <= 0:
        raise sec.fail("max_upload_bytes", "must be positive")
    cache = sec.get("token_cache_seconds", (int, float), ServerConfig.token_cache_seconds)
    if isinstance(cache, bool) or not 0 <= cache <= 60:
        raise sec.fail("token_cache_seconds", "must be a number of seconds from 0 to 60")
    cfg = ServerConfig(
        tokens_file=sec.path_value("tokens_file"),
        token_cache_seconds=float(cache),
        max_upload_bytes=max_upload,
        public_url=sec.get("public_url", str, None),
        secret_key_env=sec.get("secret_key_env", str, None),
        secret_key_file=sec.path_value("secret_key_file"),
        pool_redirect=sec.get("pool_redirect", bool, False),
        upload_dir=sec.path_value("upload_dir"),
        metrics_public=sec.get("metrics_public", bool, False),
    )
    sec.finish()
    return cfg


def _fleet(sec: _Section) -> FleetConfig:
    def positive(key: str) -> int:
        value: int = sec.get(key, int, getattr(FleetConfig, key))
        if value <= 0:
            raise sec.fail(key, "must be positive")
        return value

    def seconds(key: str) -> float:
        value = sec.get(key, (int, float), getattr(FleetConfig, key))
        if isinstance(value, bool) or value < 0:
            raise sec.fail(key, "must be a number of seconds, 0 or more")
        return float(value)

    cfg = FleetConfig(
        max_report_bytes=positive("max_report_bytes"),
        max_packages=positive("max_packages"),
        max_hosts_per_token=positive("max_hosts_per_token"),
        report_burst=positive("report_burst"),
        report_interval=seconds("report_interval"),
        stale_after=seconds("stale_after"),
        cache_seconds=seconds("cache_seconds"),
    )
    sec.finish()
    return cfg


def _limits(sec: _Section) -> LimitsConfig:
    values: dict[str, Any] = {}
    for name, default in vars(LimitsConfig()).items():
        if name == "dpkg_check":
            values[name] = sec.get(name, (str, bool), default)
            if values[name] not in DPKG_CHECK_MODES and not isinstance(values[name], bool):
                raise sec.fail(name, f"must be one of {', '.join(DPKG_CHECK_MODES)}, true or false")
            continue
        if isinstance(default, bool):
            values[name] = sec.get(name, bool, default)
            continue
        kind: type | tuple[type, ...] = int if isinstance(default, int) else (int, float)
        value = sec.get(name, kind, default)
        if value <= 0:
            raise sec.fail(name, "must be positive")
        values[name] = float(value) if isinstance(default, float) else value
    sec.finish()
    return LimitsConfig(**values)


def _endpoint(name: str, sec: _Section) -> WebhookEndpoint:
    if not _ENDPOINT_NAME_RE.match(name):
        raise ConfigError(
            f"{sec.path}: webhook endpoint name {name!r} must match {_ENDPOINT_NAME_RE.pattern}"
        )
    url = sec.get("url", str, None)
    # Endpoints come from this file only (no API can add one): http(s) URLs, nothing else.
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise sec.fail("url", "must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise sec.fail("url", "must not hold credentials: sign with secret_env or secret_file")
    if "secret" in sec.data:
        raise sec.fail(
            "secret",
            "is not allowed: name an environment variable (secret_env) or a file "
            "(secret_file) instead of putting a secret in the config",
        )
    events = sec.strings("events", WEBHOOK_EVENTS)
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if unknown or not events:
        raise sec.fail("events", f"must be a non-empty subset of {list(WEBHOOK_EVENTS)}")
    cfg = WebhookEndpoint(
        name=name,
        url=str(url),
        secret_env=sec.get("secret_env", str, None),
        secret_file=sec.path_value("secret_file"),
        events=events,
        channels=sec.strings("channels", ()),
    )
    sec.finish()
    if (cfg.secret_env is None) == (cfg.secret_file is None):
        raise sec.fail("secret_env", "or secret_file is required (exactly one of the two)")
    return cfg


def _webhooks(sec: _Section) -> WebhooksConfig:
    values: dict[str, Any] = {}
    for name, default in vars(WebhooksConfig()).items():
        if name == "endpoints":
            continue
        kind: type | tuple[type, ...] = int if isinstance(default, int) else (int, float)
        value = sec.get(name, kind, default)
        if value <= 0:
            raise sec.fail(name, "must be positive")
        values[name] = float(value) if isinstance(default, float) else value
    if values["lease_seconds"] <= values["timeout"]:
        raise sec.fail("lease_seconds", "must be longer than webhooks.timeout")
    raw = sec.get("endpoints", dict, {})
    endpoints = {
        name: _endpoint(name, _Section(body, f"webhooks.endpoints.{name}", sec.path))
        for name, body in raw.items()
    }
    sec.finish()
    return WebhooksConfig(endpoints=endpoints, **values)


_OIDC_ROLES = ("read", "publish", "promote")  # never admin: exchanged tokens stay narrow


def _publisher(name: str, sec: _Section, max_lifetime: float) -> TrustedPublisher:
    issuer = sec.get("issuer", str, "")
    if not issuer.startswith(("https://", "http://")):
        raise sec.fail("issuer", "is required: the issuer URL exactly as in the tokens' 'iss'")
    jwks_url = sec.get("jwks_url", str, issuer.rstrip("/") + "/.well-known/jwks")
    if not jwks_url.startswith(("https://", "http://")):
        raise sec.fail("jwks_url", "must be an http(s) URL")
    audience = sec.get("audience", str, "")
    if not audience:
        raise sec.fail("audience", "is required: the 'aud' the CI job requests")
    raw_claims = sec.get("claims", dict, {})
    if not all(isinstance(v, str) and v for v in raw_claims.values()):
        raise sec.fail("claims", "must map claim names to non-empty strings")
    if not raw_claims:
        raise sec.fail("claims", "must name at least one claim (e.g. repository) to match")
    role = sec.get("role", str, "publish")
    if role not in _OIDC_ROLES:
        raise sec.fail("role", f"must be one of {', '.join(_OIDC_ROLES)}")
    channels = sec.strings("channels", ())
    if not channels:
        raise sec.fail("channels", "must name at least one channel")
    lifetime = sec.get("token_lifetime", (int, float), 900)
    if isinstance(lifetime, bool) or not 0 < lifetime <= max_lifetime:
        raise sec.fail("token_lifetime", f"must be 1 to {max_lifetime:g} seconds")
    from publisher.errors import UsageError
    from publisher.tokens import check_grant

    try:
        check_grant(role, channels, sec.strings("packages", ()))
    except UsageError as err:
        raise sec.fail("packages", f"is invalid: {err.message}") from None
    cfg = TrustedPublisher(
        name=name,
        issuer=issuer,
        jwks_url=jwks_url,
        audience=audience,
        claims=tuple(sorted(raw_claims.items())),
        role=role,
        channels=channels,
        packages=sec.strings("packages", ()),
        token_lifetime=float(lifetime),
    )
    sec.finish()
    return cfg


def _oidc(sec: _Section, channels: dict[str, ChannelConfig]) -> OidcConfig:
    def number(key: str, kind: type = float) -> Any:
        default = getattr(OidcConfig, key)
        value = sec.get(key, int if kind is int else (int, float), default)
        if isinstance(value, bool) or value <= 0:
            raise sec.fail(key, "must be positive")
        return kind(value)

    values = {
        key: number(key, int if isinstance(getattr(OidcConfig, key), int) else float)
        for key in (
            "max_token_lifetime",
            "leeway",
            "jwks_cache_seconds",
            "jwks_refresh_seconds",
            "jwks_max_bytes",
            "jwks_timeout",
            "max_id_token_bytes",
        )
    }
    if values["leeway"] > 300:
        raise sec.fail("leeway", "must be at most 300 seconds")
    raw = sec.get("publishers", dict, {})
    publishers = tuple(
        _publisher(
            name, _Section(body, f"oidc.publishers.{name}", sec.path), values["max_token_lifetime"]
        )
        for name, body in raw.items()
    )
    jwks_by_issuer: dict[str, str] = {}
    for pub in publishers:
        for ch in pub.channels:
            if ch != "*" and ch not in channels:
                raise ConfigError(
                    f"{sec.path}: oidc.publishers.{pub.name}.channels names unknown channel {ch!r}"
                )
        if jwks_by_issuer.setdefault(pub.issuer, pub.jwks_url) != pub.jwks_url:
            raise ConfigError(
                f"{sec.path}: oidc.publishers.{pub.name}.jwks_url differs from another "
                f"publisher of issuer {pub.issuer}"
            )
    sec.finish()
    return OidcConfig(publishers=publishers, **values)


def _aptly(sec: _Section) -> AptlyConfig:
    url = sec.get("url", str, None)
    if not url or not url.startswith(("http://", "https://")):
        raise sec.fail("url", "is required: the aptly API base URL (http://host:port)")
    timeout = sec.get("timeout", (int, float), 60.0)
    if timeout <= 0:
        raise sec.fail("timeout", "must be positive")
    if "password" in sec.data:
        raise sec.fail("password", "is not allowed: name an environment variable (password_env)")
    cfg = AptlyConfig(
        url=url,
        username=sec.get("username", str, None),
        password_env=sec.get("password_env", str, None),
        publish_prefix=sec.get("publish_prefix", str, "."),
        repo_prefix=sec.get("repo_prefix", str, "aptship-"),
        gpg_key=sec.get("gpg_key", str, None),
        gpg_keyring=sec.get("gpg_keyring", str, None),
        gpg_secret_keyring=sec.get("gpg_secret_keyring", str, None),
        passphrase_file=sec.path_value("passphrase_file"),
        timeout=float(timeout),
        public_dir=sec.path_value("public_dir"),
    )
    sec.finish()
    return cfg


def _channel(name: str, sec: _Section) -> ChannelConfig:
    if not _NAME_RE.match(name):
        raise ConfigError(f"{sec.path}: channel name {name!r} must match {_NAME_RE.pattern}")
    archs = sec.strings("architectures", DEFAULT_ARCHITECTURES)
    for arch in archs:
        if not _ARCH_RE.match(arch) or arch == "all":
            raise sec.fail("architectures", f"has an invalid architecture {arch!r}")
    comps = sec.strings("components", ("main",))
    if comps != ("main",):
        raise sec.fail("components", "supports only ['main'] in this version")
    keep = sec.get("keep", int, 10)
    if keep < 1:
        raise sec.fail("keep", "must be at least 1")
    cfg = ChannelConfig(
        name=name,
        description=sec.get("description", str, ""),
        architectures=archs,
        components=comps,
        keep=keep,
        promote_from=sec.strings("promote_from", ()),
        auto_pin=sec.get("auto_pin", bool, True),
    )
    sec.finish()
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config from ``path``, else ``$APTSHIP_CONFIG``, else ``./aptship.toml``."""
    raw = path or os.environ.get(CONFIG_ENV) or "aptship.toml"
    cfg_path = Path(raw).absolute()
    try:
        with cfg_path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {cfg_path} not found (use --config PATH, set {CONFIG_ENV}, "
            "or create one with `aptship init DIR`)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config {cfg_path}: {exc.strerror}") from exc
    return parse_config(data, cfg_path)


def parse_config(data: dict[str, Any], cfg_path: Path) -> Config:
    top = _Section(data, "(top level)", cfg_path)
    repo = _Section(top.get("repository", dict, {}), "repository", cfg_path)
    origin = repo.get("origin", str, "aptship")
    label = repo.get("label", str, origin)
    formats = repo.strings("index_formats", DEFAULT_INDEX_FORMATS)
    hashes = repo.strings("release_hashes", ("SHA256",))
    if "SHA256" not in hashes or any(h not in RELEASE_HASH_FIELDS for h in hashes):
        raise repo.fail(
            "release_hashes", f"must list SHA256 and only fields of {list(RELEASE_HASH_FIELDS)}"
        )
    engine = repo.get("engine", str, "native")
    distributions = repo.strings("distributions", ())
    for codename in distributions:
        check_codename(codename, f"{cfg_path}: repository.distributions")
    if len(set(distributions)) != len(distributions):
        raise repo.fail("distributions", "names a distribution twice")
    if distributions and engine != "native":
        raise repo.fail("distributions", "needs repository.engine = 'native'")
    if engine not in ("native", "aptly"):
        raise repo.fail("engine", f"must be 'native' or 'aptly', not {engine!r}")
    if not formats or any(f not in INDEX_FORMATS for f in formats):
        raise repo.fail("index_formats", f"must be a non-empty subset of {list(INDEX_FORMATS)}")
    repo.finish()
    if "storage" not in data:
        raise ConfigError(f"{cfg_path}: missing [storage] table")
    storage = _storage(_Section(top.get("storage", dict), "storage", cfg_path))
    if "signing" not in data:
        raise ConfigError(f"{cfg_path}: missing [signing] table")
    signing = _signing(_Section(top.get("signing", dict), "signing", cfg_path))
    server = _server(_Section(top.get("server", dict, {}), "server", cfg_path))
    fleet = _fleet(_Section(top.get("fleet", dict, {}), "fleet", cfg_path))
    limits = _limits(_Section(top.get("limits", dict, {}), "limits", cfg_path))
    aptly = _aptly(_Section(top.get("aptly", dict), "aptly", cfg_path)) if "aptly" in data else None
    webhooks = _webhooks(_Section(top.get("webhooks", dict, {}), "webhooks", cfg_path))
    if engine == "aptly" and aptly is None:
        raise ConfigError(f"{cfg_path}: repository.engine = 'aptly' needs an [aptly] table")
    chans_raw = top.get("channels", dict, {})
    channels = {
        name: _channel(name, _Section(body, f"channels.{name}", cfg_path))
        for name, body in chans_raw.items()
    }
    if not channels:
        raise ConfigError(f"{cfg_path}: define at least one channel under [channels.<name>]")
    for ch in channels.values():
        for src in ch.promote_from:
            if src not in channels:
                raise ConfigError(
                    f"{cfg_path}: channels.{ch.name}.promote_from names unknown channel {src!r}"
                )
    for hook in webhooks.endpoints.values():
        for name in hook.channels:
            if name not in channels:
                raise ConfigError(
                    f"{cfg_path}: webhooks.endpoints.{hook.name}.channels names unknown "
                    f"channel {name!r}"
                )
    top.used.add("channels")
    oidc = _oidc(_Section(top.get("oidc", dict, {}), "oidc", cfg_path), channels)
    top.finish()
    groups: dict[str, tuple[str, ...]] = {}
    if distributions:
        channels, groups = _per_distribution(channels, distributions, cfg_path)
        webhooks = _webhooks_per_distribution(webhooks, groups)
    return Config(
        path=cfg_path,
        origin=origin,
        label=label,
        index_formats=tuple(f for f in INDEX_FORMATS if f in formats),
        release_hashes=tuple(h for h in RELEASE_HASH_FIELDS if h in hashes),
        engine=engine,
        aptly=aptly,
        storage=storage,
        signing=signing,
        server=server,
        fleet=fleet,
        limits=limits,
        webhooks=webhooks,
        oidc=oidc,
        channels=channels,
        distributions=distributions,
        groups=groups,
    )


def _per_distribution(
    channels: dict[str, ChannelConfig], distributions: tuple[str, ...], cfg_path: Path
) -> tuple[dict[str, ChannelConfig], dict[str, tuple[str, ...]]]:
    """Every configured channel once per distribution, as suite ``<codename>-<channel>``;
    a suite promotes from the same channels' suites of its own distribution."""
    suites: dict[str, ChannelConfig] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for ch in channels.values():
        names = []
        for codename in distributions:
            name = suite_name(codename, ch.name)
            if name in channels:
                raise ConfigError(
                    f"{cfg_path}: channel {name!r} collides with the {codename} suite of "
                    f"channel {ch.name!r}"
                )
            suites[name] = replace(
                ch,
                name=name,
                promote_from=tuple(suite_name(codename, src) for src in ch.promote_from),
                distribution=codename,
                group=ch.name,
            )
            names.append(name)
        groups[ch.name] = tuple(names)
    return suites, groups


def _webhooks_per_distribution(
    hooks: WebhooksConfig, groups: dict[str, tuple[str, ...]]
) -> WebhooksConfig:
    """An endpoint's ``channels`` name configured channels: it gets all their suites."""
    endpoints = {
        name: replace(ep, channels=tuple(s for ch in ep.channels for s in groups[ch]))
        for name, ep in hooks.endpoints.items()
    }
    return replace(hooks, endpoints=endpoints)
