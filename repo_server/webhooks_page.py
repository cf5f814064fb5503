"""The dashboard's webhook delivery log: ``/ui/webhooks`` (docs/dashboard.md, docs/webhooks.md).

A route of the dashboard's blueprint (so its sign-in gate, CSRF and headers apply),
kept apart from ``repo_server/ui.py``.  It lists the newest deliveries of events in
channels the signed-in token can read, ``?failed=1`` only the failing ones.  Every
field is escaped by Jinja like the rest of the dashboard; receivers' answers are
shown as the short excerpts the log keeps, and endpoint URLs are never shown.
"""

from __future__ import annotations

from flask import render_template, request

from publisher.webhooks import WebhookQueue
from repo_server.auth import readable_channels
from repo_server.state import server_state
from repo_server.ui import MAX_ROWS, bp, me

PAGE_ROWS = 200  # deliveries shown at once; `aptship webhooks deliveries` lists more


@bp.get("/webhooks", endpoint="webhooks")
def webhooks_page() -> str:
    token = me()
    readable = set(readable_channels(token))
    failed = request.args.get("failed") == "1"
    state = server_state()
    rows = WebhookQueue(state.repo.storage).deliveries(
        failed=failed, limit=min(PAGE_ROWS, MAX_ROWS), scan_max=state.config.limits.history_scan_max
    )
    rows = [r for r in rows if r["channel"] in readable]
    return render_template(
        "ui/webhooks.html",
        rows=rows,
        failed=failed,
        endpoints=sorted(state.config.webhooks.endpoints),
    )
