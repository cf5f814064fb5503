"""Prometheus metrics, safe under gunicorn's several worker processes.

Each app owns its metric objects in its own registry (no module globals, so tests
can build many apps).  Under gunicorn ``repo_server/gunicorn_conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before prometheus-client is imported: every worker then
writes its values to files there, and ``/metrics`` aggregates all workers with a
:class:`MultiProcessCollector`.  Without that variable (Flask's test client) the
app's own registry is served.

Labels use the Flask endpoint name, never the raw path, so a scan of random URLs
cannot blow up the number of series.  The same timing is sent back on every
``/api/`` answer as ``Server-Timing: app;dur=<ms>`` (the benchmark's CI path reads it).
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from repo_server.auth import require_role
from repo_server.fleet import hosts_metrics
from repo_server.state import server_state

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
API_PATH = "/api/"  # API answers carry a Server-Timing header (docs/server.md)
bp = Blueprint("metrics", __name__)


class Metrics:
    """The server's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "aptship_http_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "aptship_http_request_duration_seconds",
            "Time until the response headers are ready, by endpoint",
            ["endpoint"],
            registry=reg,
        )
        self.bytes_served = Counter(
            "aptship_bytes_served",
            "Response body bytes announced by 200/206 responses, by endpoint",
            ["endpoint"],
            registry=reg,
        )
        self.publishes = Counter(
            "aptship_publishes",
            "Packages published through the API, by channel and result",
            ["channel", "status"],
            registry=reg,
        )
        self.promotions = Counter(
            "aptship_promotions",
            "Promotions and rollbacks through the API, by target channel and result",
            ["channel", "action", "status"],
            registry=reg,
        )
        self.auth_failures = Counter(
            "aptship_auth_failures",
            "Requests refused by authentication (401) or authorization (403)",
            ["reason"],
            registry=reg,
        )

    def render(self) -> bytes:
        """The text exposition of every worker (multiprocess) or of this app."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            # prometheus-client leaves this constructor unannotated
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))

    # -- request hooks -----------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        app.before_request(self._start)
        app.after_request(self._finish)

    @staticmethod
    def _start() -> None:
        g.aptship_started = time.perf_counter()

    def _finish(self, response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        started = g.get("aptship_started")
        if started is not None:
            elapsed = time.perf_counter() - started
            self.latency.labels(endpoint).observe(elapsed)
            if request.path.startswith(API_PATH):  # what the client waited for the app
                response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.1f}"
        self.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        length = response.content_length
        if request.method != "HEAD" and response.status_code in (200, 206) and length:
            self.bytes_served.labels(endpoint).inc(length)
        return response


@bp.get("/metrics")
def metrics() -> Response:
    """Admin token, or none when ``server.metrics_public`` is true."""
    state = server_state()
    if not state.config.server.metrics_public:
        require_role("admin")
    body = state.metrics.render() + hosts_metrics()  # aptship_hosts: computed at scrape time
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
