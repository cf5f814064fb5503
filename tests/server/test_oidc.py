"""Trusted publishing (issue 16 part 1): a local OIDC issuer (JWKS on loopback, ID
tokens minted with test keys), the exchange endpoint, the exchanged token's limits,
the audit log, and every bad input of the issue."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from publisher.audit import AUDIT_PREFIX
from publisher.config import OidcConfig, load_config
from publisher.errors import ConfigError, OidcRejected, StorageError
from publisher.oidc import JwksCache, fetch_jwks
from repo_server import create_app
from tests.conftest import tokens_of
from tests.server.conftest import BufferedClient, EnvFactory, ServerEnv, toml_dumps
from tests.server.oidc_issuer import AUDIENCE, Issuer, hmac_signed, running_issuer, unsigned

pytestmark = pytest.mark.e2e  # a real OIDC issuer (JWKS over HTTP) on loopback, and a real gunicorn

DebFactory = Callable[..., Path]


def publisher_config(issuer: Issuer, **overrides: Any) -> dict[str, Any]:
    return {
        "jwks_refresh_seconds": 0.001,  # rotation is picked up at once in these tests
        "publishers": {
            "svc": {
                "issuer": issuer.url,
                "jwks_url": issuer.jwks_url,
                "audience": AUDIENCE,
                "claims": {"repository": "acme/svc", "ref": "refs/heads/main"},
                "role": "publish",
                "channels": ["dev"],
                "packages": ["svc-*"],
                "token_lifetime": 600,
            }
        },
        **overrides,
    }


def with_oidc(env: ServerEnv, oidc: dict[str, Any]) -> None:
    data = tomllib.loads(env.config_path.read_text())
    data["oidc"] = oidc
    env.config_path.write_text(toml_dumps(data))


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def oidc_env(make_env: EnvFactory, issuer: Issuer) -> ServerEnv:
    env = make_env()
    with_oidc(env, publisher_config(issuer))
    return env


@pytest.fixture
def oidc_app(oidc_env: ServerEnv) -> Flask:
    app = create_app(oidc_env.config_path)
    app.testing = True
    app.test_client_class = BufferedClient
    return app


@pytest.fixture
def client(oidc_app: Flask) -> FlaskClient:
    return oidc_app.test_client()


def audit(env: ServerEnv, action: str) -> list[dict[str, Any]]:
    storage = env.repo().storage
    events = [json.loads(storage.read_bytes(i.key)) for i in storage.list(AUDIT_PREFIX)]
    return [e for e in events if e["action"] == action]


def exchange(client: FlaskClient, token: str) -> Any:
    return client.post("/api/v1/oidc/exchange", json={"token": token})


def upload(client: FlaskClient, secret: str, channel: str, deb: Path) -> Any:
    return client.post(
        f"/api/v1/channels/{channel}/packages",
        data=deb.read_bytes(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/vnd.debian.binary-package",
        },
    )


# -- the good path ---------------------------------------------------------------------------
def test_exchange_publish_and_audit(
    client: FlaskClient, oidc_env: ServerEnv, issuer: Issuer, debs: DebFactory
) -> None:
    got = exchange(client, issuer.mint(run_id="777"))
    assert got.status_code == 201, got.text
    body = got.get_json()
    secret = body.pop("token")
    assert body["name"] == "oidc:svc" and body["role"] == "publish"
    assert (body["channels"], body["packages"], body["expires_in"]) == (["dev"], ["svc-*"], 600)
    assert body["grant"]["publisher"] == "svc" and body["grant"]["claims"]["run_id"] == "777"
    assert secret not in json.dumps(audit(oidc_env, "oidc_exchange"))

    published = upload(client, secret, "dev", debs("svc-web", "1.0-1"))
    assert published.status_code == 201, published.text
    (row,) = oidc_env.repo().history("dev", "svc-web")
    assert row["actor"] == "oidc:svc (repository=acme/svc, ref=refs/heads/main, run_id=777)"
    (exchanged,) = audit(oidc_env, "oidc_exchange")
    assert exchanged["grant"]["claims"]["repository"] == "acme/svc"

    # Valid only within the grant: other channels, packages and roles are 403 + audit.
    assert upload(client, secret, "staging", debs("svc-web", "1.1-1")).status_code == 403
    scoped = upload(client, secret, "dev", debs("billing", "1.0-1"))
    assert (scoped.status_code, scoped.get_json()["error"]["code"]) == (403, "package_scope")
    promote = client.post(
        "/api/v1/channels/dev/rollback",
        json={"package": "svc-web"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert promote.status_code == 403
    refused = audit(oidc_env, "oidc_refused")
    assert [r["reason"] for r in refused] == ["channel", "package", "role"]
    assert all(r["grant"]["claims"]["run_id"] == "777" for r in refused)
    assert [e["package"] for e in oidc_env.repo().list_entries("dev")] == ["svc-web"]


def test_replayed_jti_is_refused_across_servers(
    client: FlaskClient, oidc_env: ServerEnv, issuer: Issuer
) -> None:
    token = issuer.mint()
    assert exchange(client, token).status_code == 201
    again = exchange(create_app(oidc_env.config_path).test_client(), token)  # another replica
    assert (again.status_code, again.get_json()["error"]["code"]) == (401, "oidc_replay")
    assert [r["reason"] for r in audit(oidc_env, "oidc_refused")] == ["oidc_replay"]


def test_token_prune_forgets_spent_jtis_only_after_the_id_token_expired(
    client: FlaskClient, oidc_env: ServerEnv, issuer: Issuer
) -> None:
    from click.testing import CliRunner

    from publisher.cli import cli
    from publisher.oidc import JTI_PREFIX, prune_jtis

    token = issuer.mint()
    secret = exchange(client, token).get_json()["token"]
    storage = oidc_env.repo().storage
    prune = CliRunner().invoke(cli, ["--config", str(oidc_env.config_path), "token", "prune"])
    assert prune.exit_code == 0 and "deleted 0 expired token(s) and 0 spent" in prune.output
    assert len(list(storage.list(JTI_PREFIX))) == 1
    assert exchange(client, token).status_code == 401  # still a replay
    assert prune_jtis(storage, 60, now=10**10) == 1  # long after exp + leeway
    assert tokens_of(oidc_env.config_path).prune(now=10**10) == 1
    assert tokens_of(oidc_env.config_path).authenticate(secret) is None


def test_key_rotation_at_the_issuer(client: FlaskClient, issuer: Issuer) -> None:
    assert exchange(client, issuer.mint("k1")).status_code == 201
    issuer.add_key("k2", "rsa")
    issuer.published.remove("k1")  # k1 retired, k2 (RSA) signs from now on
    assert exchange(client, issuer.mint("k2")).status_code == 201  # unknown kid: refetched
    fetches = issuer.fetches
    assert exchange(client, issuer.mint("k2")).status_code == 201  # cached
    assert issuer.fetches == fetches
    old = exchange(client, issuer.mint("k1"))
    assert old.status_code == 401 and "unknown signing key" in old.get_json()["error"]["message"]


def test_exchanged_token_expires_and_works_on_other_replicas(
    oidc_env: ServerEnv, issuer: Issuer
) -> None:
    data = publisher_config(issuer)
    data["publishers"]["svc"]["token_lifetime"] = 1
    with_oidc(oidc_env, data)
    one, two = (create_app(oidc_env.config_path).test_client() for _ in range(2))
    secret = exchange(one, issuer.mint()).get_json()["token"]
    store = tokens_of(oidc_env.config_path)
    token = store.authenticate(secret)
    assert token is not None and token.expires_at is not None
    listed = two.get("/api/v1/channels", headers={"Authorization": f"Bearer {secret}"})
    assert listed.status_code == 200
    assert not token.expired(token.expires_at - 0.5) and token.expired(token.expires_at)


# -- bad input --------------------------------------------------------------------------------
def _bad_tokens(issuer: Issuer) -> dict[str, tuple[str, int, str]]:
    """name -> (ID token, status, error code)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    forger = ec.generate_private_key(ec.SECP256R1())
    return {
        "forged": (issuer.mint(key=forger), 401, "oidc_rejected"),
        "expired": (issuer.mint(exp=1_000_000, iat=999_000, nbf=999_000), 401, "oidc_rejected"),
        "not yet valid": (issuer.mint(nbf=4_000_000_000), 401, "oidc_rejected"),
        "issued in the future": (issuer.mint(iat=4_000_000_000), 401, "oidc_rejected"),
        "wrong audience": (issuer.mint(aud="https://other.invalid"), 401, "oidc_rejected"),
        "unknown issuer": (issuer.mint(iss="https://evil.invalid"), 401, "oidc_rejected"),
        "unknown kid": (issuer.mint(header={"kid": "nope"}), 401, "oidc_rejected"),
        "alg none": (unsigned(issuer.claims()), 401, "oidc_rejected"),
        "HS256 with the public key": (
            hmac_signed(issuer.claims(), issuer.public_pem("k1")),
            401,
            "oidc_rejected",
        ),
        "no jti": (issuer.mint(jti=None), 401, "oidc_rejected"),
        "no exp": (issuer.mint(exp=None), 401, "oidc_rejected"),
        "claim mismatch": (issuer.mint(repository="acme/other"), 403, "oidc_claims"),
        "ref mismatch": (issuer.mint(ref="refs/heads/feature"), 403, "oidc_claims"),
        "claim of another type": (issuer.mint(repository=["acme/svc"]), 403, "oidc_claims"),
        "not a JWT": ("hello", 401, "oidc_rejected"),
        "oversized": ("a" * 100_000, 401, "oidc_rejected"),
    }


