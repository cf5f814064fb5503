"""aptship's HTTP server: apt files, the JSON API and host setup, behind tokens."""

from repo_server.app import create_app

__all__ = ["create_app"]
