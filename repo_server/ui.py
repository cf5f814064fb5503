"""The release dashboard under ``/ui/`` (issue 9; docs/dashboard.md).

Server-rendered HTML (Jinja templates in ``templates/ui/``, one stylesheet in
``static/ui.css``), usable without JavaScript apart from a ``confirm()`` before an
action.  Pages:

* ``/ui/``: packages x readable channels: each channel's pin and how many versions
  it retains, with drift marked (``drift-behind``: a channel's pin is older, in dpkg
  order, than the pin of a channel it promotes from; ``drift-rollback``: the pin is
  not the newest retained version).  ``?q=`` filters by package name.
* ``/ui/packages/<name>``: every retained version per channel and its pin history
  as an SVG timeline drawn on the server.
* ``/ui/history``: the audit log, filtered by channel and package.
* Actions (promote role on the target channel): POST forms that call the same
  :class:`Repository` operations as the API and redirect back with a flash message.

Sign-in (``/ui/login``) takes a token and stores its *name and SHA-256 digest* (never
the secret) in Flask's signed session cookie (HttpOnly, SameSite=Strict, path
``/ui``, Secure over HTTPS).  Every request looks the digest up in the token store
again, so a revoked token signs its sessions out at once.  The cookie is signed with
``$<server.secret_key_env>``, else the contents of ``server.secret_key_file`` (which
``aptship init`` writes, mode 600), else the secret shared through storage
(:mod:`publisher.session_secret`, made once by the first server), so a session made
on one worker or replica is valid on every other.

Every POST carries the session's CSRF token (compared with ``hmac.compare_digest``);
a missing or wrong one is a 403.  The session is checked before the form is read:
without a session a POST is redirected to the sign-in page and its body is never
parsed, so only ``/ui/login`` reads a form from a stranger, and that body is bounded
(``limits.max_body_bytes``, ``limits.body_grace``).  Authorization for actions goes through
:func:`repo_server.auth.require`, exactly as for the API, so the dashboard adds no
way around the token rules; the cookie is never consulted outside ``/ui/``.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from debian.debian_support import Version
from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request as FlaskRequest
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from publisher.audit import read_events_page, request_actor
from publisher.errors import (
    AptshipError,
    ConfigError,
    Forbidden,
    NotFound,
    PolicyViolation,
    StorageError,
    UsageError,
)
from publisher.pins import rollback_pin
from publisher.repo import Repository
from publisher.session_secret import shared_session_secret
from publisher.state import PackageState, PinEvent
from publisher.tokens import Token
from repo_server.auth import readable_channels, require, require_package
from repo_server.fleet import channel_rollouts
from repo_server.state import EXTENSION, ServerState, server_state

PREFIX = "/ui"
bp = Blueprint("ui", __name__, url_prefix=PREFIX)
UI_EXTENSION = "aptship_ui"
SESSION_COOKIE = "aptship_session"
SESSION_LIFETIME = timedelta(hours=12)
MAX_ROWS = 1000  # overview and history rows shown at once; the filters narrow them
TIMELINE_EVENTS = 40  # pin moves drawn per channel (the table below lists them all)
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; script-src 'unsafe-inline'"  # confirm() only
)
log = logging.getLogger("aptship.server")
_SECRET_LOCK = threading.Lock()


# -- app setup ------------------------------------------------------------------------
@dataclass
class UiState:
    """Per-app dashboard state: channel summaries cached per state generation."""

    _summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self, repo: Repository, channel: str) -> dict[str, Any]:
        """``repo.channel_summary(channel)``, cached until the channel's generation moves."""
        generation = repo.generation(channel)
        with self._lock:
            hit = self._summaries.get(channel)
        if hit is not None and hit["generation"] == generation:
            return hit
        fresh = repo.channel_summary(channel)
        with self._lock:
            self._summaries[channel] = fresh
        return fresh


class UiSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, sent only to ``/ui`` and Secure whenever HTTPS is used."""

    def get_cookie_path(self, app: Flask) -> str:
        return request.script_root + PREFIX

    def get_cookie_secure(self, app: Flask) -> bool:
        state: ServerState = app.extensions[EXTENSION]
        public = state.config.server.public_url or ""
        return request.is_secure or public.startswith("https://")

    def open_session(self, app: Flask, request: FlaskRequest) -> SecureCookieSession | None:
        """No cookie, no secret needed: apt and API requests never load it."""
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> Any:
        """Flask's serializer, with the secret loaded on first use if storage was down
        when the app started."""
        if not app.secret_key:
            with _SECRET_LOCK:
                if not app.secret_key:
                    app.secret_key = session_secret(app.extensions[EXTENSION])
        return super().get_signing_serializer(app)


@bp.record_once
def _setup(setup: BlueprintSetupState) -> None:
    if not isinstance(setup.app, Flask):
        raise TypeError("the dashboard needs a Flask app")
    init_app(setup.app)


def session_secret(state: ServerState) -> str:
    """``$<secret_key_env>``, else the contents of ``secret_key_file``, else the secret
    shared through storage (created there once if missing)."""
    env_name = state.config.server.secret_key_env
    secret = os.environ.get(env_name) if env_name else None
    if secret:
        return secret
    path = state.config.server.secret_key_file
    if path is None:
        if env_name:
            log.warning(
                "$%s is empty or unset: the dashboard signs sessions with the secret "
                "shared through storage",
                env_name,
                extra={"event": "ui_storage_secret"},
            )
        return shared_session_secret(state.repo.storage)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read server.secret_key_file {path}: {exc.strerror}") from exc
    if len(text) < 32:
        raise ConfigError(f"server.secret_key_file {path} must hold at least 32 characters")
    return text


def init_app(app: Flask) -> None:
    """Session secret and cookie settings (called once, when the blueprint is registered)."""
    state: ServerState = app.extensions[EXTENSION]
    try:
        app.secret_key = session_secret(state)
    except StorageError as err:  # start anyway (/healthz says 503); load it on first use
        log.error(
            "cannot load the dashboard session secret yet: %s",
            err.message,
            extra={"event": "ui_secret_unavailable"},
        )
    app.session_interface = UiSessionInterface()
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True  # smaller pages
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.extensions[UI_EXTENSION] = UiState()


def ui_state() -> UiState:
    state: UiState = current_app.extensions[UI_EXTENSION]
    return state


# -- sessions, CSRF, gate -------------------------------------------------------------
def session_token() -> Token | None:
    """The signed-in token, looked up by digest on every request (a revocation reaches
    the session as it reaches the token, see docs/server.md)."""
    name, sha = session.get("token_name"), session.get("token_sha256")
    if not isinstance(name, str) or not isinstance(sha, str):
        return None
    token = server_state().tokens.lookup(sha)
    return token if token is not None and token.name == name else None


def me() -> Token:
    token: Token = g.ui_token
    return token


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _refused(reason: str, error: Forbidden) -> Forbidden:
    server_state().metrics.auth_failures.labels(reason).inc()
    log.warning(
        "access refused",
        extra={"event": "auth_failure", "reason": reason, "path": request.path},
    )
    return error


def check_csrf() -> None:
    expected = session.get("csrf")
    sent = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise _refused(
            "csrf",
            Forbidden(
                "the form's CSRF token is missing or does not match this session: reload "
                "the page (with cookies enabled) and try again"
            ),
        )


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a path inside the dashboard (no open redirects), else None."""
    if not value or not value.isprintable() or "\\" in value:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(url_for("ui.overview")):
        return None
    return value


def this_page() -> str:
    """The current URL's path and query (for ``next``)."""
    query = request.query_string.decode("latin-1")
    return request.script_root + request.path + (f"?{query}" if query else "")


@bp.before_request
def _gate() -> Response | None:
    """Session first, then CSRF: a stranger's POST is answered before its body is read."""
    if request.endpoint == "ui.login":
        if request.method == "POST":
            check_csrf()
        return None
    token = session_token()
    if token is None:
        if "token_name" in session:
            session.clear()
            flash("Your token is no longer valid (revoked?): sign in again.", "error")
        wanted = this_page() if request.method == "GET" else None
        return redirect(url_for("ui.login", next=safe_next(wanted)), 303)
    if request.method == "POST":
        check_csrf()
    g.ui_token = token
    g.aptship_token = token  # so repo_server.auth.require() checks this token
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "me": g.get("ui_token"),
        "config_distributions": server_state().config.distributions,
    }


