"""The fleet view: which host runs which version of a channel's packages (docs/hosts.md).

Hosts report, with their ``read`` token, the versions dpkg has installed of the
packages their pins name.  The server keeps one small JSON record per (channel,
host) in the storage backend, so every server replica and the CLI see the same
fleet, on a local directory as on S3::

    .aptship/hosts/<channel>/<host_id>.json
    {"host_id", "hostname", "token", "packages", "apt_update", "last_seen"}

``token`` is the *name* of the token that created the record (never a secret): only
that token may write the record again.  ``last_seen`` is the server's clock at
receipt; ``apt_update`` is the host's own (untrusted) clock and only shown.

States of a host in a channel, for the packages it reports installed that the
channel pins: ``converged`` (all on their pin), ``behind`` (at least one is not),
``stale`` (no report for ``fleet.stale_after`` seconds; stale wins).  A package's
rollout counts the live (not stale) hosts that have it installed and how many run
the pin; stale hosts are counted apart, so a dead machine never holds a rollout back.

No Flask here: the server, the CLI, ``/metrics`` and the dashboard share this module;
reports are validated in :mod:`publisher.host_report` and stored by
:mod:`publisher.fleet_store`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from debian.debian_support import Version

from publisher.host_report import check_host_id, now_iso, parse_iso
from publisher.storage.keys import join_key

HOSTS_PREFIX = ".aptship/hosts/"
STATES = ("converged", "behind", "stale")


def host_prefix(channel: str) -> str:
    return join_key(HOSTS_PREFIX, channel) + "/"


def host_key(channel: str, host_id: str) -> str:
    return join_key(HOSTS_PREFIX, channel, f"{check_host_id(host_id)}.json")


# -- records ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HostRecord:
    host_id: str
    hostname: str
    token: str
    packages: dict[str, str | None]
    apt_update: str | None
    last_seen: str

    def to_json(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "token": self.token,
            "packages": dict(sorted(self.packages.items())),
            "apt_update": self.apt_update,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_json(cls, data: Any) -> HostRecord:
        """A stored record; ValueError when it is not one (the listing skips it)."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        packages = data.get("packages")
        if not isinstance(packages, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in packages.items()
        ):
            raise ValueError("bad packages")
        texts = [data.get(k) for k in ("host_id", "hostname", "token", "last_seen")]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("missing fields")
        apt_update = data.get("apt_update")
        parse_iso(str(data["last_seen"]))
        return cls(
            host_id=str(data["host_id"]),
            hostname=str(data["hostname"]),
            token=str(data["token"]),
            packages=dict(packages),
            apt_update=apt_update if isinstance(apt_update, str) else None,
            last_seen=str(data["last_seen"]),
        )


def on_pin(version: str, pin: str) -> bool:
    """dpkg equality (``1.0`` = ``0:1.0`` = ``1.0-0``), not string equality."""
    if version == pin:
        return True
    try:
        return Version(version) == Version(pin)
    except ValueError:
        return False


def host_view(
    record: HostRecord,
    pins: dict[str, str],
    now: float,
    stale_after: float,
    package: str | None = None,
) -> dict[str, Any]:
    """The record plus ``state``, ``behind`` (packages off their pin) and ``pins``."""
    names = [package] if package else sorted(record.packages)
    relevant = {
        n: record.packages[n]
        for n in names
        if record.packages.get(n) is not None and pins.get(n) is not None
    }
    behind = sorted(n for n, v in relevant.items() if v is not None and not on_pin(v, pins[n]))
    if now - parse_iso(record.last_seen) > stale_after:
        state = "stale"
    else:
        state = "behind" if behind else "converged"
    return {
        **record.to_json(),
        "pins": {n: pins[n] for n in sorted(relevant)},
        "state": state,
        "behind": behind,
    }


def needed(hosts: int, percent: float) -> int:
    """How many of ``hosts`` make ``percent`` %: rounded up, so 90% of 5 is 5; 0 of 0."""
    return math.ceil(hosts * percent / 100 - 1e-9)


@dataclass
class Rollout:
    """One pinned package across a channel's fleet."""

    package: str
    pin: str
    hosts: int = 0  # live hosts that have the package installed
    on_pin: int = 0
    stale: int = 0  # stale hosts that have it installed (not in ``hosts``)

    @property
    def behind(self) -> int:
        return self.hosts - self.on_pin

    def reached(self, percent: float) -> bool:
        """At least ``percent`` % of the live hosts run the pin (vacuously true for none)."""
        return self.on_pin >= needed(self.hosts, percent)

    def counts(self) -> str:
        """``37/40 hosts on 1.4.2-1; 3 behind`` (and ``; 2 stale`` when there are any)."""
        text = f"{self.on_pin}/{self.hosts} hosts on {self.pin}; {self.behind} behind"
        return text + (f"; {self.stale} stale" if self.stale else "")

    def line(self) -> str:
        return f"{self.package}: {self.counts()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "pin": self.pin,
            "hosts": self.hosts,
            "on_pin": self.on_pin,
            "behind": self.behind,
            "stale": self.stale,
            "summary": self.line(),
        }


def rollouts(
    records: Iterable[HostRecord],
    pins: dict[str, str],
    now: float,
    stale_after: float,
    packages: Iterable[str] = (),
) -> dict[str, Rollout]:
    """Per pinned package that a host has installed (and each of ``packages`` if pinned)."""
    out = {name: Rollout(name, pins[name]) for name in packages if name in pins}
    for record in records:
        stale = now - parse_iso(record.last_seen) > stale_after
        for name, version in record.packages.items():
            pin = pins.get(name)
            if version is None or pin is None:
                continue
            roll = out.setdefault(name, Rollout(name, pin))
            if stale:
                roll.stale += 1
                continue
            roll.hosts += 1
            roll.on_pin += on_pin(version, pin)
    return dict(sorted(out.items()))


def state_counts(
    records: Iterable[HostRecord], pins: dict[str, str], now: float, stale_after: float
) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for record in records:
        counts[host_view(record, pins, now, stale_after)["state"]] += 1
    return counts


def fleet_view(
    channel: str,
    records: list[HostRecord],
    pins: dict[str, str],
    stale_after: float,
    *,
    package: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON answer of ``GET /api/v1/channels/<ch>/hosts`` and ``aptship hosts --json``."""
    at = time.time() if now is None else now
    chosen = [r for r in records if package is None or r.packages.get(package) is not None]
    hosts = [host_view(r, pins, at, stale_after, package) for r in chosen]
    rolls = rollouts(chosen, pins, at, stale_after, [package] if package else [])
    if package:
        rolls = {k: v for k, v in rolls.items() if k == package}
    counts = dict.fromkeys(STATES, 0)
    for host in hosts:
        counts[host["state"]] += 1
    return {
        "channel": channel,
        "package": package,
        "generated_at": now_iso(at),
        "stale_after": stale_after,
        "pins": {name: roll.pin for name, roll in rolls.items()},
        "states": counts,
        "hosts": sorted(hosts, key=lambda h: str(h["host_id"])),
        "rollout": [roll.to_json() for roll in rolls.values()],
    }
