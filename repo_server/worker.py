"""The gunicorn worker class of ``conf/gunicorn.conf.py``: gthread with a header deadline.

gunicorn's gthread worker hands a connection to a thread once its first bytes
arrive, and the thread then blocks until the request line and headers are complete,
with no time limit.  :class:`AptshipWorker` registers each such read with the
process's :data:`~repo_server.deadlines.WATCHDOG`: a client that has not sent its
headers within ``limits.header_timeout`` seconds has its socket shut and frees the
thread.  Body reads are bounded by :class:`~repo_server.deadlines.BodyDeadline`.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from publisher.config import LimitsConfig
from repo_server.deadlines import WATCHDOG, close_after_request


class AptshipWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading: dict[int, int] = {}  # thread id -> watchdog entry
        self._reading_lock = threading.Lock()

    def header_timeout(self) -> float:
        extensions = getattr(self.wsgi, "extensions", {})
        state = extensions.get("aptship")
        limits = state.config.limits if state is not None else LimitsConfig()
        return float(limits.header_timeout)

    def handle(self, conn: Any) -> Any:
        deadline = time.monotonic() + self.header_timeout()
        ident = WATCHDOG.watch(conn.sock, deadline, socket.SHUT_RDWR)
        with self._reading_lock:
            self._reading[threading.get_ident()] = ident
        try:
            return super().handle(conn)
        finally:
            with self._reading_lock:
                WATCHDOG.forget(self._reading.pop(threading.get_ident(), None))

    def handle_request(self, req: Any, conn: Any) -> Any:
        """The headers are in: the body and the response have their own bounds.

        Returns False (close, do not drain) when the app left the body unread.
        """
        with self._reading_lock:
            WATCHDOG.forget(self._reading.pop(threading.get_ident(), None))
        close_after_request()  # a flag left by an earlier request on this thread
        keepalive = super().handle_request(req, conn)
        return keepalive and not close_after_request()
