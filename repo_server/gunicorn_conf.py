"""gunicorn settings for the aptship server (``aptship serve`` uses this file).

Run by hand with::

    APTSHIP_CONFIG=/etc/aptship/aptship.toml gunicorn -c repo_server/gunicorn_conf.py \
        'repo_server:create_app()'

Environment: ``APTSHIP_BIND`` (default ``127.0.0.1:8080``), ``APTSHIP_WORKERS``
(default 2), ``APTSHIP_THREADS`` (default 128), ``PROMETHEUS_MULTIPROC_DIR`` (default:
a fresh temp directory, removed on exit).  Command-line flags (``--bind``...) override this file.

Slow clients (docs/security.md): the worker class is gthread with a header deadline
(``repo_server.worker.AptshipWorker``, ``limits.header_timeout``); bodies have their
own deadline (``repo_server.deadlines``).  A thread is busy only while a request is
being read or answered, so the threads are many and cheap: 128 per worker keep apt
answering while dozens of slow clients are being timed out.  For the internet, put
nginx in front (it buffers slow clients before they reach a thread).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# prometheus-client picks its multiprocess mode when it is first imported, which
# happens in the workers (no preload), after this file has set the directory.
_given_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_metrics_dir: str = _given_dir or tempfile.mkdtemp(prefix="aptship-metrics-")
os.makedirs(_metrics_dir, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

bind = os.environ.get("APTSHIP_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("APTSHIP_WORKERS", "2"))
worker_class = "repo_server.worker.AptshipWorker"  # gthread + header deadline
threads = int(os.environ.get("APTSHIP_THREADS", "128"))
# Request line and headers: at most 4 KiB per line, 50 fields of 8 KiB.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
timeout = 120  # a worker silent this long is restarted (large uploads keep it busy)
graceful_timeout = 30  # on SIGTERM, in-flight requests get this long to finish
keepalive = 5
preload_app = False  # each worker builds its own app (and imports prometheus-client)

# Access log: no headers at all (so never Authorization), no query string, no user.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'


def on_starting(server: Any) -> None:
    """Empty the metrics directory; send the aptship loggers to stderr as JSON lines.

    Runs in the master before the workers are forked, so they inherit both.
    """
    import logging

    from repo_server.errors import JsonFormatter

    for stale in Path(_metrics_dir).glob("*.db"):
        stale.unlink()
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("aptship")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def on_exit(server: Any) -> None:
    """Remove the metrics directory this file made (one the environment named stays)."""
    if not _given_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Start the worker process's release webhook delivery thread (docs/webhooks.md)."""
    from repo_server.webhooks import start_delivery

    start_delivery(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop delivering; an attempt cut short is retried when its lease expires."""
    from repo_server.webhooks import stop_delivery

    stop_delivery(getattr(worker, "wsgi", None))


def child_exit(server: Any, worker: Any) -> None:
    """Let prometheus-client fold a dead worker's live gauges out of /metrics."""
    from prometheus_client import multiprocess

    # prometheus-client leaves this function unannotated
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
