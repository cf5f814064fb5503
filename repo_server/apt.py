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
* S3: pool and ``by-hash`` files are immutable and streamed in chunks, opened only
  when the body is sent (a 304 or HEAD costs one HEAD request).  Mutable index
  files (Release, InRelease, Packages...) are read whole in one GET so body, length
  and ETag always belong to one version.  With ``server.pool_redirect = true`` a
  pool download is answered with a 302 to a presigned URL valid for 5 minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, redirect, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wrappers import Response
from werkzeug.wsgi import FileWrapper, wrap_file

from publisher.dists import KEYRING_KEY
from publisher.errors import NotFound
from publisher.storage.base import Storage
from publisher.storage.keys import check_key
from repo_server.auth import check_pool_access, current_token, require
from repo_server.state import server_state

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


def _respond(
    body: Iterable[bytes], key: str, size: int, etag: str, mtime: float | None
) -> Response:
    response = Response(body, mimetype=content_type(key), direct_passthrough=True)
    response.content_length = size
    response.set_etag(etag)
    if mtime is not None and (is_immutable(key) or mtime < time.time() - SETTLED_SECONDS):
        # apt revalidates with If-Modified-Since alone, at one-second resolution.  A file
        # changed twice within one second would look unchanged to a client holding the
        # first version, so a mutable file gets a Last-Modified only once its second has
        # passed (RFC 9110 8.8.2.2: such a date is a weak validator until then).
        response.last_modified = datetime.fromtimestamp(mtime, tz=UTC)
    if is_immutable(key):
        response.cache_control.private = True
        response.cache_control.max_age = IMMUTABLE_MAX_AGE
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
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
