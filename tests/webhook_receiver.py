"""A webhook receiver on loopback for the tests: checks every signature itself.

``receiver(secret)`` runs a threaded HTTP server (tests/httpserve.py) and yields a
:class:`Receiver`.  It verifies ``X-Aptship-Signature`` with its own HMAC code (not
aptship's), records each delivery, and answers as told: the statuses in
``statuses`` first (then 200), blocking on ``hold`` when it is set, or with a huge
streamed body when ``huge`` is set.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.httpserve import background_server

WAIT = 60.0  # seconds a test waits for deliveries before it fails
HUGE = 2 * 1024**3  # the Content-Length a "huge" answer announces


def check_signature(secret: bytes, header: str, body: bytes) -> bool:
    """The receiver's side, as docs/webhooks.md tells it: t=<unix>,v1=<hex>."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
        return False
    expected = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Delivery:
    payload: dict[str, Any]
    headers: dict[str, str]
    signed: bool


@dataclass
class Receiver:
    url: str
    secret: bytes
    statuses: list[int] = field(default_factory=list)
    hold: threading.Event | None = None
    huge: bool = False
    answer: bytes = b"ok"
    deliveries: list[Delivery] = field(default_factory=list)
    requests: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Delivery]:
        """The first ``count`` answered-with-2xx-or-not deliveries (fails after ``timeout``)."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.deliveries) >= count, timeout)
        assert ok, f"{len(self.deliveries)} deliveries, expected {count}"
        return list(self.deliveries)

    def wait_requests(self, count: int, timeout: float = WAIT) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.requests >= count, timeout)
        assert ok, f"{self.requests} requests, expected {count}"

    def types(self) -> list[str]:
        return [d.payload["type"] for d in self.deliveries]


def _handler(rcv: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rcv.cond:
                rcv.requests += 1
                rcv.cond.notify_all()
                status = rcv.statuses.pop(0) if rcv.statuses else 200
            if rcv.hold is not None:
                rcv.hold.wait(WAIT)
            signed = check_signature(rcv.secret, self.headers.get("X-Aptship-Signature", ""), body)
            with rcv.cond:
                rcv.deliveries.append(Delivery(json.loads(body), dict(self.headers), signed))
                rcv.cond.notify_all()
            if rcv.huge:
                self._huge()
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(rcv.answer)))
            self.end_headers()
            self.wfile.write(rcv.answer)

        def _huge(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(HUGE // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client stopped reading and closed: what it should do

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def receiver(secret: bytes = b"s3cret-for-tests", **kw: Any) -> Iterator[Receiver]:
    rcv = Receiver(url="", secret=secret, **kw)
    with background_server(_handler(rcv)) as url:
        rcv.url = url + "/hook"
        try:
            yield rcv
        finally:
            if rcv.hold is not None:
                rcv.hold.set()
