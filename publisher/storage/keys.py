"""Storage keys: the one place that decides whether a key is safe to use.

A key is a relative, ``/``-separated path inside the repository.  It must not be
empty, absolute, contain ``..`` or ``.`` segments, empty segments, backslashes or
control characters, or segments longer than 255 bytes (what file systems allow).
Both backends call :func:`check_key` before touching anything.
"""

from __future__ import annotations

import re

from publisher.errors import UsageError

MAX_SEGMENT = 255
_CONTROL = re.compile("[\x00-\x1f\x7f]")
# The common case in one match: ASCII segments of 1 to 255 of these characters, none
# starting with "." (so none is "." or ".."); every other key takes the full checks.
_PLAIN = r"[\w+~:@=,-][\w.+~:@=,-]{0,254}"
_PLAIN_KEY = re.compile(rf"{_PLAIN}(?:/{_PLAIN})*", re.ASCII)


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative storage key, else raise UsageError."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return _check_key(key)


def _check_key(key: str) -> str:
    if not key or not isinstance(key, str):
        raise UsageError("empty storage key")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise UsageError(f"unsafe storage key {key!r}: must be a relative path")
    if _CONTROL.search(key):
        raise UsageError(f"unsafe storage key {key!r}: control characters")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise UsageError(f"unsafe storage key {key!r}: empty, '.' or '..' segment")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_SEGMENT:
            raise UsageError(f"storage key segment longer than {MAX_SEGMENT} bytes")
    return key


def join_key(*parts: str) -> str:
    """Join key parts with ``/`` and check the result."""
    return check_key("/".join(p.strip("/") for p in parts if p))
