"""Serve a repository kept in a Storage (S3 in practice) over loopback HTTP, for apt.

Only what apt may fetch is served: ``dists/...``, ``pool/...`` and the top-level
``*archive-keyring.asc``; everything else (``.aptship/`` state, audit log, shards)
is a 404, as is any key that does not exist or is not a valid storage key.

Index files and InRelease are read in one request (one GET is atomic on S3, so a
publisher overwriting ``dists/<channel>/InRelease`` meanwhile can never produce a
torn response); pool files are immutable and are streamed.
"""

from __future__ import annotations

import http.server
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

from publisher.errors import AptshipError, NotFound, UsageError
from publisher.storage.base import Storage
from tests.httpserve import background_server

CONTENT_TYPES = {
    ".deb": "application/vnd.debian.binary-package",
    ".asc": "application/pgp-keys",
    ".gpg": "application/pgp-signature",
    ".gz": "application/gzip",
    ".xz": "application/x-xz",
}


def storage_key(url_path: str) -> str | None:
    """The storage key apt may read at ``url_path``, or None (served as 404)."""
    key = unquote(urlsplit(url_path).path).lstrip("/")
    if key.startswith(("dists/", "pool/")):
        return key
    if "/" not in key and key.endswith("archive-keyring.asc"):
        return key
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    storage: Storage
    requests: list[str]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet; keep a record
        return

    def _content_type(self, key: str) -> str:
        for suffix, kind in CONTENT_TYPES.items():
            if key.endswith(suffix):
                return kind
        return (
            "text/plain; charset=utf-8" if key.startswith("dists/") else "application/octet-stream"
        )

    def _missing(self, head: bool) -> None:
        body = b"not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        self.requests.append(self.path)
        key = storage_key(self.path)
        if key is None:
            self._missing(head)
            return
        try:
            if head or key.startswith("pool/"):
                size = self.storage.stat(key).size
                data = None
            else:
                data = self.storage.read_bytes(key)
                size = len(data)
        except NotFound:
            self._missing(head)
            return
        except AptshipError as exc:  # invalid key (404) or storage failure (503)
            status = 404 if isinstance(exc, UsageError) else 503
            self.send_error(status, exc.message)
            return
        self.send_response(200)
        self.send_header("Content-Type", self._content_type(key))
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if head:
            return
        if data is not None:
            self.wfile.write(data)
            return
        with self.storage.open_read(key) as fh:  # pool files never change: stream them
            shutil.copyfileobj(fh, self.wfile, 1024 * 1024)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)


@contextmanager
def serve_storage(storage: Storage) -> Iterator[str]:
    """Yield the base URL of an HTTP server on 127.0.0.1 that serves ``storage`` to apt.

    The paths requested are kept in the server's ``requests`` list, reachable via
    :func:`serve_storage_logged` when a test needs them.
    """
    with serve_storage_logged(storage) as (url, _requests):
        yield url


@contextmanager
def serve_storage_logged(storage: Storage) -> Iterator[tuple[str, list[str]]]:
    """Like :func:`serve_storage`, yielding (base URL, list of requested paths)."""
    log: list[str] = []
    handler = type("H", (_Handler,), {"storage": storage, "requests": log})
    with background_server(handler) as url:
        yield url, log
