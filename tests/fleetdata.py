"""Host reports for the fleet tests: a good one to vary, and the hostile bodies every
intake (parser, Flask app, gunicorn) must refuse with 400."""

from __future__ import annotations

import json
from typing import Any


def body(**fields: Any) -> bytes:
    """A valid report body (JSON bytes) with ``fields`` replaced or added."""
    data: dict[str, Any] = {"hostname": "web-1", "packages": {"svc": "1.4.2-1"}}
    data.update(fields)
    return json.dumps(data).encode()


def report(**fields: Any) -> dict[str, Any]:
    """A valid report (for ``json=``) with ``fields`` replaced or added."""
    data: dict[str, Any] = {"hostname": "web-1", "packages": {"svc": "1.0-1", "other": None}}
    return data | fields


HOSTILE: list[tuple[str, bytes]] = [
    ("not json", b"{nope"),
    ("not utf-8", b'{"hostname": "\xff", "packages": {}}'),
    ("not an object", b'["hostname"]'),
    ("null", b"null"),
    ("no packages", b'{"hostname": "h"}'),
    ("no hostname", b'{"packages": {}}'),
    ("hostname not a string", body(hostname=7)),
    ("empty hostname", body(hostname="")),
    ("hostname too long", body(hostname="a" * 254)),
    ("hostname with a newline", body(hostname="web-1\nFAKE LINE")),
    ("hostname with an escape", body(hostname="web\x1b[31m")),
    ("hostname with a bidi override", body(hostname="web\u202e1")),
    ("packages a list", body(packages=["svc"])),
    ("version a number", body(packages={"svc": 1.4})),
    ("version an object", body(packages={"svc": {"v": "1"}})),
    ("bad package name", body(packages={"Svc!": "1.0"})),
    ("one-letter name", body(packages={"s": "1.0"})),
    ("bad version", body(packages={"svc": "not a version"})),
    ("version starting with a letter", body(packages={"svc": "v1.0"})),
    ("name too long", body(packages={"s" * 300: "1.0"})),
    ("too many packages", body(packages={f"p{i:04d}": "1.0" for i in range(1001)})),
    ("unknown field", body(owner="x")),
    ("duplicate key", b'{"hostname": "a", "hostname": "b", "packages": {}}'),
    ("duplicate package", b'{"hostname": "a", "packages": {"svc": "1", "svc": "2"}}'),
    ("NaN", b'{"hostname": "a", "packages": {"svc": NaN}}'),
    ("apt_update not a time", body(apt_update="yesterday")),
    ("apt_update without a zone", body(apt_update="2026-11-30T21:00:00")),
    ("apt_update a number", body(apt_update=1234)),
    (
        "deep nesting",
        b'{"hostname": "a", "packages": {"svc": ' + b"[" * 20000 + b"]" * 20000 + b"}}",
    ),
    ("shallow nesting", body(packages={"svc": [[["1.0"]]]})),
    ("huge integer", b'{"hostname": "a", "packages": {}, "apt_update": ' + b"9" * 5000 + b"}"),
]
