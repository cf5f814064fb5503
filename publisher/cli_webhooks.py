"""``aptship webhooks ...``: the release webhook delivery log and redelivery (docs/webhooks.md).

Both commands work on the storage of the local config: ``deliveries`` reads the
event records, ``redeliver`` queues an event's deliveries again.  Nothing here sends
a request; the server's delivery worker does (docs/webhooks.md, "Delivery").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from publisher.cli_common import current, emit_json, json_option

if TYPE_CHECKING:  # imported when a command runs: `aptship --help` stays quick
    from publisher.webhooks import WebhookQueue


@click.group()
def webhooks() -> None:
    """Release webhooks: the delivery log and redelivery by event id."""


def _queue() -> WebhookQueue:
    from publisher.webhooks import WebhookQueue

    return WebhookQueue(current().repo.storage)


@webhooks.command(name="deliveries")
@click.option("--failed", is_flag=True, help="Only deliveries that failed or are being retried.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="At most this many rows, newest event first.",
)
@json_option
def deliveries(failed: bool, limit: int, as_json: bool) -> None:
    """The delivery log: each event's delivery to each endpoint, newest first."""
    rows = _queue().deliveries(failed=failed, limit=limit, scan_max=max(2000, limit))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        pin = f" {r['old_pin'] or '-'} -> {r['new_pin'] or '-'}" if r["package"] else ""
        what = f"{r['type']} {r['channel']}" + (f" {r['package']}{pin}" if r["package"] else "")
        last = r.get("last") or {}
        detail = " ".join(
            str(v) for v in (last.get("http_status"), last.get("error")) if v is not None
        )
        if r.get("next_attempt"):
            detail += f" (next attempt {r['next_attempt']})"
        click.echo(
            f"{r['event_id']}  {r['endpoint'] or '-'}  {r['status']} "
            f"({r['attempts']} attempts)  {what}" + (f"  [{detail.strip()}]" if detail else "")
        )


@webhooks.command(name="redeliver")
@click.argument("event_id")
@json_option
def redeliver(event_id: str, as_json: bool) -> None:
    """Queue every delivery of EVENT_ID again; the server sends it at its next scan."""
    from publisher.webhooks import check_event_id

    record = _queue().redeliver(check_event_id(event_id))
    endpoints = sorted(record["deliveries"])
    if as_json:
        emit_json({"event_id": event_id, "endpoints": endpoints, "status": "queued"})
        return
    where = ", ".join(endpoints) if endpoints else "the endpoints configured on the server"
    click.echo(f"queued {event_id} again for {where}")


COMMANDS = (webhooks,)
