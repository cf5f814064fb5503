"""The one place that turns errors into HTTP responses, and the structured error log.

* :class:`AptshipError` -> its ``http_status`` with ``{"error": {"code", "message"}}``.
* Werkzeug's own HTTP errors (unknown URL, wrong method, unsatisfiable range...) get
  the same body with a matching code.
* Anything else is a 500 ``internal`` error; the traceback goes to the log, never to
  the client.

apt paths (and unknown paths outside ``/api/``) answer the same status with the
message as plain text; apt shows the status line, and a human with curl sees the
message.  A 401 always carries ``WWW-Authenticate: Basic realm="aptship"`` so apt
and browsers know to send credentials.

:class:`JsonFormatter` writes log records as one JSON object per line (used by
``repo_server/gunicorn_conf.py`` for the ``aptship`` loggers).  Requests' Authorization
headers and tokens are never put into log records anywhere in the server.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from publisher.errors import AptshipError, JsonTooDeep, RateLimited

log = logging.getLogger("aptship.server")
REALM = 'Basic realm="aptship"'
_HTTP_CODES = {
    400: "usage",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    429: "rate_limited",
    416: "range_not_satisfiable",
}
# Attributes every LogRecord has; anything else was passed with ``extra=``.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _plain_text() -> bool:
    if request.blueprint is not None:
        return request.blueprint == "apt"
    return not request.path.startswith("/api/")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    if _plain_text():
        response = Response(message + "\n", status=status, mimetype="text/plain")
    else:
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if status == 401:
        response.headers["WWW-Authenticate"] = REALM
    return response


def _aptship_error(err: AptshipError) -> Response:
    if err.http_status >= 500:
        log.error(
            "request failed: %s",
            err.message,
            extra={"event": "error", "code": err.code, "path": request.path},
        )
    headers = {"Retry-After": str(err.retry_after)} if isinstance(err, RateLimited) else None
    return error_response(err.http_status, err.code, err.message, headers)


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
    message = err.description or err.name
    if status == 413:
        message = (
            "the request body is larger than this server accepts here "
            "(limits.max_body_bytes; uploads: server.max_upload_bytes)"
        )
    return error_response(status, _HTTP_CODES.get(status, f"http_{status}"), message, headers)


def _too_deep(_err: RecursionError) -> Response:
    """A JSON body nested past Python's recursion limit, wherever it was parsed."""
    return _aptship_error(JsonTooDeep("the JSON body is nested too deeply (limits.max_json_depth)"))


def _unexpected(err: Exception) -> Response:
    log.error(
        "unexpected error",
        exc_info=err,
        extra={"event": "error", "code": "internal", "path": request.path},
    )
    return error_response(500, "internal", "internal server error; see the server log")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(AptshipError, _aptship_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RecursionError, _too_deep)
    app.register_error_handler(Exception, _unexpected)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extras, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)
