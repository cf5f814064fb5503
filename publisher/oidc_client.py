"""``aptship --server URL publish --oidc``: trusted publishing from a CI job.

The ID token comes from GitHub Actions (``$ACTIONS_ID_TOKEN_REQUEST_URL`` with
``$ACTIONS_ID_TOKEN_REQUEST_TOKEN``; the job needs ``permissions: id-token: write``)
or from ``$APTSHIP_ID_TOKEN`` (GitLab's ``id_tokens:``, or any CI).  GitHub is asked
for the audience ``$APTSHIP_OIDC_AUDIENCE``, else the server URL.  The ID token is
exchanged at ``POST /api/v1/oidc/exchange`` for a short-lived aptship token, which
the command then publishes with (docs/ci.md).  No token is ever printed.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import requests

from publisher.errors import StorageError, Unauthorized, UsageError
from publisher.remote import API_PREFIX, CONNECT_TIMEOUT, RemoteRepository, error_from_response

GITHUB_URL_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN_ENV = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105 - a variable name
ID_TOKEN_ENV = "APTSHIP_ID_TOKEN"  # noqa: S105 - a variable name
AUDIENCE_ENV = "APTSHIP_OIDC_AUDIENCE"
READ_TIMEOUT = 30.0
MAX_ID_TOKEN_CHARS = 64 * 1024


def default_audience(server: str) -> str:
    return os.environ.get(AUDIENCE_ENV) or server.rstrip("/")


def github_id_token(url: str, request_token: str, audience: str) -> str:
    """Ask GitHub Actions' token service for an ID token with ``audience``."""
    sep = "&" if "?" in url else "?"
    try:
        resp = requests.get(
            f"{url}{sep}audience={quote(audience, safe='')}",
            headers={"Authorization": f"bearer {request_token}", "Accept": "application/json"},
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise StorageError(
            f"cannot reach GitHub's ID token service ({type(exc).__name__})"
        ) from None
    if resp.status_code != 200:
        raise Unauthorized(
            f"GitHub's ID token service answered HTTP {resp.status_code}; does the job have "
            "`permissions: id-token: write`?"
        )
    try:
        value = resp.json()["value"]
    except (ValueError, KeyError, TypeError):
        raise StorageError("GitHub's ID token service sent no token ('value')") from None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_TOKEN_CHARS:
        raise StorageError("GitHub's ID token service sent an unusable token")
    return value


def ci_id_token(server: str) -> str:
    """The CI job's ID token: GitHub Actions first, else ``$APTSHIP_ID_TOKEN``."""
    url, request_token = os.environ.get(GITHUB_URL_ENV), os.environ.get(GITHUB_TOKEN_ENV)
    if url and request_token:
        return github_id_token(url, request_token, default_audience(server))
    token = os.environ.get(ID_TOKEN_ENV, "").strip()
    if token:
        return token
    raise UsageError(
        f"--oidc needs an ID token: run in GitHub Actions with `permissions: id-token: "
        f"write`, or set ${ID_TOKEN_ENV} (e.g. GitLab's id_tokens:)"
    )


def exchange_id_token(server: str, id_token: str) -> str:
    """Exchange ``id_token`` at ``server``; the short-lived aptship token's secret."""
    base = server.rstrip("/")
    try:
        resp = requests.post(
            f"{base}{API_PREFIX}/oidc/exchange",
            json={"token": id_token},
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise StorageError(
            f"cannot reach the aptship server at {base} ({type(exc).__name__})"
        ) from None
    if resp.status_code >= 400:
        raise error_from_response(resp, base)
    try:
        secret = resp.json()["token"]
    except (ValueError, KeyError, TypeError):
        raise StorageError(f"aptship server {base} sent no token from the exchange") from None
    return str(secret)


def oidc_repository(server: str) -> RemoteRepository:
    """The server's API, reached with a token exchanged for this CI job's ID token."""
    if not server.startswith(("http://", "https://")):
        raise UsageError(f"server URL {server!r} must start with http:// or https://")
    return RemoteRepository(server, exchange_id_token(server, ci_id_token(server)))
