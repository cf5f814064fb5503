"""Serve a directory over loopback HTTP in a thread, logging every request path."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import BaseRequestHandler


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def send_head(self):  # type: ignore[no-untyped-def]
        # http.server compares If-Modified-Since at one-second resolution, which would
        # hide a second publish within the same second; tests always want the file.
        del self.headers["If-Modified-Since"]
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:
        self.requests.append(self.path)


@contextmanager
def background_server(handler: Callable[..., BaseRequestHandler]) -> Iterator[str]:
    """Run a threaded HTTP server on 127.0.0.1 in a thread; yield its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serve_directory(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (base URL, list of requested paths) for an HTTP server on 127.0.0.1."""
    log: list[str] = []
    handler = functools.partial(type("H", (_Handler,), {"requests": log}), directory=str(root))
    with background_server(handler) as url:
        yield url, log
