"""Finding 1 (pre-auth denial of service) and slow clients, against real gunicorn.

64 connections that trickle their request (headers or body) must neither stop apt
(``GET /dists/dev/InRelease`` answered within 1 s, as apt's own timeouts expect)
nor stay open past their deadline (``limits.header_timeout``, ``limits.body_grace``
+ ``limits.min_body_rate``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.security.conftest import (
    LIMITS,
    Hostile,
    apt_get,
    assert_workers_small,
    connect,
    wait_closed,
)

SLOW = 64
MARGIN = 10.0  # generous slack on top of a deadline before the test calls it "held"


@contextlib.contextmanager
def trickling(socks: list[socket.socket], byte: bytes = b"a") -> Iterator[None]:
    """Send one byte to every socket every 0.25 s, until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.25):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(byte)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def apt_keeps_answering(h: Hostile, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert apt_get(h, timeout=1.0) == 200
        assert apt_get(h, "/healthz", timeout=1.0) == 200
        time.sleep(0.1)  # paces the probe loop for ``seconds``; it waits for nothing


def open_slow(h: Hostile, head: bytes, count: int = SLOW) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = connect(h)
        sock.sendall(head)
        socks.append(sock)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def test_slow_login_bodies_neither_starve_apt_nor_stay_open(hostile: Hostile) -> None:
    head = (
        b"POST /ui/login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\ntoken="
    )
    opened = time.monotonic()
    socks = open_slow(hostile, head)
    try:
        with trickling(socks):
            apt_keeps_answering(hostile, 2.0)
            deadline = opened + LIMITS["body_grace"] + MARGIN
            answers = [wait_closed(sock, deadline) for sock in socks]
    finally:
        close_all(socks)
    # every slow body got its 408 (or, at worst, a closed connection), none a 200
    assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) >= SLOW // 2, answers[:3]
    assert not any(a.startswith(b"HTTP/1.1 2") for a in answers)
    assert all(b"limits.body_grace" in a for a in answers if a)
    assert_workers_small(hostile.server)


def test_slow_headers_neither_starve_apt_nor_stay_open(hostile: Hostile) -> None:
    opened = time.monotonic()
    socks = open_slow(hostile, b"GET /dists/dev/InRelease HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        with trickling(socks):
            apt_keeps_answering(hostile, 2.0)
            deadline = opened + LIMITS["header_timeout"] + MARGIN
            answers = [wait_closed(sock, deadline) for sock in socks]
    finally:
        close_all(socks)
    assert answers == [b""] * SLOW  # cut off, nothing served
    assert_workers_small(hostile.server)


def test_slow_upload_with_a_publish_token_is_cut_off(hostile: Hostile) -> None:
    head = (
        "POST /api/v1/channels/dev/packages HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {hostile.secrets['dev-publisher']}\r\n"
        "Content-Type: application/vnd.debian.binary-package\r\n"
        "Content-Length: 900000\r\n\r\n!<arch>\n"
    ).encode()
    opened = time.monotonic()
    socks = open_slow(hostile, head, 8)
    try:
        with trickling(socks):
            apt_keeps_answering(hostile, 1.0)
            deadline = opened + LIMITS["body_grace"] + MARGIN
            answers = [wait_closed(sock, deadline) for sock in socks]
    finally:
        close_all(socks)
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:2]
    assert not list(hostile.upload_dir.iterdir())  # nothing left behind


@pytest.mark.parametrize(
    ("path", "who"),
    [
        ("/ui/login", None),
        ("/api/v1/channels/dev/promote", None),  # 401 before any body is read
        ("/api/v1/channels/staging/promote", "staging-promoter"),
        ("/api/v1/channels/dev/packages", "dev-publisher"),  # past max_upload_bytes
    ],
)
def test_oversized_body_is_refused_before_it_is_read(
    hostile: Hostile, path: str, who: str | None
) -> None:
    """``curl -F file=@1GB.bin /ui/login``: 413 at once, nothing written, nothing read."""
    auth = f"Authorization: Bearer {hostile.secrets[who]}\r\n" if who else ""
    kind = "multipart/form-data; boundary=xx"
    sock = connect(hostile)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}"
            f"Content-Type: {'application/json' if 'promote' in path else kind}\r\n"
            f"Content-Length: {1024**3}\r\n\r\n--xx\r\n".encode()
        )
        answer = wait_closed(sock, time.monotonic() + 3)  # closed at once, not drained
    finally:
        sock.close()
    expected = b"HTTP/1.1 401" if path.startswith("/api/") and who is None else b"HTTP/1.1 413"
    assert answer.startswith(expected), answer[:200]
    assert not list(hostile.upload_dir.iterdir())
    assert_workers_small(hostile.server)


def test_chunked_body_without_length_is_bounded_too(hostile: Hostile) -> None:
    sock = connect(hostile)
    sent = 0
    try:
        sock.sendall(
            b"POST /ui/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
        with contextlib.suppress(OSError):
            for _ in range(1024):  # up to 64 MiB; the limit is 64 KiB
                sock.sendall(chunk)
                sent += 0x10000
        answer = wait_closed(sock, time.monotonic() + MARGIN)
    finally:
        sock.close()
    # refused (CSRF: no form is read from a length-less body, or 413), and the
    # server hung up long before the 64 MiB were sent
    assert answer.startswith((b"HTTP/1.1 403", b"HTTP/1.1 413")), answer[:200]
    assert sent < 16 * 1024**2
    assert_workers_small(hostile.server)