def _error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("ui/error.html", status=status, message=message), status


@bp.errorhandler(AptshipError)
def _aptship_error(err: AptshipError) -> tuple[str, int]:
    if err.http_status >= 500:
        log.error(
            "request failed: %s",
            err.message,
            extra={"event": "error", "code": err.code, "path": request.path},
        )
    return _error_page(err.http_status, err.message)


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException) -> tuple[str, int]:
    return _error_page(err.code or 500, err.description or err.name)


# -- sign-in --------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if session_token() is not None:
            return redirect(target or url_for("ui.overview"), 303)
        return render_template("ui/login.html", next=target, error=None), 200
    secret = request.form.get("token", "").strip()
    token = server_state().tokens.authenticate(secret) if secret else None
    if token is None:
        server_state().metrics.auth_failures.labels("invalid").inc()
        log.warning(
            "dashboard sign-in refused",
            extra={"event": "auth_failure", "reason": "invalid", "path": request.path},
        )
        page = render_template("ui/login.html", next=target, error="Unknown or revoked token.")
        return page, 401
    session.clear()  # a fresh session (and CSRF token) for every sign-in
    session.permanent = True
    session["token_name"] = token.name
    session["token_sha256"] = token.sha256
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("dashboard sign-in", extra={"event": "ui_login", "token_name": token.name})
    flash(f"Signed in as {token.name} (role {token.role}).", "ok")
    return redirect(target or url_for("ui.overview"), 303)


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    flash("Signed out.", "ok")
    return redirect(url_for("ui.login"), 303)


# -- overview -------------------------------------------------------------------------
@dataclass
class Cell:
    channel: str
    pin: str | None = None
    count: int = 0
    behind: list[tuple[str, str]] = field(default_factory=list)  # (source, its newer pin)
    newest: str | None = None  # set when the pin is not the newest retained version
    promote: list[str] = field(default_factory=list)  # channels this pin can go to

    @property
    def classes(self) -> str:
        out = ["cell"]
        if self.behind:
            out.append("drift-behind")
        if self.newest:
            out.append("drift-rollback")
        return " ".join(out)


def next_channels(channel: str, among: list[str]) -> list[str]:
    """Channels in ``among`` that promote from ``channel``."""
    channels = server_state().config.channels
    return [name for name in among if channel in channels[name].promote_from]


def _version(cache: dict[str, Version], text: str) -> Version:
    found = cache.get(text)
    if found is None:
        found = cache[text] = Version(text)
    return found


def overview_rows(
    token: Token, channels: list[str], query: str
) -> tuple[list[tuple[str, list[Cell]]], int]:
    """(rows shown, rows matching) for the matrix, from one channel summary per channel."""
    state = server_state()
    summaries = {ch: ui_state().summary(state.repo, ch)["packages"] for ch in channels}
    names = sorted({name for packages in summaries.values() for name in packages})
    if query:
        names = [name for name in names if query.lower() in name.lower()]
    versions: dict[str, Version] = {}
    targets = {
        ch: [n for n in next_channels(ch, channels) if token.allows("promote", n)]
        for ch in channels
    }
    rows = []
    for name in names[:MAX_ROWS]:
        cells = []
        for ch in channels:
            info = summaries[ch].get(name)
            cell = Cell(ch)
            if info is not None:
                cell.pin, cell.count = info["pin"], len(info["versions"])
            if cell.pin is not None:
                pin = _version(versions, cell.pin)
                for src in state.config.channels[ch].promote_from:
                    src_pin = summaries.get(src, {}).get(name, {}).get("pin")
                    if src_pin and src_pin != cell.pin and _version(versions, src_pin) > pin:
                        cell.behind.append((src, src_pin))
                newest = info["versions"][-1] if info else None
                if newest and newest != cell.pin:
                    cell.newest = newest
                cell.promote = [
                    dst
                    for dst in targets[ch]
                    if summaries[dst].get(name, {}).get("pin") != cell.pin
                    and token.covers_package(name)
                ]
            cells.append(cell)
        rows.append((name, cells))
    return rows, len(names)


