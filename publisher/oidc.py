"""Trusted publishing: exchange a CI job's OIDC ID token for a short-lived aptship token.

docs/ci.md, "Trusted publishing".  The checks, in order (each refusal is an
:class:`~publisher.errors.OidcRejected` (401), :class:`~publisher.errors.OidcReplay`
(401) or :class:`~publisher.errors.OidcClaims` (403) with a message that says which
check failed):

1. size (``oidc.max_id_token_bytes``) and shape (a JWS with a JSON header);
2. ``alg`` is an asymmetric algorithm (RS*, PS*, ES*, EdDSA): ``none`` and every HMAC
   algorithm are refused before any key is looked at, so a public key can never be
   used as an HMAC secret;
3. ``iss`` is the issuer of a configured publisher;
4. the signing key (``kid``) is in that issuer's JWKS.  The JWKS is fetched with a
   bounded size and time, cached for ``oidc.jwks_cache_seconds`` and fetched again on
   an unknown ``kid`` (key rotation), at most once per ``oidc.jwks_refresh_seconds``;
5. PyJWT verifies the signature and ``exp``, ``nbf``, ``iat`` with ``oidc.leeway``
   seconds of skew; ``exp``, ``iat``, ``iss``, ``aud`` and ``jti`` are required;
6. ``aud`` holds the publisher's audience, and every required claim matches exactly
   (the first publisher in config order whose claims all match wins);
7. the ``jti`` was never exchanged before: a create-only object
   ``.aptship/oidc/jti/<sha256(iss, jti)>`` per exchange, shared by every server.

The exchanged token is stored like any token (:meth:`TokenStore.issue`), with an
expiry and the grant (publisher, issuer, subject and the job's claims) that the audit
log shows for everything done with it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from publisher.config import OidcConfig, TrustedPublisher
from publisher.errors import (
    NotFound,
    OidcClaims,
    OidcRejected,
    OidcReplay,
    PreconditionFailed,
    StorageError,
)
from publisher.storage.base import Storage
from publisher.tokens import TokenStore, utc_stamp

JTI_PREFIX = ".aptship/oidc/jti/"
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KTY_PREFIXES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}
# Claims copied into the grant (and so into the audit log) when the ID token has them.
AUDIT_CLAIMS = (
    "sub",
    "repository",
    "repository_owner",
    "ref",
    "sha",
    "workflow",
    "workflow_ref",
    "job_workflow_ref",
    "environment",
    "run_id",
    "run_attempt",
    "actor",
    "project_path",
    "namespace_path",
    "pipeline_id",
    "job_id",
    "ref_path",
    "user_login",
)
MAX_CLAIM_CHARS = 256
MAX_JTI_CHARS = 256


# -- the issuers' keys ---------------------------------------------------------------------
@dataclass(frozen=True)
class IssuerKey:
    """One key of an issuer's JWKS: the key, its type and the ``alg`` it declares."""

    jwk: jwt.PyJWK
    kty: str
    alg: str | None


@dataclass
class _KeySet:
    keys: dict[str, IssuerKey]
    fetched: float


