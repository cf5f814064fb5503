"""A local OIDC issuer for the trusted-publishing tests.

:class:`Issuer` serves its JWKS on loopback (``tests/httpserve.background_server``)
at ``/jwks``, counts the fetches, mints ID tokens with test EC/RSA keys through PyJWT,
and can rotate keys.  :func:`unsigned` and :func:`hmac_signed` build the hostile
tokens PyJWT refuses to make (``alg: none``; HS256 keyed with the public key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.httpserve import background_server

AUDIENCE = "https://apt.test.invalid"


@dataclass
class Issuer:
    url: str
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[str] = field(default_factory=list)  # kids in the JWKS
    fetches: int = 0

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def add_key(self, kid: str, kind: str = "ec") -> None:
        self.keys[kid] = (
            ec.generate_private_key(ec.SECP256R1())
            if kind == "ec"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            key = self.keys[kid]
            algo = (
                jwt.algorithms.ECAlgorithm
                if isinstance(key, ec.EllipticCurvePrivateKey)
                else (jwt.algorithms.RSAAlgorithm)
            )
            data = json.loads(algo.to_jwk(key.public_key()))
            out.append(data | {"kid": kid, "use": "sig"})
        return {"keys": out}

    def public_pem(self, kid: str) -> bytes:
        return bytes(
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "repo:acme/svc:ref:refs/heads/main",
            "repository": "acme/svc",
            "ref": "refs/heads/main",
            "run_id": "4242",
            "workflow": "release",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def mint(self, kid: str = "k1", *, key: Any = None, header: dict[str, Any] | None = None,
             **claims: Any) -> str:  # fmt: skip
        private = key if key is not None else self.keys[kid]
        alg = "ES256" if isinstance(private, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(
            self.claims(**claims), private, algorithm=alg, headers={"kid": kid, **(header or {})}
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], kid: str = "k1") -> str:
    """``alg: none``: a header and payload with an empty signature."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def hmac_signed(claims: dict[str, Any], secret: bytes, kid: str = "k1") -> str:
    """HS256 keyed with ``secret`` (the classic confusion: the issuer's public key)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """An issuer with one EC key ``k1``, its JWKS served on 127.0.0.1."""
    issuer = Issuer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks":
                self.send_error(404)
                return
            issuer.fetches += 1
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with background_server(Handler) as url:
        issuer.url = url
        issuer.add_key("k1")
        yield issuer