@bp.get("/")
def overview() -> str:
    token = me()
    channels = readable_channels(token)
    query = request.args.get("q", "").strip()
    rows, matching = overview_rows(token, channels, query)
    sources = {
        ch: [s for s in server_state().config.channels[ch].promote_from if s in channels]
        for ch in channels
    }
    return render_template(
        "ui/overview.html",
        channels=channels,
        sources=sources,
        rows=rows,
        matching=matching,
        rollouts=channel_rollouts(channels),
        q=query,
        here=this_page(),
    )


# -- package page ---------------------------------------------------------------------
@dataclass
class TimelinePoint:
    x: int
    event: PinEvent

    @property
    def css(self) -> str:
        return "tl-" + "".join(c for c in self.event.action if c.isalnum())

    @property
    def label(self) -> str:
        text = self.event.new or "(none)"
        return text if len(text) <= 18 else text[:17] + "…"

    @property
    def title(self) -> str:
        ev = self.event
        return f"{ev.at} {ev.action} by {ev.actor}: {ev.old or '-'} → {ev.new or '-'}"


@dataclass
class Timeline:
    points: list[TimelinePoint]
    width: int
    omitted: int

    STEP = 130
    MARGIN = 70

    @classmethod
    def of(cls, history: list[PinEvent]) -> Timeline:
        shown = history[-TIMELINE_EVENTS:]
        points = [TimelinePoint(cls.MARGIN + i * cls.STEP, ev) for i, ev in enumerate(shown)]
        width = 2 * cls.MARGIN + cls.STEP * max(len(shown) - 1, 0)
        return cls(points, width, len(history) - len(shown))


@dataclass
class VersionRow:
    version: str
    entries: list[dict[str, Any]]
    pinned: bool
    promote: list[str]


@dataclass
class ChannelSection:
    channel: str
    pin: str | None
    versions: list[VersionRow]
    history: list[PinEvent]
    timeline: Timeline
    rollback_to: str | None
    can_act: bool


def rollback_target(ps: PackageState, package: str) -> str | None:
    """Where a rollback would move the pin now (None: nothing to roll back to)."""
    trial = PackageState(entries=ps.entries, pin=ps.pin, pin_stack=list(ps.pin_stack))
    try:
        return rollback_pin(trial, package, None, "preview")
    except (PolicyViolation, NotFound):
        return None


@bp.get("/packages/<name>")
def package(name: str) -> str:
    token = me()
    repo = server_state().repo
    channels = readable_channels(token)
    states = {ch: repo.package_state(ch, name) for ch in channels}
    present = {ch: ps for ch, ps in states.items() if ps is not None and ps.entries}
    if not present:
        raise NotFound(f"package {name!r} is in no channel you can read")
    sections = []
    for ch, ps in present.items():
        targets = [
            n
            for n in next_channels(ch, channels)
            if token.allows("promote", n) and token.covers_package(name)
        ]
        rows = []
        for version in reversed(ps.versions()):
            entries = sorted(ps.find(version), key=lambda e: e.architecture)
            rows.append(
                VersionRow(
                    version=version,
                    entries=[
                        {
                            "architecture": e.architecture,
                            "size": e.size,
                            "published_at": e.published_at,
                            "filename": e.filename,
                        }
                        for e in entries
                    ],
                    pinned=version == ps.pin,
                    promote=[
                        dst
                        for dst in targets
                        if (other := states.get(dst)) is None or other.pin != version
                    ],
                )
            )
        can_act = token.allows("promote", ch) and token.covers_package(name)
        sections.append(
            ChannelSection(
                channel=ch,
                pin=ps.pin,
                versions=rows,
                history=list(reversed(ps.pin_history)),
                timeline=Timeline.of(ps.pin_history),
                rollback_to=rollback_target(ps, name) if can_act else None,
                can_act=can_act,
            )
        )
    return render_template("ui/package.html", name=name, sections=sections, here=this_page())


