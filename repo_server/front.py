"""The access check behind the nginx front (``conf/nginx/aptship.conf``, docs/deploy.md).

nginx serves ``dists/`` and ``pool/`` from the storage directory itself, but asks
this endpoint first (``auth_request``) for every such request::

    GET /_front/auth
    Authorization: <the client's header, unchanged>
    X-Original-URI: <$request_uri: the raw request target, before nginx decodes it>

The decision is the one :mod:`repo_server.apt` takes for the same request, with
the same functions: ``require("read", channel)`` and a configured channel for
``dists/<channel>/...``, :func:`check_pool_access` for ``pool/...``, any valid
token for the keyring, and :func:`check_key` on the percent-decoded path first, so
``..``, ``%2e%2e``, ``%2f``, backslashes, empty segments and ``.aptship/`` are
refused here exactly as there.  A decoded path that passes :func:`check_key` is
also the path nginx serves (its normalization only merges slashes and resolves
dot segments, which are refused), so the decision is always about the served file.

On S3 storage an allow also carries ``X-Aptship-Location``: a presigned GET URL
of the object (5 minutes), which ``conf/nginx/aptship-s3.conf`` proxies from the
bucket.  nginx never passes the auth answer's headers to the client.

Answers: 204 to allow; 401 when apt would get 401; 403 for every other refusal
(403, and also the 404 or 400 the apt route would answer: ``auth_request`` passes
on 401 and 403 only and turns any other status into a 500).  The status
:mod:`repo_server.errors` assigns to the error is in ``X-Aptship-Status``.  On a
refusal the front re-sends the request to gunicorn, which answers it with the same
status, headers and body as without the front.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import Blueprint, Response, request

from publisher.dists import KEYRING_KEY
from publisher.errors import AptshipError, NotFound, UsageError
from publisher.storage.keys import check_key
from repo_server.auth import check_pool_access, current_token, require
from repo_server.state import server_state

bp = Blueprint("front", __name__)
URI_HEADER = "X-Original-URI"
STATUS_HEADER = "X-Aptship-Status"
LOCATION_HEADER = "X-Aptship-Location"
PRESIGN_SECONDS = 300  # nginx caches the answer 5 s: the URL outlives every use of it
MAX_URI = 4096  # nginx's own request line limit is 8 KiB (large_client_header_buffers)


def original_key() -> str:
    """The storage key of the request nginx is about to serve; UsageError if unsafe."""
    raw = request.headers.get(URI_HEADER)
    if raw is None:
        raise UsageError(f"{URI_HEADER} is missing: this endpoint is for the nginx front")
    if len(raw) > MAX_URI:
        raise UsageError(f"{URI_HEADER} is longer than {MAX_URI} characters")
    path = raw.split("?", 1)[0]  # nginx serves the file whatever the query string
    if not path.startswith("/") or "#" in path:
        raise UsageError(f"unsafe request path {path[:200]!r}")
    try:
        # header values reach WSGI as latin-1: the raw bytes nginx received, then decoded
        decoded = unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise UsageError("request path is not UTF-8 once percent-decoded") from None
    if "%" in decoded:
        # nginx decodes once, as this code does; a "%" left over would be a literal "%"
        # and no stored key has one (Debian names and versions cannot), so refuse.
        raise UsageError("request path with a '%' after decoding")
    return check_key(decoded[1:])


def decide(key: str) -> None:
    """Raise the error the apt route would raise for ``key``; return if it is allowed."""
    if key == KEYRING_KEY:
        current_token()
    elif key.startswith("dists/") and key.count("/") >= 2:
        channel = key.split("/", 2)[1]
        require("read", channel)
        server_state().config.channel(channel)
    elif key.startswith("pool/"):
        check_pool_access(key)
    else:
        raise NotFound(f"{key} is not an apt file")


@bp.get("/_front/auth")
def auth() -> Response:
    try:
        key = original_key()
        decide(key)
        headers = {}
        url = server_state().repo.serving.presigned_url(key, PRESIGN_SECONDS)
        if url is not None:  # S3: where nginx fetches the allowed object from
            headers[LOCATION_HEADER] = url
    except AptshipError as err:
        status = 401 if err.http_status == 401 else 403
        return Response(status=status, headers={STATUS_HEADER: str(err.http_status)})
    return Response(status=204, headers=headers)
