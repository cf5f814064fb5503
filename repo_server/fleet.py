"""Host reports and the fleet view over HTTP (docs/hosts.md, "Fleet view").

* ``PUT /api/v1/channels/<ch>/hosts/<host_id>``: a host's report, with its ``read``
  token for the channel.  The body is read with a hard limit before it is parsed,
  validated whole by :func:`publisher.host_report.parse_report`, and only then stored: a
  bad report changes nothing.  Per (token, channel, host) and *per server process*:
  ``fleet.report_burst`` reports at once, then one every ``fleet.report_interval``
  seconds (429 with Retry-After).
* ``GET /api/v1/channels/<ch>/hosts[?package=P]``: the fleet view (read role).

For ``/metrics`` (``aptship_hosts{channel,state}``) and the dashboard's rollout
column, the fleet is read from per-channel snapshots reused for
``fleet.cache_seconds``, so a scrape or a page view does not list storage each time.
Under gunicorn's multiprocess metrics the gauge is computed at scrape time by the
worker that answers (never written to the shared metric files).

The record store, the limiter and the cached gauge live on
``app.extensions["aptship_fleet"]``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from publisher.errors import RateLimited, ReportTooLarge, StorageError
from publisher.fleet import host_view, rollouts, state_counts
from publisher.fleet_store import FleetStore, channel_view, pins_of, record_pins
from publisher.host_report import check_host_id, parse_report
from repo_server.auth import current_token, require
from repo_server.state import EXTENSION, ServerState, server_state
from repo_server.webhooks import fleet_report

bp = Blueprint("fleet", __name__)
log = logging.getLogger("aptship.server")
FLEET_EXTENSION = "aptship_fleet"
LIMITER_SIZE = 100_000  # (token, channel, host) keys remembered by the rate limiter


@dataclass
class RateLimiter:
    """A token bucket per key (this process only): ``burst`` events at once, then one
    every ``interval`` seconds.  The burst lets a host's report after ``apt-get
    update`` and the one after the ``apt-get install`` that follows both through."""

    interval: float
    burst: int = 1
    size: int = LIMITER_SIZE
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[tuple[str, ...], tuple[float, float]] = field(
        default_factory=OrderedDict
    )  # key -> (tokens left, when)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, key: tuple[str, ...]) -> None:
        """Take one token for ``key``, or raise RateLimited when its bucket is empty."""
        if self.interval <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, when = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) / self.interval)
            if tokens < 1:
                wait = max(1, math.ceil((1 - tokens) * self.interval))
                raise RateLimited(
                    f"too many reports for this host: {self.burst} at once, then one every "
                    f"{self.interval:g}s (fleet.report_burst, fleet.report_interval); "
                    f"retry in {wait}s",
                    retry_after=wait,
                )
            self._buckets[key] = (tokens - 1, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.size:
                self._buckets.popitem(last=False)


@dataclass
class FleetState:
    store: FleetStore
    limiter: RateLimiter
    gauge: tuple[float, bytes] | None = None  # (monotonic time, rendered aptship_hosts)
    lock: threading.Lock = field(default_factory=threading.Lock)


@bp.record_once
def _setup(setup: BlueprintSetupState) -> None:
    app = setup.app
    if not isinstance(app, Flask):
        raise TypeError("the fleet endpoints need a Flask app")
    state: ServerState = app.extensions[EXTENSION]
    limits = state.config.fleet
    app.extensions[FLEET_EXTENSION] = FleetState(
        FleetStore(state.repo.storage, limits),
        RateLimiter(limits.report_interval, limits.report_burst),
    )


def fleet_state() -> FleetState:
    found: FleetState = current_app.extensions[FLEET_EXTENSION]
    return found


def read_body(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (ReportTooLarge past it, unread)."""
    announced = request.content_length
    too_large = ReportTooLarge(f"report is larger than {limit} bytes (fleet.max_report_bytes)")
    if announced is not None and announced > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while size <= limit:  # a read may return less than asked: loop to the end or the limit
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_large
    return b"".join(chunks)


@bp.put("/channels/<channel>/hosts/<host_id>")
def report(channel: str, host_id: str) -> Response:
    current_token()
    state = server_state()
    state.config.channel(channel)  # an unknown channel is a 404 for every token
    token = require("read", channel)
    check_host_id(host_id)
    fleet = fleet_state()
    parsed = parse_report(read_body(state.config.fleet.max_report_bytes), state.config.fleet)
    fleet.limiter.hit((token.name, channel, host_id))
    record = fleet.store.report(channel, host_id, token.name, parsed)
    fleet_report(state, fleet.store, channel, record)  # fleet.converged/diverged webhooks
    pins = pins_of(state.repo.states, channel, record.packages)
    return jsonify(host_view(record, pins, time.time(), state.config.fleet.stale_after))


@bp.get("/channels/<channel>/hosts")
def hosts(channel: str) -> Response:
    current_token()
    state = server_state()
    state.config.channel(channel)
    require("read", channel)
    package = request.args.get("package") or None
    return jsonify(channel_view(fleet_state().store, state.repo.states, channel, package=package))


# -- /metrics and the dashboard ---------------------------------------------------------
class HostsCollector(Collector):
    """``aptship_hosts{channel,state}`` from precomputed counts."""

    def __init__(self, counts: dict[str, dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "aptship_hosts",
            "Hosts that report to a channel, by state (converged, behind, stale)",
            labels=["channel", "state"],
        )
        for channel, counts in self.counts.items():
            for state, value in counts.items():
                gauge.add_metric([channel, state], value)
        yield gauge


def hosts_metrics() -> bytes:
    """The text exposition of ``aptship_hosts``, recomputed every ``fleet.cache_seconds``."""
    state, fleet = server_state(), fleet_state()
    limits = state.config.fleet
    now = time.monotonic()
    with fleet.lock:
        cached = fleet.gauge
    if cached is not None and now - cached[0] < limits.cache_seconds:
        return cached[1]
    counts = {}
    try:
        for channel in state.config.channels:
            records = fleet.store.snapshot(channel)
            pins = record_pins(state.repo.states, channel, records)
            counts[channel] = state_counts(records, pins, time.time(), limits.stale_after)
    except StorageError as err:  # the other metrics are still worth a scrape
        log.warning(
            "aptship_hosts left out of /metrics: %s",
            err.message,
            extra={"event": "fleet_metrics_failed", "code": err.code},
        )
        return cached[1] if cached is not None else b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostsCollector(counts))
    text = bytes(generate_latest(registry))
    with fleet.lock:
        fleet.gauge = (now, text)
    return text


def channel_rollouts(channels: list[str]) -> dict[str, list[tuple[str, str]]]:
    """package -> [(channel, "37/40 hosts on 1.4.2-1; 3 behind")], from the snapshots."""
    state, store = server_state(), fleet_state().store
    out: dict[str, list[tuple[str, str]]] = {}
    for channel in channels:
        records = store.snapshot(channel)
        if not records:
            continue
        pins = record_pins(state.repo.states, channel, records)
        for name, roll in rollouts(records, pins, time.time(), store.limits.stale_after).items():
            out.setdefault(name, []).append((channel, roll.counts()))
    return out