# -- releases across distributions ----------------------------------------------------
@bp.get("/releases")
def releases() -> str:
    """One row per package and channel: its release and each distribution's build."""
    from publisher.distributions import release_of

    token = me()
    state = server_state()
    tables = []
    for channel, suites in state.config.groups.items():
        if not all(token.covers(s) for s in suites):
            continue
        pins = {s: ui_state().summary(state.repo, s)["packages"] for s in suites}
        names = sorted({name for packages in pins.values() for name in packages})
        rows = []
        for name in names[:MAX_ROWS]:
            builds = {s: pins[s].get(name, {}).get("pin") for s in suites}
            found = {release_of(v) for v in builds.values() if v}
            split = len(found) > 1
            rows.append((name, None if split else next(iter(found), None), builds, split))
        tables.append((channel, suites, rows))
    return render_template("ui/releases.html", tables=tables)


# -- history --------------------------------------------------------------------------
@bp.get("/history")
def history() -> str:
    token = me()
    channel = request.args.get("channel") or None
    package_name = request.args.get("package", "").strip() or None
    if channel is not None:
        require("read", channel)
    readable = readable_channels(token)
    if channel is not None:
        server_state().config.channel(channel)
    rows, more = read_events_page(  # newest first, without reading the whole log
        server_state().repo.storage,
        channels={channel} if channel else set(readable),
        package=package_name,
        limit=MAX_ROWS,
        scan_max=server_state().config.limits.history_scan_max,
    )
    return render_template(
        "ui/history.html",
        rows=rows[:MAX_ROWS],
        more=more is not None,
        channels=readable,
        channel=channel,
        package=package_name or "",
    )


# -- actions --------------------------------------------------------------------------
def form_value(name: str) -> str:
    value = request.form.get(name, "").strip()
    if not value:
        raise UsageError(f"the form field {name!r} is missing")
    return value


@contextmanager
def acting_as(token: Token) -> Iterator[None]:
    """Name the signed-in token in the audit log (as the API does) for one operation."""
    reset = request_actor.set(f"token:{token.name}")
    try:
        yield
    finally:
        request_actor.reset(reset)


def _back(default: str) -> Response:
    return redirect(safe_next(request.form.get("next")) or default, 303)


def _failed(what: str, err: AptshipError) -> None:
    if err.http_status >= 500:
        log.error(
            "%s failed: %s",
            what,
            err.message,
            extra={"event": "error", "code": err.code, "path": request.path},
        )
    flash(f"{what} failed: {err.message}", "error")


@bp.post("/channels/<channel>/promote")
def promote(channel: str) -> Response:
    token = require("promote", channel)
    package_name, version, src = form_value("package"), form_value("version"), form_value("from")
    require_package(token, package_name)
    state = server_state()
    try:
        with acting_as(token):
            result = state.repo.promote(package_name, version, src, channel)
    except AptshipError as err:
        _failed(f"Promoting {package_name} {version} to {channel}", err)
    else:
        state.metrics.promotions.labels(channel, "promote", result["status"]).inc()
        if result["status"] == "unchanged":
            flash(f"{package_name} {version} was already pinned in {channel}.", "ok")
        else:
            was = result["old_pin"] or "nothing"
            flash(f"Promoted {package_name} {version} from {src} to {channel} (was {was}).", "ok")
    return _back(url_for("ui.package", name=package_name))


@bp.post("/channels/<channel>/rollback")
def rollback(channel: str) -> Response:
    token = require("promote", channel)
    package_name = form_value("package")
    require_package(token, package_name)
    to = request.form.get("to", "").strip() or None
    state = server_state()
    try:
        with acting_as(token):
            result = state.repo.rollback(package_name, channel, to=to)
    except AptshipError as err:
        _failed(f"Rolling back {package_name} in {channel}", err)
    else:
        state.metrics.promotions.labels(channel, "rollback", "done").inc()
        flash(
            f"Rolled back {package_name} in {channel}: {result['old_pin']} → {result['new_pin']}.",
            "ok",
        )
    return _back(url_for("ui.package", name=package_name))
