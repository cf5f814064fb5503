"""Host reports: the validation of ``PUT /api/v1/channels/<ch>/hosts/<host_id>`` bodies.

A report is untrusted input from a host (docs/hosts.md, "Fleet view"): it is parsed
from a body already bounded by ``fleet.max_report_bytes`` and checked whole (types,
Debian names and versions, hostname, times, duplicate keys, nesting) before anything
is stored.  Every problem is an :class:`InvalidReport` (400) that says what is wrong,
or :class:`ReportTooLarge` (413).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from publisher.config import FleetConfig
from publisher.errors import InvalidPackage, InvalidReport, ReportTooLarge
from publisher.versions import check_package_name, check_version

HOST_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REPORT_FIELDS = frozenset({"hostname", "packages", "apt_update"})
MAX_HOSTNAME = 253
MAX_FIELD = 256  # package names and versions
MAX_TIMESTAMP = 64


def now_iso(now: float | None = None) -> str:
    stamp = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def parse_iso(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time with a zone (``Z`` or ``+hh:mm``)."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("no time zone")
    return when.timestamp()


def check_host_id(host_id: str) -> str:
    if not HOST_ID_RE.match(host_id):
        raise InvalidReport(
            f"invalid host id {host_id[:80]!r}: use 1-64 characters [a-z0-9._-], starting "
            "with a letter or digit (normally the 32-hex /etc/machine-id)"
        )
    return host_id


@dataclass(frozen=True)
class Report:
    """A validated host report."""

    hostname: str
    packages: dict[str, str | None]
    apt_update: str | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidReport(f"duplicate key {key[:80]!r} in the report")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidReport(f"{name} is not a JSON value")


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in text)


def _hostname(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidReport("'hostname' must be a non-empty string")
    if len(value) > MAX_HOSTNAME:
        raise InvalidReport(f"'hostname' is longer than {MAX_HOSTNAME} characters")
    if not _printable(value):
        raise InvalidReport("'hostname' contains control or format characters")
    return value


def _packages(value: Any, limit: int) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise InvalidReport("'packages' must be an object: package name -> version or null")
    if len(value) > limit:
        raise InvalidReport(
            f"'packages' names {len(value)} packages; at most {limit} (fleet.max_packages)"
        )
    out: dict[str, str | None] = {}
    for name, version in value.items():
        try:
            if len(name) > MAX_FIELD:
                raise InvalidPackage(f"package name longer than {MAX_FIELD} characters")
            check_package_name(name)
            if version is not None:
                if not isinstance(version, str):
                    raise InvalidPackage(f"the version of {name!r} must be a string or null")
                if len(version) > MAX_FIELD:
                    raise InvalidPackage(f"the version of {name!r} is too long")
                check_version(version)
        except InvalidPackage as err:
            raise InvalidReport(f"'packages': {err.message}") from None
        out[name] = version
    return out


def _apt_update(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP:
        raise InvalidReport("'apt_update' must be an ISO 8601 time such as 2026-11-30T21:00:00Z")
    try:
        return now_iso(parse_iso(value))
    except (ValueError, OverflowError, OSError):
        raise InvalidReport(
            "'apt_update' must be an ISO 8601 time with a zone, e.g. 2026-11-30T21:00:00Z"
        ) from None


def parse_report(body: bytes, limits: FleetConfig) -> Report:
    """Validate a report body; InvalidReport (or ReportTooLarge) says what is wrong."""
    if len(body) > limits.max_report_bytes:
        raise ReportTooLarge(
            f"report is larger than {limits.max_report_bytes} bytes (fleet.max_report_bytes)"
        )
    try:
        data = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise InvalidReport("the report is not UTF-8 text") from None
    except RecursionError:
        raise InvalidReport("the report is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and over-long integers
        raise InvalidReport(f"the report is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidReport(
            'send a JSON object: {"hostname": ..., "packages": {...}, "apt_update": ...}'
        )
    unknown = sorted(set(data) - REPORT_FIELDS)
    if unknown:
        raise InvalidReport(f"unknown field {unknown[0][:80]!r} in the report")
    if "packages" not in data:
        raise InvalidReport("'packages' is required (an object; may be empty)")
    return Report(
        hostname=_hostname(data.get("hostname")),
        packages=_packages(data["packages"], limits.max_packages),
        apt_update=_apt_update(data.get("apt_update")),
    )