BAD = [
    "forged", "expired", "not yet valid", "issued in the future", "wrong audience",
    "unknown issuer", "unknown kid", "alg none", "HS256 with the public key", "no jti",
    "no exp", "claim mismatch", "ref mismatch", "claim of another type", "not a JWT",
    "oversized",
]  # fmt: skip


# What the error message must say for each case (so each is refused for its own reason).
WHY = {
    "forged": "signature does not verify",
    "expired": "has expired",
    "not yet valid": "not valid yet",
    "issued in the future": "not valid yet",
    "wrong audience": "audience",
    "unknown issuer": "not a trusted publisher's issuer",
    "unknown kid": "unknown signing key",
    "alg none": "algorithm 'none' is refused",
    "HS256 with the public key": "algorithm 'HS256' is refused",
    "no jti": '"jti"',
    "no exp": '"exp"',
    "claim mismatch": "repository=acme/other",
    "ref mismatch": "ref=refs/heads/feature",
    "claim of another type": "match no trusted publisher",
    "not a JWT": "not a signed JWT",
    "oversized": "larger than",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_id_tokens_are_refused_with_an_audit_entry(
    client: FlaskClient, oidc_env: ServerEnv, issuer: Issuer, case: str
) -> None:
    token, status, code = _bad_tokens(issuer)[case]
    before = {t.name for t in tokens_of(oidc_env.config_path).list()}
    got = exchange(client, token)
    assert got.status_code == status, got.text
    assert got.get_json()["error"]["code"] == code
    assert WHY[case] in got.get_json()["error"]["message"]
    if status == 401:
        assert got.headers["WWW-Authenticate"].startswith("Basic")
    (entry,) = audit(oidc_env, "oidc_refused")
    assert entry["reason"] == code and entry["message"] == got.get_json()["error"]["message"]
    assert token not in json.dumps(entry)  # the token itself is never stored
    assert {t.name for t in tokens_of(oidc_env.config_path).list()} == before
    assert audit(oidc_env, "oidc_exchange") == []


def test_malformed_bodies_and_a_server_without_publishers(
    make_env: EnvFactory, client: FlaskClient
) -> None:
    for body in ({}, {"token": 1}, {"token": ""}, [1]):
        assert client.post("/api/v1/oidc/exchange", json=body).status_code == 400
    plain = create_app(make_env().config_path).test_client()
    got = plain.post("/api/v1/oidc/exchange", json={"token": "x.y.z"})
    assert (got.status_code, got.get_json()["error"]["code"]) == (401, "oidc_rejected")


def test_refusal_audit_is_bounded_per_process(
    client: FlaskClient, oidc_env: ServerEnv, oidc_app: Flask
) -> None:
    oidc_app.extensions["aptship_oidc"].refusals.per_minute = 3
    for _ in range(10):
        assert exchange(client, "garbage").status_code == 401
    entries = audit(oidc_env, "oidc_refused")
    assert len(entries) == 3 and not any("suppressed" in e for e in entries)
    budget = oidc_app.extensions["aptship_oidc"].refusals
    budget.window -= 60  # a minute later: the next entry says how many were left out
    exchange(client, "garbage")
    assert max(e.get("suppressed", 0) for e in audit(oidc_env, "oidc_refused")) == 7


# -- the issuer's JWKS: cached, refreshed on an unknown kid, bounded --------------------------
def test_unknown_kids_do_not_refetch_more_than_once_per_refresh_interval(issuer: Issuer) -> None:
    now = [0.0]
    cache = JwksCache(OidcConfig(jwks_refresh_seconds=10), clock=lambda: now[0])
    assert cache.key(issuer.jwks_url, "k1") is not None
    for i in range(50):
        with pytest.raises(OidcRejected, match="unknown signing key"):
            cache.key(issuer.jwks_url, f"random-{i}")
    assert issuer.fetches == 1
    now[0] += 10
    with pytest.raises(OidcRejected):
        cache.key(issuer.jwks_url, "random-x")
    assert issuer.fetches == 2


def test_hostile_jwks_endpoints_are_bounded() -> None:
    import http.server

    from tests.httpserve import background_server

    class Huge(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path in ("/big", "/slow") else 500)
            self.end_headers()
            if self.path == "/big":
                for _ in range(64):  # 4 MiB of JSON-looking bytes, never fully read
                    self.wfile.write(b" " * 65536)
            if self.path == "/slow":  # one byte at a time, each well within the timeout
                for _ in range(30):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)

        def log_message(self, format: str, *args: object) -> None:
            pass

    cfg = OidcConfig(jwks_max_bytes=64 * 1024, jwks_timeout=5)
    with background_server(Huge) as url:
        with pytest.raises(StorageError, match=r"larger than oidc\.jwks_max_bytes"):
            fetch_jwks(f"{url}/big", cfg)
        with pytest.raises(StorageError, match="HTTP 500"):
            fetch_jwks(f"{url}/err", cfg)
        with pytest.raises(StorageError, match=r"took longer than oidc\.jwks_timeout"):
            fetch_jwks(f"{url}/slow", OidcConfig(jwks_timeout=1))
    with pytest.raises(StorageError, match="cannot fetch JWKS"):
        fetch_jwks("http://127.0.0.1:9/jwks", cfg)