def fetch_jwks(url: str, cfg: OidcConfig) -> dict[str, IssuerKey]:
    """The keys (by ``kid``) at ``url``: at most ``jwks_max_bytes``, ``jwks_timeout`` s."""
    deadline = time.monotonic() + cfg.jwks_timeout
    body = b""
    try:
        with requests.get(
            url, timeout=(cfg.jwks_timeout, cfg.jwks_timeout), stream=True, allow_redirects=False
        ) as resp:
            if resp.status_code != 200:
                raise StorageError(f"JWKS {url} answered HTTP {resp.status_code}")
            # read1: whatever has arrived (at most one read timeout of waiting), so a
            # server that drips bytes meets the deadline, not one timeout per chunk.
            while chunk := resp.raw.read1(16 * 1024):
                body += chunk
                if len(body) > cfg.jwks_max_bytes:
                    raise StorageError(f"JWKS {url} is larger than oidc.jwks_max_bytes")
                if time.monotonic() > deadline:
                    raise StorageError(f"JWKS {url} took longer than oidc.jwks_timeout")
    except requests.RequestException as exc:
        raise StorageError(f"cannot fetch JWKS {url} ({type(exc).__name__})") from None
    try:
        data = json.loads(body)
        found = {}
        for raw in data["keys"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
                continue
            try:
                alg = raw.get("alg")
                found[raw["kid"]] = IssuerKey(
                    jwt.PyJWK.from_dict(raw),
                    str(raw.get("kty")),
                    alg if isinstance(alg, str) else None,
                )
            except jwt.PyJWTError:
                continue  # a key type PyJWT cannot use: skip it, keep the others
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"JWKS {url} is not a JSON Web Key Set ({exc})") from None
    return found


class JwksCache:
    """Per-process cache of each issuer's keys, refreshed on an unknown ``kid``."""

    def __init__(
        self,
        cfg: OidcConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str, OidcConfig], dict[str, IssuerKey]] = fetch_jwks,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.fetch = fetch
        self._sets: dict[str, _KeySet] = {}
        self._attempts: dict[str, float] = {}
        self._lock = threading.Lock()

    def _may_fetch(self, url: str, now: float) -> bool:
        with self._lock:
            last = self._attempts.get(url)
            if last is not None and now - last < self.cfg.jwks_refresh_seconds:
                return False
            self._attempts[url] = now
            return True

    def key(self, url: str, kid: str) -> IssuerKey:
        now = self.clock()
        with self._lock:
            cached = self._sets.get(url)
        fresh = cached is not None and now - cached.fetched < self.cfg.jwks_cache_seconds
        if cached is not None and fresh and kid in cached.keys:
            return cached.keys[kid]
        if self._may_fetch(url, now):
            cached = _KeySet(self.fetch(url, self.cfg), now)
            with self._lock:
                self._sets[url] = cached
        if cached is None or kid not in cached.keys:
            raise OidcRejected(f"unknown signing key (kid {kid[:64]!r}) for this issuer")
        return cached.keys[kid]


# -- verification ----------------------------------------------------------------------------
def _compatible(alg: str, key: IssuerKey) -> bool:
    """Does ``alg`` fit the key's type (and the ``alg`` the key declares, if any)?"""
    if key.alg is not None and key.alg != alg:
        return False
    return any(alg.startswith(p) for p in _KTY_PREFIXES.get(key.kty, ()))


