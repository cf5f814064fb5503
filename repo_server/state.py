"""The per-app server state and how a request reaches it.

Every blueprint imports :func:`server_state` from here, so none of them imports the
application factory (``repo_server.app``), which imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

from publisher.config import Config
from publisher.repo import Repository
from publisher.tokens import TokenStore

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
