"""The Flask application factory: ``create_app(config=None)``.

All state lives on ``app.extensions["aptship"]`` (a
:class:`repo_server.state.ServerState`), never in module globals, so one process
can hold several apps (the tests do) and a worker holds nothing that another
instance on the same storage could disagree with, apart from caches keyed on state
generations.  Blueprints are imported inside the factory, as in Flask's tutorial;
they reach the state through :func:`repo_server.state.server_state` (its own module,
as flaskr keeps ``get_db`` in ``db.py``), never through this one.  Token lookups live at most
``server.token_cache_seconds`` (docs/server.md).
"""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, jsonify

from publisher.config import Config, load_config
from publisher.dists import KEYRING_KEY
from publisher.errors import StorageError
from publisher.repo import Repository
from publisher.tokens import TokenStore, open_tokens
from repo_server.errors import register_error_handlers
from repo_server.state import EXTENSION, ServerState, server_state

log = logging.getLogger("aptship.server")


def healthz() -> tuple[Response, int]:
    """No auth: 200 when storage answers, else 503 (for load balancers)."""
    try:
        server_state().repo.storage.exists(KEYRING_KEY)
    except StorageError as err:
        return jsonify({"status": "unavailable", "error": err.to_dict()}), err.http_status
    return jsonify({"status": "ok"}), 200


def import_tokens_file(cfg: Config, tokens: TokenStore) -> None:
    """First start after an upgrade: import ``server.tokens_file`` into storage (once)."""
    if cfg.server.tokens_file is None:
        return
    try:
        imported = tokens.import_file(cfg.server.tokens_file)
    except StorageError as err:  # start anyway (/healthz says 503)
        log.error(
            "cannot import server.tokens_file now (%s); run `aptship token migrate`",
            err.message,
            extra={"event": "tokens_import_failed"},
        )
        return
    if imported:
        log.warning(
            "imported %d token(s) from server.tokens_file into storage; the file is no "
            "longer read: remove it and the tokens_file key (docs/server.md)",
            len(imported),
            extra={"event": "tokens_imported", "names": imported},
        )


def create_app(config: Config | str | os.PathLike[str] | None = None) -> Flask:
    """Build the server for ``config`` (a Config, a path, or None for $APTSHIP_CONFIG)."""
    from repo_server import (
        api,
        apt,
        deadlines,
        fleet,
        front,
        hosts,
        metrics,
        oidc_api,
        tokens_api,
        ui,
    )
    from repo_server.auth import PoolAccess, reset_actor
    from repo_server.webhooks import init_app as init_webhooks
    from repo_server.webhooks_page import webhooks_page  # noqa: F401 - /ui/webhooks, on ui.bp

    cfg = config if isinstance(config, Config) else load_config(config)
    repo = Repository(cfg)
    tokens = open_tokens(cfg, repo.storage)
    import_tokens_file(cfg, tokens)
    state = ServerState(
        config=cfg,
        repo=repo,
        tokens=tokens,
        metrics=metrics.Metrics(),
        pools=PoolAccess(repo),
    )
    app = Flask(__name__)
    # Never rewrite "//" with a redirect: such paths are refused as unsafe keys.
    app.url_map.merge_slashes = False
    app.extensions[EXTENSION] = state
    deadlines.init_app(app, cfg.limits)
    register_error_handlers(app)
    state.metrics.init_app(app)
    init_webhooks(app)  # release webhooks: the queue marker and the delivery worker
    app.add_url_rule("/healthz", "healthz", healthz)
    app.register_blueprint(apt.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(hosts.bp, url_prefix="/api/v1")
    app.register_blueprint(fleet.bp, url_prefix="/api/v1")  # host reports, fleet view
    app.register_blueprint(tokens_api.bp, url_prefix="/api/v1")  # token administration
    app.register_blueprint(oidc_api.bp, url_prefix="/api/v1")  # trusted publishing
    app.register_blueprint(metrics.bp)
    app.register_blueprint(ui.bp)  # /ui/: the release dashboard
    app.register_blueprint(front.bp)  # /_front/auth: the nginx front's access check
    app.teardown_request(reset_actor)
    app.wsgi_app = apt.FastIndexes(app.wsgi_app, state)  # type: ignore[method-assign]
    return app