def verify_id_token(
    raw: str, cfg: OidcConfig, jwks: JwksCache, *, now: float | None = None
) -> tuple[TrustedPublisher, dict[str, Any]]:
    """The trusted publisher ``raw`` matches and its verified claims; refuse otherwise."""
    if len(raw.encode("utf-8", "surrogatepass")) > cfg.max_id_token_bytes:
        raise OidcRejected(f"the ID token is larger than {cfg.max_id_token_bytes} bytes")
    try:
        header = jwt.get_unverified_header(raw)
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        raise OidcRejected("the ID token is not a signed JWT") from None
    alg = header.get("alg")
    if alg not in ASYMMETRIC:
        raise OidcRejected(
            f"algorithm {str(alg)[:20]!r} is refused: only asymmetric signatures "
            f"({', '.join(sorted(ASYMMETRIC))})"
        )
    issuer = unverified.get("iss")
    candidates = [p for p in cfg.publishers if p.issuer == issuer]
    if not isinstance(issuer, str) or not candidates:
        raise OidcRejected(f"issuer {str(issuer)[:200]!r} is not a trusted publisher's issuer")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise OidcRejected("the ID token names no signing key (kid)")
    jwk = jwks.key(candidates[0].jwks_url, kid)
    if not _compatible(alg, jwk):
        raise OidcRejected(f"algorithm {alg} does not match the issuer's key {kid[:64]!r}")
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            key=jwk.jwk.key,
            algorithms=[alg],
            issuer=issuer,
            leeway=cfg.leeway,
            options={"require": ["exp", "iat", "iss", "aud", "jti"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise OidcRejected("the ID token has expired") from None
    except jwt.ImmatureSignatureError:
        raise OidcRejected("the ID token is not valid yet (nbf or iat in the future)") from None
    except jwt.InvalidSignatureError:
        raise OidcRejected("the ID token's signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise OidcRejected(f"invalid ID token: {str(exc)[:200]}") from None
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    candidates = [p for p in candidates if p.audience in audiences]
    if not candidates:
        raise OidcRejected("the ID token's audience (aud) is not the one this server expects")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        raise OidcRejected("the ID token's jti must be a non-empty string")
    for publisher in candidates:
        if all(claims.get(name) == value for name, value in publisher.claims):
            return publisher, claims
    shown = ", ".join(f"{k}={str(claims.get(k))[:80]}" for k in ("repository", "ref", "sub"))
    raise OidcClaims(f"the ID token's claims ({shown}) match no trusted publisher")


def audit_claims(claims: dict[str, Any]) -> dict[str, str]:
    """The claims worth keeping in the audit log, as bounded strings."""
    return {
        name: str(claims[name])[:MAX_CLAIM_CHARS]
        for name in AUDIT_CLAIMS
        if claims.get(name) is not None
    }


def claim_jti(storage: Storage, issuer: str, jti: str, expires: Any) -> None:
    """Record the exchange of ``jti`` (create-only); OidcReplay if it was exchanged."""
    key = JTI_PREFIX + hashlib.sha256(f"{issuer}\n{jti}".encode()).hexdigest()
    try:
        storage.write_bytes(
            key,
            json.dumps({"exp": expires, "at": utc_stamp()}).encode(),
            create_only=True,
            content_type="application/json",
        )
    except PreconditionFailed:
        raise OidcReplay("this ID token was already exchanged (same jti)") from None


def prune_jtis(storage: Storage, leeway: float, *, now: float | None = None) -> int:
    """Delete the replay markers of ID tokens expired for more than ``leeway`` seconds
    (such a token is refused as expired anyway); return how many."""
    now = time.time() if now is None else now
    removed = 0
    for info in storage.list(JTI_PREFIX):
        try:
            expires = json.loads(storage.read_bytes(info.key)).get("exp")
        except (NotFound, ValueError, AttributeError):
            continue
        if isinstance(expires, int | float) and now > expires + leeway:
            storage.delete(info.key)
            removed += 1
    return removed


def exchange(
    raw: str, cfg: OidcConfig, jwks: JwksCache, storage: Storage, tokens: TokenStore
) -> dict[str, Any]:
    """Verify ``raw`` and issue a short-lived token within its publisher's grant."""
    publisher, claims = verify_id_token(raw, cfg, jwks)
    claim_jti(storage, claims["iss"], claims["jti"], claims.get("exp"))
    grant = {
        "publisher": publisher.name,
        "issuer": claims["iss"],
        "claims": audit_claims(claims),
    }
    lifetime = min(publisher.token_lifetime, cfg.max_token_lifetime)
    secret, token = tokens.issue(
        f"oidc:{publisher.name}",
        publisher.role,
        publisher.channels,
        publisher.packages,
        lifetime=lifetime,
        grant=grant,
    )
    return token.to_json() | {"token": secret, "expires_in": int(lifetime)}


def grant_actor(grant: dict[str, Any]) -> str:
    """How the audit log names whoever acts with an exchanged token."""
    claims = grant.get("claims") or {}
    details = ", ".join(
        f"{k}={claims[k]}"
        for k in ("repository", "project_path", "ref", "run_id", "pipeline_id")
        if k in claims
    )
    return (
        f"oidc:{grant.get('publisher')} ({details})"
        if details
        else f"oidc:{grant.get('publisher')}"
    )