# -- config --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": "admin"}, "role must be one of"),
        ({"claims": {}}, "must name at least one claim"),
        ({"audience": ""}, "audience is required"),
        ({"channels": ["nope"]}, "unknown channel"),
        ({"token_lifetime": 100_000}, "token_lifetime must be"),
        ({"packages": ["../x"]}, "packages is invalid"),
        ({"issuer": "ftp://x"}, "issuer is required"),
        ({"surprise": 1}, "unknown key"),
    ],
)
def test_bad_publisher_config_is_refused(
    oidc_env: ServerEnv, issuer: Issuer, change: dict[str, Any], message: str
) -> None:
    data = publisher_config(issuer)
    data["publishers"]["svc"].update(change)
    with_oidc(oidc_env, data)
    with pytest.raises(ConfigError, match=message):
        load_config(oidc_env.config_path)


# -- the CLI in a CI job, against a real server ---------------------------------------------
@pytest.mark.e2e
def test_publish_oidc_from_github_actions_and_from_an_env_token(
    oidc_env: ServerEnv, issuer: Issuer, debs: DebFactory, tmp_path: Path, tools: None
) -> None:
    import http.server
    from urllib.parse import parse_qs, urlsplit

    from tests.httpserve import background_server
    from tests.server.live import aptship, start_server

    asked: list[str] = []

    class TokenService(http.server.BaseHTTPRequestHandler):
        """GitHub Actions' ID token service: bearer request token, ?audience=."""

        def do_GET(self) -> None:
            audience = parse_qs(urlsplit(self.path).query).get("audience", [""])[0]
            asked.append(audience)
            if self.headers.get("Authorization") != "bearer request-secret":
                self.send_error(403)
                return
            body = json.dumps({"value": issuer.mint(aud=audience)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with (
        background_server(TokenService) as service,
        start_server(oidc_env.config_path, tmp_path / "server", workers=1) as server,
    ):
        github = {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{service}/token?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-secret",
            "APTSHIP_OIDC_AUDIENCE": AUDIENCE,
            "APTSHIP_TOKEN": "",
        }
        deb = debs("svc-api", "1.0-1")
        done = aptship(
            "--server", server.url, "publish", "--oidc", "-c", "dev", str(deb), env=github
        )
        assert done.returncode == 0, done.stderr
        assert "published: svc-api 1.0-1" in done.stdout and asked == [AUDIENCE]

        gitlab = {"APTSHIP_ID_TOKEN": issuer.mint(repository="acme/svc"), "APTSHIP_TOKEN": ""}
        newer = debs("svc-api", "1.1-1")
        done = aptship(
            "--server", server.url, "publish", "--oidc", "-c", "dev", str(newer), env=gitlab
        )
        assert done.returncode == 0, done.stderr
        again = aptship(
            "--server", server.url, "publish", "--oidc", "-c", "dev", str(newer), env=gitlab
        )
        assert again.returncode == 6 and "already exchanged" in again.stderr  # replayed jti
        wrong = {"APTSHIP_ID_TOKEN": issuer.mint(repository="acme/other")}
        refused = aptship(
            "--server", server.url, "publish", "--oidc", "-c", "dev", str(newer), env=wrong
        )
        assert refused.returncode == 6 and "match no trusted publisher" in refused.stderr
        none = aptship("--server", server.url, "publish", "--oidc", "-c", "dev", str(newer))
        assert none.returncode == 2 and "needs an ID token" in none.stderr
    rows = oidc_env.repo().history("dev", "svc-api")
    assert [r["actor"] for r in rows] == [
        "oidc:svc (repository=acme/svc, ref=refs/heads/main, run_id=4242)"
    ] * 2
    for secret in (github["ACTIONS_ID_TOKEN_REQUEST_TOKEN"], gitlab["APTSHIP_ID_TOKEN"]):
        assert secret not in server.logs()
