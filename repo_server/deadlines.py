"""Deadlines for slow clients: a socket that has not sent enough in time is shut.

A worker thread that reads a request (headers or body) blocks in ``recv``; a
per-read socket timeout does not bound the total, since a client can send one byte
just before each timeout.  So each read phase registers its socket here with an
absolute deadline, and one watchdog thread per process shuts the socket down when
the deadline passes: the blocked ``recv`` returns at once and the thread is free.

* Request line and headers (:mod:`repo_server.worker`): ``limits.header_timeout``
  seconds; the socket is shut both ways (nothing is answered).
* Bodies (:class:`BodyDeadline`, WSGI middleware around ``wsgi.input``):
  ``limits.body_grace`` seconds plus one second per ``limits.min_body_rate`` bytes
  received so far; only the reading side is shut, so the client still gets a 408
  (:class:`~publisher.errors.RequestTimeout`).

docs/security.md explains why an nginx front is still the recommendation for a
server on the internet.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from publisher.config import LimitsConfig
from publisher.errors import RequestTimeout

TICK = 0.1  # seconds between watchdog checks
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Watchdog:
    """Socket -> deadline; a daemon thread shuts sockets whose deadline passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[socket.socket, float, int]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float, how: int) -> int:
        """Shut ``sock`` (``how``: ``socket.SHUT_RD``/``SHUT_RDWR``) at ``deadline``."""
        with self._lock:
            ident = next(self._ids)
            self._watched[ident] = (sock, deadline, how)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="aptship-deadlines")
                self._thread.daemon = True
                self._thread.start()
        return ident

    def move(self, ident: int, deadline: float) -> None:
        with self._lock:
            found = self._watched.get(ident)
            if found is not None:
                self._watched[ident] = (found[0], deadline, found[2])

    def forget(self, ident: int | None) -> None:
        if ident is not None:
            with self._lock:
                self._watched.pop(ident, None)

    def expire(self, now: float) -> int:
        """Shut every socket past its deadline; returns how many."""
        with self._lock:
            late = [i for i, (_s, deadline, _h) in self._watched.items() if deadline <= now]
            shut = [self._watched.pop(i) for i in late]
        for sock, _deadline, how in shut:
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(how)
        return len(shut)

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            self.expire(time.monotonic())


WATCHDOG = Watchdog()  # one per process: the sockets of all apps in it
_unfinished = threading.local()  # set on the thread whose request body was left unread


def close_after_request() -> bool:
    """True (once) if this thread's last request left its body unread.

    The worker then closes the connection instead of letting gunicorn drain the
    rest of the body for seconds (a 413 or 401 to a 1 GB upload costs nothing).
    """
    flag = bool(getattr(_unfinished, "flag", False))
    _unfinished.flag = False
    return flag


class DeadlineInput:
    """``wsgi.input`` that must keep up: ``body_grace`` + received / ``min_body_rate``."""

    def __init__(
        self, stream: Any, sock: socket.socket, limits: LimitsConfig, expected: int | None
    ) -> None:
        self.stream = stream
        self.limits = limits
        self.expected = expected  # Content-Length; None for a chunked body
        self.start = time.monotonic()
        self.received = 0
        self.eof = False
        self.ident = WATCHDOG.watch(sock, self._deadline(), socket.SHUT_RD)

    def _deadline(self) -> float:
        return self.start + self.limits.body_grace + self.received / self.limits.min_body_rate

    def _too_slow(self) -> RequestTimeout:
        self.close()
        return RequestTimeout(
            f"the request body arrived too slowly ({self.received} bytes in "
            f"{time.monotonic() - self.start:.0f} s; limits.body_grace and "
            "limits.min_body_rate)"
        )

    def _check(self, data: bytes) -> bytes:
        self.received += len(data)
        deadline = self._deadline()
        if time.monotonic() >= deadline:  # late, or cut short by the watchdog
            raise self._too_slow()
        if not data or (self.expected is not None and self.received >= self.expected):
            self.eof = True
            self.close()  # all in: the watch ends, whatever the request does next
            return data
        WATCHDOG.move(self.ident, deadline)
        return data

    def _guard(self, read: Callable[[], bytes]) -> bytes:
        try:
            data = read()
        except Exception:
            if time.monotonic() >= self._deadline():  # our shutdown broke the read
                raise self._too_slow() from None
            raise
        return self._check(data)

    def read(self, size: int | None = -1) -> bytes:
        return self._guard(lambda: self.stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._guard(lambda: self.stream.readline(size))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        while line := self.readline():
            lines.append(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        WATCHDOG.forget(self.ident)


class BodyDeadline:
    """WSGI middleware: wrap gunicorn's ``wsgi.input`` in a :class:`DeadlineInput`."""

    def __init__(self, app: WsgiApp, limits: LimitsConfig) -> None:
        self.app = app
        self.limits = limits

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH") or "0"
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        expected = int(length) if length.isdigit() else 0
        if not isinstance(sock, socket.socket) or stream is None or not (chunked or expected):
            return self.app(environ, start_response)  # no body: nothing to watch
        guarded = DeadlineInput(stream, sock, self.limits, None if chunked else expected)
        environ["wsgi.input"] = guarded

        def announce_close(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            # A body left unread ends the connection (see close_after_request).  Say so
            # in the response (gunicorn's "Connection: close"), so that a client or a
            # proxy that keeps upstream connections alive (nginx) never sends its next
            # request on a connection that is about to be closed.
            if not guarded.eof:
                force_close = getattr(
                    getattr(start_response, "__self__", None), "force_close", None
                )
                if callable(force_close):
                    force_close()
            return start_response(status, headers, *exc)

        try:
            return self.app(environ, announce_close)
        finally:
            guarded.close()
            if not guarded.eof:
                _unfinished.flag = True


def init_app(app: Any, limits: LimitsConfig) -> None:
    """Bound every request body of ``app`` (size through Flask, time through this module)."""
    app.config.update(
        MAX_CONTENT_LENGTH=limits.max_body_bytes,  # uploads raise it for their request
        MAX_FORM_MEMORY_SIZE=limits.max_body_bytes,
        MAX_FORM_PARTS=limits.max_form_parts,
    )
    app.wsgi_app = BodyDeadline(app.wsgi_app, limits)
