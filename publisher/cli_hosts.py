"""``aptship hosts`` and ``--wait`` for promote/rollback: the fleet view on the command line.

Both read the fleet through :mod:`publisher.fleet_store`: from storage with a local config,
or from ``GET /api/v1/channels/<ch>/hosts`` with ``--server`` (docs/hosts.md).

``--wait`` is added to the existing ``promote`` and ``rollback`` commands by
:func:`add_wait_options`, which wraps their callbacks: the command runs (and its
change is committed) first, then the fleet is polled until at least
``--min-converged`` % of the live hosts that have the package installed report the
channel's pin, or ``--timeout`` passes (:class:`RolloutTimeout`, exit 10).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from publisher.cli_common import channel_option, json_option
from publisher.errors import RolloutTimeout, UsageError

if TYPE_CHECKING:
    from publisher.cli_common import Context

DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL = 5.0


def fleet(ctx: Context, channel: str, package: str | None = None) -> dict[str, Any]:
    """The fleet view of ``channel``, locally or through the server."""
    if ctx.server:
        from publisher.remote import RemoteRepository

        ops = ctx.ops
        if not isinstance(ops, RemoteRepository):  # pragma: no cover - --server means remote
            raise TypeError("--server without a remote repository")
        return ops.fleet(channel, package)
    from publisher.fleet_store import FleetStore, channel_view

    repo = ctx.repo
    repo.config.channel(channel)
    store = FleetStore(repo.storage, repo.config.fleet)
    return channel_view(store, repo.states, channel, package=package)


def host_line(host: dict[str, Any]) -> str:
    runs = []
    for name, pin in host["pins"].items():
        version = host["packages"].get(name)
        runs.append(f"{name}={version}" + ("" if name not in host["behind"] else f" (pin {pin})"))
    return (
        f"{host['host_id']:<32} {host['hostname'][:30]:<30} {host['state']:<9} "
        f"{host['last_seen']:<20} {', '.join(runs) or '-'}"
    )


def print_view(view: dict[str, Any]) -> None:
    click.echo(f"{'HOST':<32} {'HOSTNAME':<30} {'STATE':<9} {'LAST SEEN':<20} RUNS")
    for host in view["hosts"]:
        click.echo(host_line(host))
    states = view["states"]
    click.echo(
        f"{view['channel']}: {len(view['hosts'])} host(s): {states['converged']} converged, "
        f"{states['behind']} behind, {states['stale']} stale"
    )
    for roll in view["rollout"]:
        click.echo(roll["summary"])


@click.command()
@channel_option("The channel whose hosts to show.")
@click.option("--package", "-p", help="Only hosts that have this package installed.")
@json_option
@click.pass_obj
def hosts(ctx: Context, channel: str, package: str | None, as_json: bool) -> None:
    """Which host runs which version: each host's state and each package's rollout."""
    from publisher.cli_common import emit_json

    view = fleet(ctx, channel, package)
    if as_json:
        emit_json(view)
    else:
        print_view(view)


# -- --wait ---------------------------------------------------------------------------
def parse_percent(value: str) -> float:
    text = value.strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        raise UsageError(f"--min-converged takes a percentage such as 90%, not {value!r}") from None
    if not 0 <= percent <= 100:
        raise UsageError(f"--min-converged must be between 0% and 100%, not {value!r}")
    return percent


def wait_for_rollout(
    ctx: Context,
    channel: str,
    packages: list[str] | None,
    *,
    timeout: float,
    percent: float,
    poll: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Poll until every package's rollout reaches ``percent``; print and return it.

    ``packages=None`` means every pinned package some host has installed.
    """
    deadline = clock() + timeout
    last: list[str] = []
    while True:
        view = fleet(ctx, channel)
        rolls = {r["package"]: r for r in view["rollout"]}
        wanted = [rolls[p] for p in packages if p in rolls] if packages else list(rolls.values())
        lines = [r["summary"] for r in wanted]
        from publisher.fleet import needed

        done = all(r["on_pin"] >= needed(r["hosts"], percent) for r in wanted)
        if done or clock() >= deadline:
            break
        if lines != last:
            click.echo(
                "waiting: " + "; ".join(lines or ["no host reports these packages"]), err=True
            )
            last = lines
        sleep(max(0.0, min(poll, deadline - clock())))
    for line in lines or [
        f"{channel}: no live host has {', '.join(packages or ['them'])} installed"
    ]:
        click.echo(line)
    if not done:
        raise RolloutTimeout(
            f"fewer than {percent:g}% of the hosts in {channel} run the pin after {timeout:g}s "
            "(the change itself is committed; `aptship hosts` shows who is behind)"
        )
    return wanted


def wait_options() -> list[click.Option]:
    return [
        click.Option(
            ["--wait"],
            is_flag=True,
            help="Then wait until the channel's hosts report the new pin (see `aptship hosts`).",
        ),
        click.Option(
            ["--timeout"],
            type=float,
            default=DEFAULT_TIMEOUT,
            show_default=True,
            metavar="SECONDS",
            help="With --wait: give up (exit 10) after this long; the change stays committed.",
        ),
        click.Option(
            ["--min-converged"],
            default="100%",
            show_default=True,
            metavar="N%",
            help="With --wait: the share of live hosts with the package that must run the pin.",
        ),
        click.Option(
            ["--poll"],
            type=float,
            default=DEFAULT_POLL,
            show_default=True,
            metavar="SECONDS",
            help="With --wait: how often to read the fleet.",
        ),
    ]


def add_wait_options(
    command: click.Command, target: Callable[[dict[str, Any]], tuple[str, list[str] | None]]
) -> None:
    """Give ``command`` the ``--wait`` options; ``target(params)`` -> (channel, packages)."""
    original = command.callback
    if original is None:
        raise TypeError(f"{command.name} has no callback")
    command.params.extend(wait_options())

    def callback(**params: Any) -> Any:
        wait, timeout = params.pop("wait"), params.pop("timeout")
        min_converged, poll = params.pop("min_converged"), params.pop("poll")
        if wait:
            percent = parse_percent(min_converged)
            if params.get("as_json") or params.get("dry_run"):
                raise UsageError("--wait cannot be combined with --json or --dry-run")
            if timeout < 0 or poll <= 0:
                raise UsageError("--timeout must be 0 or more and --poll more than 0")
        result = original(**params)
        if wait:
            channel, packages = target(params)
            ctx: Context = click.get_current_context().obj
            wait_for_rollout(ctx, channel, packages, timeout=timeout, percent=percent, poll=poll)
        return result

    command.callback = callback


def promote_target(params: dict[str, Any]) -> tuple[str, list[str] | None]:
    from publisher.cli_common import package_version

    if params.get("everything"):
        return params["dst"], None
    return params["dst"], [package_version(params["spec"] or "", None)[0]]


def rollback_target(params: dict[str, Any]) -> tuple[str, list[str] | None]:
    from publisher.cli_common import package_version

    return params["channel"], [package_version(params["spec"], None)[0]]


def register(cli: click.Group) -> None:
    """Add ``hosts`` and the ``--wait`` options of ``promote`` and ``rollback`` to ``cli``."""
    cli.add_command(hosts)
    add_wait_options(cli.commands["promote"], promote_target)
    add_wait_options(cli.commands["rollback"], rollback_target)
