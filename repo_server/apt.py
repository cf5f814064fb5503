"""Serve the apt repository (the server root is the repository root).

``GET``/``HEAD`` of ``/dists/<channel>/...``, ``/pool/...`` and
``/archive-keyring.asc``; nothing else, and never ``.aptship/`` (no route reaches
it).  Every key goes through :func:`check_key` before storage sees it, so ``..``,
``%2e%2e``, ``%2f``, backslashes and absolute paths are refused (400) without any
read.

Responses carry ``ETag``, ``Last-Modified`` and ``Accept-Ranges`` and honour
``If-None-Match``/``If-Modified-Since`` (304) and ``Range``/``If-Range`` (206)
through Werkzeug's ``make_conditional``.  A mutable file (InRelease, Release, pins,
Packages) changed less than :data:`SETTLED_SECONDS` ago is sent without
``Last-Modified``: apt revalidates with ``If-Modified-Since`` alone, at one-second
resolution, and must never get a 304 for content that changed within that second.

* Local storage: the file is opened first and its size, mtime and ETag come from
  ``fstat`` of that open file, so an index replaced meanwhile can never be served
  with the wrong length.  The body is the WSGI server's ``wsgi.file_wrapper``
  (gunicorn sends it with ``sendfile``); range requests use a seekable wrapper.
* Fast path (:class:`FastIndexes`): an unconditional, whole-file ``GET``/``HEAD``
  of a local ``dists/`` file by a token that may read the channel is answered below
  Flask, with the same checks (:func:`check_key`, the token store, ``has_role`` and
  ``covers``, the configured channels, the storage's own path resolution) and the
  same headers, metrics included.  Anything else (no or bad token, a refusal, a
  conditional or range request, a missing file, S3) goes through Flask unchanged.
  Flask's request context, session and routing are most of the cost of a small
  file such as InRelease.
* S3: pool and ``by-hash`` files are immutable and streamed in chunks, opened only
  when the body is sent (a 304 or HEAD costs one HEAD request).  Mutable index
  files (Release, InRelease, Packages...) are read whole in one GET so body, length
  and ETag always belong to one version.  With ``server.pool_redirect = true`` a
  pool download is answered with a 302 to a presigned URL valid for 5 minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, redirect, request
from werkzeug.datastructures import Authorization
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import http_date, quote_etag
from werkzeug.wrappers import Response
from werkzeug.wsgi import FileWrapper, wrap_file

from publisher.dists import KEYRING_KEY
from publisher.errors import AptshipError, NotFound
from publisher.storage.base import Storage
from publisher.storage.keys import check_key
from repo_server.auth import check_pool_access, current_token, require
from repo_server.state import ServerState, server_state

bp = Blueprint("apt", __name__)
CHUNK = 256 * 1024
PRESIGN_SECONDS = 300
IMMUTABLE_MAX_AGE = 365 * 24 * 3600
SETTLED_SECONDS = 2  # a mutable file's Last-Modified is sent once it is this old
_TYPES = {
    ".deb": "application/vnd.debian.binary-package",
    ".gz": "application/gzip",
    ".xz": "application/x-xz",
    ".gpg": "application/pgp-signature",
    ".asc": "application/pgp-keys",
}


def content_type(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    if "/by-hash/" in key:
        return "application/octet-stream"
    for suffix, mimetype in _TYPES.items():
        if name.endswith(suffix):
            return mimetype
    if name in ("Release", "InRelease", "Packages"):
        return "text/plain"
    return "application/octet-stream"


def is_immutable(key: str) -> bool:
    return key.startswith("pool/") or "/by-hash/" in key


def _settled(key: str, mtime: float) -> bool:
    """Whether a file of this age may carry a Last-Modified (see :func:`_respond`)."""
    return is_immutable(key) or mtime < time.time() - SETTLED_SECONDS


def _cache_control(key: str) -> str:
    if is_immutable(key):
        return f"private, max-age={IMMUTABLE_MAX_AGE}, immutable"
    return "no-cache"


def _respond(
    body: Iterable[bytes], key: str, size: int, etag: str, mtime: float | None
) -> Response:
    response = Response(body, mimetype=content_type(key), direct_passthrough=True)
    response.content_length = size
    response.set_etag(etag)
    if mtime is not None and _settled(key, mtime):
        # apt revalidates with If-Modified-Since alone, at one-second resolution.  A file
        # changed twice within one second would look unchanged to a client holding the
        # first version, so a mutable file gets a Last-Modified only once its second has
        # passed (RFC 9110 8.8.2.2: such a date is a weak validator until then).
        response.last_modified = datetime.fromtimestamp(mtime, tz=UTC)
    response.headers["Cache-Control"] = _cache_control(key)
    try:
        return response.make_conditional(request, accept_ranges=True, complete_length=size)
    except RequestedRangeNotSatisfiable:
        response.close()
        raise


def _local(path: Path, key: str) -> Response:
    try:
        fh = path.open("rb")
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound(f"{key} not found") from None
    st = os.fstat(fh.fileno())
    body: Iterable[bytes] = (
        FileWrapper(fh, CHUNK)
        if "HTTP_RANGE" in request.environ
        else wrap_file(request.environ, fh)
    )
    etag = f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"
    return _respond(body, key, st.st_size, etag, st.st_mtime)


def _chunks(storage: Storage, key: str) -> Iterator[bytes]:
    with storage.open_read(key) as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _remote(storage: Storage, key: str) -> Response:
    info = storage.stat(key)
    etag = info.etag.strip('"')
    if is_immutable(key) or request.method == "HEAD":
        return _respond(_chunks(storage, key), key, info.size, etag, info.mtime)
    data, read_etag = storage.read_with_etag(key)
    mtime = info.mtime if read_etag == info.etag else None
    return _respond([data], key, len(data), read_etag.strip('"'), mtime)


def serve(key: str, storage: Storage | None = None) -> Response:
    """Stream one stored object with conditional and range support.

    ``storage``: where the object lives; by default the engine's tree (aptship's own
    storage, or aptly's published directory with the aptly engine).
    """
    storage = storage if storage is not None else server_state().repo.serving
    path = storage.local_path(check_key(key))
    return _local(path, key) if path is not None else _remote(storage, key)


@bp.get("/archive-keyring.asc")
def keyring() -> Response:
    current_token()
    return serve(KEYRING_KEY, server_state().repo.storage)


@bp.get("/dists/<channel>/<path:rest>")
def dists(channel: str, rest: str) -> Response:
    require("read", channel)
    server_state().config.channel(channel)
    return serve(f"dists/{channel}/{rest}")


@bp.get("/pool/<path:rest>")
def pool(rest: str) -> Response:
    key = check_key(f"pool/{rest}")
    check_pool_access(key)
    state = server_state()
    if state.config.server.pool_redirect:
        url = state.repo.serving.presigned_url(key, PRESIGN_SECONDS)
        if url is not None:
            return redirect(url, 302)
    return serve(key)


# -- the fast path ------------------------------------------------------------------------
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
# Any of these makes the answer depend on more than the file: Flask handles them.
_SLOW_HEADERS = (
    "HTTP_RANGE",
    "HTTP_IF_RANGE",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)
FAST_ENDPOINT = "apt.dists"  # the metrics label of the route it stands in for


class FastIndexes:
    """WSGI middleware: serve allowed, unconditional reads of local ``dists/`` files.

    Returns None from :meth:`try_serve` (and so hands the request to Flask) for
    everything it is not sure about; it never refuses anything itself.
    """

    def __init__(self, app: WSGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self._children: dict[str, tuple[Any, Any, Any]] = {}

    def _metrics(self, method: str) -> tuple[Any, Any, Any]:
        """(latency, requests, bytes) metric children for ``method``, bound once."""
        children = self._children.get(method)
        if children is None:
            m = self.state.metrics
            children = (
                m.latency.labels(FAST_ENDPOINT),
                m.requests.labels(FAST_ENDPOINT, method, "200"),
                m.bytes_served.labels(FAST_ENDPOINT),
            )
            self._children[method] = children
        return children

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            served = self.try_serve(environ, start_response)
        except (AptshipError, OSError, ValueError):  # UnicodeError is a ValueError
            served = None
        return served if served is not None else self.app(environ, start_response)

    def try_serve(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD")
        raw: str = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD") or not raw.startswith("/dists/"):
            return None
        # PEP 3333 strings carry bytes as latin-1; Flask routes on their UTF-8 decoding
        path = raw.encode("latin-1").decode("utf-8")
        for name in _SLOW_HEADERS:
            if name in environ:
                return None
        key = check_key(path[1:])
        parts = key.split("/", 2)
        if len(parts) < 3 or parts[1] not in self.state.config.channels:
            return None
        auth = Authorization.from_header(environ.get("HTTP_AUTHORIZATION"))
        if auth is None:
            return None
        # what repo_server.auth accepts: the Basic password or the Bearer token
        secret = auth.password if auth.type == "basic" else auth.token
        if not secret:
            return None
        token = self.state.tokens.authenticate(secret)
        if token is None or not (token.has_role("read") and token.covers(parts[1])):
            return None
        storage = self.state.repo.serving
        local = storage.local_path(key)
        if local is None:
            return None
        fh = local.open("rb")
        try:
            st = os.fstat(fh.fileno())
            headers = [
                ("Content-Type", _mimetype(key)),
                ("Content-Length", str(st.st_size)),
                ("ETag", quote_etag(f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")),
                ("Cache-Control", _cache_control(key)),
                ("Accept-Ranges", "bytes"),
                ("Date", http_date()),
            ]
            if _settled(key, st.st_mtime):
                headers.append(("Last-Modified", http_date(st.st_mtime)))
            latency, requests, served = self._metrics(method)
            latency.observe(time.perf_counter() - started)
            requests.inc()
            if method == "HEAD":
                fh.close()
                start_response("200 OK", headers)
                return []
            if st.st_size:
                served.inc(st.st_size)
            start_response("200 OK", headers)
        except BaseException:
            fh.close()
            raise
        wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        body: Iterable[bytes] = wrapper(fh, CHUNK)
        return body


def _mimetype(key: str) -> str:
    """The Content-Type header Flask's Response writes for :func:`content_type`."""
    mimetype = content_type(key)
    return f"{mimetype}; charset=utf-8" if mimetype.startswith("text/") else mimetype
