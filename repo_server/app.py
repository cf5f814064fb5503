"""The Flask application factory: ``create_app(config=None)``.

All state lives on ``app.extensions["aptship"]`` (a :class:`ServerState`), never in
module globals, so one process can hold several apps (the tests do) and a worker
holds nothing that another instance on the same storage could disagree with, apart
from caches keyed on state generations.  Blueprints are imported inside the
factory, as in Flask's tutorial, because they reach the state through
:func:`server_state`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, Response, current_app, jsonify

from publisher.config import Config, load_config
from publisher.dists import KEYRING_KEY
from publisher.errors import StorageError
from publisher.repo import Repository
from publisher.tokens import TokenStore, open_tokens
from repo_server.errors import register_error_handlers

if TYPE_CHECKING:
    from repo_server.auth import PoolAccess
    from repo_server.metrics import Metrics

EXTENSION = "aptship"


@dataclass
class ServerState:
    config: Config
    repo: Repository
    tokens: TokenStore
    metrics: Metrics
    pools: PoolAccess


def server_state() -> ServerState:
    """The state of the app handling the current request."""
    state: ServerState = current_app.extensions[EXTENSION]
    return state


def healthz() -> tuple[Response, int]:
    """No auth: 200 when storage answers, else 503 (for load balancers)."""
    try:
        server_state().repo.storage.exists(KEYRING_KEY)
    except StorageError as err:
        return jsonify({"status": "unavailable", "error": err.to_dict()}), err.http_status
    return jsonify({"status": "ok"}), 200


def create_app(config: Config | str | os.PathLike[str] | None = None) -> Flask:
    """Build the server for ``config`` (a Config, a path, or None for $APTSHIP_CONFIG)."""
    from repo_server import api, apt, fleet, front, hosts, metrics, ui
    from repo_server.auth import PoolAccess, reset_actor

    cfg = config if isinstance(config, Config) else load_config(config)
    repo = Repository(cfg)
    state = ServerState(
        config=cfg,
        repo=repo,
        tokens=open_tokens(cfg.server.tokens_file),
        metrics=metrics.Metrics(),
        pools=PoolAccess(repo),
    )
    app = Flask(__name__)
    # Never rewrite "//" with a redirect: such paths are refused as unsafe keys.
    app.url_map.merge_slashes = False
    app.extensions[EXTENSION] = state
    register_error_handlers(app)
    state.metrics.init_app(app)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.register_blueprint(apt.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(hosts.bp, url_prefix="/api/v1")
    app.register_blueprint(fleet.bp, url_prefix="/api/v1")  # host reports, fleet view
    app.register_blueprint(metrics.bp)
    app.register_blueprint(ui.bp)  # /ui/: the release dashboard
    app.register_blueprint(front.bp)  # /_front/auth: the nginx front's access check
    app.teardown_request(reset_actor)
    app.wsgi_app = apt.FastIndexes(app.wsgi_app, state)  # type: ignore[method-assign]
    return app
